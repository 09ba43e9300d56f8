"""Builds closedloop._kernels, the batch path's column loops (see src/closedloop/_kernels.c), and
closedloop._trees, the decision-tree kernel shared by a tree model's one-row and batch paths (see
src/closedloop/_trees.c).

Everything else is declared in pyproject.toml. The extensions are optional: without a C compiler
the package falls back to pure-Python loops that give the same results, more slowly.
-ffp-contract=off keeps the compiler from fusing a multiply and an add, so every operation
rounds exactly as Python's float arithmetic does.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c99"]

setup(
    ext_modules=[
        Extension(
            "closedloop._kernels",
            ["src/closedloop/_kernels.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        Extension(
            "closedloop._trees",
            ["src/closedloop/_trees.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
    ]
)

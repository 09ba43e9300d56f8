"""Builds closedloop._kernels, the batch path's column loops (see src/closedloop/_kernels.c).

Everything else is declared in pyproject.toml. The extension is optional: without a C compiler
the package falls back to pure-Python loops that give the same results, more slowly.
-ffp-contract=off keeps the compiler from fusing a multiply and an add, so every operation
rounds exactly as Python's float arithmetic does.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "closedloop._kernels",
            ["src/closedloop/_kernels.c"],
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c99"],
            optional=True,
        )
    ]
)

"""The public API: every name a package lists in ``__all__`` imports, the root's ``__all__`` is
sorted and holds every public error, and every module of the package imports on its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import closedloop
import closedloop.errors

# Modules that run when imported, by design: ``python -m closedloop.cli`` and Alembic's environment.
RUN_ON_IMPORT = {"closedloop.cli.__main__", "closedloop.registry.migrations.env"}
MODULES = sorted(m.name for m in pkgutil.walk_packages(closedloop.__path__, "closedloop.")
                 if m.name not in RUN_ON_IMPORT and ".migrations.versions." not in m.name)


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_every_all_imports(name):
    module = importlib.import_module(name)
    for attr in getattr(module, "__all__", ()):
        assert getattr(module, attr, None) is not None or attr in dir(module), f"{name}.{attr}"


def test_the_root_all_is_sorted_and_complete():
    names = closedloop.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(closedloop, name) is not None, name
    errors = {n for n, obj in vars(closedloop.errors).items()
              if inspect.isclass(obj) and issubclass(obj, closedloop.errors.ClosedLoopError)}
    assert errors <= set(names), sorted(errors - set(names))


def test_every_error_is_in_the_one_tree():
    doc = closedloop.errors.__doc__ or ""
    for name in closedloop.errors.__all__:
        obj = getattr(closedloop.errors, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, closedloop.errors.ClosedLoopError), name
            assert name in doc, f"{name} is not drawn in the tree of closedloop.errors' docstring"

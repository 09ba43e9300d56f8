"""A System (or another object) named by a reference: ``module:attr`` or ``path/to/file.py:attr``.

Used by the command line (``--system``, ``--plan``) and by the service (its ``system`` setting).
Modules are imported with the working directory first on ``sys.path`` (like uvicorn); a file is
executed as a module with its own directory on ``sys.path``. A reference that does not lead to
the object raises :class:`~closedloop.errors.SpecError` whose ``field`` (what the reference is
for: ``"system"``, ``"plan"``), ``rule`` (why it was refused) and ``value`` (the reference) name
what failed; an error raised by the imported module itself propagates unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.system.spec import System

__all__ = ["load_object", "load_system", "refused_reference"]

_FORM = "expected 'module:attr' or 'path/to/file.py:attr'"


def load_system(spec: str) -> System:
    """The :class:`~closedloop.System` named by ``module:attr`` or ``path/to/file.py:attr``."""
    obj = load_object(spec, field="system")
    if not isinstance(obj, System):
        attr = spec.rpartition(":")[2]
        raise _refused(spec, "system", f"{attr!r} is a {type(obj).__name__}, not a closedloop.System")
    return obj


def load_object(spec: str, *, field: str) -> Any:
    """The object named by ``module:attr`` or ``path/to/file.py:attr`` (``attr`` may be dotted);
    ``field`` names what the reference is for in a refusal."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise _refused(spec, field, _FORM)
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = _import_file(spec, field, Path(where))
    else:
        module = _import_module(spec, field, where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _refused(spec, field, f"{where!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def refused_reference(exc: BaseException, spec: str) -> bool:
    """Whether ``exc`` is this module's refusal of the reference ``spec`` (and not an error
    raised while importing the module it names)."""
    return isinstance(exc, SpecError) and getattr(exc, "value", None) == spec and hasattr(exc, "rule")


def _import_module(spec: str, field: str, name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == name or name.startswith(missing + "."):
            raise _refused(spec, field, f"no module named {missing!r} (looked in {cwd} and sys.path)") from None
        raise


def _import_file(spec: str, field: str, path: Path) -> Any:
    if not path.is_file():
        raise _refused(spec, field, f"no such file {str(path)!r}")
    path = path.resolve()
    name = f"_closedloop_system_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise _refused(spec, field, f"cannot load {str(path)!r} as a Python module")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _refused(spec: str, field: str, rule: str) -> SpecError:
    exc = SpecError(f"The '{field}' reference {spec!r} is refused: {rule}.")
    exc.field, exc.rule, exc.value = field, rule, spec  # type: ignore[attr-defined]
    return exc

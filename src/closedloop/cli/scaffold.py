"""``closedloop init``: scaffold a new system that decides right away.

:func:`init_project` writes, into a new or empty directory::

    DIR/
      system.py                          the System declaration, its heuristic and build_bundle()
      loop.py                            its LoopPlan: `closedloop loop run --plan loop:plan`
      README.md                          the commands from a first decision to a cycle of the loop
      .closedloop/                       the project home (unless ``home=`` names another)
        bundles/<bundle version>/        the heuristic, saved as a signed bundle

The generated ``system.py`` is executed (in memory) and its bundle built *before* anything is
written, so a failure leaves the directory as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from closedloop.base.files import make_private_dirs
from closedloop.errors import ProjectError, SpecError
from closedloop.runtime.bundle import Bundle
from closedloop.settings import DEFAULT_HOME, Settings

__all__ = ["EXAMPLE_CONTEXT", "Project", "init_project", "is_system_name", "system_name_for"]

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")

#: A context the scaffolded system accepts (shown in its README). It is a risky one: block.
EXAMPLE_CONTEXT: dict[str, Any] = {
    "user_id": "u-1",
    "amount": 950.0,
    "account_age_days": 3,
    "new_device": True,
    "country": "NZ",
    "channel": "web",
}


@dataclass(frozen=True, slots=True)
class Project:
    """What :func:`init_project` made."""

    directory: Path
    name: str
    settings: Settings
    system_file: Path
    readme: Path
    bundle_version: str
    bundle_path: Path
    #: The shell command (also in the README) that decides for :data:`EXAMPLE_CONTEXT`.
    example_command: str
    #: ``DIR/loop.py``: the system's LoopPlan.
    loop_file: Path


def is_system_name(name: object) -> bool:
    """Whether ``name`` is a valid System name (lower-case letters, digits, '_' or '-', starting
    with a letter, at most 63 characters)."""
    return isinstance(name, str) and _NAME.match(name) is not None


def system_name_for(directory: str | os.PathLike[str]) -> str:
    """A valid system name from a directory name: lower-cased, other characters → ``_``,
    leading non-letters dropped (``"My Fraud-Check 2"`` → ``"my_fraud-check_2"``)."""
    raw = Path(os.path.abspath(directory)).name.lower()
    name = re.sub(r"[^a-z0-9_\-]+", "_", raw)
    name = re.sub(r"^[^a-z]+", "", name)[:63].rstrip("_-")
    return name or "system"


def init_project(
    directory: str | os.PathLike[str], name: str | None = None, *, home: str | os.PathLike[str] | None = None
) -> Project:
    """Scaffold a system into ``directory`` (created if missing; refused unless empty).

    ``name`` defaults to :func:`system_name_for` the directory. ``home`` is the project home
    (``closedloop init`` passes ``--home`` / ``CLOSEDLOOP_HOME`` when given); by default
    ``DIR/.closedloop`` — the home every command run in ``DIR`` finds (``./.closedloop``). Raises
    :class:`~closedloop.errors.SpecError` for an invalid name and
    :class:`~closedloop.errors.ProjectError` for a directory that is a file or not empty.
    """
    target = Path(directory)
    if name is None:
        name = system_name_for(target)
    if not is_system_name(name):
        raise SpecError(
            "A system name must be lower-case letters, digits, '_' or '-', starting with a letter "
            f"(at most 63 characters). Got {name!r} instead."
        )
    if target.exists() and not target.is_dir():
        raise ProjectError(f"Cannot init into '{target}': it is a file, not a directory.")
    if target.is_dir() and any(target.iterdir()):
        raise ProjectError(
            f"Cannot init into '{target}': the directory is not empty. Choose a new or empty directory."
        )

    default_home = home is None
    home_path = target / DEFAULT_HOME if home is None else Path(os.path.abspath(Path(home).expanduser()))
    if default_home:
        home_doc = "`.closedloop/` here, the default home of commands run in this directory"
        home_expr = 'Path(__file__).resolve().parent / ".closedloop"'
        home_note = (
            "The project home is `.closedloop/` in this directory: every `closedloop` command run here finds it\n"
            "(the default home is `./.closedloop`; `--home DIR` or `CLOSEDLOOP_HOME` name another)."
        )
    else:
        home_doc = f"{home_path}, from `closedloop init --home` or CLOSEDLOOP_HOME"
        home_expr = repr(str(home_path))
        home_note = (
            f"The project home is `{home_path}` (given to `closedloop init` by `--home` or `CLOSEDLOOP_HOME`),\n"
            "not `.closedloop/`: run every command below with it, e.g.\n\n"
            f"```sh\nexport CLOSEDLOOP_HOME={shlex.quote(str(home_path))}\n```"
        )
    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    source = _render("system.py.tmpl", name=name, home_doc=home_doc, home_expr=home_expr, created=created)
    bundle = _build_bundle(source, target / "system.py")
    loop_source = _render("loop.py.tmpl", name=name)
    # the bundle as the README names it: its path in the default home, else its version (which
    # every command looks up in the home's bundles/)
    bundle_ref = f"{DEFAULT_HOME.as_posix()}/bundles/{bundle.version}" if default_home else bundle.version
    command = (
        f"cd {shlex.quote(str(directory))} && echo {shlex.quote(json.dumps(EXAMPLE_CONTEXT))} "
        f"| closedloop decide --system system:system --bundle {bundle_ref}"
    )
    readme = _render(
        "README.md.tmpl", name=name, bundle=bundle_ref, command=command, home_note=home_note,
        context=json.dumps(EXAMPLE_CONTEXT),
    )

    settings = Settings(home=home_path)
    target.mkdir(parents=True, exist_ok=True)
    make_private_dirs(settings.bundles)
    system_file = target / "system.py"
    system_file.write_text(source, encoding="utf-8")
    loop_file = target / "loop.py"
    loop_file.write_text(loop_source, encoding="utf-8")
    readme_file = target / "README.md"
    readme_file.write_text(readme, encoding="utf-8")
    from closedloop.registry import Registry

    with Registry.from_settings(settings) as reg:  # the home's signing key, trusted by its registry
        key = reg.signing_key(settings.home)
    bundle_path = bundle.save(settings.bundles / bundle.version, key=key)
    return Project(
        target, name, settings, system_file, readme_file, bundle.version, bundle_path, command, loop_file
    )


def _render(template: str, **values: str) -> str:
    text = resources.files("closedloop.cli").joinpath("templates", template).read_text(encoding="utf-8")
    return Template(text).substitute(values)


def _build_bundle(source: str, path: Path) -> Bundle:
    """Execute the generated declaration in a fresh module and build its heuristic bundle."""
    module = types.ModuleType("closedloop_scaffold_system")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    bundle = module.build_bundle()
    if not isinstance(bundle, Bundle):
        raise SpecError(
            f"The scaffold's build_bundle() must return a Bundle. Got {bundle!r} instead."
        )
    return bundle

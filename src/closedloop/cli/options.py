"""What the command groups share: option types declared once (``--system``, ``--json``,
``--reason``, ``--dataset``, ``--bundle``), references turned into objects (a System, a dataset,
a bundle) with a bad value reported as a bad option (exit 2), times, and the admin check.

Every module of :mod:`closedloop.cli` may import this one; it imports no other CLI module.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from closedloop.errors import SpecError
from closedloop.settings import Settings
from closedloop.system.loading import load_object, load_system, refused_reference
from closedloop.system.spec import System

if TYPE_CHECKING:  # the service is imported when a command needs it
    from closedloop.service.auth import Credential

__all__ = [
    "BundleArgument", "BundleOption", "DatasetOption", "JsonOption", "OptionalBundleOption", "OptionalSystemOption",
    "ReasonOption", "SystemNameOption", "SystemOption", "admin", "authenticate", "load_reference", "parse_time",
    "resolve_bundle", "resolve_dataset", "resolve_in", "system_from",
]

_SYSTEM = typer.Option(
    "--system",
    metavar="MODULE:ATTR",
    help="The System: 'module:attr' (importable from the working directory) or 'path/to/file.py:attr'.",
)
#: ``--system MODULE:ATTR``, required.
SystemOption = Annotated[str, _SYSTEM]
#: ``--system MODULE:ATTR``, optional (the command says what it is for).
OptionalSystemOption = Annotated[str | None, _SYSTEM]
#: ``--system NAME|MODULE:ATTR``: the registry's commands that need only the system's name.
SystemNameOption = Annotated[
    str | None,
    typer.Option("--system", metavar="NAME|MODULE:ATTR",
                 help="The system (a name, or 'module:attr'); optional when the registry holds one."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")]
DatasetOption = Annotated[str, typer.Option("--dataset", metavar="ID|PATH", help="A dataset id or directory.")]

_BUNDLE_HELP = "A bundle directory, or a bundle version in the project home's bundles/."
_BUNDLE = typer.Option("--bundle", metavar="PATH", help=_BUNDLE_HELP)
#: ``--bundle PATH``, required.
BundleOption = Annotated[str, _BUNDLE]
#: ``--bundle PATH``, optional.
OptionalBundleOption = Annotated[str | None, _BUNDLE]
#: ``BUNDLE``: a bundle directory or version, as an argument.
BundleArgument = Annotated[str, typer.Argument(metavar="BUNDLE", help=_BUNDLE_HELP)]


# -- references -------------------------------------------------------------------------------------
def system_from(spec: str) -> System:
    """The System ``--system`` names (:func:`closedloop.system.loading.load_system`); a reference
    that leads to none is a bad ``--system`` value."""
    try:
        return load_system(spec)
    except SpecError as exc:
        if not refused_reference(exc, spec):
            raise  # raised by the module it names
        raise _bad_reference(exc, spec) from None


def load_reference(spec: str, option: str) -> Any:
    """The object ``module:attr`` names, for the option ``--<option>``; a reference that leads
    to nothing is a bad value of that option."""
    try:
        return load_object(spec, field=option)
    except SpecError as exc:
        if not refused_reference(exc, spec):
            raise  # raised by the module it names
        raise _bad_reference(exc, spec) from None


def _bad_reference(exc: SpecError, spec: str) -> typer.BadParameter:
    """A refused reference (:func:`~closedloop.system.loading.refused_reference`) as a bad value
    of its option, ``--<field>``."""
    field, rule = exc.field, exc.rule  # type: ignore[attr-defined]
    return typer.BadParameter(f"{spec!r}: {rule}.", param_hint=f"'--{field}'")


def resolve_in(folder: Path, value: str, what: str, key: str, option: str) -> Path:
    """``value`` as a directory holding a manifest, or the entry named ``value`` in ``folder``
    (a dataset id, a bundle version)."""
    p = Path(value)
    if (p / "manifest.json").is_file():
        return p
    named = folder / value
    if "/" not in value and (named / "manifest.json").is_file():
        return named
    raise typer.BadParameter(
        f"{value!r} is neither a {what} directory nor a {what} {key} under {str(folder)!r}",
        param_hint=f"'{option}'",
    )


def resolve_dataset(settings: Settings, value: str) -> Path:
    """``--dataset``: a dataset directory, or a dataset id in the project home's datasets/."""
    return resolve_in(settings.datasets, value, "dataset", "id", "--dataset")


def resolve_bundle(settings: Settings, value: str) -> Path:
    """``--bundle`` of ``evaluate``: a bundle directory, or a version in the project home's bundles/."""
    return resolve_in(settings.bundles, value, "bundle", "version", "--bundle")


# -- times --------------------------------------------------------------------------------------------
def parse_time(value: str, what: str) -> int:
    """ISO-8601 (a date or a date-time; naive means UTC) or integer nanoseconds → ns."""
    v = value.strip()
    if v.lstrip("-").isdigit():
        return int(v)
    try:
        t = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time (e.g. 2026-11-01 or 2026-11-01T12:00:00Z) or nanoseconds.",
            param_hint=f"'{what}'",
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return int(t.timestamp() * 1_000_000_000)


# -- credentials ----------------------------------------------------------------------------------
def authenticate(settings: Settings, role: str) -> Credential:
    """The caller's credential, checked for ``role`` (raises :class:`~closedloop.errors.AuthError`)."""
    from closedloop.service.auth import Credentials

    return Credentials.load(settings.credentials).authenticate(settings.token).require(role)


def admin(settings: Settings) -> Credential:
    """The caller's credential, which must hold the ``admin`` role."""
    return authenticate(settings, "admin")

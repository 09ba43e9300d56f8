"""The argument checks every registry operation shares: who acts (``actor``), why (``reason``),
which system, a ``force`` reason, and a point in time — each refused with a
:class:`~closedloop.errors.RegistryError` that names the argument, the rule and the value."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from closedloop.errors import RegistryError

__all__ = ["MAX_ACTOR", "check_actor", "check_force", "check_reason", "system_name", "to_ns"]

#: The longest credential name (``actor``) a registry record holds.
MAX_ACTOR = 200


def check_actor(actor: Any) -> str:
    """``actor``: the credential's name, 1-:data:`MAX_ACTOR` characters."""
    if not isinstance(actor, str) or not actor.strip() or len(actor) > MAX_ACTOR:
        raise RegistryError(
            f"The 'actor' of a registry change must be the credential's name (1-{MAX_ACTOR} characters). "
            f"Got {actor!r} instead."
        )
    return actor


def check_reason(reason: Any) -> str:
    """``reason``: a non-empty string, returned stripped."""
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError(f"A registry change needs a 'reason' (a non-empty string). Got {reason!r} instead.")
    return reason.strip()


def system_name(system: Any) -> str:
    """The name of ``system`` (a :class:`~closedloop.System` or its name)."""
    name = getattr(system, "name", system)
    if not isinstance(name, str) or not name:
        raise RegistryError(f"The 'system' must be a closedloop.System or a system name. Got {system!r} instead.")
    return name


def check_force(force: Any) -> None:
    """``force``: None, or the reason for forcing past the forceable sanity checks."""
    if force is not None and (not isinstance(force, str) or not force.strip()):
        raise RegistryError(f"'force' must be the reason for forcing (a non-empty string) or None. Got {force!r} instead.")


def to_ns(when: int | _dt.datetime) -> int:
    """``when`` (ns since the epoch, or an aware datetime) in ns since the epoch."""
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            raise RegistryError(f"A time must be timezone-aware (or ns since the epoch). Got {when!r} instead.")
        return int(when.timestamp() * 1e6) * 1000
    if isinstance(when, bool) or not isinstance(when, int):
        raise RegistryError(f"A time must be ns since the epoch or an aware datetime. Got {when!r} instead.")
    return when

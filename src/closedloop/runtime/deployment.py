"""What serves, in one value: the production bundle, its shadows, its flights and the kill switch.

A :class:`Deployment` is what the registry hands the runtime (``Runtime.apply``): the registry
keeps its history and decides how it changes; the runtime only executes it. A change is one
swap of an immutable value, so a decision in flight finishes on the deployment it started with.

Flights
-------
A :class:`Flight` sends a share of *units* to another bundle. A unit's arm is a stable hash of
``(flight name, unit)`` — :func:`flight_bucket` — so it stays in its arm across requests,
processes and restarts, and two flights with different names split units independently.
Flights are tried in order; the first whose bucket test claims the unit wins, the rest of the
units get production. :func:`expected_shares` gives the share of units each arm should see
(what a sample-ratio-mismatch check compares the observed arm sizes with).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Protocol

from closedloop.errors import SpecError
from closedloop.runtime.bundle import Bundle

__all__ = ["Deployment", "Flight", "expected_shares", "flight_bucket", "assign_flight"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SCALE = float(2**64)


def flight_bucket(flight: str, unit: str) -> float:
    """The unit's position in ``[0, 1)`` for ``flight``: 64 bits of BLAKE2b over the flight name
    and the unit, so it is the same in every process and on every machine."""
    h = blake2b(digest_size=8, person=b"closedloopflght")
    h.update(flight.encode())
    h.update(b"\x00")
    h.update(unit.encode())
    return int.from_bytes(h.digest(), "big") / _SCALE


@dataclass(frozen=True, slots=True)
class Flight:
    """A named share of units that another bundle decides for.

    Parameters
    ----------
    name:
        The flight's name: lower-case letters, digits, ``_ . -``, at most 64 characters. It salts
        the assignment, so renaming a flight reassigns its units.
    bundle:
        The bundle the flight's units get.
    share:
        The share of units the flight claims, in ``(0, 1]``.
    """

    name: str
    bundle: Bundle
    share: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(
                "The 'name' parameter of Flight must be 1-64 characters of a-z, 0-9, '_', '.', '-' "
                f"starting with a letter or digit. Got {self.name!r} instead."
            )
        if not isinstance(self.bundle, Bundle):
            raise SpecError(f"The 'bundle' parameter of Flight must be a closedloop.Bundle. Got {self.bundle!r} instead.")
        share = self.share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < float(share) <= 1.0:
            raise SpecError(f"The 'share' parameter of Flight must be a number in (0, 1]. Got {share!r} instead.")
        object.__setattr__(self, "share", float(share))


@dataclass(frozen=True, slots=True)
class Deployment:
    """The production bundle, shadows (scored, never acted on), flights and the kill switch.

    ``revision`` names the registry state this came from (0 when built by hand); the runtime
    reports it so a caller can tell which state served a decision.
    """

    production: Bundle
    shadows: tuple[Bundle, ...] = ()
    flights: tuple[Flight, ...] = ()
    killswitch: bool = False
    revision: int = 0
    _names: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.production, Bundle):
            raise SpecError(
                f"The 'production' parameter of Deployment must be a closedloop.Bundle. Got {self.production!r} instead."
            )
        object.__setattr__(self, "shadows", tuple(self.shadows))
        object.__setattr__(self, "flights", tuple(self.flights))
        for s in self.shadows:
            if not isinstance(s, Bundle):
                raise SpecError(f"Each shadow of a Deployment must be a closedloop.Bundle. Got {s!r} instead.")
        names = [f.name for f in self.flights]
        for f in self.flights:
            if not isinstance(f, Flight):
                raise SpecError(f"Each flight of a Deployment must be a closedloop.Flight. Got {f!r} instead.")
        if len(set(names)) != len(names):
            raise SpecError(f"The flights of a Deployment must have distinct names. Got {names!r} instead.")
        if isinstance(self.revision, bool) or not isinstance(self.revision, int) or self.revision < 0:
            raise SpecError(f"The 'revision' parameter of Deployment must be an int >= 0. Got {self.revision!r} instead.")
        object.__setattr__(self, "killswitch", bool(self.killswitch))
        object.__setattr__(self, "_names", frozenset(names))


def assign_flight(flights: tuple[Flight, ...], unit: str) -> int:
    """The index of the flight that claims ``unit``, or -1 for production."""
    for i, f in enumerate(flights):
        if flight_bucket(f.name, unit) < f.share:
            return i
    return -1


class _Arm(Protocol):
    """What expected_shares reads of a flight (a Flight, or the registry's FlightState)."""

    @property
    def name(self) -> str: ...

    @property
    def share(self) -> float: ...


def expected_shares(flights: Sequence[_Arm]) -> dict[str | None, float]:
    """The share of units each arm should get (``None``: production), flights tried in order."""
    left = 1.0
    out: dict[str | None, float] = {}
    for f in flights:
        out[f.name] = left * f.share
        left *= 1.0 - f.share
    out[None] = left
    return out

"""The deployment state the registry keeps: plain values, JSON round trip, a one-line summary.

A :class:`DeploymentState` names bundles by version (the registry's record); the runtime's
:class:`~closedloop.Deployment` holds the loaded bundles (``Registry.deployment`` builds it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from closedloop.errors import RegistryError
from closedloop.runtime.deployment import _NAME as _FLIGHT_NAME

__all__ = ["DeploymentState", "FlightState", "check_flight_name", "check_share"]


def check_flight_name(name: Any) -> str:
    if not isinstance(name, str) or not _FLIGHT_NAME.match(name):
        raise RegistryError(
            "A flight name must be 1-64 characters of a-z, 0-9, '_', '.', '-' starting with a letter "
            f"or digit. Got {name!r} instead."
        )
    return name


def check_share(share: Any) -> float:
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < float(share) <= 1.0:
        raise RegistryError(f"The 'share' of a flight must be a number in (0, 1]. Got {share!r} instead.")
    return float(share)


@dataclass(frozen=True, slots=True)
class FlightState:
    """A flight as the registry records it: its name, bundle version and share of units."""

    name: str
    bundle: str
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bundle": self.bundle, "share": self.share}


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """What serves for one system: production, shadows, flights, the kill switch, and the
    registry revision this state has (0: nothing was ever deployed)."""

    system: str
    production: str | None = None
    shadows: tuple[str, ...] = ()
    flights: tuple[FlightState, ...] = ()
    killswitch: bool = False
    revision: int = 0

    def content(self) -> tuple[Any, ...]:
        """Everything but the revision: two states with equal content serve identically."""
        return (self.production, self.shadows, tuple((f.name, f.bundle, f.share) for f in self.flights),
                self.killswitch)

    def flight(self, name: str) -> FlightState | None:
        for f in self.flights:
            if f.name == name:
                return f
        return None

    def bundles(self) -> list[str]:
        """Every bundle version this state serves or scores."""
        out = [] if self.production is None else [self.production]
        out += [v for v in self.shadows if v not in out]
        out += [f.bundle for f in self.flights if f.bundle not in out]
        return out

    def with_(self, **changes: Any) -> DeploymentState:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system, "revision": self.revision, "production": self.production,
            "shadows": list(self.shadows), "flights": [f.to_dict() for f in self.flights],
            "killswitch": self.killswitch,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeploymentState:
        return cls(
            system=d["system"], production=d.get("production"), shadows=tuple(d.get("shadows", ())),
            flights=tuple(FlightState(f["name"], f["bundle"], float(f["share"])) for f in d.get("flights", ())),
            killswitch=bool(d.get("killswitch", False)), revision=int(d.get("revision", 0)),
        )

    @classmethod
    def from_json(cls, text: str) -> DeploymentState:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """One line: ``production X; shadows A, B; flights f (Y, 5%); kill switch off``."""
        if self.production is None:
            return "nothing deployed"
        shadows = ", ".join(self.shadows) if self.shadows else "none"
        flights = ", ".join(f"{f.name} ({f.bundle}, {_pct(f.share)})" for f in self.flights) or "none"
        return (f"production {self.production}; shadows {shadows}; flights {flights}; "
                f"kill switch {'ON' if self.killswitch else 'off'}")


def _pct(share: float) -> str:
    return f"{share * 100:.6g}%"

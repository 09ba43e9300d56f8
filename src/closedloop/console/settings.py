"""The console's one typed settings object (``closedloop console`` builds it from its options).

The project home and the registry come from :class:`closedloop.settings.Settings`, as for every
other command: the registry is ``CLOSEDLOOP_REGISTRY_URL`` when set, else the home's SQLite file
(``<home>/registry.sqlite``); credentials are ``<home>/credentials.json``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.settings import Settings

__all__ = ["ConsoleSettings", "DEFAULT_PORT"]

#: The port ``closedloop console`` listens on by default.
DEFAULT_PORT = 8470
_OWN = "ConsoleSettings"


def _check_number(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise SpecError(f"The '{name}' parameter of {_OWN} must be {kind} >= {lo:g} and <= {hi:g}. Got {value!r} instead.")


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """Everything the console is configured with.

    Attributes
    ----------
    home:
        The project home (bundles, telemetry, cycle records, alerts, goal series, the console's
        session secret ``<home>/console/secret``).
    registry_url:
        The registry database (a SQLAlchemy URL); ``None``: ``<home>/registry.sqlite``.
    credentials:
        The credentials file; ``None``: ``<home>/credentials.json``.
    host, port:
        Where ``closedloop console`` listens (127.0.0.1:8470 by default: this machine only).
    session_hours:
        How long a login lasts (the session cookie's expiry), in hours (default 12).
    refresh_seconds:
        How often the live parts of a page (the overview) ask whether anything changed.
    page_size:
        Rows per page of the paginated lists (history, reports …).
    systems:
        ``module:attr`` references of the Systems the console may load: promoting a flight runs the
        bundle's sanity checks, which need the System itself (the registry knows systems by name only).
    """

    home: Path
    registry_url: str | None = field(default=None, repr=False)
    credentials: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    session_hours: float = 12.0
    refresh_seconds: float = 1.0
    page_size: int = 50
    systems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.home, str | os.PathLike) or not str(self.home):
            raise SpecError(f"The 'home' parameter of {_OWN} must be a path. Got {self.home!r} instead.")
        object.__setattr__(self, "home", Path(self.home).expanduser())
        if self.registry_url is not None and (not isinstance(self.registry_url, str) or not self.registry_url):
            raise SpecError(f"The 'registry_url' parameter of {_OWN} must be a SQLAlchemy URL or None. Got {self.registry_url!r} instead.")
        if self.credentials is not None:
            if not isinstance(self.credentials, str | os.PathLike) or not str(self.credentials):
                raise SpecError(f"The 'credentials' parameter of {_OWN} must be a path or None. Got {self.credentials!r} instead.")
            object.__setattr__(self, "credentials", Path(self.credentials))
        if not isinstance(self.host, str) or not self.host.strip():
            raise SpecError(f"The 'host' parameter of {_OWN} must be a host name or address. Got {self.host!r} instead.")
        _check_number("port", self.port, 0, 65535, integer=True)
        _check_number("session_hours", self.session_hours, 1 / 60, 24 * 30)
        _check_number("refresh_seconds", self.refresh_seconds, 0.1, 60)
        _check_number("page_size", self.page_size, 1, 1000, integer=True)
        systems = tuple(self.systems) if isinstance(self.systems, list | tuple) else self.systems
        if not isinstance(systems, tuple) or any(not isinstance(s, str) or ":" not in s for s in systems):
            raise SpecError(
                f"The 'systems' parameter of {_OWN} must be a tuple of 'module:attr' references. Got {self.systems!r} instead."
            )
        object.__setattr__(self, "systems", systems)

    @classmethod
    def from_project(cls, project: Settings, **kw: Any) -> ConsoleSettings:
        """The console of the project home ``project`` names (its registry URL too)."""
        return cls(home=project.home, registry_url=project.registry_url, **kw)

    @property
    def project(self) -> Settings:
        """The project settings of the home (what every other command reads)."""
        return Settings(home=self.home, registry_url=self.registry_url)

    @property
    def registry(self) -> str:
        """The registry's database URL: ``registry_url``, else ``sqlite:///<home>/registry.sqlite``."""
        return self.project.registry

    @property
    def credentials_path(self) -> Path:
        return self.credentials if self.credentials is not None else self.project.credentials

    @property
    def secret_path(self) -> Path:
        """The key that signs session cookies: ``<home>/console/secret`` (32 random bytes, ``0600``)."""
        return self.home / "console" / "secret"

    @property
    def session_seconds(self) -> int:
        return int(self.session_hours * 3600)

"""Settings: where a deployment's state lives, read once at the edge and passed down.

The CLI builds one :class:`Settings` from its ``--home`` option, else the ``CLOSEDLOOP_HOME``
environment variable, else ``./.closedloop``, and hands it to the code it calls. Nothing reads
the environment anywhere else, and there is no module-level settings object.

The project home holds, as its owners need them: ``bundles/`` (one directory per bundle version),
``telemetry/``, ``registry.sqlite``, ``datasets/`` and ``reports/``. It holds raw contexts and
outcomes, so what closedloop creates in it is private: data files ``0600``, folders ``0700``
(explicit modes through :mod:`closedloop.base.files`, whatever the process umask).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from closedloop.errors import SpecError

__all__ = ["DEFAULT_HOME", "ENV_HOME", "ENV_REGISTRY_URL", "ENV_TELEMETRY_KEY", "ENV_TOKEN", "Settings"]

#: The project home when neither ``--home`` nor ``CLOSEDLOOP_HOME`` says otherwise.
DEFAULT_HOME = Path(".closedloop")
#: The environment variable naming the project home.
ENV_HOME = "CLOSEDLOOP_HOME"
#: The environment variable holding the telemetry key (hex), for hashing sensitive fields.
ENV_TELEMETRY_KEY = "CLOSEDLOOP_TELEMETRY_KEY"
#: The environment variable holding the caller's credential token (admin commands need one).
ENV_TOKEN = "CLOSEDLOOP_TOKEN"
#: The environment variable naming the registry database (a SQLAlchemy URL, e.g. PostgreSQL).
ENV_REGISTRY_URL = "CLOSEDLOOP_REGISTRY_URL"


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed settings of one closedloop process.

    Attributes
    ----------
    home:
        The project home: the directory that holds this deployment's bundles, telemetry,
        registry, datasets and reports. Relative paths are relative to the working directory.
    telemetry_key:
        The key that hashes sensitive context fields in telemetry (from ``CLOSEDLOOP_TELEMETRY_KEY``,
        hex-encoded, at least 16 bytes); ``None`` when unset.
    token:
        The caller's credential token (``--token``, else ``CLOSEDLOOP_TOKEN``); ``None`` when unset.
        Operations that change what serves check it against :attr:`credentials`.
    registry_url:
        The registry database (from ``CLOSEDLOOP_REGISTRY_URL``), e.g.
        ``postgresql://user@host/db``; ``None``: the SQLite file ``<home>/registry.sqlite``.
    """

    home: Path
    telemetry_key: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    registry_url: str | None = field(default=None, repr=False)

    @property
    def registry(self) -> str:
        """The registry's database URL: ``registry_url``, else ``sqlite:///<home>/registry.sqlite``."""
        return self.registry_url or f"sqlite:///{self.home / 'registry.sqlite'}"

    @property
    def telemetry(self) -> Path:
        """Where the embedded telemetry store lives: ``<home>/telemetry/``."""
        return self.home / "telemetry"

    @property
    def datasets(self) -> Path:
        """Where datasets are written by default: ``<home>/datasets/<id>/``."""
        return self.home / "datasets"

    @property
    def credentials(self) -> Path:
        """The credentials file (named tokens with roles, hashed): ``<home>/credentials.json``."""
        return self.home / "credentials.json"

    @property
    def reports(self) -> Path:
        """Where ``closedloop evaluate`` writes reports by default: ``<home>/reports/``."""
        return self.home / "reports"

    @property
    def bundles(self) -> Path:
        """Where bundles are kept: ``<home>/bundles/<bundle version>/``."""
        return self.home / "bundles"

    @classmethod
    def from_env(
        cls,
        home: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] = os.environ,
        token: str | None = None,
    ) -> Settings:
        """Settings from an explicit ``home`` (e.g. a CLI option), else ``environ``'s
        ``CLOSEDLOOP_HOME`` (when set and non-empty), else ``./.closedloop``."""
        if home is None:
            home = environ.get(ENV_HOME) or DEFAULT_HOME
        raw = environ.get(ENV_TELEMETRY_KEY) or None
        key = None
        if raw is not None:
            try:
                key = bytes.fromhex(raw)
            except ValueError:
                raise SpecError(
                    f"The environment variable {ENV_TELEMETRY_KEY} must be hex-encoded bytes. Got a value "
                    f"of {len(raw)} characters that is not hex."
                ) from None
        if token is None:
            token = environ.get(ENV_TOKEN) or None
        registry_url = environ.get(ENV_REGISTRY_URL) or None
        return cls(home=Path(home).expanduser(), telemetry_key=key, token=token, registry_url=registry_url)

"""Settings: where a deployment's state lives, read once at the edge and passed down.

The CLI builds one :class:`Settings` from its ``--home`` option, else the ``CLOSEDLOOP_HOME``
environment variable, else ``./.closedloop``, and hands it to the code it calls. Nothing reads
the environment anywhere else, and there is no module-level settings object.

The project home holds, as its owners need them: ``bundles/`` (one directory per bundle version),
``telemetry/``, ``registry.sqlite``, ``datasets/`` and ``reports/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_HOME", "ENV_HOME", "Settings"]

#: The project home when neither ``--home`` nor ``CLOSEDLOOP_HOME`` says otherwise.
DEFAULT_HOME = Path(".closedloop")
#: The environment variable naming the project home.
ENV_HOME = "CLOSEDLOOP_HOME"


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed settings of one closedloop process.

    Attributes
    ----------
    home:
        The project home: the directory that holds this deployment's bundles, telemetry,
        registry, datasets and reports. Relative paths are relative to the working directory.
    """

    home: Path

    @property
    def bundles(self) -> Path:
        """Where bundles are kept: ``<home>/bundles/<bundle version>/``."""
        return self.home / "bundles"

    @classmethod
    def from_env(
        cls, home: str | os.PathLike[str] | None = None, environ: Mapping[str, str] = os.environ
    ) -> Settings:
        """Settings from an explicit ``home`` (e.g. a CLI option), else ``environ``'s
        ``CLOSEDLOOP_HOME`` (when set and non-empty), else ``./.closedloop``."""
        if home is None:
            home = environ.get(ENV_HOME) or DEFAULT_HOME
        return cls(home=Path(home).expanduser())

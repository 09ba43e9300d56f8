"""The phishing world's configuration: one committed TOML file, loaded into typed, validated values.

``WorldConfig.load()`` reads the packaged ``phishing.toml`` (every parameter is documented there
and in ``docs/world.md``); ``WorldConfig.load(path)`` another file; ``overrides=`` merges a
nested mapping over the file before validation (tests and the demo shrink sizes this way)::

    cfg = WorldConfig.load(overrides={"world": {"visits_per_day": 3000}, "users": {"count": 500}})

Every value is checked once, on load; a bad one raises :class:`~closedloop.errors.SpecError`
naming the parameter, the rule and the value — "World config 'outcomes.victim_rate' must be a
number in [0, 1]. Got 1.5 instead." Unknown keys are refused too (a typo must not silently keep a
default). The parts: the vocabularies and the sections' frozen dataclasses in
:mod:`.config_sections` (all importable from here), the rules of each section in
:mod:`.config_checks`, the checked reader of a TOML table they use in :mod:`.config_reader`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.world.config_checks import read_sections
from closedloop.world.config_sections import (
    ACTIONS,
    BROWSERS,
    LEGIT_KINDS,
    TRAITS,
    AbuseConfig,
    AdaptationConfig,
    AnalystsConfig,
    Brand,
    HostingConfig,
    LegitConfig,
    LegitKind,
    OutcomesConfig,
    PhishConfig,
    Template,
    UsersConfig,
    WorldSection,
)

__all__ = [
    "ACTIONS",
    "BROWSERS",
    "LEGIT_KINDS",
    "TRAITS",
    "AbuseConfig",
    "AdaptationConfig",
    "AnalystsConfig",
    "Brand",
    "HostingConfig",
    "LegitConfig",
    "LegitKind",
    "OutcomesConfig",
    "PhishConfig",
    "Template",
    "UsersConfig",
    "WorldConfig",
    "WorldSection",
]


@dataclass(frozen=True)
class WorldConfig:
    """The whole configuration (sections as in ``phishing.toml``); ``source`` names where it
    came from and ``digest`` fingerprints its values (sha256 of their canonical JSON)."""

    world: WorldSection
    users: UsersConfig
    legit: LegitConfig
    phish: PhishConfig
    adaptation: AdaptationConfig
    efficacy: tuple[tuple[float, ...], ...]  # per trait (TRAITS order), per category: victim multiplier
    outcomes: OutcomesConfig
    analysts: AnalystsConfig
    abuse: AbuseConfig
    brands: tuple[Brand, ...]
    hosting: HostingConfig
    source: str = "<dict>"

    @classmethod
    def load(cls, path: Path | str | None = None, *, overrides: Mapping[str, Any] | None = None) -> WorldConfig:
        """Read ``path`` (default: the packaged ``phishing.toml``), merge ``overrides`` over it
        (nested mappings merge, anything else replaces) and validate."""
        raw, source = load_toml("phishing.toml", path, overrides, "world config")
        return _replace_source(cls.from_dict(raw), source)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WorldConfig:
        """Validate a parsed configuration (the TOML's structure)."""
        cfg = cls(**read_sections(raw))
        if cfg.abuse.sources >= cfg.users.count:
            raise SpecError(
                f"World config 'abuse.sources' must be smaller than 'users.count' ({cfg.users.count}). "
                f"Got {cfg.abuse.sources} instead."
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The values as plain JSON-ready data."""
        d = asdict(self)
        d.pop("source", None)
        return d

    @property
    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def day_ns(self) -> int:
        return 86_400 * 1_000_000_000

    def day_start_ns(self, day: int) -> int:
        """Simulated time at which ``day`` starts (00:00 UTC)."""
        return self.world.start_ns + int(day) * self.day_ns


def _replace_source(cfg: WorldConfig, source: str) -> WorldConfig:
    from dataclasses import replace

    return replace(cfg, source=source)


def load_toml(packaged: str, path: Path | str | None, overrides: Mapping[str, Any] | None,
              what: str) -> tuple[dict[str, Any], str]:
    """A world's configuration as a mapping, and where it came from: ``path`` (default: the packaged
    ``packaged`` file) read as TOML, ``overrides`` merged over it (nested mappings merge, anything
    else replaces). ``what`` names the configuration in the errors ("world config")."""
    if path is None:
        text = resources.files(__package__).joinpath(packaged).read_text(encoding="utf-8")
        source = f"closedloop.world:{packaged}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise SpecError(f"The {what} file {str(path)!r} cannot be read: {e.strerror or e}.") from None
        source = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"The {what} {source} is not valid TOML: {e}.") from None
    if overrides is None:
        return raw, source
    if not isinstance(overrides, Mapping):
        raise SpecError(f"{what[0].upper()}{what[1:]} 'overrides' must be a mapping. Got {overrides!r} instead.")
    return _merge(raw, overrides), source + " (with overrides)"


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out

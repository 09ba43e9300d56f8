"""The feed world's configuration: the committed ``feed.toml``, loaded into typed, validated values.

``FeedConfig.load()`` reads the packaged ``feed.toml`` (every parameter is documented there and in
``docs/world.md``, "The feed world"); ``FeedConfig.load(path)`` another file; ``overrides=`` merges
a nested mapping over the file before validation (tests and benchmarks shrink sizes this way)::

    cfg = FeedConfig.load(overrides={"world": {"sessions_per_day": 3000}, "users": {"count": 2000}})

Every value is checked once, on load, by the phishing world's checked reader
(:class:`~closedloop.world.config_reader.TableReader`): a bad one raises
:class:`~closedloop.errors.SpecError` naming it by its dotted path, the rule and the value, and an
unknown key is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.world.config import load_toml
from closedloop.world.config_checks import _parse_time
from closedloop.world.config_reader import TableReader

__all__ = ["MAX_CANDIDATES", "FeedConfig"]

#: a session's candidates (retrieval's recent + topical + popular) are at most this many
MAX_CANDIDATES = 20


@dataclass(frozen=True)
class FeedConfig:
    """Every parameter of ``feed.toml``, flat (``section_key``); ``source`` names where it came from."""

    start: str
    start_ns: int
    sessions_per_day: int
    categories: tuple[str, ...]
    examination: tuple[float, ...]
    base_logit: float
    click_delay_s: float
    users_count: int
    users_new_per_day: int
    interest_sd: float
    drift_sd: float
    declared_noise: float
    activity_sd: float
    hour_sd: float
    hourly_profile: tuple[float, ...]
    items_per_day: int
    max_age_hours: float
    decay_hours: float
    quality_sd: float
    ctr_prior_clicks: float
    ctr_prior_impressions: float
    new_impressions: int
    surge_rate: float
    surge_days: int
    surge_boost: float
    surge_share: float
    recent: int
    recent_scale: float
    topical: int
    topical_scale: float
    popular: int
    popular_pool: int
    farm_units: int
    farm_sessions_per_unit: int
    farm_items_per_day: int
    farm_quality_shift: float
    source: str = field(default="<dict>", compare=False)

    @classmethod
    def load(cls, path: Path | str | None = None, *, overrides: Mapping[str, Any] | None = None) -> FeedConfig:
        """Read ``path`` (default: the packaged ``feed.toml``), merge ``overrides`` over it and validate."""
        raw, source = load_toml("feed.toml", path, overrides, "feed world config")
        return cls(**_read(raw), source=source)

    def day_start_ns(self, day: int) -> int:
        """Simulated time at which ``day`` starts (00:00 UTC)."""
        return self.start_ns + int(day) * 86_400 * 10**9


def _numbers(r: TableReader, key: str, n: int | None, rule: str) -> tuple[float, ...]:
    v = r.get(key)
    ok = isinstance(v, list) and bool(v) and (n is None or len(v) == n)
    ok = ok and all(not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) and x >= 0 for x in v)
    if not ok or sum(v) <= 0:
        raise r.fail(key, rule, v)
    return tuple(float(x) for x in v)


def _read(raw: Mapping[str, Any]) -> dict[str, Any]:
    root = TableReader(raw, "")
    out: dict[str, Any] = {}
    w = root.section("world")
    out["start"], out["start_ns"] = _parse_time(w, "start")
    out["sessions_per_day"] = w.integer("sessions_per_day", 1, 100_000_000)
    out["categories"] = w.strings("categories")
    if len(out["categories"]) < 2:
        raise w.fail("categories", "a list of at least 2 categories", list(out["categories"]))
    exam = _numbers(w, "examination", None, "a non-empty list of numbers in [0, 1], not increasing, the first > 0")
    if any(x > 1 for x in exam) or exam[0] <= 0 or any(b > a for a, b in zip(exam, exam[1:], strict=False)):
        raise w.fail("examination", "a non-empty list of numbers in [0, 1], not increasing, the first > 0", list(exam))
    out["examination"] = exam
    out["base_logit"] = w.number("base_logit", -20, 20)
    out["click_delay_s"] = w.number("click_delay_s", 0, 3600, lo_open=True)
    w.done()
    u = root.section("users")
    out["users_count"] = u.integer("count", 1, 50_000_000)
    out["users_new_per_day"] = u.integer("new_per_day", 0, 10_000_000)
    for key in ("interest_sd", "drift_sd", "declared_noise", "activity_sd", "hour_sd"):
        out[key] = u.number(key, 0, 10)
    out["hourly_profile"] = _numbers(u, "hourly_profile", 24, "a list of 24 numbers ≥ 0 with a positive sum")
    u.done()
    _items(root.section("items"), out)
    s = root.section("surges")
    out["surge_rate"], out["surge_days"] = s.prob("rate"), s.integer("days", 1, 365)
    out["surge_boost"], out["surge_share"] = s.number("boost", 0, 10), s.number("share", 1, 100)
    s.done()
    _retrieval(root.section("retrieval"), out)
    f = root.section("farm")
    out["farm_units"] = f.integer("units", 0, 10_000)
    out["farm_sessions_per_unit"] = f.integer("sessions_per_unit", 0, 100_000)
    out["farm_items_per_day"] = f.integer("items_per_day", 0, 1_000_000)
    out["farm_quality_shift"] = f.number("quality_shift", -10, 10)
    f.done()
    root.done()
    if out["farm_units"] >= out["users_count"]:
        raise SpecError(f"Feed world config 'farm.units' must be smaller than 'users.count' ({out['users_count']}). "
                        f"Got {out['farm_units']} instead.")
    return out


def _items(r: TableReader, out: dict[str, Any]) -> None:
    out["items_per_day"] = r.integer("per_day", 1, 100_000_000)
    out["max_age_hours"] = r.number("max_age_hours", 1, 24 * 365)
    out["decay_hours"] = r.number("decay_hours", 0, 24 * 365, lo_open=True)
    out["quality_sd"] = r.number("quality_sd", 0, 10)
    out["ctr_prior_clicks"] = r.number("ctr_prior_clicks", 0, 1e6)
    out["ctr_prior_impressions"] = r.number("ctr_prior_impressions", 0, 1e6, lo_open=True)
    if out["ctr_prior_clicks"] > out["ctr_prior_impressions"]:
        raise r.fail("ctr_prior_clicks", f"at most 'items.ctr_prior_impressions' ({out['ctr_prior_impressions']})",
                     out["ctr_prior_clicks"])
    out["new_impressions"] = r.integer("new_impressions", 0)
    r.done()


def _retrieval(r: TableReader, out: dict[str, Any]) -> None:
    out["recent"], out["recent_scale"] = r.integer("recent", 0, MAX_CANDIDATES), r.number("recent_scale", 0, 1e9, lo_open=True)
    out["topical"], out["topical_scale"] = r.integer("topical", 0, MAX_CANDIDATES), r.number("topical_scale", 0, 1e9, lo_open=True)
    out["popular"], out["popular_pool"] = r.integer("popular", 0, MAX_CANDIDATES), r.integer("popular_pool", 1, 1_000_000)
    total = out["recent"] + out["topical"] + out["popular"]
    if not 1 <= total <= MAX_CANDIDATES:
        raise SpecError(f"Feed world config 'retrieval.recent' + 'retrieval.topical' + 'retrieval.popular' must be in "
                        f"[1, {MAX_CANDIDATES}]. Got {total} instead.")
    r.done()

"""The phishing world's configuration: one committed TOML file, loaded into typed, validated values.

``WorldConfig.load()`` reads the packaged ``phishing.toml`` (every parameter is documented there
and in ``docs/world.md``); ``WorldConfig.load(path)`` another file; ``overrides=`` merges a
nested mapping over the file before validation (tests and the demo shrink sizes this way)::

    cfg = WorldConfig.load(overrides={"world": {"visits_per_day": 3000}, "users": {"count": 500}})

Every value is checked once, here; a bad one raises :class:`~closedloop.errors.SpecError` naming
the parameter, the rule and the value — "World config 'outcomes.victim_rate' must be a number in
[0, 1]. Got 1.5 instead." Unknown keys are refused too (a typo must not silently keep a default).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from closedloop.base.times import parse_time
from closedloop.errors import SpecError

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

#: The legitimate site kinds the world can generate (docs/world.md, "Legitimate sites").
LEGIT_KINDS = ("popular", "longtail", "login_service", "intranet", "free_personal", "startup", "sso_portal")
#: A campaign's signature: each trait and its categories, in a fixed order.
TRAITS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hosting", ("lookalike", "throwaway", "compromised", "free_known", "free_unknown", "platform", "ip")),
    ("https", ("no", "yes")),
    ("credential", ("none", "form", "password")),
    ("brand_shown", ("no", "yes")),
    ("lure_url", ("no", "yes")),
    ("domain_age", ("fresh", "young", "aged")),
    ("at_trick", ("no", "yes")),
    ("external_resources", ("no", "yes")),
)
_BINARY = frozenset(name for name, cats in TRAITS if cats == ("no", "yes"))
#: The phishing system's actions, in the order the world codes them (0, 1, 2).
ACTIONS = ("allow", "warn", "block")
#: The phishing system's browsers (its ``browser`` field's choices).
BROWSERS = ("chrome", "edge", "firefox", "safari", "other")


# -- the sections --------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldSection:
    system: str
    start: str
    start_ns: int
    visits_per_day: int
    hourly_profile: tuple[float, ...]


@dataclass(frozen=True)
class UsersConfig:
    count: int
    new_user_days: int
    initial_new_share: float
    churn_per_day: float
    activity_pareto: float
    new_user_phish_exposure: float
    susceptibility_beta: tuple[float, float]
    report_propensity_sigma: float
    disable_protection_per_false_block: float
    reenable_mean_days: float
    browsers: tuple[tuple[str, float], ...]
    countries: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class LegitKind:
    name: str
    share_start: float
    share_end: float
    sites: int
    churn_per_day: float


@dataclass(frozen=True)
class LegitConfig:
    pages_per_site: int
    popularity_drift: float
    popularity_zipf: float
    drift_days: int
    kinds: tuple[LegitKind, ...]


@dataclass(frozen=True)
class Template:
    """A kit template: its share of new campaigns and a probability vector per trait
    (in :data:`TRAITS` order, each summing to 1)."""

    name: str
    share: float
    traits: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class PhishConfig:
    visit_share: float
    initial_campaigns: int
    new_per_day: float
    mean_duration_days: float
    weight_sigma: float
    pages_per_generation: int
    inherit_share: float
    referrer_email_share: float
    templates: tuple[Template, ...]


@dataclass(frozen=True)
class AdaptationConfig:
    threshold: float
    warn_weight: float
    min_visits: int
    delay_days: int
    learning_rate: float
    min_prob: float
    prior_visits: float


@dataclass(frozen=True)
class OutcomesConfig:
    choice_delay_seconds: float
    click_through_phish: float
    click_through_legit: float
    victim_rate: float
    victim_report_rate: float
    aware_report_rate: float
    report_delay_median_hours: float
    report_delay_sigma: float
    false_block_report_rate: float
    false_block_delay_median_minutes: float
    false_warning_report_rate: float
    false_report_rate: float
    false_report_delay_median_hours: float
    transport_delay_seconds: float


@dataclass(frozen=True)
class AnalystsConfig:
    count: int
    sample_rate: tuple[float, float, float]  # by action, in ACTIONS order
    triage_share: float
    delay_median_hours: float
    delay_sigma: float
    error_rate: float


@dataclass(frozen=True)
class AbuseConfig:
    sources: int
    smear_share: float
    visits_per_day: int
    report_prob: float
    delay_median_minutes: float


@dataclass(frozen=True)
class Brand:
    name: str
    domain: str
    rank: int
    phish_weight: float


@dataclass(frozen=True)
class HostingConfig:
    free_known: tuple[str, ...]
    free_unknown: tuple[str, ...]
    platforms: tuple[tuple[str, str, int], ...]


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
        if path is None:
            text = resources.files(__package__).joinpath("phishing.toml").read_text(encoding="utf-8")
            source = "closedloop.world:phishing.toml"
        else:
            p = Path(path)
            try:
                text = p.read_text(encoding="utf-8")
            except OSError as e:
                raise SpecError(f"The world config file {str(p)!r} cannot be read: {e.strerror or e}.") from None
            source = str(p)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"The world config {source} is not valid TOML: {e}.") from None
        if overrides is not None:
            if not isinstance(overrides, Mapping):
                raise SpecError(f"World config 'overrides' must be a mapping. Got {overrides!r} instead.")
            raw = _merge(raw, overrides)
        cfg = cls.from_dict(raw)
        return _replace_source(cfg, source if overrides is None else source + " (with overrides)")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WorldConfig:
        """Validate a parsed configuration (the TOML's structure)."""
        r = _Reader(raw, "")
        cfg = cls(
            world=_world(r.section("world")),
            users=_users(r.section("users")),
            legit=_legit(r.section("legit")),
            phish=_phish(r.section("phish")),
            adaptation=_adaptation(r.section("adaptation")),
            efficacy=_efficacy(r.section("efficacy")),
            outcomes=_outcomes(r.section("outcomes")),
            analysts=_analysts(r.section("analysts")),
            abuse=_abuse(r.section("abuse")),
            brands=_brands(r.list_of_tables("brands")),
            hosting=_hosting(r.section("hosting")),
        )
        r.done()
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


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# -- validation ----------------------------------------------------------------------------------
class _Reader:
    """Takes the keys of one table, checking each; :meth:`done` refuses the keys left over."""

    def __init__(self, table: Any, path: str) -> None:
        if not isinstance(table, Mapping):
            raise SpecError(f"World config '{path or '<root>'}' must be a table. Got {table!r} instead.")
        self.table = dict(table)
        self.path = path
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, rule: str, value: Any) -> SpecError:
        text = repr(value)
        if len(text) > 80:
            text = text[:77] + "..."
        return SpecError(f"World config '{self._name(key)}' must be {rule}. Got {text} instead.")

    def get(self, key: str) -> Any:
        self.seen.add(key)
        if key not in self.table:
            raise SpecError(f"World config '{self._name(key)}' is required and missing.")
        return self.table[key]

    def section(self, key: str) -> _Reader:
        return _Reader(self.get(key), self._name(key))

    def list_of_tables(self, key: str) -> list[_Reader]:
        v = self.get(key)
        if not isinstance(v, list) or not v:
            raise self.fail(key, "a non-empty list of tables", v)
        return [_Reader(item, f"{self._name(key)}[{i}]") for i, item in enumerate(v)]

    def number(self, key: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
        v = self.get(key)
        ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            raise self.fail(key, _range_rule("a number", lo, hi, lo_open), v)
        return float(v)

    def prob(self, key: str) -> float:
        return self.number(key, 0.0, 1.0)

    def integer(self, key: str, lo: int | None = None, hi: int | None = None) -> int:
        v = self.get(key)
        ok = not isinstance(v, bool) and isinstance(v, int)
        if ok and lo is not None:
            ok = v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            raise self.fail(key, _range_rule("an integer", lo, hi, False), v)
        return int(v)

    def string(self, key: str, *, allow_empty: bool = False) -> str:
        v = self.get(key)
        if not isinstance(v, str) or (not v and not allow_empty):
            raise self.fail(key, "a non-empty string", v)
        return v

    def strings(self, key: str) -> tuple[str, ...]:
        v = self.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
            raise self.fail(key, "a non-empty list of non-empty strings", v)
        if len(set(v)) != len(v):
            raise self.fail(key, "a list without duplicates", v)
        return tuple(v)

    def weights(self, key: str, allowed: tuple[str, ...] | None = None) -> tuple[tuple[str, float], ...]:
        v = self.get(key)
        if not isinstance(v, Mapping) or not v:
            raise self.fail(key, "a non-empty table of name = weight", v)
        out = []
        for name, w in v.items():
            if allowed is not None and name not in allowed:
                raise SpecError(
                    f"World config '{self._name(key)}.{name}' must be one of {list(allowed)}. Got {name!r} instead."
                )
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise SpecError(f"World config '{self._name(key)}.{name}' must be a number ≥ 0. Got {w!r} instead.")
            out.append((name, float(w)))
        if sum(w for _, w in out) <= 0:
            raise self.fail(key, "weights with a positive sum", v)
        return tuple(out)

    def done(self) -> None:
        extra = sorted(set(self.table) - self.seen)
        if extra:
            raise SpecError(
                f"World config '{self._name(extra[0])}' is not a known parameter "
                f"(known here: {sorted(self.seen)})."
            )


def _range_rule(what: str, lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
    if lo is not None:
        return f"{what} {'>' if lo_open else '≥'} {_fmt(lo)}"
    if hi is not None:
        return f"{what} ≤ {_fmt(hi)}"
    return what


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _parse_time(r: _Reader, key: str) -> tuple[str, int]:
    s = r.string(key)
    try:
        ns = parse_time(s, strict=True)
    except ValueError:
        raise r.fail(key, "an ISO-8601 time (e.g. 2026-01-05T00:00:00Z)", s) from None
    if ns < 0:
        raise r.fail(key, "a time after 1970-01-01", s)
    return s, ns


def _world(r: _Reader) -> WorldSection:
    system = r.string("system")
    start, start_ns = _parse_time(r, "start")
    visits = r.integer("visits_per_day", 1, 100_000_000)
    prof = r.get("hourly_profile")
    if (
        not isinstance(prof, list) or len(prof) != 24
        or not all(not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) and x >= 0 for x in prof)
        or sum(prof) <= 0
    ):
        raise r.fail("hourly_profile", "a list of 24 numbers ≥ 0 with a positive sum", prof)
    r.done()
    return WorldSection(system, start, start_ns, visits, tuple(float(x) for x in prof))


def _users(r: _Reader) -> UsersConfig:
    count = r.integer("count", 1)
    new_days = r.integer("new_user_days", 1)
    init_new = r.prob("initial_new_share")
    churn = r.prob("churn_per_day")
    pareto = r.number("activity_pareto", 0.0, lo_open=True)
    exposure = r.number("new_user_phish_exposure", 0.0, lo_open=True)
    beta = r.get("susceptibility_beta")
    if (
        not isinstance(beta, list) or len(beta) != 2
        or not all(not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) and x > 0 for x in beta)
    ):
        raise r.fail("susceptibility_beta", "two numbers > 0 ([a, b] of a Beta distribution)", beta)
    sigma = r.number("report_propensity_sigma", 0.0)
    disable = r.prob("disable_protection_per_false_block")
    reenable = r.number("reenable_mean_days", 0.0, lo_open=True)
    browsers = r.weights("browsers", BROWSERS)
    countries = r.weights("countries")
    for name, _ in countries:
        if len(name) > 2:
            raise SpecError(f"World config 'users.countries.{name}' must be a country code of at most 2 letters.")
    r.done()
    return UsersConfig(
        count, new_days, init_new, churn, pareto, exposure, (float(beta[0]), float(beta[1])), sigma,
        disable, reenable, browsers, countries,
    )


def _legit(r: _Reader) -> LegitConfig:
    pages = r.integer("pages_per_site", 1, 1000)
    drift = r.number("popularity_drift", 0.0)
    zipf = r.number("popularity_zipf", 0.0)
    drift_days = r.integer("drift_days", 1)
    kinds = []
    for k in r.list_of_tables("kinds"):
        name = k.string("name")
        if name not in LEGIT_KINDS:
            raise k.fail("name", f"one of {list(LEGIT_KINDS)}", name)
        kinds.append(LegitKind(
            name, k.number("share_start", 0.0), k.number("share_end", 0.0), k.integer("sites", 1),
            k.prob("churn_per_day"),
        ))
        k.done()
    names = [k.name for k in kinds]
    if len(set(names)) != len(names):
        raise r.fail("kinds", "a list of distinct kinds", names)
    if sum(k.share_start for k in kinds) <= 0 or sum(k.share_end for k in kinds) <= 0:
        raise r.fail("kinds", "kinds whose share_start and share_end each have a positive sum", names)
    r.done()
    return LegitConfig(pages, drift, zipf, drift_days, tuple(kinds))


def _trait_vector(r: _Reader, name: str, cats: tuple[str, ...]) -> tuple[float, ...]:
    if name in _BINARY:
        p = r.prob(name)
        return (1.0 - p, p)
    w = dict(r.weights(name, cats))
    total = sum(w.values())
    return tuple(w.get(c, 0.0) / total for c in cats)


def _phish(r: _Reader) -> PhishConfig:
    share = r.prob("visit_share")
    initial = r.integer("initial_campaigns", 0)
    new_per_day = r.number("new_per_day", 0.0)
    duration = r.number("mean_duration_days", 0.0, lo_open=True)
    sigma = r.number("weight_sigma", 0.0)
    pages = r.integer("pages_per_generation", 1, 100_000)
    inherit = r.prob("inherit_share")
    email = r.prob("referrer_email_share")
    templates = []
    for t in r.list_of_tables("templates"):
        name = t.string("name")
        tshare = t.number("share", 0.0)
        vecs = tuple(_trait_vector(t, trait, cats) for trait, cats in TRAITS)
        t.done()
        templates.append(Template(name, tshare, vecs))
    names = [t.name for t in templates]
    if len(set(names)) != len(names):
        raise r.fail("templates", "templates with distinct names", names)
    if sum(t.share for t in templates) <= 0:
        raise r.fail("templates", "templates whose shares have a positive sum", names)
    if initial == 0 and new_per_day == 0 and share > 0:
        raise r.fail("new_per_day", "> 0 when there are no initial campaigns (phishing needs campaigns)", new_per_day)
    r.done()
    return PhishConfig(share, initial, new_per_day, duration, sigma, pages, inherit, email, tuple(templates))


def _adaptation(r: _Reader) -> AdaptationConfig:
    out = AdaptationConfig(
        threshold=r.prob("threshold"),
        warn_weight=r.prob("warn_weight"),
        min_visits=r.integer("min_visits", 1),
        delay_days=r.integer("delay_days", 1),
        learning_rate=r.number("learning_rate", 0.0),
        min_prob=r.number("min_prob", 0.0, 0.1),
        prior_visits=r.number("prior_visits", 0.0),
    )
    r.done()
    return out


def _efficacy(r: _Reader) -> tuple[tuple[float, ...], ...]:
    out = []
    for name, cats in TRAITS:
        if name in r.table:
            given = dict(r.weights(name, cats))
            out.append(tuple(given.get(c, 1.0) for c in cats))
        else:
            out.append(tuple(1.0 for _ in cats))
    unknown = sorted(set(r.table) - {n for n, _ in TRAITS})
    if unknown:
        raise SpecError(
            f"World config 'efficacy.{unknown[0]}' must be a trait, one of {[n for n, _ in TRAITS]}. Got {unknown[0]!r} instead."
        )
    return tuple(out)


def _outcomes(r: _Reader) -> OutcomesConfig:
    out = OutcomesConfig(
        choice_delay_seconds=r.number("choice_delay_seconds", 0.0, lo_open=True),
        click_through_phish=r.prob("click_through_phish"),
        click_through_legit=r.prob("click_through_legit"),
        victim_rate=r.prob("victim_rate"),
        victim_report_rate=r.prob("victim_report_rate"),
        aware_report_rate=r.prob("aware_report_rate"),
        report_delay_median_hours=r.number("report_delay_median_hours", 0.0, lo_open=True),
        report_delay_sigma=r.number("report_delay_sigma", 0.0),
        false_block_report_rate=r.prob("false_block_report_rate"),
        false_block_delay_median_minutes=r.number("false_block_delay_median_minutes", 0.0, lo_open=True),
        false_warning_report_rate=r.prob("false_warning_report_rate"),
        false_report_rate=r.prob("false_report_rate"),
        false_report_delay_median_hours=r.number("false_report_delay_median_hours", 0.0, lo_open=True),
        transport_delay_seconds=r.number("transport_delay_seconds", 0.0),
    )
    r.done()
    return out


def _analysts(r: _Reader) -> AnalystsConfig:
    count = r.integer("count", 1)
    rates = r.get("sample_rate")
    if not isinstance(rates, Mapping) or set(rates) != set(ACTIONS):
        raise r.fail("sample_rate", f"a table with exactly the actions {list(ACTIONS)}", rates)
    sr = _Reader(rates, "analysts.sample_rate")
    sample = tuple(sr.prob(a) for a in ACTIONS)
    sr.done()
    out = AnalystsConfig(
        count, (sample[0], sample[1], sample[2]), r.prob("triage_share"),
        r.number("delay_median_hours", 0.0, lo_open=True), r.number("delay_sigma", 0.0), r.prob("error_rate"),
    )
    r.done()
    return out


def _abuse(r: _Reader) -> AbuseConfig:
    out = AbuseConfig(
        sources=r.integer("sources", 0),
        smear_share=r.prob("smear_share"),
        visits_per_day=r.integer("visits_per_day", 0),
        report_prob=r.prob("report_prob"),
        delay_median_minutes=r.number("delay_median_minutes", 0.0, lo_open=True),
    )
    r.done()
    return out


def _brands(items: list[_Reader]) -> tuple[Brand, ...]:
    out = []
    for b in items:
        name = b.string("name")
        if name != name.lower():
            raise b.fail("name", "lower case (the page brand as the features compare it)", name)
        out.append(Brand(name, b.string("domain"), b.integer("rank", 1), b.number("phish_weight", 0.0)))
        b.done()
    if sum(b.phish_weight for b in out) <= 0:
        raise SpecError("World config 'brands' must have phish_weight values with a positive sum.")
    if len({b.name for b in out}) != len(out):
        raise SpecError(f"World config 'brands' must have distinct names. Got {[b.name for b in out]} instead.")
    return tuple(out)


def _hosting(r: _Reader) -> HostingConfig:
    known = r.strings("free_known")
    unknown = r.strings("free_unknown")
    plats = r.get("platforms")
    ok = isinstance(plats, list) and plats and all(
        isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and p[0] and isinstance(p[1], str) and p[1]
        and not isinstance(p[2], bool) and isinstance(p[2], int) and p[2] > 0
        for p in plats
    )
    if not ok:
        raise r.fail("platforms", "a non-empty list of [host, domain, rank ≥ 1]", plats)
    if set(known) & set(unknown):
        raise r.fail("free_unknown", "hosts not also listed in free_known", sorted(set(known) & set(unknown)))
    r.done()
    return HostingConfig(known, unknown, tuple((p[0], p[1], int(p[2])) for p in plats))

"""The rules of each section of the world's configuration: every value read and checked once,
through a :class:`~.config_reader.TableReader`, into the section's frozen dataclass
(:mod:`.config_sections`). :func:`read_sections` reads the whole file, section by section in
the file's order, and refuses unknown sections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from closedloop.base.times import parse_time
from closedloop.errors import SpecError
from closedloop.world.config_reader import TableReader
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

__all__ = ["read_sections"]

#: The traits with categories ("no", "yes"): a template gives each as one probability.
_BINARY = frozenset(name for name, cats in TRAITS if cats == ("no", "yes"))


def read_sections(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every section of a parsed configuration (the TOML's structure), checked: section name →
    its value (the keyword arguments of :class:`~.config.WorldConfig`)."""
    r = TableReader(raw, "")
    sections = {
        "world": _world(r.section("world")),
        "users": _users(r.section("users")),
        "legit": _legit(r.section("legit")),
        "phish": _phish(r.section("phish")),
        "adaptation": _adaptation(r.section("adaptation")),
        "efficacy": _efficacy(r.section("efficacy")),
        "outcomes": _outcomes(r.section("outcomes")),
        "analysts": _analysts(r.section("analysts")),
        "abuse": _abuse(r.section("abuse")),
        "brands": _brands(r.list_of_tables("brands")),
        "hosting": _hosting(r.section("hosting")),
    }
    r.done()
    return sections


def _parse_time(r: TableReader, key: str) -> tuple[str, int]:
    s = r.string(key)
    try:
        ns = parse_time(s, strict=True)
    except ValueError:
        raise r.fail(key, "an ISO-8601 time (e.g. 2026-01-05T00:00:00Z)", s) from None
    if ns < 0:
        raise r.fail(key, "a time after 1970-01-01", s)
    return s, ns


def _world(r: TableReader) -> WorldSection:
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


def _users(r: TableReader) -> UsersConfig:
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


def _legit(r: TableReader) -> LegitConfig:
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


def _trait_vector(r: TableReader, name: str, cats: tuple[str, ...]) -> tuple[float, ...]:
    if name in _BINARY:
        p = r.prob(name)
        return (1.0 - p, p)
    w = dict(r.weights(name, cats))
    total = sum(w.values())
    return tuple(w.get(c, 0.0) / total for c in cats)


def _phish(r: TableReader) -> PhishConfig:
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


def _adaptation(r: TableReader) -> AdaptationConfig:
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


def _efficacy(r: TableReader) -> tuple[tuple[float, ...], ...]:
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


def _outcomes(r: TableReader) -> OutcomesConfig:
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


def _analysts(r: TableReader) -> AnalystsConfig:
    count = r.integer("count", 1)
    rates = r.get("sample_rate")
    if not isinstance(rates, Mapping) or set(rates) != set(ACTIONS):
        raise r.fail("sample_rate", f"a table with exactly the actions {list(ACTIONS)}", rates)
    sr = TableReader(rates, "analysts.sample_rate")
    sample = tuple(sr.prob(a) for a in ACTIONS)
    sr.done()
    out = AnalystsConfig(
        count, (sample[0], sample[1], sample[2]), r.prob("triage_share"),
        r.number("delay_median_hours", 0.0, lo_open=True), r.number("delay_sigma", 0.0), r.prob("error_rate"),
    )
    r.done()
    return out


def _abuse(r: TableReader) -> AbuseConfig:
    out = AbuseConfig(
        sources=r.integer("sources", 0),
        smear_share=r.prob("smear_share"),
        visits_per_day=r.integer("visits_per_day", 0),
        report_prob=r.prob("report_prob"),
        delay_median_minutes=r.number("delay_median_minutes", 0.0, lo_open=True),
    )
    r.done()
    return out


def _brands(items: list[TableReader]) -> tuple[Brand, ...]:
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


def _hosting(r: TableReader) -> HostingConfig:
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

"""The phishing world's configuration as values: the vocabularies it is written in (site kinds,
signature traits, actions, browsers) and one frozen dataclass per section of ``phishing.toml``.

Every parameter is documented in ``phishing.toml`` and ``docs/world.md``; the values are checked
by :mod:`.config_checks` and loaded by :meth:`.config.WorldConfig.load` (all of these names are
importable from :mod:`.config` too).
"""

from __future__ import annotations

from dataclasses import dataclass

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

"""The phishing-page system: what the browser knows when a page loads, and what it may do.

Import it as ``examples.phishing.system:phishing`` (e.g. ``closedloop decide --system
examples.phishing.system:phishing --bundle …``).
"""

from __future__ import annotations

from datetime import timedelta

from closedloop import (
    Action,
    Bool,
    F,
    Float,
    FrequencyCap,
    Goal,
    HardLimit,
    Int,
    LabelPolicy,
    OutcomeRule,
    Str,
    System,
    Thresholds,
)

BROWSERS = ("chrome", "edge", "firefox", "safari", "other")

#: An IPv4 address as the URL's host: http://192.168.10.4/login
IP_HOST = r"^[a-z][a-z0-9+.\-]*://\d{1,3}(\.\d{1,3}){3}(:\d+)?(/|$)"
#: Words phishing kits put in paths and hosts.
LURE_WORDS = r"(login|signin|verify|account|secure|update|banking|confirm|password|wallet)"
#: Hosting that anyone can publish on (free sites, link shorteners, dynamic DNS).
FREE_HOSTS = ("000webhostapp.com", "weebly.com", "firebaseapp.com", "duckdns.org", "bit.ly", "glitch.me")

context = [
    Str("user_id", description="the experimental unit: the browser profile"),
    Str("url", max_length=8192),
    Str("domain", max_length=253, description="registrable domain of the page"),
    Float("domain_age_days", ge=0, default=3650.0, nonfinite="default",
          description="days since the domain was registered (unknown → old)"),
    Int("num_forms", ge=0, default=0),
    Bool("has_password_field", default=False),
    Int("num_external_links", ge=0, default=0),
    Int("num_links", ge=0, default=0),
    Int("num_external_resources", ge=0, default=0),
    Int("num_resources", ge=0, default=0),
    Str("page_brand", default="", max_length=64, description="brand named on the page (logo/title), '' if none"),
    Bool("https", default=True),
    Int("popularity_rank", ge=0, default=0, description="site popularity rank, 0 = unranked"),
    Str("browser", choices=BROWSERS, default="other"),
    Str("country", default="", max_length=2),
    Str("referrer_domain", default="", max_length=253),
    Bool("new_user", default=False),
]

url = F.col("url").lower()
domain = F.col("domain").lower()
brand = F.col("page_brand").lower()

features = {
    "domain_age_log": F.log1p(F.col("domain_age_days")),
    "young_domain": F.col("domain_age_days") < 30,
    "has_forms": F.col("num_forms") > 0,
    "password_field": F.col("has_password_field"),
    "password_on_young": F.col("has_password_field") & (F.col("domain_age_days") < 90),
    "external_link_ratio": (F.col("num_external_links") / F.col("num_links")).clip(0.0, 1.0),
    "external_resource_ratio": (F.col("num_external_resources") / F.col("num_resources")).clip(0.0, 1.0),
    "brand_not_in_domain": brand.nonempty() & ~domain.contains(brand),
    "no_https": ~F.col("https"),
    "ip_in_url": url.matches(IP_HOST),
    "url_length_log": F.log1p(F.col("url").length()),
    "url_dots": F.col("url").count(".").clip(0.0, 20.0),
    "url_has_at": url.contains("@"),
    "lure_words": url.matches(LURE_WORDS),
    "hyphens_in_domain": domain.count("-").clip(0.0, 10.0),
    "free_hosting": domain.isin(FREE_HOSTS),
    "unranked": F.col("popularity_rank").eq(0),
    "top_site": (F.col("popularity_rank") > 0) & (F.col("popularity_rank") <= 1000),
    "rank_log": F.log1p(F.col("popularity_rank")),
}

phishing = System(
    "phishing",
    description="Warn or block when a page is likely a phishing page.",
    context=context,
    schema_version="1",
    unit="user_id",
    features=features,
    actions=[
        Action("allow", "none"),  # nothing is shown; outcomes come from later reports
        # A warning asks the user: going back or continuing is the feedback the loop learns from.
        Action("warn", "prompt", choices=("go_back", "continue")),
        # A block acts for the user; the only feedback is a report that it was wrong.
        Action("block", "automate", outcomes=("reported_false_block",)),
    ],
    experience=Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow"),
    labels=("legit", "phish"),
    # What a mistake costs, in "user-harm units": letting a phishing page through is the worst;
    # blocking a legitimate page is bad (users lose trust and turn protection off); a warning
    # on a legitimate page costs a little attention.
    costs={
        "allow": {"phish": 100.0},
        "warn": {"legit": 2.0, "phish": 10.0},
        "block": {"legit": 25.0},
    },
    guardrails=[
        # Policy, outermost first: a top-1,000 site is never blocked outright (a warning at most),
        # and a user is not warned more than 5 times a day (fatigue makes warnings worthless).
        HardLimit(
            "top_sites",
            (F.col("popularity_rank") > 0) & (F.col("popularity_rank") <= 1000),
            {"block": "warn"},
            reason="never block a top-1,000 site",
        ),
        FrequencyCap("warn", 5, timedelta(days=1), fallback="allow"),
    ],
    latency_budget_ms=5.0,
    mistake_outcomes=["reported_false_block", "reported_false_warning"],
    label_policy=LabelPolicy(
        window=timedelta(days=7),
        rules=[
            OutcomeRule("analyst_label", label=None, aggregate="latest"),
            OutcomeRule("reported_phish", label="phish", aggregate="any"),
            OutcomeRule("reported_false_block", label="legit", aggregate="any"),
        ],
        default="legit",
        # Selective labels: a blocked page yields no user outcome, so silence after a block says
        # nothing — it stays unlabeled (analysts' samples and explored decisions label the band).
        action_defaults={"block": None},
    ),
    # Goals at four levels, each measured from telemetry (the metric grammar in
    # closedloop.orchestration.goals): labels for model properties, outcome rates for users.
    goals=[
        Goal("false_block_rate", "model", "false_positive_rate@block", 0.001, "at_most", "hourly",
             description="legitimate pages blocked, of the labeled legitimate pages"),
        Goal("phish_recall", "model", "recall@warn", 0.9, "at_least", "hourly",
             description="labeled phishing pages warned or blocked"),
        Goal("phish_allowed", "user", "labeled:phish_per_1k@allow", 0.5, "at_most", "daily",
             description="phishing visits allowed per 1,000 visits (those that revealed themselves)"),
        Goal("false_blocks", "user", "reported_false_block_per_1k", 0.2, "at_most", "daily",
             description="blocks reported as wrong per 1,000 visits"),
        Goal("warning_click_through", "leading", "rate:chose:continue@warn", 0.3, "at_most", "weekly",
             description="warned users who continued anyway: warnings that are not believed"),
        Goal("phish_reports", "leading", "reported_phish_per_1k", 1.0, "at_most", "weekly",
             description="user reports of phishing per 1,000 visits"),
        Goal("harm_cost", "organizational", "cost_per_1k", 50.0, "at_most", "monthly",
             description="mistake cost (user-harm units, System.costs) per 1,000 labeled visits"),
    ],
    slices=["browser", "country", "new_user"],
    retention_days=90,  # page-load telemetry is kept three months
)

"""The hand-written baseline for the phishing system: a blocklist, then points for red flags.

It is the system's first intelligence and the baseline every model must beat. Like a model, it
is data (a lookup table and scoring rules over the system's declared features), packaged in a
bundle — no code ships with it.
"""

from __future__ import annotations

from closedloop import LookupTable, Rule, ScoringRules

from .data import KNOWN_BAD_DOMAINS

__all__ = ["KNOWN_BAD_DOMAINS", "heuristic_intelligence"]


def heuristic_intelligence() -> LookupTable:
    """Known-bad domains score 1.0; any other page gets points for each red flag (clipped to
    [0, 1]; the system blocks at 0.9 and warns at 0.6)."""
    rules = ScoringRules(
        [
            Rule("ip_in_url", ">", 0.5, 0.45),
            Rule("url_has_at", ">", 0.5, 0.45),
            Rule("brand_not_in_domain", ">", 0.5, 0.35),
            Rule("young_domain", ">", 0.5, 0.30),
            Rule("password_on_young", ">", 0.5, 0.25),
            Rule("free_hosting", ">", 0.5, 0.25),
            Rule("lure_words", ">", 0.5, 0.15),
            Rule("hyphens_in_domain", ">=", 2.0, 0.15),
            Rule("password_field", ">", 0.5, 0.10),
            Rule("no_https", ">", 0.5, 0.10),
            Rule("unranked", ">", 0.5, 0.10),
            Rule("top_site", ">", 0.5, -0.50),
        ],
        base=0.0,
        output="phish",
    )
    return LookupTable("domain", dict.fromkeys(KNOWN_BAD_DOMAINS, 1.0), fallback=rules, output="phish")

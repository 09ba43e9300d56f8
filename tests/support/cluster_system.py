"""The system the cluster tests and ``bench/cluster.py`` serve: the phishing example's context,
features and actions, with a cap of 3 warnings per unit per day and thresholds that warn on every
page below the block level (so a unit's 4th decision of the day is where the cap shows).

Replicas load it by file path (``--system <repo>/tests/support/cluster_system.py:system``)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # examples/ is a package at the repo root
    sys.path.insert(0, str(ROOT))

from examples.phishing.system import phishing  # noqa: E402

from closedloop import FrequencyCap, System, Thresholds  # noqa: E402

__all__ = ["SPEC", "WARNINGS_PER_DAY", "context", "system"]

#: The cap the tests check: a unit is warned at most this many times per (UTC) day.
WARNINGS_PER_DAY = 3

system = System(
    "phishing", context=list(phishing.schema.fields), unit=phishing.unit,
    features={f.name: f.expr for f in phishing.features.features},
    actions=list(phishing.action_specs.values()),
    experience=Thresholds("phish", {"block": 0.99, "warn": 0.0}, otherwise="allow"), labels=phishing.labels,
    guardrails=[FrequencyCap("warn", WARNINGS_PER_DAY, timedelta(days=1), fallback="allow")],
    mistake_outcomes=["reported_false_block", "reported_false_warning"],
)

#: ``--system`` for ``closedloop serve``: this file, by path.
SPEC = f"{Path(__file__).resolve()}:system"


def context(unit: str, i: int) -> dict[str, Any]:
    """A page load of ``unit`` (the i-th: a different page each time)."""
    return {"user_id": unit, "url": f"https://site{i}.example/login", "domain": f"site{i}.example",
            "domain_age_days": float(5 + i % 50), "referrer_domain": "r.example", "has_password_field": True}

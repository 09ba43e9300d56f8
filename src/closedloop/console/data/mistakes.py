"""The Mistakes page: the worst mistakes of the latest evaluation, the mistakes users reported
lately, and any decision looked up by id or unit — with a replay through the bundle that served
it and through the current candidate (:mod:`closedloop.console.data.replay`).

Where each figure comes from:

* worst mistakes — the newest evaluation report registered for the system (the registry's
  ``reports`` table): its ``worst`` section (false positives with the highest scores, false
  negatives with the lowest, each with its context) of production's entry (else the report's
  candidate), ordered by what each costs (``System.costs[action][label]``), then by score;
* reported mistakes — the telemetry's outcomes of the system's ``mistake_outcomes`` kinds (a user
  reporting a false block, a false warning …: outcomes that contradict the action) in the range,
  each joined to the decision it names (context, scores, action, bundle), newest first, paged in
  the query.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from closedloop.base.times import DAY_NS, iso
from closedloop.console.data._common import as_dict, check_page, known_system, page_of
from closedloop.console.data._telemetry import open_lake
from closedloop.console.data.replay import lookup
from closedloop.errors import SpecError
from closedloop.registry.models import reports as T_REPORTS

__all__ = ["DEFAULT_DAYS", "lookup", "reported", "worst"]

#: How far back "lately" reaches by default.
DEFAULT_DAYS = 7


def _cost(system: Any, action: Any, label: Any) -> float | None:
    costs = getattr(system, "costs", None) or {}
    c = (costs.get(action) or {}).get(label)
    return None if c is None else float(c)


def worst(registry: Any, system: Any, *, page: int = 1, per_page: int = 20) -> dict[str, Any]:
    """The worst mistakes of the newest registered evaluation of ``system``, costliest first:
    each with its decision id, unit, score, action, true label, cost, kind (false positive or
    negative) and context. ``report`` says which report and bundle they are of (None: no report)."""
    name = known_system(registry, system)
    page, per_page = check_page(page, per_page)
    with registry.db.read() as conn:
        row = conn.execute(select(T_REPORTS.c.id, T_REPORTS.c.body).where(T_REPORTS.c.system == name)
                           .order_by(T_REPORTS.c.id.desc()).limit(1)).first()
    if row is None:
        return {**page_of([], page, per_page, 0), "system": name, "report": None,
                "note": f"no evaluation report is registered for {name!r}"}
    body = json.loads(row.body)
    entries = [b for b in body.get("bundles") or [] if isinstance(b, dict)]
    prod = registry.state(name).production
    entry = next((b for b in entries if b.get("version") == prod), entries[-1] if entries else {})
    found = as_dict(entry.get("worst"))
    items = []
    for kind, rows in (("false positive", found.get("false_positives") or []),
                       ("false negative", found.get("false_negatives") or [])):
        for m in rows:
            items.append({**m, "kind": kind, "cost": _cost(system, m.get("action"), m.get("label"))})
    items.sort(key=lambda m: (-(m["cost"] or 0.0), -abs((m.get("score") or 0.5) - 0.5)))
    start = (page - 1) * per_page
    note = None if entries and "worst" in entry else "the report holds no worst-mistakes section (a ranking or choice report)"
    return {**page_of(items[start:start + per_page], page, per_page, len(items)), "system": name,
            "report": {"id": int(row.id), "bundle": entry.get("version"), "dataset_id": (body.get("metadata") or {})
                       .get("dataset_id"), "link": {"kind": "registered", "id": int(row.id)}}, "note": note}


_OUTCOMES = ("FROM outcomes WHERE system = ? AND kind IN (SELECT unnest(?)) AND event_ns >= ? AND event_ns <= ? "
             "AND decision_id IS NOT NULL")
_PAGE = f"SELECT outcome_id, decision_id, kind, event_ns, source {_OUTCOMES} ORDER BY event_ns DESC, outcome_id LIMIT ? OFFSET ?"
_DECISION = ("decision_id, unit, timestamp_ns, bundle_version, flight, action, propensity, why, guardrail, context_json, "
             "score_names, scores")


def reported(registry: Any, home: Any, system: Any, *, days: float = DEFAULT_DAYS, now_ns: int | None = None,
             page: int = 1, per_page: int = 20) -> dict[str, Any]:
    """The mistakes users reported in the last ``days`` to ``now_ns``, newest first: each outcome
    (kind, when, source) with the decision it names — unit, when, bundle, flight, action,
    propensity, the rule that decided (``why``, ``guardrail``), scores and context (None when the
    decision is not in the telemetry: retention, or not sampled). ``system``: the
    :class:`~closedloop.System` (its ``mistake_outcomes``)."""
    name = known_system(registry, system)
    page, per_page = check_page(page, per_page)
    kinds = list(getattr(system, "mistake_outcomes", ()) or ())
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3650:
        raise SpecError(f"The 'days' of the reported mistakes must be a number in (0, 3650]. Got {days!r} instead.")
    now = int(now_ns if now_ns is not None else registry.clock.now_ns())
    since = now - int(days * DAY_NS)
    base = {**{"system": name, "kinds": kinds, "since": iso(since), "until": iso(now)}}
    if not kinds:
        return {**page_of([], page, per_page, 0), **base,
                "note": f"system {name!r} declares no mistake_outcomes: no outcome says a decision was wrong"}
    with open_lake(home) as lake:  # the page of outcomes first (cheap columns), then only its decisions, whole
        total = int(lake.rows(f"SELECT count(*) AS n {_OUTCOMES}", [name, kinds, since, now])[0]["n"])
        rows = lake.rows(_PAGE, [name, kinds, since, now, per_page, (page - 1) * per_page])
        found = lake.decisions(name, [r["decision_id"] for r in rows], _DECISION)
    items = []
    for r in rows:
        d = dict(found.get(r["decision_id"]) or {})
        scores = dict(zip(d.pop("score_names", None) or [], d.pop("scores", None) or [], strict=False))
        ctx = d.pop("context_json", None)
        ts = d.pop("timestamp_ns", None)
        items.append({**r, **{k: d.get(k) for k in ("unit", "bundle_version", "flight", "action", "propensity", "why",
                                                     "guardrail")},
                      "timestamp_ns": ts, "reported_at": iso(int(r["event_ns"])),
                      "decided_at": None if ts is None else iso(int(ts)), "scores": scores,
                      "context": None if ctx is None else json.loads(ctx), "found": ts is not None})
    return {**page_of(items, page, per_page, total), **base}

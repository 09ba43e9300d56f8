"""The flight guard judges the system's goals too: a flight that pushes a goal past its target,
where production keeps it, is stopped.

A flight lasts hours to a day; labels (an analyst's verdict, a victim's report that settles a
page) mostly arrive later. So the guard judges the goals it can measure **per arm from the
decisions and their linked outcomes alone** — the outcome rates and action shares of the metric
grammar (:mod:`closedloop.system.metrics`):

=========================  ==============================================================
goal metric                per arm: count / decisions
=========================  ==============================================================
``<kind>_per_1k[@A]``      decisions (at action ``A``) followed by an outcome ``kind``, ×1000
``rate:<kind>[@A]``        the same, as a share
``share:<A>``              decisions at action ``A``
=========================  ==============================================================

An outcome counts for an arm when it names the arm's decision (``decision_id``), was reported by
the end of the window and not by an excluded (quarantined) source — the goal tracker counts the
outcomes that *happened* in a window instead, which no arm can be charged with. Goals that need
labels (``false_positive_rate@A``, ``cost_per_1k``, ``labeled:…``) and user metric functions are
listed as not judged in flight: the gate holds a candidate to them before it flies
(:class:`closedloop.evaluation.Gate`, ``goals_must_hold``).

A goal **breaches** when production's figure keeps the target, the flight's does not, and the
flight's figure is past the target beyond the noise: a one-sided exact binomial test of "the
flight's rate is within the target" gives p below the policy's ``alpha``. Nothing is judged below
the policy's ``min_decisions`` per arm. A flight that only matches a production that already
misses the goal is not stopped for it: that is a goal-health matter, not the flight's doing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.system.metrics import parse_metric

__all__ = ["FLIGHT_GOAL_KINDS", "describe_breach", "flight_goals", "goal_arm_counts", "goal_metric"]

#: the metric kinds (:class:`closedloop.system.metrics.Metric`) an arm's telemetry measures without labels
FLIGHT_GOAL_KINDS = ("rate", "share")


def flight_goals(system: Any) -> tuple[list[tuple[Any, Any]], list[dict[str, Any]]]:
    """``system``'s goals split into those the guard judges in flight — ``(goal, metric)`` pairs —
    and the others, each ``{"goal", "metric", "note"}`` saying why it is not judged."""
    judged, skipped = [], []
    for g in getattr(system, "goals", ()) or ():
        try:
            m = parse_metric(g.metric, system)
        except SpecError:  # a user metric function: only the goal tracker has it
            m = None
        if m is not None and m.kind in FLIGHT_GOAL_KINDS:
            judged.append((g, m))
        else:
            why = ("a user metric function" if m is None or m.kind == "custom" else
                   "the exploration share describes the experience's policy, not an arm's outcomes" if m.kind == "exploration"
                   else "needs labels, which arrive after a flight")
            skipped.append({"goal": g.name, "metric": g.metric, "note": f"not judged in flight: {why}"})
    return judged, skipped


def goal_arm_counts(decisions: pa.Table, outcomes: pa.Table, system: str, metric: Any, since_ns: int, until_ns: int,
                    exclude_sources: Sequence[str] = (), *, con: Any = None) -> dict[tuple[str | None, str], dict[str, int]]:
    """Per (flight or None, bundle version) in [since, until]: ``n`` (decisions, at the metric's
    action for an outcome rate) and ``x`` (of those, the ones the metric counts).
    ``con``: a DuckDB connection whose cursor runs the query (:func:`~closedloop.registry.guard.guard_check`
    passes one per check: a cursor costs microseconds, a new database tens of ms); None: a new database."""
    import duckdb

    cur = duckdb.connect() if con is None else con.cursor()
    try:
        cur.register("decisions", decisions)
        cur.register("outcomes", outcomes)
        where = "d.system = ? AND d.timestamp_ns >= ? AND d.timestamp_ns <= ? AND NOT d.killswitch"
        if metric.kind == "share":
            rows = cur.execute(
                f"SELECT d.flight, d.bundle_version, count(*), count(*) FILTER (WHERE d.action = ?) "
                f"FROM decisions d WHERE {where} GROUP BY 1, 2",
                [metric.action, system, int(since_ns), int(until_ns)]).fetchall()
        else:
            excluded = list(exclude_sources) or ["\x00none"]
            at = "" if metric.action is None else "AND d.action = ?"
            rows = cur.execute(
                f"""
                WITH o AS (SELECT DISTINCT decision_id FROM outcomes
                           WHERE decision_id IS NOT NULL AND kind = ? AND event_ns <= ?
                             AND source NOT IN (SELECT unnest(?)))
                SELECT d.flight, d.bundle_version, count(*), count(o.decision_id)
                FROM decisions d LEFT JOIN o ON d.decision_id = o.decision_id
                WHERE {where} {at} GROUP BY 1, 2
                """,
                [metric.name, int(until_ns), excluded, system, int(since_ns), int(until_ns),
                 *([] if metric.action is None else [metric.action])]).fetchall()
    finally:
        cur.close()
    return {(f, v): {"n": int(n), "x": int(x)} for f, v, n, x in rows}


def _past(value: float, target: float, direction: str) -> bool:
    return value > target if direction == "at_most" else value < target


def goal_metric(goal: Any, metric: Any, fl: dict[str, int], pr: dict[str, int], alpha: float,
                min_decisions: int) -> dict[str, Any]:
    """One goal judged for a flight against production (the guard's metric entry ``goal:<name>``)."""
    from scipy import stats

    scale = float(metric.scale)
    x1, n1, x0, n0 = fl["x"], fl["n"], pr["x"], pr["n"]
    out: dict[str, Any] = {"metric": f"goal:{goal.name}", "goal": goal.name, "goal_metric": goal.metric,
                           "target": goal.target, "direction": goal.direction, "measured": True,
                           "n_flight": n1, "n_production": n0, "count_flight": x1, "count_production": x0,
                           "alpha": alpha, "tolerance": 0.0}
    v1 = x1 / n1 * scale if n1 else None
    v0 = x0 / n0 * scale if n0 else None
    out.update(flight=v1, production=v0)
    if n1 < min_decisions or n0 < min_decisions or v1 is None or v0 is None:
        out.update(p_value=None, test=None, breach=False, note=f"not judged: fewer than {min_decisions} decisions in an arm")
        return out
    p0 = min(max(goal.target / scale, 0.0), 1.0)
    if goal.direction == "at_most":  # H0: the flight's rate ≤ target; large counts speak against it
        p = float(stats.binom.sf(x1 - 1, n1, p0))
    else:
        p = float(stats.binom.cdf(x1, n1, p0))
    kept_by_production = not _past(v0, goal.target, goal.direction)
    breach = bool(kept_by_production and _past(v1, goal.target, goal.direction) and p < alpha)
    out.update(p_value=p, test=f"exact binomial, one-sided, H0: the flight's rate keeps {goal.target:g}", breach=breach)
    if not kept_by_production:
        out["note"] = "production misses this goal too: not the flight's doing (a goal-health matter)"
    return out


def describe_breach(m: dict[str, Any], flight: str, alpha: float) -> str:
    """A goal breach in words: the goal, its target, both arms' figures and the test."""
    way = m["direction"].replace("_", " ")
    return (f"guard: goal {m['goal']} ({m['goal_metric']} {way} {m['target']:g}) is {m['flight']:.6g} in flight {flight!r} "
            f"and {m['production']:.6g} in production over {m['n_flight']} vs {m['n_production']} decisions "
            f"(p={m['p_value']:.3g} < alpha {alpha} that the flight keeps it; {m['test']})")

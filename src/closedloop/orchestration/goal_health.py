"""Goal health: the alerts that say a goal is out of reach — and why it may be the goal's fault.

Two ways a goal is out of reach, each a ``goal_health`` alert (action ``none``: the system's owner
decides — change the goal, the costs, or the metric; the loop never silently favours one):

* **Stays missed** (:func:`streak_alerts`): a goal missed in each of its last ``patience``
  measured windows, whatever served. One alert per streak (its id is the streak's first window).
* **Cannot be kept** (:func:`bound_alerts`): a candidate's thresholds could not keep a goal that
  bounds a rate they control (``false_positive_rate@block``) on its training rows — the costs and
  the goal disagree. The alert gives the rate at the cost-optimal thresholds beside the target.

Every alert names the goal, its target, the measured figure with a 95% interval where the figure
is a proportion (Wilson), and whether the measure itself may be biased: a metric over labeled rows
only (classification rates, labeled rates, costs) sees what the label policy labels — weighted by
its audit and propensity weights, but biased wherever labels are selective and not audited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from closedloop.base.times import iso_seconds
from closedloop.evaluation.bounds import wilson
from closedloop.orchestration.alerts import Alert
from closedloop.orchestration.metric_grammar import parse_metric
from closedloop.system.spec import System

__all__ = ["bound_alerts", "measure_note", "streak_alerts", "wilson"]

def measure_note(system: System, metric: str, custom: Mapping[str, Any] | None = None) -> str:
    """Whether ``metric``'s measure may be biased, in words."""
    kind = parse_metric(metric, system, custom).kind
    if kind in ("classify", "labeled", "cost"):
        return ("measured over labeled rows only (weighted by the label policy's audit and propensity weights): "
                "biased wherever labels are selective and not audited")
    if kind == "custom":
        return "a user metric: its bias is the metric's own"
    return "counted over every decision: not biased by which rows get labels"


def _interval(system: System, metric: str, value: float, n: float, custom: Mapping[str, Any] | None) -> str:
    """The figure's 95% interval in words (proportions and per-1,000 rates only)."""
    m = parse_metric(metric, system, custom)
    scale = 1.0 if m.kind in ("classify", "share", "exploration") else (m.scale if m.kind in ("labeled", "rate") else None)
    ci = None if scale is None else wilson(value / scale, n)
    if ci is None or scale is None:
        return "no interval for this measure"
    return f"95% interval {ci[0] * scale:.4g}–{ci[1] * scale:.4g} over {n:,.0f} rows"


def streak_alerts(system: System, points: Iterable[dict[str, Any]], patience: int, now_ns: int,
                  custom: Mapping[str, Any] | None = None) -> list[Alert]:
    """A ``goal_health`` alert for each goal of ``system`` missed in each of its last ``patience``
    measured windows (``points``: the goal series; a window not measurable does not count)."""
    by_goal: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p.get("met") is not None:
            by_goal.setdefault(p["name"], []).append(p)
    out = []
    for g in system.goals:
        series = sorted(by_goal.get(g.name, []), key=lambda p: p["start_ns"])
        streak = 0
        for p in reversed(series):
            if p["met"] is not False:
                break
            streak += 1
        if streak < patience:
            continue
        first, last = series[-streak], series[-1]
        out.append(Alert(
            "goal_health", g.name, last["value"], g.target,
            f"goal {g.name} ({g.metric}, {g.level} level) has been missed in each of its last {streak} "
            f"{g.cadence} windows since {first['window']}: {last['value']:.4g} in {last['window']} "
            f"({_interval(system, g.metric, float(last['value']), float(last.get('n') or 0), custom)}), target "
            f"{g.direction.replace('_', ' ')} {g.target:g}; {measure_note(system, g.metric, custom)}. The loop keeps "
            "the goal; if it cannot be met, change the goal, the costs or the metric",
            "none", first["window"], now_ns))
    return out


def _cost(b: Mapping[str, Any]) -> str:
    """The declared cost at the cost optimum, in words (empty when the entry has none)."""
    c = b.get("cost_optimum_per_1k")
    return "" if c is None else f" (expected cost {c:.4g} per 1,000 decisions)"


def bound_alerts(system: System, goals: Sequence[dict[str, Any]], candidate: str, now_ns: int,
                 custom: Mapping[str, Any] | None = None) -> list[Alert]:
    """A ``goal_health`` alert for each goal a candidate's thresholds could not keep on its
    training rows (``goals``: the lineage's ``thresholds.goals``, one entry per bound)."""
    out = []
    for b in goals:
        if b.get("feasible", True):
            continue
        value = b.get("value")
        figure = "undefined" if value is None else (
            f"{value:.4g} ({_interval(system, b['metric'], float(value), float(b.get('n') or 0), custom)})")
        out.append(Alert(
            "goal_health", str(b["goal"]), value, b["target"],
            f"goal {b['goal']} ({b['metric']} {b['direction'].replace('_', ' ')} {b['target']:g}) cannot be kept "
            f"together with the system's other goals by any thresholds of candidate {candidate} on its training rows: "
            f"the thresholds that minimize the declared costs{_cost(b)} give {figure}. The costs and the goal disagree; "
            f"{measure_note(system, b['metric'], custom)}. The candidate keeps the cost-optimal thresholds; change "
            "the goal or the costs", "none", iso_seconds(now_ns), now_ns))
    return out

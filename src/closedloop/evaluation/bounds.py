"""Goals as constraints on thresholds: a :class:`RateBound` is a classification rate at an
operating point that a goal bounds (``false_positive_rate@block ≤ 0.001``, ``recall@warn ≥ 0.9``).

A Thresholds experience flags a row at level ``A`` when its score is at or above ``A``'s
threshold (the levels are strictly decreasing, so that is ``A`` or any more forceful action) —
the same "flagged at the operating point ``A``" the goal tracker measures
(``closedloop.orchestration.goals``). So each bound restricts the one threshold of its level,
and the exact cost search of :func:`~closedloop.evaluation.costs.best_thresholds` stays exact
under bounds: a cut a bound forbids costs +∞ (:func:`~closedloop.evaluation.costs.constrained_thresholds`).

:func:`goal_bounds` reads the bounds a system's goals declare: those whose metric is one of
:data:`RATE_METRICS` at an action that is a level of the system's Thresholds experience. Other
goals (outcome rates, costs, shares) are not controlled by the thresholds alone and are not bounds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.experience.experiences import Thresholds

__all__ = ["RATE_METRICS", "RateBound", "goal_bounds", "goal_figures", "wilson"]

#: the rates a threshold controls, as the goal grammar names them (``<rate>@<action>``)
RATE_METRICS = ("false_positive_rate", "false_negative_rate", "recall", "precision")
_RATE = re.compile(rf"({'|'.join(RATE_METRICS)})@([A-Za-z][A-Za-z0-9_.\-:]*)")


@dataclass(frozen=True)
class RateBound:
    """``metric`` at the operating point ``action`` must be ``direction`` (``at_most`` /
    ``at_least``) ``target``; ``name`` is the goal's."""

    metric: str
    action: str
    target: float
    direction: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.metric not in RATE_METRICS:
            raise EvaluationError("metric", f"one of {list(RATE_METRICS)}", self.metric, "RateBound")
        if self.direction not in ("at_most", "at_least"):
            raise EvaluationError("direction", "'at_most' or 'at_least'", self.direction, "RateBound")
        t = self.target
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= float(t) <= 1.0:
            raise EvaluationError("target", "a rate in [0, 1]", t, "RateBound")

    def rates(self, pge: np.ndarray, nge: np.ndarray) -> np.ndarray:
        """The rate at every cut (``pge``, ``nge``: the weight of positives / negatives flagged
        at each cut; the first cut flags every row). NaN where it is undefined (no positives,
        no negatives, nothing flagged for precision)."""
        p_all, n_all = float(pge[0]), float(nge[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.metric == "false_positive_rate":
                return nge / n_all if n_all > 0 else np.full(nge.shape, np.nan)
            if self.metric == "precision":
                return np.where(pge + nge > 0, pge / (pge + nge), np.nan)
            recall = pge / p_all if p_all > 0 else np.full(pge.shape, np.nan)
            return recall if self.metric == "recall" else 1.0 - recall

    def allowed(self, pge: np.ndarray, nge: np.ndarray) -> np.ndarray:
        """Whether each cut keeps the bound (an undefined rate keeps it: there is nothing to miss)."""
        r = self.rates(pge, nge)
        ok = r <= self.target if self.direction == "at_most" else r >= self.target
        return np.where(np.isnan(r), True, ok)

    def describe(self) -> dict[str, Any]:
        return {"goal": self.name, "metric": f"{self.metric}@{self.action}", "target": float(self.target),
                "direction": self.direction}


def goal_bounds(system: Any) -> list[RateBound]:
    """The bounds ``system``'s goals put on its thresholds (none without a Thresholds experience)."""
    exp = system.experience
    if not isinstance(exp, Thresholds):
        return []
    levels = {a for a, _ in exp.levels}
    out = []
    for g in system.goals:
        m = _RATE.fullmatch(g.metric)
        if m is not None and m.group(2) in levels:
            out.append(RateBound(m.group(1), m.group(2), float(g.target), g.direction, g.name))
    return out


#: the 95% normal quantile
_Z = 1.959963984540054


def wilson(p: float, n: float) -> tuple[float, float] | None:
    """The 95% Wilson interval of a proportion ``p`` observed over ``n`` rows (None when n ≤ 0)."""
    if n <= 0 or not math.isfinite(p):
        return None
    z2 = _Z * _Z
    den = 1.0 + z2 / n
    mid = (p + z2 / (2 * n)) / den
    half = _Z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def goal_figures(bounds: Sequence[RateBound], confusion: Mapping[str, Mapping[str, float]], thresholds: Thresholds,
                 labels: Sequence[str]) -> list[dict[str, Any]]:
    """Each bound's rate in a confusion table (action → {true class → weighted count}, as
    :func:`~closedloop.evaluation.costs.confusion_at_thresholds` gives it), with its 95% Wilson
    interval over the rate's denominator and whether the target is met (None: undefined)."""
    neg, pos = labels[0], labels[1]
    acts = [a for a, _ in thresholds.levels]
    p_all = float(sum((confusion.get(a) or {}).get(pos, 0.0) for a in confusion))
    n_all = float(sum((confusion.get(a) or {}).get(neg, 0.0) for a in confusion))
    out = []
    for b in bounds:
        flagged = acts[: acts.index(b.action) + 1]
        tp = float(sum((confusion.get(a) or {}).get(pos, 0.0) for a in flagged))
        fp = float(sum((confusion.get(a) or {}).get(neg, 0.0) for a in flagged))
        rate = float(b.rates(np.array([p_all, tp]), np.array([n_all, fp]))[1])
        n = n_all if b.metric == "false_positive_rate" else (tp + fp if b.metric == "precision" else p_all)
        ci = None if math.isnan(rate) else wilson(rate, n)
        met = None if math.isnan(rate) else bool(rate <= b.target if b.direction == "at_most" else rate >= b.target)
        out.append({**b.describe(), "value": None if math.isnan(rate) else rate, "ci": None if ci is None else list(ci),
                    "n": n, "met": met})
    return out

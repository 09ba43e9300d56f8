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

:func:`goal_figures` reads each bound's rate off a confusion table, with a Wilson interval over its
(weighted) denominator; :func:`goal_intervals` (:func:`unit_sums`, :func:`bootstrap_rates`) gives
the rate with a percentile interval from a Poisson bootstrap by unit — the interval the evaluation
report's goals carry and the gate judges, right when rows carry audit or inverse-propensity
weights (a row of weight 20 is one draw, not twenty) and when the rows of a unit move together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.inputs import _labels, _scores, _weights
from closedloop.experience.experiences import Thresholds

__all__ = ["RATE_METRICS", "RateBound", "bootstrap_rates", "goal_bounds", "goal_figures", "goal_intervals", "unit_sums",
           "wilson"]

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

    def rate(self, p: Any, n: Any, tp: Any, fp: Any) -> np.ndarray:
        """The rate from the weight of the positives ``p``, the negatives ``n`` and the flagged
        positives ``tp`` / negatives ``fp`` (arrays, broadcast together). NaN where it is undefined
        (no positives, no negatives, nothing flagged for precision)."""
        p, n, tp, fp = (np.asarray(x, dtype=np.float64) for x in (p, n, tp, fp))
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.metric == "false_positive_rate":
                return np.where(n > 0, fp / n, np.nan)
            if self.metric == "precision":
                return np.where(tp + fp > 0, tp / (tp + fp), np.nan)
            recall = np.where(p > 0, tp / p, np.nan)
            return recall if self.metric == "recall" else 1.0 - recall

    def rates(self, pge: np.ndarray, nge: np.ndarray) -> np.ndarray:
        """The rate at every cut (``pge``, ``nge``: the weight of positives / negatives flagged
        at each cut; the first cut flags every row). NaN where it is undefined."""
        return self.rate(pge[0], nge[0], pge, nge)

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
    interval over the rate's denominator (``"interval": "wilson"``) and whether the target is met
    (None: undefined). The evaluation report replaces the interval by :func:`goal_intervals`'."""
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
                    "interval": "wilson", "n": n, "met": met})
    return out


#: the most Poisson draws held at once by :func:`bootstrap_rates` (resamples × units; 16 MB of floats)
_DRAWS_AT_ONCE = 1 << 21


def unit_sums(bounds: Sequence[RateBound], y: Any, s: Any, thresholds: Thresholds, *, weights: Any = None,
              units: Any = None, n_units: int | None = None) -> np.ndarray:
    """Per unit, the (weighted) counts every bound's rate is made of: a ``(n_units, 2 + 2k)`` array
    for ``k`` bounds whose columns are the positives, the negatives, then each bound's flagged
    positives, then each bound's flagged negatives. A row is flagged at the bound's action when its
    score is at or above that level's threshold (NaN: never), as :func:`goal_figures` counts it.
    ``units``: each row's unit as an integer in [0, ``n_units``) (None: every row its own unit)."""
    where = "goal_intervals"
    if not isinstance(thresholds, Thresholds):
        raise EvaluationError("thresholds", "a Thresholds experience", thresholds, where)
    yy = _labels(y, where).astype(np.float64)
    ss = _scores(s, "s", where, yy.size, allow_nan=True)
    w = _weights(weights, where, yy.size)
    ww = np.ones(yy.size) if w is None else w
    if units is None:
        uu, n_units = np.arange(yy.size), yy.size
    else:
        uu = np.asarray(units)
        if uu.shape != yy.shape or not np.issubdtype(uu.dtype, np.integer):
            raise EvaluationError("units", f"a 1-d array of integers as long as the labels ({yy.size} rows)",
                                  f"an array of {uu.dtype} of shape {uu.shape}", where)
        if n_units is None or isinstance(n_units, bool) or not isinstance(n_units, int | np.integer) or n_units < 1:
            raise EvaluationError("n_units", "an integer ≥ 1 (the number of units)", n_units, where)
        if uu.min() < 0 or uu.max() >= n_units:
            raise EvaluationError("units", f"unit codes in [0, {n_units})", int(uu.min() if uu.min() < 0 else uu.max()),
                                  where)
    cut = dict(thresholds.levels)
    for b in bounds:
        if b.action not in cut:
            raise EvaluationError("bounds", f"at one of the levels {list(cut)}", f"{b.metric}@{b.action}", where)
    pos, neg = ww * yy, ww * (1.0 - yy)
    flagged = [ss >= cut[b.action] for b in bounds]
    cols = [pos, neg] + [pos * f for f in flagged] + [neg * f for f in flagged]
    return np.stack([np.bincount(uu, weights=c, minlength=int(n_units)) for c in cols], axis=1)


def _rates_of(bounds: Sequence[RateBound], sums: np.ndarray) -> np.ndarray:
    """Each bound's rate (columns) from totals laid out as :func:`unit_sums`' columns (rows)."""
    k = len(bounds)
    return np.stack([b.rate(sums[:, 0], sums[:, 1], sums[:, 2 + i], sums[:, 2 + k + i]) for i, b in enumerate(bounds)],
                    axis=1)


def bootstrap_rates(bounds: Sequence[RateBound], sums: Sequence[np.ndarray], *, resamples: int, seed: int,
                    level: float = 0.95) -> list[list[dict[str, Any]]]:
    """Each bound's rate and its percentile interval from a Poisson bootstrap by unit, for each
    array of :func:`unit_sums` (one per bundle, over the same units): resample r gives every unit
    a Poisson(1) weight (:func:`~closedloop.evaluation.intervals._poisson1` from
    ``numpy.random.default_rng(seed)``, the scheme of
    :func:`~closedloop.evaluation.intervals.paired_intervals`), multiplied into its rows' weights,
    the same draws for every array. A resample's totals are the draws times the unit sums (one
    matrix product per chunk of resamples). Resamples where a rate is undefined are skipped; when
    more than half are, its interval is None.

    Returns, per array, per bound, ``{"value": rate | None, "ci": [low, high] | None}``.
    """
    from closedloop.evaluation.intervals import _percentile, _poisson1

    where = "goal_intervals"
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise EvaluationError("resamples", "an integer ≥ 1", resamples, where)
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise EvaluationError("level", "a number in (0, 1)", level, where)
    sums = [np.asarray(x, dtype=np.float64) for x in sums]
    if not sums or not bounds:
        return [[] for _ in sums]
    n_units, width = sums[0].shape[0], 2 + 2 * len(bounds)
    if any(x.shape != (n_units, width) for x in sums):
        raise EvaluationError("sums", f"arrays of shape ({n_units}, {width}) (unit_sums of the same units and bounds)",
                              [x.shape for x in sums], where)
    both = np.concatenate(sums, axis=1)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(int(resamples), _DRAWS_AT_ONCE // max(n_units, 1)))
    totals = np.empty((int(resamples), both.shape[1]))
    for r in range(0, int(resamples), chunk):
        c = min(chunk, int(resamples) - r)
        totals[r:r + c] = _poisson1(rng, c * n_units).reshape(c, n_units) @ both
    out = []
    for j, x in enumerate(sums):
        value = _rates_of(bounds, x.sum(axis=0, keepdims=True))[0]
        stats = _rates_of(bounds, totals[:, j * width:(j + 1) * width])
        out.append([{"value": None if math.isnan(v) else float(v),
                     "ci": None if math.isnan(v) else _percentile(stats[:, i], level)} for i, v in enumerate(value)])
    return out


def goal_intervals(bounds: Sequence[RateBound], y: Any, s: Any, thresholds: Thresholds, *, weights: Any = None,
                   units: Any = None, n_units: int | None = None, resamples: int = 200, seed: int = 0,
                   level: float = 0.95) -> list[dict[str, Any]]:
    """Each bound's rate at ``thresholds`` on labels ``y`` and scores ``s`` (weighted by
    ``weights``) and its percentile interval from a Poisson bootstrap by unit (``units``, as
    :func:`unit_sums`; ``resamples`` resamples from ``seed``): :func:`bootstrap_rates` of one
    bundle. Unlike a Wilson interval over the weighted count, a row of weight 20 counts as one
    draw, not twenty, and the rows of a unit move together."""
    return bootstrap_rates(bounds, [unit_sums(bounds, y, s, thresholds, weights=weights, units=units, n_units=n_units)],
                           resamples=resamples, seed=seed, level=level)[0]

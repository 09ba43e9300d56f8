"""``estimate_difference``: a candidate policy's value minus a baseline's on the same logged rounds,
with an interval from paired bootstrap draws.

Both policies are read on the same rounds, so their per-round columns (1, w, w r, and with a reward
model the direct, DR and Switch-DR terms) sit side by side in one (n, 2m) matrix; one bootstrap
resamples it (by unit when ``units`` are given, else by round) and every draw gives both values
from the same resampled rounds. The interval of the difference is the percentile interval of the
per-draw differences: the rounds' shared noise (the rewards that both estimates read) cancels, as
it does in a paired test. A candidate equal to the baseline differs by exactly 0 in every draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.blocks import logged
from closedloop.evaluation.ope.estimates import _check_n_bootstrap, _columns, _ess, _number, _statistic, _value, checked_parameters
from closedloop.evaluation.ope.intervals import bootstrap_sums, percentile_interval, unit_sums
from closedloop.evaluation.ope.support import SUPPORT_THRESHOLD, SUPPORT_TOLERANCE, SupportCheck, support_check

__all__ = ["Difference", "estimate_difference"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One estimator's candidate value minus the baseline's, with the paired interval; each side's
    value, effective sample size and support check."""

    name: str
    value: float
    low: float
    high: float
    interval: str  # "paired bootstrap by unit" or "paired bootstrap by round"
    n: int
    candidate: float
    baseline: float
    candidate_ess: float
    baseline_ess: float
    candidate_support: SupportCheck
    baseline_support: SupportCheck

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _number(self.value), "low": _number(self.low), "high": _number(self.high),
                "interval": self.interval, "n": self.n, "candidate": _number(self.candidate), "baseline": _number(self.baseline),
                "candidate_ess": _number(self.candidate_ess), "baseline_ess": _number(self.baseline_ess),
                "candidate_support": self.candidate_support.to_dict(), "baseline_support": self.baseline_support.to_dict()}


def estimate_difference(reward: Any, action: Any, pscore: Any, target_dist: Any, baseline_dist: Any, *, position: Any = None,
                        estimated_rewards_by_reg_model: Any = None, units: Any = None, estimators: Any = None,
                        alpha: float = 0.05, n_bootstrap: int = 1000, seed: int = 0, lambda_: float = np.inf,
                        support_threshold: float = SUPPORT_THRESHOLD,
                        support_tolerance: float = SUPPORT_TOLERANCE) -> dict[str, Difference]:
    """Every requested estimator's (default: IPS and SNIPS, and DM, DR, SNDR and Switch-DR with a reward
    model's predictions) value of ``target_dist`` minus its value of ``baseline_dist`` on the same
    rounds, as name → :class:`Difference`; the arguments as :func:`~closedloop.evaluation.ope.estimate`'s
    (``baseline_dist``: the baseline's action distribution, of ``target_dist``'s shape)."""
    where = "estimate_difference"
    names, alpha, lam, threshold, tolerance = checked_parameters(
        where, estimators, estimated_rewards_by_reg_model is not None, alpha, lambda_, support_threshold, support_tolerance)
    _check_n_bootstrap(n_bootstrap, where)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise EvaluationError("seed", "an int", seed, where)
    shape_t, shape_b = np.shape(target_dist), np.shape(baseline_dist)
    if shape_t != shape_b:
        raise EvaluationError("baseline_dist", f"an array of target_dist's shape {shape_t}", f"an array of shape {shape_b}", where)
    model = estimated_rewards_by_reg_model
    cand = logged(where, reward, action, pscore, target_dist, position, model)
    base = logged(where, reward, action, pscore, baseline_dist, position, model)
    ct, cb = _columns(cand, lam), _columns(base, lam)
    m = ct.shape[1]
    draws = bootstrap_sums(unit_sums(np.concatenate([ct, cb], axis=1), units, where), n_bootstrap, int(seed))
    how = "paired bootstrap by unit" if units is not None else "paired bootstrap by round"
    sup_t, sup_b = support_check(cand, threshold, tolerance), support_check(base, threshold, tolerance)
    ess_t, ess_b = _ess(cand.weights), _ess(base.weights)
    out: dict[str, Difference] = {}
    for name in names:
        vt, vb = _value(name, ct), _value(name, cb)
        with np.errstate(invalid="ignore"):
            per_draw = _statistic(name, draws[:, :m]) - _statistic(name, draws[:, m:])
        low, high = percentile_interval(per_draw, alpha)
        value = vt - vb if math.isfinite(vt) and math.isfinite(vb) else float("nan")
        out[name] = Difference(name, value, low, high, how, cand.n, vt, vb, ess_t, ess_b, sup_t, sup_b)
    return out

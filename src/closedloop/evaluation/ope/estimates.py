"""``estimate``: every estimator's value with a 95 % interval, the effective sample size and the
support check, from inputs checked once.

The interval: with ``units`` given, a percentile bootstrap resampling units ("bootstrap by unit");
without, the normal interval of the mean of per-round terms for the estimators that are such a
mean — IPS, DM, DR, Switch-DR ("analytic (normal)") — and a bootstrap resampling rounds for the
self-normalized ones, SNIPS and SNDR ("bootstrap by round").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.blocks import Logged, logged
from closedloop.evaluation.ope.inputs import Floats
from closedloop.evaluation.ope.intervals import bootstrap_sums, normal_interval, percentile_interval, unit_sums
from closedloop.evaluation.ope.point import (
    check_lambda,
    ips_terms,
    model_parts,
)
from closedloop.evaluation.ope.support import SUPPORT_THRESHOLD, SUPPORT_TOLERANCE, SupportCheck, check_share_parameter, support_check

ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr", "switch_dr")
NEED_MODEL = frozenset({"dm", "dr", "sndr", "switch_dr"})
MEAN_OF_TERMS = frozenset({"ips", "dm", "dr", "switch_dr"})

# the per-round columns every estimator is a ratio of sums of
ONE, W, WR, DM, DR, SWITCH, W_RESIDUAL = range(7)


@dataclass(frozen=True, slots=True)
class Estimate:
    """One estimator's value of the target policy, its interval and how it was made."""

    name: str
    value: float
    low: float
    high: float
    interval: str  # "bootstrap by unit", "bootstrap by round" or "analytic (normal)"
    ess: float  # (Σw)² / Σw² of the importance weights
    n: int
    support: SupportCheck
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _number(self.value), "low": _number(self.low), "high": _number(self.high),
                "interval": self.interval, "ess": _number(self.ess), "n": self.n, "support": self.support.to_dict(),
                "warning": self.warning}


def _number(x: float) -> float | None:
    """JSON has no NaN: an undefined figure is null."""
    return x if math.isfinite(x) else None


def estimate(reward: Any, action: Any, pscore: Any, action_dist: Any, *, position: Any = None,
             estimated_rewards_by_reg_model: Any = None, units: Any = None, estimators: Any = None,
             alpha: float = 0.05, n_bootstrap: int = 1000, seed: int = 0, lambda_: float = np.inf,
             support_threshold: float = SUPPORT_THRESHOLD, support_tolerance: float = SUPPORT_TOLERANCE) -> dict[str, Estimate]:
    """Every requested estimator (default: IPS and SNIPS, and DM, DR, SNDR and Switch-DR when a
    reward model's predictions are given) as name → :class:`Estimate`."""
    where = "estimate"
    names, alpha, lam, threshold, tolerance = checked_parameters(
        where, estimators, estimated_rewards_by_reg_model is not None, alpha, lambda_, support_threshold, support_tolerance)
    data = logged(where, reward, action, pscore, action_dist, position, estimated_rewards_by_reg_model)
    by_unit = units is not None
    bootstrapped = by_unit or any(name not in MEAN_OF_TERMS for name in names)
    if bootstrapped:
        _check_n_bootstrap(n_bootstrap, where)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise EvaluationError("seed", "an int", seed, where)
    columns = _columns(data, lam)
    values = {name: _value(name, columns) for name in names}
    draws = bootstrap_sums(unit_sums(columns, units, where), n_bootstrap, int(seed)) if bootstrapped else None
    support = support_check(data, threshold, tolerance)
    ess = _ess(data.weights)
    warning = None if support.passed else f"the support check failed: {support.detail}; the estimate extrapolates where the log is silent"
    out: dict[str, Estimate] = {}
    for name in names:
        low, high, how = _interval(name, columns, draws, alpha, by_unit)
        out[name] = Estimate(name, values[name], low, high, how, ess, data.n, support, warning)
    return out


def point_values(reward: Any, action: Any, pscore: Any, action_dist: Any, *, position: Any = None,
                 estimated_rewards_by_reg_model: Any = None, estimators: Any = None,
                 lambda_: float = np.inf) -> dict[str, float]:
    """Every requested estimator's point value (as :func:`estimate` gives it: the inputs checked
    once, the target and the reward model read once for all of them), without the intervals, the
    effective sample size or the support check — name → float."""
    where = "point_values"
    names = _names(estimators, estimated_rewards_by_reg_model is not None, where)
    lam = check_lambda(lambda_, where)
    columns = _columns(logged(where, reward, action, pscore, action_dist, position, estimated_rewards_by_reg_model), lam)
    return {name: _value(name, columns) for name in names}


def _interval(name: str, columns: Floats, draws: Floats | None, alpha: float, by_unit: bool) -> tuple[float, float, str]:
    if draws is not None and (by_unit or name not in MEAN_OF_TERMS):
        low, high = percentile_interval(_statistic(name, draws), alpha)
        return low, high, "bootstrap by unit" if by_unit else "bootstrap by round"
    low, high = normal_interval(_terms(name, columns), alpha)
    return low, high, "analytic (normal)"


def _names(estimators: Any, has_model: bool, where: str) -> tuple[str, ...]:
    if estimators is None:
        return ESTIMATORS if has_model else ("ips", "snips")
    names = (estimators,) if isinstance(estimators, str) else tuple(estimators)
    for name in names:
        if name not in ESTIMATORS:
            raise EvaluationError("estimators", f"names among {list(ESTIMATORS)}", name, where)
        if name in NEED_MODEL and not has_model:
            rule = f"given for the estimator {name!r} (it needs a reward model)"
            raise EvaluationError("estimated_rewards_by_reg_model", rule, None, where)
    if not names:
        raise EvaluationError("estimators", f"at least one of {list(ESTIMATORS)}", list(names), where)
    return tuple(dict.fromkeys(names))


def checked_parameters(where: str, estimators: Any, has_model: bool, alpha: Any, lambda_: Any, support_threshold: Any,
                       support_tolerance: Any) -> tuple[tuple[str, ...], float, float, float, float]:
    """The parameters every entry point shares, checked: (estimator names, alpha, lambda_, the
    support check's threshold and tolerance)."""
    names = _names(estimators, has_model, where)
    alpha = _check_alpha(alpha, where)
    lam = check_lambda(lambda_, where)
    threshold = check_share_parameter(support_threshold, "support_threshold", where)
    tolerance = check_share_parameter(support_tolerance, "support_tolerance", where)
    return names, alpha, lam, threshold, tolerance


def _check_alpha(alpha: Any, where: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating) or not 0.0 < alpha < 1.0:
        raise EvaluationError("alpha", "a number in (0, 1) (0.05: a 95 % interval)", alpha, where)
    return float(alpha)


def _check_n_bootstrap(n_bootstrap: Any, where: str) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 1:
        raise EvaluationError("n_bootstrap", "an int ≥ 1 (the bootstrap's draws)", n_bootstrap, where)


def _columns(data: Logged, lambda_: float) -> Floats:
    """The per-round columns (n, 7 or 3): 1, w, w r, and with a model q̂(x, π_e), its DR and Switch-DR
    terms, w (r − q̂(x, a))."""
    w = data.weights
    base = [np.ones(data.n), w, ips_terms(data)]
    if data.direct is None:
        return np.stack(base, axis=1)
    direct, residual = model_parts(data)
    w_residual = w * residual
    switch = direct + np.where(w <= lambda_, w, 0.0) * residual
    return np.stack([*base, direct, direct + w_residual, switch, w_residual], axis=1)


def _value(name: str, columns: Floats) -> float:
    """The point value from the per-round columns, in obp's order of operations (SNIPS:
    mean(w r / mean(w)); SNDR: mean(q̂(x, π_e) + w (r − q̂) / mean(w)); the others: the mean of their terms)."""
    if name == "snips":
        return _self_normalized(columns, None)
    if name == "sndr":
        return _self_normalized(columns, DM)
    return float(_terms(name, columns).mean())


def _self_normalized(columns: Floats, direct: int | None) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        if direct is None:
            return float((columns[:, WR] / columns[:, W].mean()).mean())
        return float((columns[:, direct] + columns[:, W_RESIDUAL] / columns[:, W].mean()).mean())


def _terms(name: str, columns: Floats) -> Floats:
    return columns[:, {"ips": WR, "dm": DM, "dr": DR, "switch_dr": SWITCH}[name]]


def _statistic(name: str, sums: Floats) -> Floats:
    """The estimator's value from column sums (one row per bootstrap draw)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "snips":
            return sums[:, WR] / sums[:, W]
        if name == "sndr":
            return sums[:, DM] / sums[:, ONE] + sums[:, W_RESIDUAL] / sums[:, W]
        return sums[:, {"ips": WR, "dm": DM, "dr": DR, "switch_dr": SWITCH}[name]] / sums[:, ONE]


def _ess(w: Floats) -> float:
    """(Σw)² / Σw²: how many rounds of on-policy data the weighted log is worth; 0 when every weight is 0."""
    square = float(np.dot(w, w))
    return float(w.sum()) ** 2 / square if square > 0 else 0.0

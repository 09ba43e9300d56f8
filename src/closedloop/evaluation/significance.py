"""Uncertainty and significance: the Poisson bootstrap interval of any metric, the
Benjamini–Hochberg correction and the analytic tests of "a slice is worse than the rest"
(error rate: a two-proportion z-test; AUC: Hanley–McNeil standard errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.inputs import _dot, _labels, _mean, _scores, _weights
from closedloop.evaluation.ordering import _auc_from_groups, _group_sums, _sort_groups
from closedloop.evaluation.quality import auc


def poisson_bootstrap(stat_fn: Callable[..., float], *arrays: Any, units: Any = None,
                      weights: Any = None, n: int = 200, seed: int = 0, level: float = 0.95
                      ) -> tuple[float, float]:
    """A percentile bootstrap interval (95% by default) of ``stat_fn(*arrays, weights=w)``.

    Each resample gives every row — or, with ``units``, every unit (all of its rows together) — a
    Poisson(1) weight, multiplied into ``weights`` when given; ``stat_fn`` must accept the
    ``weights`` keyword (every metric here does). Resamples where the statistic is undefined
    (it raises :class:`EvaluationError`, e.g. one class only) are skipped; if more than half
    are, the interval is refused.
    """
    where = "poisson_bootstrap"
    if not callable(stat_fn):
        raise EvaluationError("stat_fn", "a callable", stat_fn, where)
    if not arrays:
        raise EvaluationError("arrays", "at least one array", "none", where)
    rows = np.asarray(arrays[0]).shape[0] if np.ndim(arrays[0]) else 0
    if rows == 0:
        raise EvaluationError("arrays", "non-empty", "no rows", where)
    for a in arrays[1:]:
        if np.ndim(a) == 0 or np.asarray(a).shape[0] != rows:
            raise EvaluationError("arrays", f"all of the same length ({rows} rows)", np.shape(a), where)
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise EvaluationError("n", "an integer ≥ 10", n, where)
    if not (isinstance(level, float) and 0 < level < 1):
        raise EvaluationError("level", "a number in (0, 1)", level, where)
    base = _weights(weights, where, rows)
    inverse = None
    groups = rows
    if units is not None:
        uarr = np.asarray(units)
        if uarr.ndim != 1 or uarr.size != rows:
            raise EvaluationError("units", f"a 1-d array as long as the data ({rows} rows)", uarr.shape, where)
        _, inverse = np.unique(uarr, return_inverse=True)
        groups = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    fast = None
    if stat_fn is auc and len(arrays) == 2:
        # AUC: sort once, then each resample only re-sums the weights of each run of tied scores
        yy = _labels(arrays[0], "auc")
        order, starts, _ = _sort_groups(_scores(arrays[1], "s", "auc", yy.size))
        fast = (yy[order], order, starts)
    stats: list[float] = []
    for _ in range(n):
        draw = rng.poisson(1.0, groups).astype(np.float64)
        w = draw if inverse is None else draw[inverse]
        if base is not None:
            w = w * base
        if not w.sum() > 0:
            continue
        try:
            if fast is not None:
                ys, order, starts = fast
                stats.append(_auc_from_groups(*_group_sums(ys, w[order], starts), "auc"))
            else:
                stats.append(float(stat_fn(*arrays, weights=w)))
        except EvaluationError:
            continue
    if len(stats) < n / 2:
        raise EvaluationError("stat_fn", "defined on most resamples", f"{len(stats)} of {n} defined", where)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(stats), [tail, 1.0 - tail])
    return float(low), float(high)


def benjamini_hochberg(pvalues: Any, alpha: float = 0.05) -> np.ndarray:
    """The Benjamini–Hochberg step-up procedure: a boolean mask of the hypotheses rejected at
    false discovery rate ``alpha`` (the k smallest p-values, k the largest rank with
    p₍ₖ₎ ≤ k·alpha/m)."""
    where = "benjamini_hochberg"
    try:
        p = np.asarray(pvalues, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError("pvalues", "an array of numbers in [0, 1]", pvalues, where) from exc
    if p.ndim != 1:
        raise EvaluationError("pvalues", "a 1-d array", p.shape, where)
    bad = np.isnan(p) | (p < 0) | (p > 1)
    if bad.any():
        raise EvaluationError("pvalues", "numbers in [0, 1]", p[bad][0].item(), where)
    if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise EvaluationError("alpha", "a number in (0, 1)", alpha, where)
    m = p.size
    out = np.zeros(m, dtype=bool)
    if m == 0:
        return out
    order = np.argsort(p, kind="stable")
    below = p[order] <= alpha * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.flatnonzero(below)[-1])
        out[order[: k + 1]] = True
    return out


def _normal_quantile(q: float) -> float:
    """The standard normal quantile (scipy, which scikit-learn brings)."""
    from scipy.special import ndtri

    return float(ndtri(q))


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _hanley_mcneil_var(a: float, n_pos: float, n_neg: float) -> float:
    q1 = a / (2.0 - a)
    q2 = 2.0 * a * a / (1.0 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)


def _kish(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / _dot(w, w)) if w.size else 0.0


def slice_vs_rest(y: Any, s: Any, slice_mask: Any, metric: str = "auc", weights: Any = None,
                  threshold: float = 0.5) -> float:
    """A one-sided p-value for "the slice is worse than the rest of the data".

    - ``metric="error"``: the error rate at ``threshold`` (predicted positive when s ≥ threshold),
      a two-proportion z-test with a pooled rate (H₁: the slice's error rate is higher).
    - ``metric="auc"``: z = (AUC_rest − AUC_slice) / √(SE²_slice + SE²_rest) with the
      Hanley–McNeil standard errors (the two groups are disjoint, so independent); H₁: the
      slice's AUC is lower. Needs both classes in the slice and in the rest.

    Both are analytic (no resampling), hence fast enough for every slice of a report. With
    ``weights`` the rates and AUCs are weighted and the sample sizes are Kish's effective sizes.
    """
    where = "slice_vs_rest"
    if metric not in ("auc", "error"):
        raise EvaluationError("metric", "'auc' or 'error'", metric, where)
    yy = _labels(y, where)
    ss = _scores(s, "s", where, yy.size)
    w = _weights(weights, where, yy.size)
    mask = np.asarray(slice_mask)
    if mask.dtype != bool or mask.shape != yy.shape:
        raise EvaluationError("slice_mask", f"a boolean array as long as the labels ({yy.size} rows)",
                              f"dtype {mask.dtype}, shape {mask.shape}", where)
    if mask.all() or not mask.any():
        raise EvaluationError("slice_mask", "to select some rows but not all", f"{int(mask.sum())} of {mask.size}", where)
    ww = np.ones(yy.size) if w is None else w
    if metric == "error":
        err = ((ss >= threshold).astype(np.int8) != yy).astype(np.float64)
        n1, n2 = _kish(ww[mask]), _kish(ww[~mask])
        if not (ww[mask].sum() > 0 and ww[~mask].sum() > 0):
            raise EvaluationError("weights", "positive in the slice and in the rest", "a zero total", where)
        e1, e2 = _mean(err[mask], ww[mask]), _mean(err[~mask], ww[~mask])
        return p_error_worse(e1, n1, e2, n2)
    parts = []
    for sel, name in ((mask, "the slice"), (~mask, "the rest")):
        ys, ws = yy[sel], ww[sel]
        npos, nneg = _kish(ws[ys == 1]), _kish(ws[ys == 0])
        if not (npos > 0 and nneg > 0):
            raise EvaluationError("y", f"both classes in {name}", f"{npos:g} positive and {nneg:g} negative", where)
        parts.append((auc(ys, ss[sel], weights=ws), npos, nneg))
    (a1, p1, n1), (a2, p2, n2) = parts
    return p_auc_worse(a1, p1, n1, a2, p2, n2)


def p_error_worse(e1: float, n1: float, e2: float, n2: float) -> float:
    """One-sided p-value that error rate ``e1`` (of ``n1`` rows) is higher than ``e2`` (of
    ``n2``): a two-proportion z-test with a pooled rate (``slice_vs_rest(metric="error")``)."""
    pooled = (e1 * n1 + e2 * n2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.5 if e1 == e2 else (0.0 if e1 > e2 else 1.0)
    return _normal_sf((e1 - e2) / math.sqrt(var))


def p_auc_worse(a1: float, pos1: float, neg1: float, a2: float, pos2: float, neg2: float) -> float:
    """One-sided p-value that AUC ``a1`` (on ``pos1`` positives, ``neg1`` negatives) is lower than
    the independent ``a2``: Hanley–McNeil standard errors (``slice_vs_rest(metric="auc")``)."""
    var = _hanley_mcneil_var(a1, pos1, neg1) + _hanley_mcneil_var(a2, pos2, neg2)
    if var <= 0:
        return 0.5 if a1 == a2 else (0.0 if a1 < a2 else 1.0)
    return _normal_sf((a2 - a1) / math.sqrt(var))

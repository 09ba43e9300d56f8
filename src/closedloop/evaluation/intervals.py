"""The report's intervals: each slice value's AUC interval (DeLong's variance clustered by unit,
:func:`slice_intervals`) and the paired Poisson bootstrap by unit of the differences between
bundles (:func:`paired_intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.evaluation import metrics as M
from closedloop.evaluation.measuring import Measured

__all__ = ["paired_intervals", "slice_intervals"]


def _percentile(stats: np.ndarray, level: float = 0.95) -> list[float] | None:
    """A percentile interval over the defined (finite) resamples; None when fewer than half are."""
    ok = stats[np.isfinite(stats)]
    if ok.size < stats.size / 2 or ok.size == 0:
        return None
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


#: P(K ≤ k) for K ~ Poisson(1), k = 0 … 24 (beyond: < 1e-25).
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(25)])

#: The inverse of that distribution function at the midpoints of 2**16 equal cells of [0, 1): a
#: uniform 16-bit integer looks up a Poisson(1) draw. Each probability is off by less than 2**-16
#: and draws stop at 8 (P(K > 8) ≈ 1e-6) — nothing a 95% bootstrap interval can see.
_POISSON1_TABLE = np.searchsorted(_POISSON1_CDF, (np.arange(2**16) + 0.5) / 2**16, side="right").astype(np.float64)


def _poisson1(rng: np.random.Generator, size: int) -> np.ndarray:
    """Poisson(1) draws by looking a uniform 16-bit integer up in the tabulated inverse
    distribution function (:data:`_POISSON1_TABLE`): the distribution of ``rng.poisson(1.0, size)``
    to within 2**-16 per value, and about eight times faster than inverting the distribution
    function on uniform floats (docs/performance.md, "Evaluation")."""
    return _POISSON1_TABLE[rng.integers(0, 2**16, size, dtype=np.uint16)]


def slice_intervals(measured: Measured, units: Any, level: float = 0.95) -> list[list[list[float] | None]]:
    """Each slice value's AUC interval (per field, per value: [low, high] or None): DeLong's
    variance with rows clustered by unit (:meth:`~closedloop.evaluation.metrics.Partition.auc_intervals`),
    one pass over the rows per field — no resampling."""
    out = []
    for part in measured.parts:
        lo, hi = part.auc_intervals(units, level)
        out.append([[float(a), float(b)] if math.isfinite(a) else None for a, b in zip(lo, hi, strict=True)])
    return out


def _minus(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
    """``x - y``, or None when either is unknown."""
    return None if x is None or y is None else x - y


def paired_intervals(measured: Sequence[Measured], pairs: Sequence[tuple[int, int]], units: np.ndarray,
                     n_units: int, bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """For each ``(a, b)`` pair of bundles, intervals of the differences in AUC and expected cost
    (b − a) from one paired Poisson bootstrap by unit: resample r gives every unit a Poisson(1)
    weight (:func:`_poisson1` from ``numpy.random.default_rng(seed)``), the same draws for every
    pair and both sides of each; ``units`` are each row's unit as an integer code in
    [0, ``n_units``). Each AUC reuses its bundle's scores sorted once
    (:class:`~closedloop.evaluation.metrics.Ranked`), each cost the rows' precomputed costs, so a
    resample costs a few vectorized passes over the rows.

    Returns, per pair, ``{"auc_diff_ci", "cost_diff_ci"}`` (cost None without costs).
    """
    if not pairs:
        return []
    rng = np.random.default_rng(seed)
    # int32 indices when they fit: numpy's take is about twice as fast with them
    itype = np.int32 if n_units < 2**31 else np.int64
    units = np.asarray(units).astype(itype, copy=False)
    need = sorted({i for pr in pairs for i in pr})
    row_w = measured[need[0]].weights  # the same rows (and weights) for every bundle
    rank_units = {i: units[measured[i].ranked.order] for i in need}
    d_auc = np.empty((bootstrap, len(pairs)))
    d_cost = np.empty((bootstrap, len(pairs)))
    cost_diff = [_minus(measured[b].row_cost, measured[a].row_cost) for a, b in pairs]
    for r in range(bootstrap):
        draw = _poisson1(rng, n_units)
        aucs = {}
        for i in need:
            try:
                aucs[i] = measured[i].ranked.resampled_auc(np.take(draw, rank_units[i]))
            except M.EvaluationError:
                aucs[i] = math.nan
        w = np.take(draw, units)
        if row_w is not None:
            w = w * row_w
        total = float(w.sum())
        for q, (a, b) in enumerate(pairs):
            d_auc[r, q] = aucs[b] - aucs[a]
            cd = cost_diff[q]
            d_cost[r, q] = 1000.0 * M._dot(w, cd) / total if cd is not None and total > 0 else math.nan
    return [{"auc_diff_ci": _percentile(d_auc[:, q]),
             "cost_diff_ci": None if cost_diff[q] is None else _percentile(d_cost[:, q])}
            for q in range(len(pairs))]

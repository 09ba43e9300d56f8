"""Intervals for the estimators: a percentile bootstrap drawn as a matrix, and the normal interval.

Every estimator here is a ratio of sums of per-round columns (IPS: Σ w r / n, SNIPS: Σ w r / Σ w,
SNDR: Σ dm / n + Σ w (r − q̂) / Σ w, …). A bootstrap draw is then a vector of resampling counts
per unit times the per-unit column sums: ``n_bootstrap`` draws are one (B, units) count matrix
times a (units, columns) matrix, chunked to bound memory — no Python loop per draw. Units are
resampled with replacement (multinomial counts, seeded): all the rounds of a drawn unit come
together, so rounds correlated within a unit (one user's visits) widen the interval as they should.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.inputs import Floats, as_1d

# counts drawn per chunk: a (chunk, units) matrix of at most this many entries
CHUNK_ENTRIES = 2_000_000

Statistic = Callable[[Floats], Floats]  # column sums (…, m) → the estimator's value(s)


def unit_sums(columns: Floats, units: Any, where: str) -> Floats:
    """Sum the per-round ``columns`` (n, m) within each unit: (units, m). ``units`` None: every
    round its own unit (the columns as they are)."""
    if units is None:
        return columns
    arr = as_1d(units, "units", where, columns.shape[0])
    try:
        _, inverse = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise EvaluationError("units", "an array of comparable unit ids (all ints or all strings)",
                              f"an array of dtype {arr.dtype}", where) from exc
    inverse = inverse.reshape(-1)
    n_units = int(inverse.max()) + 1
    return np.stack([np.bincount(inverse, weights=columns[:, j], minlength=n_units) for j in range(columns.shape[1])], axis=1)


def bootstrap_sums(sums: Floats, n_bootstrap: int, seed: int) -> Floats:
    """``n_bootstrap`` resamples of the units (with replacement): the column sums of each, (B, m)."""
    n_units = sums.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, CHUNK_ENTRIES // max(n_units, 1)))
    out = np.empty((n_bootstrap, sums.shape[1]))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        drawn = rng.integers(0, n_units, size=(b, n_units), dtype=np.int64)
        drawn += (np.arange(b, dtype=np.int64) * n_units)[:, None]  # draw j counts in [j·units, (j+1)·units)
        counts = np.bincount(drawn.ravel(), minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        out[start:start + b] = counts @ sums  # a float product: BLAS
    return out


def percentile_interval(draws: Floats, alpha: float) -> tuple[float, float]:
    """The (alpha/2, 1 − alpha/2) quantiles of the bootstrap values (draws with an undefined value,
    e.g. SNIPS on a resample whose weights are all 0, left out); NaN when none is defined."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def normal_interval(terms: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    """mean ± z · sd / √n of per-round terms (sd with n − 1); NaN with a single round."""
    n = terms.shape[0]
    if n < 2:
        return float("nan"), float("nan")
    mean = float(terms.mean())
    half = NormalDist().inv_cdf(1 - alpha / 2) * float(terms.std(ddof=1)) / np.sqrt(n)
    return float(mean - half), float(mean + half)

"""The checks every metric runs on its input, and two numeric helpers the metrics share.

:func:`_labels`, :func:`_scores` and :func:`_weights` validate labels (0/1), scores and sample
weights and raise :class:`~closedloop.errors.EvaluationError` naming the parameter, the rule and
the value (the conventions of :mod:`closedloop.evaluation.metrics`); :func:`_dot` and
:func:`_mean` are the BLAS-free sums the metrics are made of.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.errors import EvaluationError


def _labels(y: Any, where: str, n: int | None = None, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise EvaluationError(name, "a 1-d array of 0/1 labels", f"an array of shape {arr.shape}", where)
    if arr.size == 0:
        raise EvaluationError(name, "non-empty", "no rows", where)
    if n is not None and arr.size != n:
        raise EvaluationError(name, f"as long as the scores ({n} rows)", f"{arr.size} rows", where)
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise EvaluationError(name, "labels 0 or 1", f"labels of dtype {arr.dtype}", where)
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        raise EvaluationError(name, "labels 0 or 1", arr[bad][0].item(), where)
    return arr.astype(np.int8)


def _scores(s: Any, name: str, where: str, n: int, *, allow_nan: bool = False,
            unit: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(s, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(name, "an array of numbers", s, where) from exc
    if arr.ndim != 1 or arr.size != n:
        raise EvaluationError(name, f"a 1-d array as long as the labels ({n} rows)",
                              f"an array of shape {arr.shape}", where)
    if not allow_nan and np.isnan(arr).any():
        row = int(np.flatnonzero(np.isnan(arr))[0])
        raise EvaluationError(name, "free of NaN", f"NaN at row {row}", where)
    if unit:
        out = (arr < 0) | (arr > 1)
        if out.any():
            raise EvaluationError(name, "probabilities in [0, 1]", arr[out][0].item(), where)
    return arr


def _weights(weights: Any, where: str, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError("weights", "an array of numbers ≥ 0", weights, where) from exc
    if w.ndim != 1 or w.size != n:
        raise EvaluationError("weights", f"a 1-d array as long as the labels ({n} rows)",
                              f"an array of shape {w.shape}", where)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise EvaluationError("weights", "finite numbers ≥ 0", w[bad][0].item(), where)
    if not w.sum() > 0:
        raise EvaluationError("weights", "not all zero", "a total weight of 0", where)
    return w


def _both_classes(pos: float, neg: float, where: str) -> None:
    if not (pos > 0 and neg > 0):
        raise EvaluationError("y", "both classes (0 and 1, with weight > 0)",
                              f"{pos:g} positive and {neg:g} negative (weighted)", where)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b without BLAS: numpy's ``dot`` hands long vectors to a multi-threaded BLAS, whose
    threads cost far more than the arithmetic when the machine is busy (or in a loop)."""
    return float(np.add.reduce(a * b))


def _mean(x: np.ndarray, w: np.ndarray | None) -> float:
    if w is None:
        return float(np.mean(x))
    return _dot(x, w) / float(w.sum())

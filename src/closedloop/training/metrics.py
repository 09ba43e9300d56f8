"""Small, dependency-free metrics for binary scores (used to describe a training run).

They take the positive-class labels as 0/1 and the scores as probabilities (``log_loss``) or any
ranking score (``roc_auc``). Inputs are validated and refused with named errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.errors import IntelligenceError

__all__ = ["log_loss", "roc_auc"]

_EPS = 1e-15


def _pair(y: Any, p: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise IntelligenceError(
            f"{owner} needs labels and scores of the same length (1-d). Got shapes "
            f"{y.shape} and {p.shape} instead."
        )
    if y.size == 0:
        raise IntelligenceError(f"{owner} needs at least one example. Got none instead.")
    if not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][0]
        raise IntelligenceError(f"The labels given to {owner} must be 0 or 1. Got {bad!r} instead.")
    if np.isnan(p).any():
        row = int(np.flatnonzero(np.isnan(p))[0])
        raise IntelligenceError(f"The scores given to {owner} must not be NaN. Got NaN at row {row}.")
    return y.astype(np.int64), p


def log_loss(y: Any, p: Any) -> float:
    """Mean negative log-likelihood of 0/1 labels ``y`` under probabilities ``p`` (clipped to
    [1e-15, 1 − 1e-15])."""
    y, p = _pair(y, p, "log_loss")
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return float(-np.mean(np.where(y == 1, np.log(q), np.log1p(-q))))


def roc_auc(y: Any, p: Any) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half). Needs both classes."""
    y, p = _pair(y, p, "roc_auc")
    pos = int(y.sum())
    neg = int(y.size - pos)
    if pos == 0 or neg == 0:
        raise IntelligenceError(
            f"roc_auc needs both classes among the labels. Got {pos} positive(s) and {neg} negative(s)."
        )
    order = np.argsort(p, kind="mergesort")
    s = p[order]
    # average ranks (1-based) over runs of tied scores
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    rank_sum = float(ranks[y == 1].sum())
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)

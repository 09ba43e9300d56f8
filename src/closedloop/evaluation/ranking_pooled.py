"""A ranking bundle's figures over the logged rows pooled (every shown slot, whatever its decision):
the AUC of its scores for rewarded vs unrewarded slots and, when its score reads as a probability
of reward, the log loss and a calibration table.

These are the figures that still speak when a decision has one logged slot (the Open Bandit
Dataset's sample: each row its own impression), where no ranking within a decision exists to
measure. The score reads as a probability when every reward is 0 or 1 and every score is in
[0, 1]. Intervals: a Poisson bootstrap by unit, as :mod:`~closedloop.evaluation.ranking_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.intervals import _percentile, _poisson1
from closedloop.evaluation.ordering import Ranked
from closedloop.evaluation.quality import ece, reliability

__all__ = ["CALIBRATION_BINS", "is_probability", "pooled", "pooled_auc_intervals"]

#: Equal-width bins of the calibration table.
CALIBRATION_BINS = 10
_EPS = 1e-15


def is_probability(scores: np.ndarray, reward: np.ndarray) -> bool:
    """Does the score read as a probability of reward: 0/1 rewards and every score in [0, 1]?"""
    return bool(np.isin(reward, (0.0, 1.0)).all() and np.isfinite(scores).all()
                and (scores >= 0.0).all() and (scores <= 1.0).all())


def row_losses(scores: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """Each row's log loss (probabilities clipped to [1e-15, 1 − 1e-15])."""
    q = np.clip(scores, _EPS, 1.0 - _EPS)
    return -np.where(reward > 0, np.log(q), np.log1p(-q))


def ranked_rows(scores: np.ndarray, reward: np.ndarray) -> Ranked | None:
    """The rows sorted once for their AUC; None when it is undefined (one class, or a non-finite score)."""
    y = (reward > 0).astype(np.int64)
    if not np.isfinite(scores).all() or y.min() == y.max():
        return None
    return Ranked.of(y, scores, where="evaluate")


def calibration(scores: np.ndarray, reward: np.ndarray) -> dict[str, Any]:
    """The calibration table of probabilities ``scores`` against 0/1 ``reward``: per bin its
    range, rows, mean score and observed reward rate; and the expected calibration error."""
    y = (reward > 0).astype(np.int64)
    r = reliability(y, scores, bins=CALIBRATION_BINS)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    rows = [{"low": float(edges[i]), "high": float(edges[i + 1]), "n": int(r.counts[i]),
             "mean_score": None if r.counts[i] == 0 else float(r.mean_predicted[i]),
             "observed": None if r.counts[i] == 0 else float(r.observed[i])} for i in range(CALIBRATION_BINS)]
    return {"bins": rows, "ece": float(ece(y, scores, bins=CALIBRATION_BINS))}


def pooled(scores: np.ndarray, reward: np.ndarray) -> tuple[dict[str, Any], Ranked | None, np.ndarray | None]:
    """The pooled figures without intervals → (``{"probability", "row_auc", "log_loss",
    "calibration"}``, the rows sorted for the AUC, each row's log loss or None)."""
    rk = ranked_rows(scores, reward)
    prob = is_probability(scores, reward)
    losses = row_losses(scores, reward) if prob else None
    out = {
        "probability": prob,
        "row_auc": {"value": None if rk is None else rk.auc("evaluate"), "ci": None, "n_rows": int(reward.size)},
        "log_loss": {"value": None if losses is None else float(losses.mean()), "ci": None, "n_rows": int(reward.size)},
        "calibration": calibration(scores, reward) if prob else None,
    }
    return out, rk, losses


def _auc_or_nan(rk: Ranked, wo: np.ndarray) -> float:
    try:
        return rk.resampled_auc(wo)
    except EvaluationError:
        return math.nan


def pooled_auc_intervals(rankeds: Sequence[Ranked | None], pairs: Sequence[tuple[int, int]], row_units: np.ndarray,
                         n_units: int, resamples: int, seed: int) -> tuple[list[list[float] | None], list[list[float] | None]]:
    """The pooled AUC's 95 % interval of each bundle and of each pair's difference (b − a), from
    one Poisson bootstrap by unit (the same draws for all); None where the AUC is undefined."""
    if resamples <= 0:
        return [None] * len(rankeds), [None] * len(pairs)
    rng = np.random.default_rng(seed)
    stats = np.full((resamples, len(rankeds)), np.nan)
    by_order = [None if rk is None else row_units[rk.order] for rk in rankeds]
    for r in range(resamples):
        draw = _poisson1(rng, n_units)
        for i, (rk, u) in enumerate(zip(rankeds, by_order, strict=True)):
            if rk is not None and u is not None:
                stats[r, i] = _auc_or_nan(rk, np.take(draw, u))
    own = [None if rk is None else _percentile(stats[:, i]) for i, rk in enumerate(rankeds)]
    diffs = [None if rankeds[a] is None or rankeds[b] is None else _percentile(stats[:, b] - stats[:, a]) for a, b in pairs]
    return own, diffs

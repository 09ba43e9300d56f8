"""Quality and calibration metrics: AUC, log loss, Brier score, precision / recall / F1, the ROC and
precision–recall curves, the reliability curve and the expected calibration error.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.inputs import _labels, _mean, _scores, _weights
from closedloop.evaluation.ordering import Curve, Ranked, _auc_from_groups, _grouped


def auc(y: Any, s: Any, weights: Any = None) -> float:
    """Area under the ROC curve (ties count one half), equal to
    ``sklearn.metrics.roc_auc_score(y, s, sample_weight=weights)``. Needs both classes."""
    yy = _labels(y, "auc")
    ss = _scores(s, "s", "auc", yy.size)
    w = _weights(weights, "auc", yy.size)
    _, pos, neg = _grouped(yy, ss, w)
    return _auc_from_groups(pos, neg, "auc")


def log_loss(y: Any, p: Any, eps: float = 1e-15, weights: Any = None) -> float:
    """Mean negative log-likelihood of ``y`` under probabilities ``p`` clipped to
    [eps, 1 − eps] (weighted mean with ``weights``)."""
    yy = _labels(y, "log_loss")
    pp = _scores(p, "p", "log_loss", yy.size, unit=True)
    w = _weights(weights, "log_loss", yy.size)
    if not (isinstance(eps, int | float) and 0 <= eps < 0.5):
        raise EvaluationError("eps", "a number in [0, 0.5)", eps, "log_loss")
    q = np.clip(pp, eps, 1.0 - eps)
    with np.errstate(divide="ignore"):
        loss = -np.where(yy == 1, np.log(q), np.log1p(-q))
    return _mean(loss, w)


def brier(y: Any, p: Any, weights: Any = None) -> float:
    """Mean squared difference between probabilities ``p`` and the 0/1 labels (weighted)."""
    yy = _labels(y, "brier")
    pp = _scores(p, "p", "brier", yy.size, unit=True)
    w = _weights(weights, "brier", yy.size)
    return _mean((pp - yy) ** 2, w)


def precision_recall_f1(y: Any, predicted_positive: Any, weights: Any = None
                        ) -> tuple[float, float, float]:
    """(precision, recall, F1) of the positive class for 0/1 (or bool) predictions; a ratio with
    a zero denominator is 0.0 (scikit-learn's ``zero_division=0``)."""
    yy = _labels(y, "precision_recall_f1")
    pred = _labels(predicted_positive, "precision_recall_f1", yy.size, name="predicted_positive")
    w = _weights(weights, "precision_recall_f1", yy.size)
    ww = np.ones(yy.size) if w is None else w
    tp = float(ww[(yy == 1) & (pred == 1)].sum())
    fp = float(ww[(yy == 0) & (pred == 1)].sum())
    fn = float(ww[(yy == 1) & (pred == 0)].sum())
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
    return precision, recall, f1


def _check_max_points(max_points: Any, where: str) -> int:
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise EvaluationError("max_points", "an integer ≥ 2", max_points, where)
    return max_points


def roc_curve(y: Any, s: Any, weights: Any = None, max_points: int = 200) -> Curve:
    """The ROC curve as (false positive rate, true positive rate, thresholds), from (0, 0) at
    threshold +inf to (1, 1), one point per distinct score (as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``), thinned evenly to at most
    ``max_points`` points keeping both ends."""
    max_points = _check_max_points(max_points, "roc_curve")
    return Ranked.of(y, s, weights, "roc_curve").roc(max_points)


def pr_curve(y: Any, s: Any, weights: Any = None, max_points: int = 200) -> Curve:
    """The precision–recall curve as (recall, precision, thresholds): one point per distinct
    score from the highest threshold down (recall rising), as
    ``sklearn.metrics.precision_recall_curve`` without its appended (recall 0, precision 1),
    thinned evenly to at most ``max_points`` points keeping both ends. Needs a positive."""
    max_points = _check_max_points(max_points, "pr_curve")
    return Ranked.of(y, s, weights, "pr_curve").pr(max_points)


# ---------------------------------------------------------------------------------------------
# calibration


class Reliability(NamedTuple):
    """A reliability curve over equal-width bins of [0, 1]: each bin's center, mean predicted
    probability, observed positive rate and (weighted) count; empty bins have NaN means."""

    centers: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray


def reliability(y: Any, p: Any, bins: int = 10, weights: Any = None) -> Reliability:
    """Calibration by ``bins`` equal-width bins on [0, 1] with the edges of
    ``np.linspace(0, 1, bins + 1)``, each bin closed on the right (a probability of exactly 0 falls
    in the first bin) — the bins of ``sklearn.calibration.calibration_curve``."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise EvaluationError("bins", "an integer ≥ 1", bins, "reliability")
    yy = _labels(y, "reliability")
    pp = _scores(p, "p", "reliability", yy.size, unit=True)
    w = _weights(weights, "reliability", yy.size)
    ww = np.ones(yy.size) if w is None else w
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.searchsorted(edges[1:-1], pp, side="left")
    counts = np.bincount(idx, weights=ww, minlength=bins)
    sum_p = np.bincount(idx, weights=ww * pp, minlength=bins)
    sum_y = np.bincount(idx, weights=ww * yy, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / np.where(counts > 0, counts, 1.0), np.nan)
        observed = np.where(counts > 0, sum_y / np.where(counts > 0, counts, 1.0), np.nan)
    centers = (np.arange(bins) + 0.5) / bins
    return Reliability(centers, mean_p, observed, counts)


def ece(y: Any, p: Any, bins: int = 10, weights: Any = None) -> float:
    """Expected calibration error: the count-weighted mean of |observed − mean predicted| over
    the :func:`reliability` bins."""
    r = reliability(y, p, bins=bins, weights=weights)
    full = r.counts > 0
    return float(np.dot(r.counts[full], np.abs(r.observed[full] - r.mean_predicted[full]))
                 / r.counts.sum())

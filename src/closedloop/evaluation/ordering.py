"""Scores sorted once: the runs of tied scores, their (weighted) positives and negatives, and what
they give without sorting again — the AUC, the ROC and precision–recall curves, each row's
share of the AUC's pairs and the AUC under bootstrap weights (:class:`Ranked`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.inputs import _both_classes, _dot, _labels, _scores, _weights


def _grouped(y: np.ndarray, s: np.ndarray, w: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique scores in *descending* order with the (weighted) positives and negatives at each."""
    order, starts, u = _sort_groups(s)
    pos, neg = _group_sums(y[order], None if w is None else w[order], starts)
    return u, pos, neg


def _sort_groups(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The descending order of ``s``, where each run of equal scores starts, the distinct scores."""
    order = np.argsort(s)[::-1]
    ss = s[order]
    return order, *_run_starts(ss)


def _run_starts(ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each run of equal values of ``ss`` starts, and the run values."""
    new = np.empty(ss.size, dtype=bool)
    if ss.size:
        new[0] = True
        np.not_equal(ss[1:], ss[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return starts, ss[starts]


def _group_sums(ys: np.ndarray, ws: np.ndarray | None, starts: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    yf = ys.astype(np.float64)
    if starts.size == ys.size:  # no ties: each group is one row
        if ws is None:
            return yf, 1.0 - yf
        pos = yf * ws
        return pos, ws - pos
    if ws is None:
        pos = np.add.reduceat(yf, starts)
        sizes = np.empty(starts.size)
        sizes[:-1] = np.diff(starts)
        sizes[-1] = ys.size - starts[-1]
        return pos, sizes - pos
    pos = np.add.reduceat(yf * ws, starts)
    return pos, np.add.reduceat(ws, starts) - pos


def _auc_from_groups(pos: np.ndarray, neg: np.ndarray, where: str) -> float:
    P, N = float(pos.sum()), float(neg.sum())
    _both_classes(P, N, where)
    # descending scores: negatives strictly below group g = N - cumulative negatives through g
    below = N - np.cumsum(neg)
    return _dot(pos, below + 0.5 * neg) / (P * N)


class Ranked:
    """Labels (and weights) in descending score order with the runs of tied scores: one sort that
    AUC, both curves, the cost-minimizing thresholds, every slice (:class:`Partition`) and every
    bootstrap resample reuse. ``Ranked.of(y, s, weights)`` validates as :func:`auc` does.

    ``order`` are the row positions in descending score order, ``ys`` / ``ss`` / ``ws`` the labels,
    scores and weights (None: all 1) in that order, ``starts`` where each run of equal scores
    starts, ``pos`` / ``neg`` the (weighted) positives and negatives of each run.
    """

    __slots__ = ("_placements", "neg", "order", "pos", "ss", "starts", "ws", "ys")

    def __init__(self, order: np.ndarray, ys: np.ndarray, ss: np.ndarray, ws: np.ndarray | None,
                 starts: np.ndarray) -> None:
        self.order, self.ys, self.ss, self.ws, self.starts = order, ys, ss, ws, starts
        self.pos, self.neg = _group_sums(ys, ws, starts)
        self._placements: np.ndarray | None = None

    @classmethod
    def of(cls, y: Any, s: Any, weights: Any = None, where: str = "Ranked") -> Ranked:
        yy = _labels(y, where)
        ss = _scores(s, "s", where, yy.size)
        w = _weights(weights, where, yy.size)
        order, starts, _ = _sort_groups(ss)
        return cls(order, yy[order], ss[order], None if w is None else w[order], starts)

    @property
    def n(self) -> int:
        return int(self.order.size)

    @property
    def distinct(self) -> np.ndarray:
        """The distinct scores, descending."""
        return self.ss[self.starts]

    def auc(self, where: str = "auc") -> float:
        return _auc_from_groups(self.pos, self.neg, where)

    def roc(self, max_points: int = 200) -> Curve:
        """As :func:`roc_curve`."""
        P, N = float(self.pos.sum()), float(self.neg.sum())
        _both_classes(P, N, "roc_curve")
        tpr = np.r_[0.0, np.cumsum(self.pos) / P]
        fpr = np.r_[0.0, np.cumsum(self.neg) / N]
        thr = np.r_[np.inf, self.distinct]
        keep = _thin(tpr.size, max_points)
        return Curve(fpr[keep], tpr[keep], thr[keep])

    def pr(self, max_points: int = 200) -> Curve:
        """As :func:`pr_curve`."""
        P = float(self.pos.sum())
        if not P > 0:
            raise EvaluationError("y", "to contain the positive class (1, with weight > 0)", "no positive", "pr_curve")
        tp = np.cumsum(self.pos)
        fp = np.cumsum(self.neg)
        denom = tp + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), 1.0)
        keep = _thin(self.starts.size, max_points)
        return Curve((tp / P)[keep], precision[keep], self.distinct[keep])

    def resampled_auc(self, wo: np.ndarray) -> float:
        """The AUC under per-row weights ``wo`` given in ``order`` (e.g. ``w[ranked.order]``),
        multiplied into the weights."""
        if self.ws is not None:
            wo = wo * self.ws
        if self.starts.size == self.ys.size:  # no ties: a group is a row
            pos = wo * self.ys
            return _auc_from_groups(pos, wo - pos, "auc")
        return _auc_from_groups(*_group_sums(self.ys, wo, self.starts), "auc")

    def placements(self) -> np.ndarray:
        """Per row (in ``order``), its (weighted) share of the AUC's pair count: for a positive, the
        negatives scored below it plus half those tied with it; for a negative, the positives scored
        above it plus half those tied — times the row's weight. Σ over positives = Σ over
        negatives = AUC · P · N. :class:`Partition` uses them for the AUC of everything but a part."""
        if self._placements is None:
            N = float(self.neg.sum())
            below = N - np.cumsum(self.neg)
            above = np.cumsum(self.pos) - self.pos
            grp = np.repeat(np.arange(self.starts.size), np.diff(np.r_[self.starts, self.n]))
            v = np.where(self.ys == 1, (below + 0.5 * self.neg)[grp], (above + 0.5 * self.pos)[grp])
            self._placements = v if self.ws is None else v * self.ws
        return self._placements


class Curve(NamedTuple):
    """Points of a curve for plotting: ``x``, ``y`` and the score ``thresholds`` that give them."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray


def _thin(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))

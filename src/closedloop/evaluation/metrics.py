"""Pure-numpy metrics for binary evaluation: quality, calibration, mistakes and their costs.

Conventions shared by every function here:

- ``y`` are the true labels as 0/1 (bool, int or float 0.0/1.0): 1 is the system's positive class
  (``System.labels[1]``), 0 its negative class (``System.labels[0]``).
- ``s`` are scores (any ranking score); ``p`` are probabilities in [0, 1].
- ``weights`` are optional sample weights ≥ 0 (datasets carry ``weight = 1 / sample_prob``); every
  metric is the weighted one, and equals scikit-learn's with ``sample_weight``.
- Bad input raises :class:`EvaluationError` naming the parameter, the rule and the value: empty
  input, NaN scores, labels other than 0/1, a single class where the metric needs both, negative
  weights, mismatched lengths.

Everything is vectorized (one sort at most); docs/performance.md, "Evaluation", has the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.experience.experiences import Thresholds

__all__ = [
    "Curve",
    "EvaluationError",
    "Partition",
    "Ranked",
    "Reliability",
    "auc",
    "benjamini_hochberg",
    "best_thresholds",
    "brier",
    "confusion_at_thresholds",
    "ece",
    "expected_cost",
    "explain_thresholds",
    "log_loss",
    "p_auc_worse",
    "p_error_worse",
    "poisson_bootstrap",
    "pr_curve",
    "precision_recall_f1",
    "reliability",
    "roc_curve",
    "slice_vs_rest",
]


# ---------------------------------------------------------------------------------------------
# validation


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


class Partition:
    """The rows of a :class:`Ranked` split into ``k`` parts by integer ``codes`` (0 … k−1, one per
    row in the original order): the values of a slice field. The rows are re-ordered by part with
    a stable counting sort over the score order, so every part stays ranked without sorting
    scores again, and each part's AUC — and the AUC of the rest of the data — come from a few
    vectorized passes (:meth:`aucs`, :meth:`resampled_aucs` for bootstrap weights).

    ``count``, ``pos`` and ``neg`` are each part's (weighted) rows, positives and negatives.
    """

    __slots__ = ("_bounds", "_groups", "_present", "_ranked", "_tied", "_yf", "codes", "count", "g_part", "k", "neg",
                 "order", "pos", "starts", "ws", "ys")

    def __init__(self, ranked: Ranked, codes: Any, k: int) -> None:
        c = np.asarray(codes)
        if c.ndim != 1 or c.size != ranked.n or not np.issubdtype(c.dtype, np.integer):
            raise EvaluationError("codes", f"a 1-d integer array with one code per row ({ranked.n} rows)",
                                  f"dtype {c.dtype}, shape {c.shape}", "Partition")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise EvaluationError("k", "an integer ≥ 1", k, "Partition")
        if c.size and (int(c.min()) < 0 or int(c.max()) >= k):
            raise EvaluationError("codes", f"codes in [0, {k})", f"[{int(c.min())}, {int(c.max())}]", "Partition")
        self._ranked = ranked
        self.k = int(k)
        self.codes = c
        cr = c[ranked.order].astype(np.int16 if k < 2**15 else np.int64, copy=False)
        idx = np.argsort(cr, kind="stable")  # a radix sort of small ints: the score order stays within parts
        cs = cr[idx]
        self.order = ranked.order[idx]
        self.ys = ranked.ys[idx]
        self._yf = self.ys.astype(np.float64)
        ss = ranked.ss[idx]
        self.ws = None if ranked.ws is None else ranked.ws[idx]
        new = np.empty(ss.size, dtype=bool)
        if ss.size:
            new[0] = True
            np.not_equal(ss[1:], ss[:-1], out=new[1:])
            new[1:] |= cs[1:] != cs[:-1]
        self.starts = np.flatnonzero(new)
        self.g_part = cs[self.starts].astype(np.int64)
        self._tied = self.starts.size < ss.size
        gp, gn = _group_sums(self.ys, self.ws, self.starts)
        self._groups = (gp, gn)
        self.pos = np.bincount(self.g_part, weights=gp, minlength=k)
        self.neg = np.bincount(self.g_part, weights=gn, minlength=k)
        self.count = self.pos + self.neg
        # where each non-empty part starts: in group space (tied) or row space (no ties: a group is a row)
        self._present = np.flatnonzero(np.bincount(self.g_part, minlength=k) > 0)
        self._bounds = np.searchsorted(self.g_part, self._present)

    @staticmethod
    def _ratio(u: np.ndarray, P: np.ndarray, N: np.ndarray) -> np.ndarray:
        ok = (P > 0) & (N > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, u / np.where(ok, P * N, 1.0), np.nan)

    def _pairs(self, gp: np.ndarray, gn: np.ndarray, tied: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P, N, pair count) of each part from its groups' positives ``gp`` and negatives ``gn``.

        Within part j (contiguous, scores descending), a group's negatives strictly below it are
        N_j − (C_g − B_j), with C the running sum of ``gn`` and B_j the negatives of the parts
        before j; so Σ_g gp_g · (below_g + ½ gn_g) = N_j·P_j − Σ gp·C + B_j·P_j + ½ Σ gp·gn — a
        running sum and a few segment sums, no per-group gathers. Without ties a group is one
        row, holding a positive or a negative, so gp·gn = 0."""
        b = self._bounds
        P = np.zeros(self.k)
        N = np.zeros(self.k)
        if b.size == 0:
            return P, N, np.zeros(self.k)
        Pp, Np = np.add.reduceat(gp, b), np.add.reduceat(gn, b)
        C = np.cumsum(gn)
        S = np.add.reduceat(gp * C, b)
        T = np.add.reduceat(gp * gn, b) if tied else 0.0
        before = np.r_[0.0, np.cumsum(Np)[:-1]]
        u = Np * Pp - S + before * Pp + 0.5 * T
        U = np.zeros(self.k)
        P[self._present], N[self._present], U[self._present] = Pp, Np, u
        return P, N, U

    def aucs(self) -> tuple[np.ndarray, np.ndarray]:
        """(AUC of each part, AUC of all rows outside each part); NaN where a side lacks a class."""
        gp, gn = self._groups
        _, _, u_in = self._pairs(gp, gn, True)
        r = self._ranked
        P, N = float(r.pos.sum()), float(r.neg.sum())
        u_all = _dot(r.pos, (N - np.cumsum(r.neg)) + 0.5 * r.neg)
        # pairs touching part j: its positives against all negatives, all positives against its
        # negatives; the pairs inside j were counted twice
        touch = np.bincount(self.codes[r.order], weights=r.placements(), minlength=self.k)
        u_rest = u_all - touch + u_in
        return self._ratio(u_in, self.pos, self.neg), self._ratio(u_rest, P - self.pos, N - self.neg)

    def auc_intervals(self, units: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Each part's AUC confidence interval (normal, clipped to [0, 1]) from DeLong's variance
        with the rows clustered by ``units`` (one unit id per row, original order; Obuchowski's
        clustered form — a unit's rows are not independent, so its placements are summed before
        their spread is taken). With one row per unit it is DeLong's variance. Returns (low, high),
        NaN where a part has fewer than two units holding a positive or a negative.

        With row weights (the :class:`Ranked`'s), every count below is a sum of weights and every
        placement a weighted share: a row of weight k counts as k copies of itself in its unit (so
        integer weights give the interval of the rows repeated, and scaling every weight changes
        nothing).

        For part k with AUC A, positives M and negatives N, each positive's placement is the share
        of the part's negatives it outranks (ties ½), each negative's the share of positives that
        outrank it; per unit c, X_c / Y_c sum its positives' / negatives' placements, m_c / n_c
        count them; with I₁₀ / I₀₁ / I the units holding a positive / a negative / any row:
        S₁₀ = I₁₀ / ((I₁₀−1) M) · Σ (X_c − m_c A)², S₀₁ = I₀₁ / ((I₀₁−1) N) · Σ (Y_c − n_c A)²,
        S₁₁ = I / (I−1) · Σ (X_c − m_c A)(Y_c − n_c A), Var A = S₁₀/M + S₀₁/N + 2 S₁₁/(M N).
        """
        where = "auc_intervals"
        if not (isinstance(level, float) and 0 < level < 1):
            raise EvaluationError("level", "a number in (0, 1)", level, where)
        u = np.asarray(units)
        if u.ndim != 1 or u.size != self.order.size:
            raise EvaluationError("units", f"a 1-d array with one unit per row ({self.order.size} rows)", u.shape, where)
        k = self.k
        lo = np.full(k, np.nan)
        hi = np.full(k, np.nan)
        if self.order.size == 0:
            return lo, hi
        if np.issubdtype(u.dtype, np.integer) and int(u.min()) >= 0 and int(u.max()) < 4 * u.size + 16:
            uc = u.astype(np.int64, copy=False)  # already small codes: no sort
        else:
            _, uc = np.unique(u, return_inverse=True)
        gp, gn = self._groups
        part = self.g_part
        P, N = self.pos, self.neg
        # within each part (contiguous, scores descending): negatives below / positives above a group
        before_n = np.r_[0.0, np.cumsum(N)[:-1]]
        before_p = np.r_[0.0, np.cumsum(P)[:-1]]
        below = N[part] - (np.cumsum(gn) - before_n[part])
        above = (np.cumsum(gp) - before_p[part]) - gp
        sizes = np.diff(np.r_[self.starts, self.order.size])
        grp = np.repeat(np.arange(self.starts.size), sizes)
        is_pos = self.ys == 1
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(is_pos, ((below + 0.5 * gn) / N[part])[grp], 0.0)
            y = np.where(is_pos, 0.0, ((above + 0.5 * gp) / P[part])[grp])
        rpart = part[grp]
        n_units = int(uc.max()) + 1
        key = rpart.astype(np.int64) * n_units + uc[self.order]
        if k * n_units <= max(4 * key.size, 1 << 20):
            # a cluster is a (part, unit) pair: count them on the dense grid, no sort; empty
            # pairs have m = n = X = Y = 0 and add nothing below
            size = k * n_units
            c = key
            cpart = np.arange(size, dtype=np.int64) // n_units
        else:
            clusters, c = np.unique(key, return_inverse=True)
            size = clusters.size
            cpart = clusters // n_units
        w = np.ones(self.order.size) if self.ws is None else np.asarray(self.ws, dtype=np.float64)
        xw = x * w
        X = np.bincount(c, weights=xw, minlength=size)
        Y = np.bincount(c, weights=y * w, minlength=size)
        m = np.bincount(c, weights=np.where(is_pos, w, 0.0), minlength=size)
        nn = np.bincount(c, weights=np.where(is_pos, 0.0, w), minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            A = np.where((P > 0) & (N > 0), np.bincount(rpart, weights=xw, minlength=k) / P, np.nan)
        dX = X - m * A[cpart]
        dY = Y - nn * A[cpart]
        I10 = np.bincount(cpart, weights=(m > 0).astype(np.float64), minlength=k)
        I01 = np.bincount(cpart, weights=(nn > 0).astype(np.float64), minlength=k)
        I_all = np.bincount(cpart, weights=((m > 0) | (nn > 0)).astype(np.float64), minlength=k)
        ok = (I10 >= 2) & (I01 >= 2) & np.isfinite(A)
        with np.errstate(invalid="ignore", divide="ignore"):
            s10 = I10 / ((I10 - 1) * P) * np.bincount(cpart, weights=dX * dX, minlength=k)
            s01 = I01 / ((I01 - 1) * N) * np.bincount(cpart, weights=dY * dY, minlength=k)
            s11 = I_all / (I_all - 1) * np.bincount(cpart, weights=dX * dY, minlength=k)
            var = s10 / P + s01 / N + 2.0 * s11 / (P * N)
        z = _normal_quantile(0.5 + level / 2.0)
        half = z * np.sqrt(np.maximum(var, 0.0))
        lo[ok] = np.clip(A[ok] - half[ok], 0.0, 1.0)
        hi[ok] = np.clip(A[ok] + half[ok], 0.0, 1.0)
        return lo, hi

    def resampled_aucs(self, wo: np.ndarray) -> np.ndarray:
        """Each part's AUC under per-row weights ``wo`` given in ``order`` (e.g.
        ``w[partition.order]``), multiplied into the weights; NaN where undefined."""
        if self.ws is not None:
            wo = wo * self.ws
        if self._tied:
            gp, gn = _group_sums(self.ys, wo, self.starts)
        else:
            gp = wo * self._yf
            gn = wo - gp
        P, N, U = self._pairs(gp, gn, self._tied)
        return self._ratio(U, P, N)


# ---------------------------------------------------------------------------------------------
# quality


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


class Curve(NamedTuple):
    """Points of a curve for plotting: ``x``, ``y`` and the score ``thresholds`` that give them."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray


def _thin(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


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


# ---------------------------------------------------------------------------------------------
# mistakes and their costs


def _check_labels_names(labels: Any, where: str) -> tuple[str, str]:
    if (not isinstance(labels, tuple | list) or len(labels) != 2
            or not all(isinstance(x, str) and x for x in labels) or labels[0] == labels[1]):
        raise EvaluationError("labels", "two distinct class names (negative, positive)", labels, where)
    return labels[0], labels[1]


def _check_thresholds(thresholds: Any, where: str) -> Thresholds:
    if not isinstance(thresholds, Thresholds):
        raise EvaluationError("thresholds", "a closedloop Thresholds experience", thresholds, where)
    return thresholds


def confusion_at_thresholds(y: Any, s: Any, thresholds: Thresholds, weights: Any = None,
                            labels: Sequence[str] = ("negative", "positive")
                            ) -> dict[str, dict[str, float]]:
    """(Weighted) counts of each action by true class, choosing actions as the runtime does: the
    first level (most forceful first) whose threshold the score reaches (score ≥ threshold),
    else ``otherwise`` — which also takes NaN scores.

    Returns ``{action: {labels[0]: count, labels[1]: count}}`` for every action of
    ``thresholds`` in its order (levels, then otherwise). ``labels`` are the class names
    (``System.labels``) for 0 and 1.
    """
    where = "confusion_at_thresholds"
    th = _check_thresholds(thresholds, where)
    neg_name, pos_name = _check_labels_names(labels, where)
    yy = _labels(y, where)
    ss = _scores(s, "s", where, yy.size, allow_nan=True)
    w = _weights(weights, where, yy.size)
    ww = np.ones(yy.size) if w is None else w
    k = len(th.levels)
    action = np.full(yy.size, k, dtype=np.int64)
    for j in range(k - 1, -1, -1):
        action[ss >= th.levels[j][1]] = j
    pos = np.bincount(action, weights=ww * yy, minlength=k + 1)
    tot = np.bincount(action, weights=ww, minlength=k + 1)
    return {a: {neg_name: float(tot[i] - pos[i]), pos_name: float(pos[i])}
            for i, a in enumerate(th.actions)}


def _cost_table(costs: Any, where: str) -> Mapping[str, Mapping[str, float]]:
    if not isinstance(costs, Mapping) or not all(isinstance(v, Mapping) for v in costs.values()):
        raise EvaluationError("costs", "a mapping action → {true class → cost} (System.costs)", costs, where)
    for a, row in costs.items():
        for label, c in row.items():
            if isinstance(c, bool) or not isinstance(c, int | float) or not (math.isfinite(c) and c >= 0):
                raise EvaluationError("costs", f"numbers ≥ 0 (cost of '{a}' when the truth is '{label}')", c, where)
    return costs


def expected_cost(counts: Mapping[str, Mapping[str, float]], costs: Mapping[str, Mapping[str, float]]
                  ) -> float:
    """Expected cost per 1,000 decisions: Σ count(action, class) × cost(action, class) over the
    total count, × 1000. ``counts`` is :func:`confusion_at_thresholds`' result, ``costs`` is
    ``System.costs`` (a missing action or class costs 0)."""
    costs = _cost_table(costs, "expected_cost")
    if not isinstance(counts, Mapping) or not all(isinstance(v, Mapping) for v in counts.values()):
        raise EvaluationError("counts", "a mapping action → {true class → count}", counts, "expected_cost")
    total = 0.0
    cost = 0.0
    for a, row in counts.items():
        for label, c in row.items():
            total += c
            cost += c * float(costs.get(a, {}).get(label, 0.0))
    if not total > 0:
        raise EvaluationError("counts", "a positive total count", total, "expected_cost")
    return 1000.0 * cost / total


def best_thresholds(y: Any, s: Any, thresholds: Thresholds, costs: Mapping[str, Mapping[str, float]],
                    weights: Any = None, labels: Sequence[str] = ("negative", "positive")
                    ) -> dict[str, float]:
    """The threshold values (same actions, same order, strictly decreasing) that minimize the
    expected cost (:func:`expected_cost`) on this data.

    The search is over every cut point of the sorted distinct scores (and "above them all"), and
    it is *exact for any number of levels*: with cut indices c₁ ≥ c₂ ≥ … ≥ c_K into the distinct
    scores, the total cost separates into Σⱼ gⱼ(cⱼ) plus a constant (gⱼ = the cost of level j minus
    the cost of the next action, both evaluated on the rows ≥ the cut), minimized by a chain of
    suffix minima — O(n log n) for the sort plus O(K·m) for m distinct scores; no candidate
    subsampling. Returned values: a level whose cut is a distinct score u gets u (the runtime's
    ``≥``); a level that takes no rows gets a value strictly between neighbouring scores (or
    beyond the extremes), so the runtime makes exactly the optimal decisions. NaN scores go to
    ``otherwise`` as in the runtime. Ties in cost go to the lowest cut indices found first.
    Pass the result to ``thresholds.with_levels(...)``.
    """
    where = "best_thresholds"
    th = _check_thresholds(thresholds, where)
    neg_name, pos_name = _check_labels_names(labels, where)
    costs = _cost_table(costs, where)
    yy = _labels(y, where)
    ss = _scores(s, "s", where, yy.size, allow_nan=True)
    w = _weights(weights, where, yy.size)
    ok = ~np.isnan(ss)
    if not ok.any():
        raise EvaluationError("s", "not all NaN", "NaN scores only", where)
    u_desc, pos, neg = _grouped(yy[ok], ss[ok], None if w is None else w[ok])
    return _best_from_groups(u_desc, pos, neg, th, costs, neg_name, pos_name)


def _best_from_groups(u_desc: np.ndarray, pos: np.ndarray, neg: np.ndarray, th: Thresholds,
                      costs: Mapping[str, Mapping[str, float]], neg_name: str, pos_name: str
                      ) -> dict[str, float]:
    """:func:`best_thresholds` on already grouped scores (distinct scores descending with the
    weighted positives and negatives of each): the exact search, no validation."""
    where = "best_thresholds"
    u = u_desc[::-1]  # ascending distinct scores
    m = u.size
    # Pge[c] / Nge[c]: weight of positives / negatives with score ≥ u[c]; index m → 0
    Pge = np.r_[np.cumsum(pos)[::-1], 0.0]
    Nge = np.r_[np.cumsum(neg)[::-1], 0.0]
    acts = th.actions
    k = len(th.levels)

    def f(i: int) -> np.ndarray:
        row = costs.get(acts[i], {})
        return float(row.get(pos_name, 0.0)) * Pge + float(row.get(neg_name, 0.0)) * Nge

    fs = [f(i) for i in range(k + 1)]
    g = [fs[j] - fs[j + 1] for j in range(k)]
    # D_j(c) = g_j(c) + min_{c' ≥ c} D_{j-1}(c')
    arg: list[np.ndarray] = []
    D = g[0]
    for j in range(1, k):
        rev = D[::-1]
        run_min = np.minimum.accumulate(rev)
        # index (in the original order) of the suffix minimum, preferring the lowest index
        is_new = rev == run_min
        pos_in_rev = np.maximum.accumulate(np.where(is_new, np.arange(m + 1), 0))
        suffix_arg = (m - pos_in_rev)[::-1]
        arg.append(suffix_arg)
        D = g[j] + run_min[::-1]
    cuts = [0] * k
    cuts[k - 1] = int(np.argmin(D))
    for j in range(k - 1, 0, -1):
        cuts[j - 1] = int(arg[j - 1][cuts[j]])
    # threshold values from cut indices
    span = float(u[-1] - u[0]) if m > 1 else 0.0
    scale = span if span > 0 else max(1.0, abs(float(u[0])))
    values: list[float] = [0.0] * k
    j = 0
    while j < k:
        r = 1
        while j + r < k and cuts[j + r] == cuts[j]:
            r += 1
        c = cuts[j]
        top = float(u[c]) if c < m else float(u[-1]) + scale
        lo = float(u[c - 1]) if c > 0 else float(u[0]) - scale
        for i in range(r):
            values[j + i] = top - (top - lo) * i / r
        j += r
    for a, b in zip(values, values[1:], strict=False):
        if not a > b:
            raise EvaluationError("s", "distinct enough scores to place strictly decreasing thresholds",
                                  values, where)
    return {th.levels[i][0]: values[i] for i in range(k)}


def explain_thresholds(thresholds: Thresholds, values: Mapping[str, float], lo: float, hi: float,
                       counts: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, str]:
    """Each level's threshold in ``values`` in words, against the scores' range [``lo``, ``hi``]
    and, when given, ``counts`` (:func:`confusion_at_thresholds` at ``values``: the rows each
    action takes).

    A number alone misleads: :func:`best_thresholds` gives a level that no threshold makes
    cheaper a value *above every score* (the highest score plus the scores' span — 1.85 for
    probabilities between 0.01 and 0.93), so that the runtime never takes it; and a level
    squeezed to an empty band gets a value between two neighbouring scores. The words say what
    happens: ``"never: …"`` (no row takes the action), ``"always: …"`` (the threshold is at or
    below every score: every row the levels above leave takes it) or ``"score ≥ v: …"`` with the
    share of rows it takes.
    """
    th = _check_thresholds(thresholds, "explain_thresholds")
    total = None if counts is None else sum(float(sum(r.values())) for r in counts.values())
    out: dict[str, str] = {}
    above: str | None = None
    for a, _ in th.levels:
        v = float(values[a])
        taken = None if counts is None else float(sum((counts.get(a) or {}).values()))
        rest = "" if above is None else f" the '{above}' threshold leaves"
        if v > hi:
            out[a] = (f"never: {v:.4g} is above every score (the highest is {hi:.4g}) — no threshold for "
                      f"'{a}' lowers the cost")
        elif taken == 0.0:
            out[a] = (f"never: no score falls between {v:.4g} and the '{above}' threshold — no band of scores "
                      f"for '{a}' lowers the cost" if above is not None else
                      f"never: no row scores {v:.4g} or more")
        elif v <= lo:
            out[a] = f"always: {v:.4g} is at or below every score (the lowest is {lo:.4g}) — '{a}' for every row{rest}"
        else:
            share = "" if not total or taken is None else f" ({taken / total:.1%} of the rows)"
            out[a] = f"score ≥ {v:.4g}{share}"
        above = a
    return out


# ---------------------------------------------------------------------------------------------
# uncertainty and significance


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

"""The rows of a ranking split into parts (the values of a slice field): each part's AUC, the AUC
of the rest of the data, clustered confidence intervals and bootstrap AUCs (:class:`Partition`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.inputs import _dot
from closedloop.evaluation.ordering import Ranked, _group_sums
from closedloop.evaluation.significance import _normal_quantile


def _unit_codes(u: np.ndarray) -> np.ndarray:
    """Each row's unit as an integer code in [0, units): the units themselves when they already
    are small non-negative integers (no sort), else their ranks among the distinct units."""
    if np.issubdtype(u.dtype, np.integer) and int(u.min()) >= 0 and int(u.max()) < 4 * u.size + 16:
        return u.astype(np.int64, copy=False)
    _, uc = np.unique(u, return_inverse=True)
    return uc


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
        x, y, rpart, is_pos = self._placement_shares()
        c, size, cpart = self._clusters(rpart, _unit_codes(u))
        A, var, ok = self._clustered_variance(x, y, rpart, is_pos, c, size, cpart)
        z = _normal_quantile(0.5 + level / 2.0)
        half = z * np.sqrt(np.maximum(var, 0.0))
        lo[ok] = np.clip(A[ok] - half[ok], 0.0, 1.0)
        hi[ok] = np.clip(A[ok] + half[ok], 0.0, 1.0)
        return lo, hi

    def _placement_shares(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row (in this partition's ``order``): ``x``, a positive's share of its part's
        negatives that it outranks (ties ½; 0 for a negative), ``y``, a negative's share of its
        part's positives that outrank it (0 for a positive), the row's part and whether it is a
        positive."""
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
        return x, y, part[grp], is_pos

    def _clusters(self, rpart: np.ndarray, uc: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """The clusters of the rows — a cluster is a (part, unit) pair — as (each row's cluster,
        the number of clusters, each cluster's part); ``rpart`` is each row's part (in ``order``),
        ``uc`` each row's unit code (original order)."""
        k = self.k
        n_units = int(uc.max()) + 1
        key = rpart.astype(np.int64) * n_units + uc[self.order]
        if k * n_units <= max(4 * key.size, 1 << 20):
            # count the clusters on the dense grid, no sort; empty pairs have m = n = X = Y = 0
            # and add nothing to the variance
            size = k * n_units
            c = key
            cpart = np.arange(size, dtype=np.int64) // n_units
        else:
            clusters, c = np.unique(key, return_inverse=True)
            size = clusters.size
            cpart = clusters // n_units
        return c, size, cpart

    def _clustered_variance(self, x: np.ndarray, y: np.ndarray, rpart: np.ndarray, is_pos: np.ndarray,
                            c: np.ndarray, size: int, cpart: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each part's AUC ``A``, its clustered DeLong variance (Obuchowski; the formula in
        :meth:`auc_intervals`) and whether it is defined (at least two units holding a positive
        and two holding a negative) — from the rows' placement shares ``x`` / ``y``
        (:meth:`_placement_shares`) and their clusters (:meth:`_clusters`)."""
        k = self.k
        P, N = self.pos, self.neg
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
        return A, var, ok

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

"""How rankings are drawn, vectorized: :func:`rank_rows` chooses the rankings of many requests at
once from a matrix of scores (one row per request, padded), slot by slot, with numpy over all the
candidates of all the requests — the one kernel behind :func:`~closedloop.experience.ranking_policy.rank`
(a request alone: one row) and the batch path (every request of the batch: one row each).

Each slot is a handful of whole-matrix operations, and each of them computes exactly the numbers
the per-candidate definition computes (:func:`~closedloop.experience.ranking_policy.slot_probabilities`):

* the best remaining candidate: the highest score, ties to the lower index (``argmax`` returns the
  first maximum); the rows whose best is −inf or NaN are settled on their own (−inf before NaN);
* softmax weights ``exp((s − best) / t)`` through the C library's ``exp``
  (:func:`~closedloop.base.numeric.exp_array`, the function ``math.exp`` calls), recomputed for a row
  only when its best remaining score changes; taken, padding and NaN candidates weigh 0;
* a slot's total: ``np.cumsum`` along the row, whose last column adds left to right as
  ``Softmax.probs`` does (zeros for the taken candidates leave every partial sum unchanged), then
  each probability ``w / total``;
* the draw: the first candidate whose cumulative probability (``np.cumsum`` again, left to right)
  exceeds the slot's uniform number — what ``choose`` returns — else the last one that can be
  shown;
* ε-greedy: ``ε / r`` for each of the ``r`` remaining candidates, ``(1 − ε) + ε / r`` for the best,
  when the best remaining score is in the band; outside it the best, with probability 1;
* SquareCB: ``1 / (r + γ · gap)`` for each remaining candidate but the best (NaN read as −inf, the
  gap of equal scores 0), taken and padding ones 0; the best gets ``1 −`` their total, added with
  ``np.cumsum`` (left to right, as ``SquareCB.probs`` adds).

So a ranking and its slot propensities are the same, bit for bit, whichever path draws them and
however many requests share the matrix; the propensity is their product, left to right.

With the compiled extension, requests whose scores are all finite (nearly all) are drawn by its
``rank_one`` / ``rank_rows`` loops (``src/closedloop/_kernels.c``): the same operations in the same
order — the best by a scan (first maximum), ``exp`` from the same C library, the total and the
cumulative probabilities added left to right — one request after the other, without a numpy
call per slot. A request with a NaN or ±inf score, and every request without the extension,
takes the numpy form described above; the two agree bit for bit
(tests/experience/test_ranking_kernel.py runs both), for SquareCB too (the inverse-gap weights, their
total and the pick added left to right, as the numpy form adds them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from closedloop.base.numeric import compiled, exp_array
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB

__all__ = ["rank_one", "rank_one_numpy", "rank_rows", "rank_rows_numpy"]

#: The exploration policies a ranking draws with (None: greedy).
Policy = Softmax | EpsilonGreedy | SquareCB | None
_NEG = -np.inf
_C_RANK_ONE = compiled("rank_one")
_C_RANK_ROWS = compiled("rank_rows")


def _policy(explore: Policy) -> tuple[int, float, float, float]:
    """The compiled draw's (mode, temperature or ε or γ, band low, band high)."""
    if explore is None:
        return 0, 0.0, 0.0, 0.0
    if isinstance(explore, Softmax):
        return 1, explore.temperature, 0.0, 0.0
    if isinstance(explore, SquareCB):
        return 3, explore.gamma, 0.0, 0.0
    return 2, explore.epsilon, explore.low, explore.high


class _State:
    """One draw's working arrays, candidates × requests (a request per column, so that a sum over a
    request's candidates is a run of contiguous vector additions): which candidates are still
    free, the key the best is found by (−inf where taken, padding or NaN), and the softmax weights
    with the best score each request's weights were computed from."""

    __slots__ = ("C", "P", "S", "free", "key", "nan", "top", "W")

    def __init__(self, S: np.ndarray, counts: np.ndarray) -> None:
        self.S = np.ascontiguousarray(S.T)
        self.free = np.arange(S.shape[1])[:, None] < counts[None, :]
        self.nan = np.isnan(self.S)
        self.key = np.where(self.nan | ~self.free, _NEG, self.S)  # −inf where a candidate cannot be best
        self.W = np.zeros(self.S.shape, dtype=np.float64)
        self.top = np.full(S.shape[0], np.nan)
        # reused for every slot's sums and probabilities: a fresh matrix per step costs more (page faults) than the step
        self.C = np.empty_like(self.S)
        self.P = np.empty_like(self.S)

    def bufs(self, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """Scratch matrices for the requests ``rows`` (the reused ones when all requests are in)."""
        if isinstance(rows, slice):
            return self.C, self.P
        shape = (self.S.shape[0], rows.shape[0])
        return np.empty(shape), np.empty(shape)

    def take(self, rows: Any, pos: np.ndarray) -> None:
        self.free[pos, rows] = False
        self.key[pos, rows] = _NEG
        self.W[pos, rows] = 0.0


def _cumsum(A: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.cumsum(A, axis=0, out=out)``: each column's partial sums, top to bottom (one vector
    addition per candidate; numpy's own cumsum runs element by element here)."""
    if A.shape[0]:
        out[0] = A[0]
        for c in range(1, A.shape[0]):
            np.add(out[c - 1], A[c], out=out[c])
    return out


def _best(st: _State, rows: Any, n: int) -> np.ndarray:
    """Each request's best remaining candidate: the greedy order's next one."""
    key = st.key[:, rows]
    best = key.argmax(axis=0)
    rare = np.flatnonzero(key[best, np.arange(n)] == _NEG)
    if rare.size:  # nothing above −inf remains: the first −inf one, else the first NaN one
        r = rare if isinstance(rows, slice) else rows[rare]
        free, s = st.free[:, r], st.S[:, r]
        neg = free & (s == _NEG)
        best[rare] = np.where(neg.any(axis=0), neg.argmax(axis=0), (free & st.nan[:, r]).argmax(axis=0))
    return best


def _draw(P: np.ndarray, u: np.ndarray, C: np.ndarray) -> np.ndarray:
    """The candidate ``u`` draws from each column of ``P``: the first whose cumulative probability
    exceeds it (as ``choose``; partial sums never decrease, so that is how many are ≤ u), else the
    last with a probability above 0."""
    pos = np.count_nonzero(_cumsum(P, C) <= u[None, :], axis=0)
    miss = np.flatnonzero(pos == P.shape[0])
    if miss.size:
        pos[miss] = P.shape[0] - 1 - (P[::-1, miss] > 0.0).argmax(axis=0)
    return pos


def _softmax_probs(st: _State, rows: Any, ix: np.ndarray, best: np.ndarray, t: float) -> np.ndarray:
    """The slot's softmax over each request's remaining candidates (see the module doc)."""
    sb = st.S[best, ix if isinstance(rows, slice) else rows]
    finite = np.isfinite(sb)
    redo = np.flatnonzero(finite & (sb != st.top[rows]))
    if redo.size == st.S.shape[1]:  # every request (the first slot): in place, no copies
        C = st.C
        np.subtract(st.S, sb[None, :], out=C)
        np.divide(C, t, out=C)
        st.W[...] = exp_array(C.reshape(-1)).reshape(C.shape)
        np.copyto(st.W, 0.0, where=st.nan | ~st.free)
        st.top[:] = sb
    elif redo.size:  # weights from the new best score, for the requests whose best score changed
        r = redo if isinstance(rows, slice) else rows[redo]
        z = (st.S[:, r] - sb[None, redo]) / t
        w = exp_array(z.reshape(-1)).reshape(z.shape)
        st.W[:, r] = np.where(st.free[:, r] & ~st.nan[:, r], w, 0.0)
        st.top[r] = sb[redo]
    W = st.W[:, rows]
    C, P = st.bufs(rows)
    with np.errstate(invalid="ignore", divide="ignore"):  # a limit's column may have no weights; replaced below
        np.divide(W, _cumsum(W, C)[-1], out=P)
    if not finite.all():  # a limit: the +inf ones share the slot; only −inf/NaN left: the −inf ones; only NaN: all
        lim = np.flatnonzero(~finite)
        r = lim if isinstance(rows, slice) else rows[lim]
        free = st.free[:, r]
        share = np.where(np.isnan(sb[lim])[None, :], free, free & (st.S[:, r] == sb[None, lim]))
        P[:, lim] = np.where(share, 1.0 / share.sum(axis=0)[None, :], 0.0)
        st.top[r] = np.nan
    return P


def _epsilon_probs(st: _State, rows: Any, ix: np.ndarray, best: np.ndarray, policy: EpsilonGreedy) -> np.ndarray:
    """The slot's ε-greedy probabilities over each request's remaining candidates (in the band)."""
    free = st.free[:, rows]
    share = policy.epsilon / free.sum(axis=0)
    P = np.where(free, share[None, :], 0.0)
    P[best, ix] = (1.0 - policy.epsilon) + share
    return P


def _squarecb_probs(st: _State, rows: Any, ix: np.ndarray, best: np.ndarray, policy: SquareCB) -> np.ndarray:
    """The slot's inverse-gap weights over each request's remaining candidates (see the module doc)."""
    free = st.free[:, rows]
    key = np.where(st.nan[:, rows], _NEG, st.S[:, rows])
    kb = key[best, ix][None, :]
    with np.errstate(invalid="ignore", divide="ignore"):  # taken candidates may score above the best: masked out
        gap = np.where(key == kb, 0.0, kb - key)
        P = np.where(free, 1.0 / (free.sum(axis=0)[None, :] + policy.gamma * gap), 0.0)
    P[best, ix] = 0.0
    P[best, ix] = 1.0 - _cumsum(P, st.bufs(rows)[0])[-1]
    return P


def rank_rows(
    S: np.ndarray, counts: np.ndarray, k: int, explore: Policy, U: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rankings of ``S``'s rows: row i ranks its first ``counts[i]`` scores (the rest is padding),
    ``min(k, counts[i])`` slots; ``U[i, j]`` is row i's uniform number for slot j (unused when
    greedy). Returns (picks, slot propensities, explored — each rows × min(k, columns), valid in a
    row's first ``min(k, counts[i])`` columns — and each row's propensity)."""
    if _C_RANK_ROWS is None or S.shape[0] == 0:
        return rank_rows_numpy(S, counts, k, explore, U)
    R, N = S.shape
    m = min(k, N)
    picks = np.zeros((R, m), dtype=np.int64)
    slot_p = np.ones((R, m), dtype=np.float64)
    explored = np.zeros((R, m), dtype=bool)
    props = np.ones(R, dtype=np.float64)
    done = np.zeros(R, dtype=np.uint8)
    S = np.ascontiguousarray(S, dtype=np.float64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    Uc = None if explore is None else np.zeros((R, 0)) if U is None else np.ascontiguousarray(U, dtype=np.float64)
    _C_RANK_ROWS(S, R, N, k, *_policy(explore), counts, Uc, picks, slot_p, explored, props, done)
    rest = np.flatnonzero(done == 0)
    if rest.size:  # a NaN or ±inf score: the numpy form, for those requests only
        got = rank_rows_numpy(S[rest], counts[rest], k, explore, Uc[rest] if Uc is not None else None)
        picks[rest], slot_p[rest], explored[rest], props[rest] = got
    return picks, slot_p, explored, props


def rank_rows_numpy(
    S: np.ndarray, counts: np.ndarray, k: int, explore: Policy, U: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rank_rows` in numpy, slot by slot over the whole matrix (see the module doc): the
    form without the compiled extension, and for requests with a non-finite score."""
    R, N = S.shape
    m = min(k, N)
    picks = np.zeros((R, m), dtype=np.int64)
    slot_p = np.ones((R, m), dtype=np.float64)
    explored = np.zeros((R, m), dtype=bool)
    props = np.ones(R, dtype=np.float64)
    st = _State(S, counts)
    ms = np.minimum(counts, k)
    for j in range(m):
        rows: Any = slice(None) if int(ms.min()) > j else np.flatnonzero(ms > j)
        n = R if isinstance(rows, slice) else rows.shape[0]
        if n == 0:
            break
        ix = np.arange(n)
        best = _best(st, rows, n)
        if explore is None:
            pos, q = best, None
        elif isinstance(explore, Softmax | SquareCB):
            if isinstance(explore, Softmax):
                P = _softmax_probs(st, rows, ix, best, explore.temperature)
            else:
                P = _squarecb_probs(st, rows, ix, best, explore)
            pos = _draw(P, U[rows, j], st.bufs(rows)[0])  # type: ignore[index]
            q = P[pos, ix]
        else:
            sb = st.S[best, ix if isinstance(rows, slice) else rows]
            band = (sb >= explore.low) & (sb <= explore.high)
            P = _epsilon_probs(st, rows, ix, best, explore)
            pos = np.where(band, _draw(P, U[rows, j], st.bufs(rows)[0]), best)  # type: ignore[index]
            q = np.where(band, P[pos, ix], 1.0)
        picks[rows, j] = pos
        if q is not None:
            slot_p[rows, j] = q
            props[rows] = props[rows] * q
            explored[rows, j] = pos != best
        st.take(ix if isinstance(rows, slice) else rows, pos)
    return picks, slot_p, explored, props


def rank_one(
    s: np.ndarray, k: int, explore: Policy, u: list[float]
) -> tuple[list[int], list[float], float, list[int]]:
    """:func:`rank_rows` for one request (``s``: its scores, ``u``: its slot draws), as lists:
    (picks, slot propensities, propensity, explored slots): the compiled loop when the extension
    is there and every score is finite, else :func:`rank_one_numpy` — the same numbers."""
    n = s.shape[0]
    m = k if k < n else n
    if m == 0:
        return [], [], 1.0, []
    if _C_RANK_ONE is not None:
        got = _C_RANK_ONE(np.ascontiguousarray(s, dtype=np.float64), k, *_policy(explore), u)
        if got is not None:  # None: a score is not finite
            return got
    return rank_one_numpy(s, k, explore, u)


def rank_one_numpy(
    s: np.ndarray, k: int, explore: Policy, u: list[float]
) -> tuple[list[int], list[float], float, list[int]]:
    """:func:`rank_one` in numpy (the form without the compiled extension): a few numpy calls
    per slot on the row itself — the same operations, in the same order, as :func:`rank_rows`, so
    the same numbers; non-finite scores (rare) go through :func:`rank_rows_numpy` itself."""
    n = s.shape[0]
    m = k if k < n else n
    if m == 0:
        return [], [], 1.0, []
    sl = s.tolist()
    total = sum(sl)
    if total - total != 0.0:  # NaN or ±inf among the scores
        U = np.array([u], dtype=np.float64) if explore is not None else None
        picks, slots, explored, props = rank_rows_numpy(s.reshape(1, -1), np.array([n], dtype=np.int64), k, explore, U)
        return picks[0].tolist(), slots[0].tolist(), float(props[0]), np.flatnonzero(explored[0]).tolist()
    # all finite: the greedy order is a stable sort, highest first; slot j's best is its next free one
    order = np.argsort(np.negative(s), kind="stable").tolist()
    if explore is None:
        return order[:m], [1.0] * m, 1.0, []
    if isinstance(explore, Softmax):
        return _one_softmax(s, sl, order, m, explore.temperature, u)
    if isinstance(explore, SquareCB):
        return _one_squarecb(s, order, m, explore.gamma, u)
    return _one_epsilon(sl, order, m, explore, u)


def _one_pick(P: np.ndarray, u: float) -> int:
    """:func:`_draw` for one row."""
    pos = int(np.add.accumulate(P).searchsorted(u, side="right"))
    if pos < P.shape[0]:
        return pos
    return int(np.flatnonzero(P > 0.0)[-1])


def _one_softmax(
    s: np.ndarray, sl: list[float], order: list[int], m: int, t: float, u: list[float]
) -> tuple[list[int], list[float], float, list[int]]:
    taken: list[int] = []
    free = [True] * len(sl)
    slots: list[float] = []
    explored: list[int] = []
    p = 1.0
    g = 0
    top = math.nan
    W = s
    for j in range(m):
        while not free[order[g]]:
            g += 1
        best = order[g]
        sb = sl[best]
        if sb != top:  # weights from the new best score (taken candidates weigh 0)
            W = exp_array((s - sb) / t)
            W[taken] = 0.0
            top = sb
        P = W / np.add.accumulate(W)[-1]
        pos = _one_pick(P, u[j])
        q = float(P[pos])
        W[pos] = 0.0
        free[pos] = False
        taken.append(pos)
        slots.append(q)
        p = p * q
        if pos != best:
            explored.append(j)
    return taken, slots, p, explored


def _one_slots(order: list[int], m: int, u: list[float], probs: Any) -> tuple[list[int], list[float], float, list[int]]:
    """The ``m`` slots of one request drawn slot by slot: ``probs(j, best, taken)`` gives slot ``j``'s
    probabilities over the candidates (0 for those taken), or None when the best remaining
    candidate takes it with probability 1."""
    free = [True] * len(order)
    taken: list[int] = []
    slots: list[float] = []
    explored: list[int] = []
    p = 1.0
    g = 0
    for j in range(m):
        while not free[order[g]]:
            g += 1
        best = order[g]
        P = probs(j, best, taken)
        if P is None:
            pos, q = best, 1.0
        else:
            pos = _one_pick(P, u[j])
            q = float(P[pos])
        free[pos] = False
        taken.append(pos)
        slots.append(q)
        p = p * q
        if pos != best:
            explored.append(j)
    return taken, slots, p, explored


def _one_epsilon(
    sl: list[float], order: list[int], m: int, policy: EpsilonGreedy, u: list[float]
) -> tuple[list[int], list[float], float, list[int]]:
    n = len(sl)
    eps, lo, hi = policy.epsilon, policy.low, policy.high

    def probs(j: int, best: int, taken: list[int]) -> np.ndarray | None:
        if not lo <= sl[best] <= hi:
            return None
        share = eps / (n - j)
        P = np.full(n, share)
        P[taken] = 0.0
        P[best] = (1.0 - eps) + share
        return P

    return _one_slots(order, m, u, probs)


def _one_squarecb(
    s: np.ndarray, order: list[int], m: int, gamma: float, u: list[float]
) -> tuple[list[int], list[float], float, list[int]]:
    """SquareCB's slots for one request whose scores are all finite: :func:`_squarecb_probs` on the row
    (a free candidate's gap is never below 0, so ``max(gap, 0)`` changes only the taken ones, set to 0)."""
    n = s.shape[0]

    def probs(j: int, best: int, taken: list[int]) -> np.ndarray:
        P = 1.0 / ((n - j) + gamma * np.maximum(s[best] - s, 0.0))
        P[taken] = 0.0
        P[best] = 0.0
        P[best] = 1.0 - np.add.accumulate(P)[-1]
        return P

    return _one_slots(order, m, u, probs)

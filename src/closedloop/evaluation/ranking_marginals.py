"""The slot marginals a ranking report's policy value reads — P(candidate ``c`` at slot ``j``) of
each decision under a ranking policy — exact where that is cheap, sampled where it is not.

The exact marginals (:func:`~closedloop.evaluation.ope_policy.marginals`) enumerate every set the
earlier slots can hold: N × C(N, k − 1) per decision — 400 for 20 candidates and k = 2, 96,900 at
k = 5, where a report of 4,000 decisions spends ~12 s per policy. Above :data:`EXACT_WORK` per
decision, :func:`policy_marginals` computes the first slot's marginal exactly — it is the
policy's distribution over all the candidates, one formula per decision (the exploration's own, as
the enumeration uses it) — and draws ``draws`` rankings per decision with the runtime's own kernel
(:func:`~closedloop.experience.ranking_kernel.rank_rows`, the compiled loop) from seeded uniforms
for the later slots, counting: each entry is the share of the draws that put ``c`` at slot ``j``.
That is an unbiased estimate of the marginal (its standard error at most 0.5 / √draws), so IPS
and DR stay unbiased; the report names the method and the draws. :data:`DRAWS` (128) was chosen
by measuring the policy value against exact marginals (docs/performance.md, "The reward cycle at
feed scale"): the sampling's error is a small fraction of the value's own interval. A greedy
policy's marginals are exact whatever the size (one ranking per decision).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from math import perm
from typing import Any

import numpy as np

from closedloop.base.numeric import compiled
from closedloop.evaluation.ope_policy import _enumerated, _epsilon_cond, _softmax_cond, _squarecb_cond, _work, marginals
from closedloop.experience.ranking_kernel import _policy

__all__ = ["DRAWS", "EXACT_WORK", "LOGGER_DRAWS", "logger_marginals", "policy_marginals", "sampled_marginals"]

#: The largest enumeration per decision (N × C(N, k − 1)) computed exactly; above it, sampled.
EXACT_WORK = 1 << 12
#: Rankings drawn per decision when the marginals are sampled.
DRAWS = 128
#: Sets of earlier slots drawn per logged slot for a logger's marginal beyond its exact slots
#: (:func:`logger_marginals`; docs/evaluation.md, "Logged propensities", has its accuracy).
LOGGER_DRAWS = 128
#: Draws × candidates in one chunk of the sampling (bounds its working memory).
_CHUNK = 1 << 21
#: Chunks of the sampled marginals (and slots of the logger's) computed side by side: the machine's
#: cores, at most 4. The numbers do not depend on it (the uniforms are drawn in order first).
THREADS = max(1, min(4, os.cpu_count() or 1))


def _conditional(explore: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """P(next slot = each candidate | the available ones) under ``explore`` (the exact marginals' form)."""
    from closedloop.experience.exploration import Softmax, SquareCB

    if isinstance(explore, Softmax):
        return partial(_softmax_cond, t=explore.temperature)
    if isinstance(explore, SquareCB):
        return partial(_squarecb_cond, gamma=explore.gamma)
    return partial(_epsilon_cond, policy=explore)


def sampled_marginals(S: np.ndarray, counts: np.ndarray, k: int, explore: Any, *, draws: int = DRAWS,
                      seed: int = 0) -> np.ndarray:
    """P(candidate ``c`` at slot ``j``) of each row of the padded score matrix ``S`` (row ``i``: its
    first ``counts[i]`` columns): the first slot's exact, the later slots' estimated from ``draws``
    rankings per row drawn by the runtime's kernel with seeded uniforms → (rows, columns, k)."""
    from closedloop.experience.ranking_kernel import rank_rows

    S = np.asarray(S, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    R, N = S.shape
    m = min(k, N)
    out = np.zeros((R, N, k))
    if R == 0 or m == 0:
        return out
    out[:, :, 0] = _conditional(explore)(S, np.arange(N)[None, :] < counts[:, None])  # the first slot: exact
    rng = np.random.default_rng([int(seed), 0x5A3])
    step = max(1, _CHUNK // max(1, draws * N))

    def chunk(lo: int, hi: int, U: np.ndarray) -> None:
        d = hi - lo
        Srep, crep = np.repeat(S[lo:hi], draws, axis=0), np.repeat(counts[lo:hi], draws)
        picks, _, _, _ = rank_rows(Srep, crep, k, explore, U)
        shown = (np.arange(m)[None, :] < np.minimum(k, crep)[:, None])[:, 1:]
        row = np.repeat(np.arange(d), draws)[:, None]
        idx = ((row * N + picks[:, 1:]) * (m - 1) + np.arange(m - 1)[None, :])[shown]
        out[lo:hi, :, 1:m] = np.bincount(idx, minlength=d * N * (m - 1)).reshape(d, N, m - 1) / draws

    # the uniforms drawn here in chunk order (the same numbers however many threads), the chunks ranked side by side
    _side_by_side(chunk, ((lo, min(R, lo + step), rng.random(((min(R, lo + step) - lo) * draws, m)))
                          for lo in range(0, R if m > 1 else 0, step)))
    return out


def _side_by_side(work: Callable[..., None], jobs: Iterable[tuple[Any, ...]]) -> None:
    """``work(*job)`` for each job, up to :data:`THREADS` at once: the compiled loops release the
    GIL, so a report's marginals use the machine's cores. ``jobs`` is consumed in order and at most
    :data:`THREADS` ahead of the finished ones (each holds its chunk's uniforms)."""
    if THREADS <= 1:
        for job in jobs:
            work(*job)
        return
    with ThreadPoolExecutor(THREADS, thread_name_prefix="closedloop-marginals") as pool:
        running: list[Future[None]] = []
        for job in jobs:
            if len(running) >= THREADS:
                running.pop(0).result()
            running.append(pool.submit(work, *job))
        for f in running:
            f.result()


def policy_marginals(S: np.ndarray, counts: np.ndarray, k: int, explore: Any, *, seed: int = 0,
                     draws: int | None = None) -> tuple[np.ndarray, str]:
    """The marginals (module doc) and how they were computed: ``"exact"`` or ``"sampled"`` (with
    ``draws`` per decision; None: :data:`DRAWS`)."""
    N = np.asarray(S).shape[1]
    if explore is None or N == 0 or _work(N, min(k, N)) <= EXACT_WORK:
        return marginals(S, counts, k, explore), "exact"
    return sampled_marginals(S, counts, k, explore, draws=DRAWS if draws is None else int(draws), seed=seed), "sampled"


def logger_marginals(S: np.ndarray, counts: np.ndarray, logged: np.ndarray, k: int, explore: Any, *, seed: int = 0,
                     draws: int = LOGGER_DRAWS) -> np.ndarray:
    """The logging policy's marginal P(the logged candidate at its slot) of each decision's logged
    slots — the propensity position-based IPS and DR divide by. ``S``, ``counts``: each decision's
    logged scores (padded, as :func:`sampled_marginals`); ``logged[d, j]``: the column decision ``d``
    showed at slot ``j`` (−1: none) → (decisions, k), NaN where nothing was shown.

    The runtime logs each slot's propensity *given the slots before it*; the estimators pair it with
    the target's marginal P(candidate at slot), which needs the logger's marginal: with the
    conditional, slot ``j``'s term is worth Σ_a r(a, j) π(a at j) P_logger(a not in the earlier
    slots) — too little wherever the logger usually shows a candidate higher than the target does
    (docs/evaluation.md, "Logged propensities"). The first slots are exact, as many as
    :func:`~closedloop.evaluation.ope_policy.marginals`' enumeration covers within
    :data:`EXACT_WORK` per decision (three at 20 candidates, all five at 10). A later slot ``j``'s
    is estimated by importance sampling: ``draws`` sets of earlier slots are drawn from the logger's
    own conditionals *with the logged candidate taken out* and the rest renormalized (so every draw
    leaves it free), each weighted by the mass taken out at each slot, times the logger's
    conditional probability of the candidate after them — unbiased, and never 0 however rarely the
    logger leaves the candidate free (a count of draws could resolve nothing below 1 / ``draws``:
    exactly the rows an exploration moved, whose weights matter most)."""
    S = np.asarray(S, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    logged = np.asarray(logged, dtype=np.int64)
    R, N = S.shape
    out = np.full((R, k), np.nan)
    shown = logged >= 0
    if R == 0 or N == 0:
        return out
    if explore is None:  # greedy: what it showed, it showed with probability 1
        out[shown] = 1.0
        return out
    m = min(k, N)
    depth = max(d for d in range(1, m + 1) if _work(N, d) <= EXACT_WORK or d == 1)
    av = np.arange(N)[None, :] < counts[:, None]
    cond = _conditional(explore)
    rows = np.arange(R)  # the rows whose exact slots numpy's enumeration computes
    # the compiled loop enumerates the earlier slots' ordered choices for the logged candidate only: cheaper
    # than numpy's sets of every candidate while those choices are few (20 candidates, 3 slots: 342)
    exact = compiled("logger_exact") if all(perm(N - 1, j) <= EXACT_WORK for j in range(depth)) else None
    if exact is not None:
        left = np.zeros(R, dtype=bool)
        for j in range(depth):
            dec = np.flatnonzero(shown[:, j])
            got, done = np.empty(dec.size), np.zeros(dec.size, dtype=np.uint8)
            exact(np.ascontiguousarray(S[dec]), dec.size, N, j, *_policy(explore), np.ascontiguousarray(counts[dec]),
                  np.ascontiguousarray(logged[dec, j]), got, done)
            out[dec, j] = got
            left[dec[done == 0]] = True  # a row with a non-finite score: numpy's
        rows = np.flatnonzero(left)
    step = max(1, _CHUNK // _work(N, depth))
    for lo in range(0, rows.size, step):
        part = rows[lo:lo + step]
        E = _enumerated(S[part], av[part], depth, cond)
        for j in range(depth):
            sel = np.flatnonzero(shown[part, j])
            out[part[sel], j] = E[sel, logged[part[sel], j], j]
    rng = np.random.default_rng([int(seed), 0x10C])
    kernel = compiled("logger_is")
    step = max(1, _CHUNK // max(1, draws * N))

    def slot(j: int, dec: np.ndarray, U: np.ndarray) -> None:
        rest = dec
        if kernel is not None and dec.size:  # the compiled loop; a row with a non-finite score: numpy's
            got, done = np.empty(dec.size), np.zeros(dec.size, dtype=np.uint8)
            kernel(np.ascontiguousarray(S[dec]), dec.size, N, j, draws, *_policy(explore), np.ascontiguousarray(counts[dec]),
                   np.ascontiguousarray(logged[dec, j]), U, got, done)
            out[dec, j] = got
            rest = dec[done == 0]
            U = U[done == 0]
        for lo in range(0, rest.size, step):
            part = rest[lo:lo + step]
            out[part, j] = _drawn_marginal(S[part], av[part], logged[part, j], j, cond, draws, U[lo:lo + step])

    def jobs() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:  # each slot's uniforms drawn in slot order
        for j in range(depth, m):
            dec = np.flatnonzero(shown[:, j])
            yield j, dec, rng.random((dec.size, draws * j))

    _side_by_side(slot, jobs())
    return out


def _drawn_marginal(S: np.ndarray, av: np.ndarray, a: np.ndarray, j: int, cond: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    draws: int, U: np.ndarray) -> np.ndarray:
    """P(candidate ``a[d]`` at slot ``j``) of each row under the logger, by importance sampling
    (:func:`logger_marginals`): each earlier slot drawn from the logger's own conditional with
    ``a`` taken out and the rest renormalized, the draw weighted by the mass it took out (the
    probability that the logger did not show ``a`` there) — P(earlier slots = T, ``a`` free) is
    the product of those masses times the draw's probability of T. ``U``: each row's ``draws`` × ``j``
    uniforms (draw by draw); the compiled ``logger_is`` does the same, operation for operation."""
    d, N = S.shape
    n = d * draws
    Srep = np.repeat(S, draws, axis=0)
    at = np.arange(n)
    col = np.repeat(a, draws)
    free = np.repeat(av, draws, axis=0)
    weight = np.ones(n)
    u = np.asarray(U, dtype=np.float64).reshape(n, j)
    for i in range(j):
        P = cond(Srep, free)
        P[at, col] = 0.0
        rest = P.sum(axis=1)  # P(not a here): summed, not 1 − P(a), which loses it when P(a) ≈ 1
        weight *= rest
        cdf = np.cumsum(P, axis=1)
        # the first candidate whose cumulative mass exceeds u · rest (a taken-out one never), else the last
        over = (cdf > (u[:, i] * rest)[:, None]) & (P > 0)
        last = N - 1 - np.argmax((P > 0)[:, ::-1], axis=1)
        pick = np.where(over.any(axis=1), over.argmax(axis=1), last)
        free[at, pick] = False  # nothing but ``a`` left (rest 0): the weight is 0 whatever is taken
    return (weight * cond(Srep, free)[at, col]).reshape(d, draws).mean(axis=1)

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

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from closedloop.evaluation.ope_policy import _epsilon_cond, _softmax_cond, _squarecb_cond, _work, marginals

__all__ = ["DRAWS", "EXACT_WORK", "policy_marginals", "sampled_marginals"]

#: The largest enumeration per decision (N × C(N, k − 1)) computed exactly; above it, sampled.
EXACT_WORK = 1 << 12
#: Rankings drawn per decision when the marginals are sampled.
DRAWS = 128
#: Draws × candidates in one chunk of the sampling (bounds its working memory).
_CHUNK = 1 << 21


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
    for lo in range(0, R if m > 1 else 0, step):
        hi = min(R, lo + step)
        d = hi - lo
        Srep, crep = np.repeat(S[lo:hi], draws, axis=0), np.repeat(counts[lo:hi], draws)
        picks, _, _, _ = rank_rows(Srep, crep, k, explore, rng.random((d * draws, m)))
        shown = (np.arange(m)[None, :] < np.minimum(k, crep)[:, None])[:, 1:]
        row = np.repeat(np.arange(d), draws)[:, None]
        idx = ((row * N + picks[:, 1:]) * (m - 1) + np.arange(m - 1)[None, :])[shown]
        out[lo:hi, :, 1:m] = np.bincount(idx, minlength=d * N * (m - 1)).reshape(d, N, m - 1) / draws
    return out


def policy_marginals(S: np.ndarray, counts: np.ndarray, k: int, explore: Any, *, seed: int = 0,
                     draws: int | None = None) -> tuple[np.ndarray, str]:
    """The marginals (module doc) and how they were computed: ``"exact"`` or ``"sampled"`` (with
    ``draws`` per decision; None: :data:`DRAWS`)."""
    N = np.asarray(S).shape[1]
    if explore is None or N == 0 or _work(N, min(k, N)) <= EXACT_WORK:
        return marginals(S, counts, k, explore), "exact"
    return sampled_marginals(S, counts, k, explore, draws=DRAWS if draws is None else int(draws), seed=seed), "sampled"

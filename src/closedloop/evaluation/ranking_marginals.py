"""The slot marginals a ranking report's policy value reads — P(candidate ``c`` at slot ``j``) of
each decision under a ranking policy — exact where that is cheap, sampled where it is not.

The exact marginals (:func:`~closedloop.evaluation.ope_policy.marginals`) enumerate every set the
earlier slots can hold: N × C(N, k − 1) per decision — 400 for 20 candidates and k = 2, 96,900 at
k = 5, where a report of 4,000 decisions spends ~12 s per policy. Above :data:`EXACT_WORK` per
decision, :func:`policy_marginals` draws ``draws`` rankings per decision with the runtime's own
kernel (:func:`~closedloop.experience.ranking_kernel.rank_rows`, the compiled loop) from seeded
uniforms, and counts: each entry is the share of the draws that put ``c`` at slot ``j``. That is an
unbiased estimate of the marginal (its standard error at most 0.5 / √draws), so IPS and DR stay
unbiased; the report names the method and the draws. A greedy policy's marginals are exact
whatever the size (one ranking per decision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.evaluation.ope_policy import _work, marginals

__all__ = ["DRAWS", "EXACT_WORK", "policy_marginals", "sampled_marginals"]

#: The largest enumeration per decision (N × C(N, k − 1)) computed exactly; above it, sampled.
EXACT_WORK = 1 << 12
#: Rankings drawn per decision when the marginals are sampled.
DRAWS = 512
#: Draws × candidates in one chunk of the sampling (bounds its working memory).
_CHUNK = 1 << 21


def sampled_marginals(S: np.ndarray, counts: np.ndarray, k: int, explore: Any, *, draws: int = DRAWS,
                      seed: int = 0) -> np.ndarray:
    """P(candidate ``c`` at slot ``j``) of each row of the padded score matrix ``S`` (row ``i``: its
    first ``counts[i]`` columns), estimated from ``draws`` rankings per row drawn by the runtime's
    kernel with seeded uniforms → (rows, columns, k)."""
    from closedloop.experience.ranking_kernel import rank_rows

    S = np.asarray(S, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    R, N = S.shape
    m = min(k, N)
    out = np.zeros((R, N, k))
    rng = np.random.default_rng([int(seed), 0x5A3])
    step = max(1, _CHUNK // max(1, draws * N))
    for lo in range(0, R, step):
        hi = min(R, lo + step)
        d = hi - lo
        Srep, crep = np.repeat(S[lo:hi], draws, axis=0), np.repeat(counts[lo:hi], draws)
        picks, _, _, _ = rank_rows(Srep, crep, k, explore, rng.random((d * draws, m)))
        shown = np.arange(m)[None, :] < np.minimum(k, crep)[:, None]
        row = np.repeat(np.arange(d), draws)[:, None]
        idx = ((row * N + picks) * m + np.arange(m)[None, :])[shown]
        out[lo:hi, :, :m] = np.bincount(idx, minlength=d * N * m).reshape(d, N, m) / draws
    return out


def policy_marginals(S: np.ndarray, counts: np.ndarray, k: int, explore: Any, *, seed: int = 0,
                     draws: int = DRAWS) -> tuple[np.ndarray, str]:
    """The marginals (module doc) and how they were computed: ``"exact"`` or ``"sampled"``."""
    N = np.asarray(S).shape[1]
    if explore is None or N == 0 or _work(N, min(k, N)) <= EXACT_WORK:
        return marginals(S, counts, k, explore), "exact"
    return sampled_marginals(S, counts, k, explore, draws=draws, seed=seed), "sampled"

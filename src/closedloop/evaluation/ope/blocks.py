"""Reading ``action_dist`` and the reward model at each round's position, a block of rounds at a time.

Every estimator reads π_e(· | x_i, k_i) — the target's distribution at the round's position — and
the doubly robust ones q̂(x_i, ·, k_i) too. Gathering them for all rounds at once writes an
(n, n_actions) copy and reads it back from memory for each use (the check, the product, the
factual entry); a block of rounds at a time keeps each gathered block in cache while it is checked
and used, which is several times faster on logs the size of the Open Bandit Dataset. The results
are the same: the per-round figures do not depend on the blocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.inputs import (
    SUM_ATOL,
    SUM_RTOL,
    At,
    Floats,
    Ints,
    action_dist_3d,
    floats_1d,
    ints_1d,
    positions,
    pscore_1d,
    reward_model_3d,
)

BLOCK_ROWS = 2048  # 2048 rounds × 80 actions × 8 bytes: ~1.3 MB per gathered block


@dataclass(frozen=True, slots=True)
class Logged:
    """Checked logged rounds, with what every estimator shares: ``target`` = π_e(a_i | x_i, k_i) at the
    logged action and position, ``weights`` = target / pscore; with a reward model, ``direct`` =
    q̂(x_i, π_e) and ``residual`` = r_i − q̂(x_i, a_i, k_i) per round."""

    reward: Floats
    action: Ints
    pscore: Floats
    action_dist: Floats
    position: Ints | None
    target: Floats
    weights: Floats
    direct: Floats | None = None
    residual: Floats | None = None

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    def position_or_zeros(self) -> Ints:
        return self.position if self.position is not None else np.zeros(self.n, dtype=np.int64)


def logged(where: str, reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any, model: Any = None) -> Logged:
    """Check the logged rounds once and compute the importance weights (and, given a reward model's
    predictions ``model``, the direct method's terms and the residuals)."""
    dist = action_dist_3d(action_dist, where)
    n, n_actions, len_list = dist.shape
    r = floats_1d(reward, "reward", where, n)
    a = ints_1d(action, "action", where, n, n_actions, "an action of action_dist, 0-based")
    p = pscore_1d(pscore, "pscore", where, n)
    pos = positions(position, n, len_list, where)
    target = dist[np.arange(n), a, 0 if pos is None else pos]
    if model is None:
        check_targets(dist, pos, where)
        return Logged(r, a, p, dist, pos, target, target / p)
    direct, factual = direct_terms(dist, pos, where, reward_model_3d(model, dist.shape, where), a)
    return Logged(r, a, p, dist, pos, target, target / p, direct, r - factual)


def check_targets(action_dist: Floats, position: Ints | None, where: str) -> None:
    """Check every round's distribution at its position: entries ≥ 0 summing to 1 (within
    numpy.allclose's tolerance, as obp; a NaN or infinite entry fails it)."""
    _scan(action_dist, position, where, None, None, None, None)


def direct_terms(action_dist: Floats, position: Ints | None, where: str, q: Floats,
                 action: Ints | None = None) -> tuple[Floats, Floats]:
    """:func:`check_targets`, and the direct method's terms Σ_a π_e(a) q̂(a) / Σ_a π_e(a) per round —
    obp's ``np.average(q̂, weights=π_e, axis=1)`` at the round's position, the sums in einsum's and
    BLAS's order (equal to obp's to ~1e-15 relative) — with q̂ of the logged ``action`` (zeros without)."""
    n = action_dist.shape[0]
    direct, factual = np.empty(n), np.zeros(n)
    _scan(action_dist, position, where, q, action, direct, factual)
    return direct, factual


def _scan(action_dist: Floats, position: Ints | None, where: str, q: Floats | None, action: Ints | None,
          direct: Floats | None, factual: Floats | None) -> None:
    n, n_actions, _ = action_dist.shape
    ones = np.ones(n_actions)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        rows = np.arange(start, stop)
        pos = 0 if position is None else position[start:stop]
        pi = action_dist[rows, :, pos]
        sums = pi @ ones
        _check_block(pi, sums, start, position, where)
        if q is None or direct is None or factual is None:
            continue
        q_block = q[rows, :, pos]
        terms = np.einsum("ia,ia->i", q_block, pi) / sums
        _check_terms(terms, q_block, start, position, where)
        direct[start:stop] = terms
        if action is not None:
            factual[start:stop] = q_block[np.arange(stop - start), action[start:stop]]


def _k(position: Ints | None, i: int) -> int:
    return 0 if position is None else int(position[i])


def _check_block(pi: Floats, sums: Floats, start: int, position: Ints | None, where: str) -> None:
    bad = ~(np.abs(sums - 1.0) <= SUM_ATOL + SUM_RTOL)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        rule = f"a distribution over actions, summing to 1 (within {SUM_ATOL + SUM_RTOL:.2g}) for every round at its position"
        i = start + j
        raise EvaluationError("action_dist", rule, At(pi[j].sum(), f"at round {i}, position {_k(position, i)}"), where)
    if pi.min() < 0.0:
        j, a = np.argwhere(pi < 0.0)[0]
        i = start + int(j)
        raise EvaluationError("action_dist", "a probability ≥ 0 for every action at every round's position",
                              At(pi[j, a], f"at round {i}, action {a}, position {_k(position, i)}"), where)


def _check_terms(terms: Floats, q_block: Floats, start: int, position: Ints | None, where: str) -> None:
    """A non-finite prediction for any action at a round's position makes its term non-finite
    (0 · inf is NaN), so checking the terms checks every prediction read, without another pass."""
    if np.isfinite(terms).all():
        return
    name = "estimated_rewards_by_reg_model"
    bad = ~np.isfinite(q_block)
    if bad.any():
        j, a = np.argwhere(bad)[0]
        i = start + int(j)
        raise EvaluationError(name, "finite for every action at every round's position",
                              At(q_block[j, a], f"at round {i}, action {a}, position {_k(position, i)}"), where)
    i = start + int(np.flatnonzero(~np.isfinite(terms))[0])
    raise EvaluationError(name, "small enough that Σ_a π_e(a) q̂(a) is finite at every round", At(terms[i - start], f"at round {i}"), where)

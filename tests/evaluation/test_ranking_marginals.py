"""The sampled slot marginals against the exact enumeration: the first slot exact, the later slots
within their standard error, every shown slot a distribution over the decision's own candidates,
the same seed the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.evaluation.ope_policy import marginals
from closedloop.evaluation.ranking_marginals import EXACT_WORK, policy_marginals, sampled_marginals
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB


def _scores(rows: int = 60, n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(rows, n))
    counts = rng.integers(1, n + 1, size=rows)
    S[np.arange(n)[None, :] >= counts[:, None]] = 0.0  # padding
    return S, counts


@pytest.mark.parametrize("explore", [Softmax(0.5), SquareCB(20.0), EpsilonGreedy(0.2)], ids=["softmax", "squarecb", "epsilon"])
def test_sampled_marginals_are_exact_at_the_first_slot_and_within_their_error_after(explore):
    S, counts = _scores()
    k, draws = 3, 4000
    exact = marginals(S, counts, k, explore)
    got = sampled_marginals(S, counts, k, explore, draws=draws, seed=5)
    assert got.shape == exact.shape
    np.testing.assert_allclose(got[:, :, 0], exact[:, :, 0], rtol=0, atol=1e-12)
    se = np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(got - exact) <= 5 * se + 1e-12)
    assert np.abs(got[:, :, 1:] - exact[:, :, 1:]).max() > 0  # the later slots are drawn, not enumerated
    for j in range(k):  # a shown slot: a distribution over the decision's own candidates; a slot not shown: nothing
        shown = counts > j
        np.testing.assert_allclose(got[shown, :, j].sum(axis=1), 1.0, atol=1e-12)
        assert not got[~shown, :, j].any()
        assert not got[np.arange(S.shape[1])[None, :] >= counts[:, None], j].any()
    again = sampled_marginals(S, counts, k, explore, draws=draws, seed=5)
    assert np.array_equal(got, again) and not np.array_equal(got, sampled_marginals(S, counts, k, explore, draws=draws, seed=6))


def test_policy_marginals_enumerate_when_cheap_and_sample_above_the_bound():
    S, counts = _scores(rows=20, n=6)
    M, how = policy_marginals(S, counts, 3, Softmax(0.5))
    assert how == "exact" and np.array_equal(M, marginals(S, counts, 3, Softmax(0.5)))
    S, counts = _scores(rows=20, n=30)
    assert 30 * 435 > EXACT_WORK  # N × C(N, k − 1) at k = 3
    M, how = policy_marginals(S, counts, 3, Softmax(0.5), draws=64)
    assert how == "sampled" and M.shape == (20, 30, 3)
    np.testing.assert_allclose(M.sum(axis=1)[counts >= 3], 1.0, atol=1e-12)

"""The logging policy's marginals at its logged slots (ranking_marginals.logger_marginals): exact
where the enumeration is cheap, a Rao–Blackwellized draw beyond, against the exact enumeration."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.evaluation.ope_policy import marginals
from closedloop.evaluation.ranking_marginals import EXACT_WORK, logger_marginals
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB
from closedloop.experience.ranking_kernel import rank_rows


def _logged(S, counts, k, explore, seed):
    picks, _, _, _ = rank_rows(S, counts, k, explore, np.random.default_rng(seed).random((S.shape[0], min(k, S.shape[1]))))
    out = np.full((S.shape[0], k), -1, dtype=np.int64)
    out[:, :picks.shape[1]] = picks
    return out


@pytest.mark.parametrize("explore", [SquareCB(50.0), Softmax(0.5), EpsilonGreedy(0.2)], ids=["squarecb", "softmax", "epsilon"])
def test_the_logged_slots_marginals_agree_with_the_exact_enumeration(explore):
    rng = np.random.default_rng(3)
    R, N, k = 300, 12, 5  # 12 × C(12, 4) = 5,940 > EXACT_WORK: slots 1-4 exact, slot 5 drawn
    assert N * 495 > EXACT_WORK
    S = rng.normal(0.0, 1.0, (R, N))
    counts = rng.integers(6, N + 1, R)
    S[np.arange(N)[None, :] >= counts[:, None]] = np.nan
    logged = _logged(S, counts, k, explore, 5)
    got = logger_marginals(S, counts, logged, k, explore, seed=1, draws=256)
    exact = marginals(S, counts, k, explore)
    d, j = np.nonzero(logged >= 0)
    want = exact[d, logged[d, j], j]
    assert np.isnan(got[logged < 0]).all() and np.isfinite(got[d, j]).all()
    early = j < 4
    assert np.abs(got[d, j][early] - want[early]).max() < 1e-12
    late = ~early
    rel = np.abs(got[d, j][late] - want[late]) / want[late]
    assert np.median(rel) < 0.1 and (got[d, j][late] > 0).all()
    assert abs(np.mean(got[d, j][late]) / np.mean(want[late]) - 1.0) < 0.05  # unbiased: no drift on average


def test_a_candidate_the_logger_rarely_leaves_free_still_gets_its_small_marginal():
    """SquareCB with a large gamma puts its best first almost always; logged at slot 2 (after an
    exploration) its marginal there is small but not 0 — what a count of draws could not resolve."""
    S = np.array([[3.0, 2.0, 1.0, 0.5, 0.0]])
    counts = np.array([5])
    logged = np.array([[1, 0, 2]])  # the second best first, then the best
    explore = SquareCB(3000.0)
    got = logger_marginals(S, counts, logged, 3, explore, seed=0)
    want = marginals(S, counts, 3, explore)[0]
    assert got[0, 1] == pytest.approx(want[0, 1], rel=1e-12) and 0 < got[0, 1] < 0.01


def test_a_greedy_logger_showed_what_it_showed_with_probability_one():
    S = np.array([[1.0, 2.0, 3.0]])
    got = logger_marginals(S, np.array([3]), np.array([[2, 1, -1]]), 3, None)
    assert got[0, 0] == 1.0 and got[0, 1] == 1.0 and np.isnan(got[0, 2])


@pytest.mark.parametrize("explore", [SquareCB(50.0), Softmax(0.5), EpsilonGreedy(0.2)], ids=["squarecb", "softmax", "epsilon"])
def test_the_compiled_draw_computes_what_the_numpy_form_does(explore):
    from closedloop.base.numeric import compiled
    from closedloop.evaluation import ranking_marginals as rm
    from closedloop.experience.ranking_kernel import _policy

    kernel = compiled("logger_is")
    if kernel is None:
        pytest.skip("closedloop._kernels is not built")
    rng = np.random.default_rng(8)
    R, N, j, draws = 200, 9, 3, 16
    S = rng.normal(0.0, 1.0, (R, N))
    counts = rng.integers(j + 1, N + 1, R)
    S[np.arange(N)[None, :] >= counts[:, None]] = np.nan
    cols = rng.integers(0, counts)
    U = rng.random((R, draws * j))
    got, done = np.empty(R), np.zeros(R, dtype=np.uint8)
    kernel(np.ascontiguousarray(S), R, N, j, draws, *_policy(explore), counts.astype(np.int64), cols.astype(np.int64), U, got, done)
    av = np.arange(N)[None, :] < counts[:, None]
    want = rm._drawn_marginal(S, av, cols, j, rm._conditional(explore), draws, U)
    assert done.all()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("explore", [SquareCB(50.0), Softmax(0.5), EpsilonGreedy(0.2)], ids=["squarecb", "softmax", "epsilon"])
def test_the_compiled_enumeration_gives_the_exact_slots_numpys_does(explore, monkeypatch):
    """The exact slots by the compiled loop (the logged candidate only) against numpy's enumeration
    of every candidate; a row with a non-finite score is left to numpy in both."""
    from closedloop.base.numeric import compiled
    from closedloop.evaluation import ranking_marginals as rm

    if compiled("logger_exact") is None:
        pytest.skip("closedloop._kernels is not built")
    rng = np.random.default_rng(11)
    R, N, k = 150, 20, 5  # 20 candidates: slots 1-3 exact
    S = rng.normal(0.0, 1.0, (R, N))
    counts = rng.integers(4, N + 1, R)
    S[np.arange(N)[None, :] >= counts[:, None]] = np.nan
    S[7, 0] = -np.inf
    logged = _logged(S, counts, k, explore, 2)
    got = logger_marginals(S, counts, logged, k, explore, seed=3, draws=8)
    monkeypatch.setattr(rm, "compiled", lambda name: None)
    want = logger_marginals(S, counts, logged, k, explore, seed=3, draws=8)
    shown = logged[:, :3] >= 0
    assert shown.sum() > 400
    np.testing.assert_allclose(got[:, :3][shown], want[:, :3][shown], rtol=1e-12, atol=1e-300)
    assert np.isnan(got[:, :3][~shown]).all()


def test_the_marginals_do_not_depend_on_how_many_threads_compute_them(monkeypatch):
    """The uniforms are drawn in chunk (and slot) order before the chunks run side by side: one
    thread and several give the same bits."""
    from closedloop.evaluation import ranking_marginals as rm

    rng = np.random.default_rng(4)
    R, N, k = 400, 20, 5
    S = rng.normal(0.0, 1.0, (R, N))
    counts = rng.integers(6, N + 1, R)
    S[np.arange(N)[None, :] >= counts[:, None]] = np.nan
    explore = SquareCB(300.0)
    logged = _logged(S, counts, k, explore, 6)
    monkeypatch.setattr(rm, "_CHUNK", 20 * 32 * 25)  # 25 decisions a chunk: 16 chunks
    got = {}
    for threads in (1, 3):
        monkeypatch.setattr(rm, "THREADS", threads)
        got[threads] = (rm.sampled_marginals(S, counts, k, explore, draws=32, seed=2),
                        rm.logger_marginals(S, counts, logged, k, explore, seed=2, draws=32))
    for one, many in zip(got[1], got[3], strict=True):
        np.testing.assert_array_equal(one, many)


def test_a_deep_ranking_of_few_candidates_is_enumerated_by_sets():
    """Ten candidates, all ten slots: the enumeration covers every slot (10 × C(10, j) ≤ EXACT_WORK),
    but the ordered choices before slot 10 number 9! — numpy's sets take it, exactly."""
    rng = np.random.default_rng(9)
    R, N, k = 40, 10, 10
    S = rng.normal(0.0, 1.0, (R, N))
    counts = np.full(R, N)
    explore = SquareCB(50.0)
    logged = _logged(S, counts, k, explore, 1)
    got = logger_marginals(S, counts, logged, k, explore, seed=0)
    exact = marginals(S, counts, k, explore)
    d, j = np.nonzero(logged >= 0)
    np.testing.assert_allclose(got[d, j], exact[d, logged[d, j], j], rtol=1e-12)

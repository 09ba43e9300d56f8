"""ope.estimate_difference: a candidate's value minus a baseline's on the same logged rounds, with a
paired bootstrap interval (the same draws for both)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope import estimate, estimate_difference

N_ACTIONS, N_CONTEXTS = 4, 5


def _world(seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.05, 0.6, (N_CONTEXTS, N_ACTIONS))  # click probability per (context, action)
    logger = rng.dirichlet(np.full(N_ACTIONS, 5.0), N_CONTEXTS)
    best = np.eye(N_ACTIONS)[mu.argmax(axis=1)]
    good = 0.8 * best + 0.2 / N_ACTIONS  # mostly the best action
    uniform = np.full((N_CONTEXTS, N_ACTIONS), 1.0 / N_ACTIONS)
    return mu, logger, good, uniform


def _log(mu, logger, n: int, rng):
    x = rng.integers(0, N_CONTEXTS, n)
    u = rng.random(n)
    a = (u[:, None] > np.cumsum(logger[x], axis=1)).sum(axis=1).clip(max=N_ACTIONS - 1)
    r = (rng.random(n) < mu[x, a]).astype(np.float64)
    return x, a, r, logger[x, a]


def _dist(policy, x):
    return policy[x][:, :, None]


def test_a_target_equal_to_the_baseline_differs_by_exactly_zero():
    mu, logger, good, _ = _world()
    rng = np.random.default_rng(1)
    x, a, r, p = _log(mu, logger, 500, rng)
    q = np.repeat(mu[x][:, :, None], 1, axis=2)
    units = rng.integers(0, 60, x.size)
    for kw in ({}, {"units": units}):
        out = estimate_difference(r, a, p, _dist(good, x), _dist(good, x), estimated_rewards_by_reg_model=q,
                                  n_bootstrap=50, **kw)
        assert set(out) == {"ips", "snips", "dm", "dr", "sndr", "switch_dr"}
        for d in out.values():
            assert d.value == 0.0 and (d.low, d.high) == (0.0, 0.0), d
            assert d.interval == ("paired bootstrap by unit" if kw else "paired bootstrap by round")


def test_each_side_equals_estimate_and_a_clearly_better_target_is_above_zero():
    mu, logger, good, uniform = _world()
    x, a, r, p = _log(mu, logger, 4000, np.random.default_rng(2))
    out = estimate_difference(r, a, p, _dist(good, x), _dist(uniform, x), n_bootstrap=300, seed=3)
    alone_t = estimate(r, a, p, _dist(good, x))
    alone_b = estimate(r, a, p, _dist(uniform, x))
    true = float(((good - uniform) * mu).sum(axis=1).mean())
    assert true > 0.1
    for name in ("ips", "snips"):
        d = out[name]
        assert d.candidate == alone_t[name].value and d.baseline == alone_b[name].value
        assert d.value == pytest.approx(alone_t[name].value - alone_b[name].value, abs=1e-15)
        assert d.low > 0.0 and d.low <= d.value <= d.high
        assert d.candidate_ess == alone_t[name].ess and d.candidate_support.passed
    # paired: narrower than the two intervals side by side would suggest
    width = out["snips"].high - out["snips"].low
    assert width < (alone_t["snips"].high - alone_t["snips"].low) + (alone_b["snips"].high - alone_b["snips"].low)


def test_the_paired_interval_covers_the_true_difference_at_least_90_percent_of_100_logs():
    mu, logger, good, uniform = _world(7)
    true = float(((good - uniform) * mu).sum(axis=1).mean())  # contexts are uniform
    rng = np.random.default_rng(11)
    hits = {"ips": 0, "snips": 0, "dr": 0}
    for rep in range(100):
        x, a, r, p = _log(mu, logger, 1500, rng)
        q = mu[x][:, :, None] + rng.normal(0, 0.05, (x.size, N_ACTIONS, 1))  # a slightly wrong reward model
        out = estimate_difference(r, a, p, _dist(good, x), _dist(uniform, x), estimated_rewards_by_reg_model=q,
                                  estimators=list(hits), n_bootstrap=200, seed=rep)
        for name in hits:
            hits[name] += out[name].low <= true <= out[name].high
    assert all(h >= 90 for h in hits.values()), hits


def test_refusals_name_the_parameter():
    mu, logger, good, _ = _world()
    x, a, r, p = _log(mu, logger, 50, np.random.default_rng(0))
    with pytest.raises(EvaluationError, match="baseline_dist"):
        estimate_difference(r, a, p, _dist(good, x), _dist(good, x)[:10])
    with pytest.raises(EvaluationError, match="n_bootstrap"):
        estimate_difference(r, a, p, _dist(good, x), _dist(good, x), n_bootstrap=0)
    bad = _dist(good, x).copy()
    bad[3, 0, 0] += 0.5
    with pytest.raises(EvaluationError, match="action_dist"):
        estimate_difference(r, a, p, _dist(good, x), bad)

"""``ope.estimate``: every estimator's value with its interval, the effective sample size and the
support check, on small logs whose figures are computed by hand."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from closedloop.errors import EvaluationError
from closedloop.evaluation import ope

# four rounds, three actions, one position; importance weights 1, 4, 1, 4/3 (as in test_ope_estimators.py)
DIST = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])[:, :, None]
LOG = dict(reward=np.array([1.0, 0.0, 1.0, 2.0]), action=np.array([0, 1, 2, 0]), pscore=np.array([0.5, 0.25, 0.5, 0.25]), action_dist=DIST)
Q = np.tile(np.array([0.2, 0.4, 0.6]), (4, 1))[:, :, None]


def test_estimate_gives_every_estimator_its_own_value():
    out = ope.estimate(**LOG, estimated_rewards_by_reg_model=Q, lambda_=2.0, n_bootstrap=200)
    assert list(out) == ["ips", "snips", "dm", "dr", "sndr", "switch_dr"]
    assert out["ips"].value == ope.ips(**LOG)
    assert out["snips"].value == ope.snips(**LOG)
    assert out["dm"].value == pytest.approx(ope.dm(LOG["action_dist"], Q), rel=1e-15)
    assert out["dr"].value == pytest.approx(ope.dr(**LOG, estimated_rewards_by_reg_model=Q), rel=1e-15)
    assert out["sndr"].value == pytest.approx(ope.sndr(**LOG, estimated_rewards_by_reg_model=Q), rel=1e-15)
    assert out["switch_dr"].value == pytest.approx(ope.switch_dr(**LOG, estimated_rewards_by_reg_model=Q, lambda_=2.0), rel=1e-15)
    assert list(ope.estimate(**LOG, n_bootstrap=10)) == ["ips", "snips"]  # no reward model: the estimators that need none


def test_point_values_are_the_estimates_values_without_intervals():
    out = ope.estimate(**LOG, estimated_rewards_by_reg_model=Q, lambda_=2.0, n_bootstrap=20)
    pts = ope.point_values(**LOG, estimated_rewards_by_reg_model=Q, lambda_=2.0)
    assert pts == {name: e.value for name, e in out.items()}
    assert list(ope.point_values(**LOG)) == ["ips", "snips"]
    with pytest.raises(EvaluationError, match="point_values"):
        ope.point_values(**{**LOG, "pscore": np.array([0.5, 0.0, 0.5, 0.25])})


def test_which_interval_and_the_analytic_one_by_hand():
    out = ope.estimate(**LOG, estimated_rewards_by_reg_model=Q, n_bootstrap=200)
    kinds = {name: e.interval for name, e in out.items()}
    assert kinds == {"ips": "analytic (normal)", "snips": "bootstrap by round", "dm": "analytic (normal)",
                     "dr": "analytic (normal)", "sndr": "bootstrap by round", "switch_dr": "analytic (normal)"}
    terms = LOG["reward"] * np.array([1.0, 4.0, 1.0, 4 / 3])
    half = NormalDist().inv_cdf(0.975) * terms.std(ddof=1) / 2
    assert (out["ips"].low, out["ips"].high) == pytest.approx((7 / 6 - half, 7 / 6 + half))
    by_unit = ope.estimate(**LOG, estimated_rewards_by_reg_model=Q, units=np.array(["a", "a", "b", "c"]), n_bootstrap=200)
    assert {e.interval for e in by_unit.values()} == {"bootstrap by unit"}
    for e in by_unit.values():
        assert e.low <= e.high


def test_the_effective_sample_size_of_the_weights():
    out = ope.estimate(**LOG, n_bootstrap=10)
    # w = 1, 4, 1, 4/3: (Σw)² / Σw² = (22/3)² / (178/9)
    assert out["ips"].ess == pytest.approx(484 / 178)
    assert out["ips"].n == 4


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    n = 300
    dist = rng.dirichlet(np.ones(4), size=n)[:, :, None]
    log = dict(reward=rng.binomial(1, 0.3, n).astype(float), action=rng.integers(0, 4, n), pscore=np.full(n, 0.25), action_dist=dist)
    a = ope.estimate(**log, seed=1, n_bootstrap=300)["snips"]
    b = ope.estimate(**log, seed=1, n_bootstrap=300)["snips"]
    c = ope.estimate(**log, seed=2, n_bootstrap=300)["snips"]
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < a.value < a.high


def test_the_bootstrap_by_unit_widens_when_a_units_rounds_move_together():
    # 40 units of 10 identical rounds each: by round the log looks like 400 independent rounds,
    # by unit it holds 40 — the interval by unit is about √10 times as wide
    rng = np.random.default_rng(5)
    units = np.repeat(np.arange(40), 10)
    per_unit = rng.binomial(1, 0.4, 40).astype(float)
    dist = np.tile(np.array([0.7, 0.3]), (400, 1))[:, :, None]
    log = dict(reward=per_unit[units], action=np.zeros(400, dtype=int), pscore=np.full(400, 0.5), action_dist=dist)
    by_round = ope.estimate(**log, n_bootstrap=2000)["snips"]
    by_unit = ope.estimate(**log, units=units, n_bootstrap=2000)["snips"]
    ratio = (by_unit.high - by_unit.low) / (by_round.high - by_round.low)
    assert 2.2 < ratio < 4.5, ratio


def test_a_target_on_actions_the_logger_never_took_fails_the_support_check():
    # the logger took actions 0 and 1 only; the target puts 0.3 of its mass on action 2 in every round
    n = 50
    rng = np.random.default_rng(0)
    dist = np.tile(np.array([0.4, 0.3, 0.3]), (n, 1))[:, :, None]
    log = dict(reward=rng.binomial(1, 0.5, n).astype(float), action=np.arange(n) % 2, pscore=np.full(n, 0.5), action_dist=dist)
    out = ope.estimate(**log, n_bootstrap=50)
    s = out["ips"].support
    assert not s.passed
    assert s.share == pytest.approx(0.3)
    assert "action 2 at position 0" in s.detail
    assert math.isfinite(out["ips"].value)  # estimated, but said so
    assert "support check failed" in (out["ips"].warning or "")
    assert ope.estimate(**log, n_bootstrap=50, support_tolerance=0.5)["ips"].support.passed


def test_the_support_check_reads_each_position_and_the_threshold():
    # two positions: action 1 was only ever logged at position 0, and action 0 at position 1 only with pscore 1e-4
    dist = np.zeros((4, 2, 2))
    dist[:, :, 0] = [0.5, 0.5]  # position 0: half on action 1 (logged there) — supported
    dist[:, :, 1] = [0.2, 0.8]  # position 1: 0.8 on action 1 (never logged there), 0.2 on action 0 (pscore 1e-4)
    log = dict(reward=np.ones(4), action=np.array([0, 1, 0, 0]), pscore=np.array([0.5, 0.5, 1e-4, 1e-4]), action_dist=dist,
               position=np.array([0, 0, 1, 1]))
    s = ope.estimate(**log, n_bootstrap=20)["ips"].support
    assert s.share == pytest.approx((0 + 0 + 1.0 + 1.0) / 4)  # the two rounds at position 1 have all their mass unsupported
    assert ope.estimate(**log, n_bootstrap=20, support_threshold=1e-5)["ips"].support.share == pytest.approx(0.8 * 2 / 4)
    assert ope.estimate(**LOG, n_bootstrap=20)["ips"].support.passed  # every pair taken


def test_to_dict_is_json():
    out = ope.estimate(**{**LOG, "reward": LOG["reward"][:1], "action": LOG["action"][:1], "pscore": LOG["pscore"][:1],
                          "action_dist": LOG["action_dist"][:1]}, n_bootstrap=10)
    d = out["ips"].to_dict()
    assert d["low"] is None and d["high"] is None  # one round: no interval, null rather than NaN
    assert json.loads(json.dumps(d, allow_nan=False))["support"]["passed"] in (True, False)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(estimators=["ips", "magic"]), r"'estimators' of estimate must be names among \['ips', 'snips', 'dm'"),
    (dict(estimators=["dr"]), "'estimated_rewards_by_reg_model' of estimate must be given for the estimator 'dr'"),
    (dict(alpha=1.5), r"'alpha' of estimate must be a number in \(0, 1\)"),
    (dict(n_bootstrap=0), "'n_bootstrap' of estimate must be an int ≥ 1"),
    (dict(units=np.arange(3)), r"'units' of estimate must be as long as the other arrays \(4 rounds\)"),
    (dict(support_threshold=2.0), r"'support_threshold' of estimate must be a number in \[0, 1\]"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(EvaluationError, match=message):
        ope.estimate(**LOG, **kwargs)

"""The off-policy point estimators on tiny logs computed by hand, and the refusals of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.errors import EvaluationError
from closedloop.evaluation import ope

# Four rounds, three actions, one position. Importance weights w = π_e(a_i) / pscore_i = [1, 4, 1, 4/3].
DIST = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])[:, :, None]
ACTION = np.array([0, 1, 2, 0])
PSCORE = np.array([0.5, 0.25, 0.5, 0.25])
REWARD = np.array([1.0, 0.0, 1.0, 2.0])
Q = np.tile(np.array([0.2, 0.4, 0.6]), (4, 1))[:, :, None]
# q̂(x, π_e) per round: 0.35, 0.4, 0.46, 0.4 → DM 0.4025; residuals r − q̂(x, a): 0.8, −0.4, 0.4, 1.8;
# w (r − q̂): 0.8, −1.6, 0.4, 2.4 (sum 2.0).
LOG = dict(reward=REWARD, action=ACTION, pscore=PSCORE, action_dist=DIST)


def test_ips_and_snips_by_hand():
    assert ope.ips(**LOG) == pytest.approx((1 + 0 + 1 + 8 / 3) / 4)  # mean(w r) = 7/6
    assert ope.snips(**LOG) == pytest.approx((14 / 3) / (22 / 3))  # Σ w r / Σ w = 7/11


def test_dm_dr_sndr_by_hand():
    assert ope.dm(DIST, Q) == pytest.approx(0.4025)
    assert ope.dr(**LOG, estimated_rewards_by_reg_model=Q) == pytest.approx(0.4025 + 2.0 / 4)
    # SNDR divides the correction by mean(w) = (22/3)/4
    assert ope.sndr(**LOG, estimated_rewards_by_reg_model=Q) == pytest.approx(0.4025 + (2.0 / 4) / ((22 / 3) / 4))


def test_switch_dr_switches_on_the_importance_weight():
    # λ = 2 drops round 1 (w = 4): the correction is 0.8 + 0.4 + 2.4 over 4 rounds
    assert ope.switch_dr(**LOG, estimated_rewards_by_reg_model=Q, lambda_=2.0) == pytest.approx(0.4025 + 3.6 / 4)
    assert ope.switch_dr(**LOG, estimated_rewards_by_reg_model=Q, lambda_=4.0) == pytest.approx(0.9025)  # w ≤ λ kept
    assert ope.switch_dr(**LOG, estimated_rewards_by_reg_model=Q, lambda_=0.0) == pytest.approx(ope.dm(DIST, Q))
    assert ope.switch_dr(**LOG, estimated_rewards_by_reg_model=Q) == pytest.approx(ope.dr(**LOG, estimated_rewards_by_reg_model=Q))


def test_the_position_selects_the_target_probability():
    # two actions, two positions: the target shows action 0 at position 0 and action 1 at position 1
    dist = np.zeros((3, 2, 2))
    dist[:, 0, 0] = 1.0
    dist[:, 1, 1] = 1.0
    log = dict(reward=np.ones(3), action=np.array([0, 1, 1]), pscore=np.full(3, 0.5), action_dist=dist)
    assert ope.ips(**log, position=np.array([0, 1, 0])) == pytest.approx(4 / 3)  # w = 2, 2, 0
    assert ope.ips(**log, position=np.array([0, 0, 0])) == pytest.approx(2 / 3)
    q = np.zeros((3, 2, 2))
    q[:, 1, 1] = 0.5
    assert ope.dm(dist, q, np.array([1, 1, 0])) == pytest.approx(1 / 3)
    with pytest.raises(EvaluationError, match="'position' of ips must be given when action_dist has more than one position"):
        ope.ips(**log)
    # the distribution is checked at each round's position: a broken one at position 1 is refused where a round reads it
    broken = dist.copy()
    broken[1, 1, 1] = 0.5
    with pytest.raises(EvaluationError, match=r"'action_dist' of ips must be a distribution .* Got 0\.5 at round 1, position 1 instead"):
        ope.ips(**dict(log, action_dist=broken), position=np.array([0, 1, 0]))


def test_negative_rewards_are_estimated():
    log = dict(LOG, reward=-REWARD)
    assert ope.ips(**log) == pytest.approx(-7 / 6)
    assert ope.snips(**log) == pytest.approx(-7 / 11)


def test_snips_of_a_target_with_no_mass_on_the_logged_actions_is_nan():
    dist = np.zeros((2, 2, 1))
    dist[:, 1, 0] = 1.0
    assert np.isnan(ope.snips(np.ones(2), np.array([0, 0]), np.full(2, 0.5), dist))
    assert ope.ips(np.ones(2), np.array([0, 0]), np.full(2, 0.5), dist) == 0.0


SLATE = dict(slate_id=np.array([0, 0, 7, 7]), reward=np.array([1.0, 0.0, 1.0, 1.0]), position=np.array([0, 1, 0, 1]))


def test_slate_estimators_by_hand():
    # whole-slate weights 2 and 0.5: (1·2 + 0 + 1·0.5 + 1·0.5) / 2 slates
    assert ope.slate_standard_ips(**SLATE, pscore=np.array([0.25, 0.25, 0.5, 0.5]),
                                  evaluation_policy_pscore=np.array([0.5, 0.5, 0.25, 0.25])) == pytest.approx(1.5)
    # item-position weights 2, 1, 0.5, 2
    assert ope.slate_independent_ips(**SLATE, pscore_item_position=np.full(4, 0.5),
                                     evaluation_policy_pscore_item_position=np.array([1.0, 0.5, 0.25, 1.0])) == pytest.approx(2.25)
    # cascade weights 2, 2, 1, 2
    assert ope.slate_rips(**SLATE, pscore_cascade=np.array([0.5, 0.25, 0.5, 0.25]),
                          evaluation_policy_pscore_cascade=np.array([1.0, 0.5, 0.5, 0.5])) == pytest.approx(2.5)


def test_slate_rows_in_any_order():
    order = np.array([3, 0, 2, 1])
    shuffled = {k: v[order] for k, v in SLATE.items()}
    casc, target = np.array([0.5, 0.25, 0.5, 0.25]), np.array([1.0, 0.5, 0.5, 0.5])
    assert ope.slate_rips(**shuffled, pscore_cascade=casc[order], evaluation_policy_pscore_cascade=target[order]) == pytest.approx(2.5)


def test_slate_structure_is_checked():
    with pytest.raises(EvaluationError, match=r"at most once per slate\. Got 1 twice in slate 7"):
        ope.slate_independent_ips(SLATE["slate_id"], SLATE["reward"], np.array([0, 1, 1, 1]), np.full(4, 0.5), np.full(4, 0.5))
    with pytest.raises(EvaluationError, match="'pscore' of slate_standard_ips must be the same on every row of a slate"):
        ope.slate_standard_ips(**SLATE, pscore=np.array([0.25, 0.3, 0.5, 0.5]), evaluation_policy_pscore=np.full(4, 0.5))
    with pytest.raises(EvaluationError, match="'evaluation_policy_pscore_cascade' of slate_rips must be non-increasing.*slate 7, pos"):
        ope.slate_rips(**SLATE, pscore_cascade=np.full(4, 0.5), evaluation_policy_pscore_cascade=np.array([1.0, 0.5, 0.25, 0.5]))
    with pytest.raises(EvaluationError, match=r"'pscore_cascade' of slate_rips must be a probability in \(0, 1\]"):
        ope.slate_rips(**SLATE, pscore_cascade=np.array([0.5, 0.0, 0.5, 0.5]), evaluation_policy_pscore_cascade=np.full(4, 0.5))


@pytest.mark.parametrize(("change", "message"), [
    (dict(action_dist=DIST * np.array([1, 1, 0.93, 1])[:, None, None]),
     r"The 'action_dist' of ips must be a distribution over actions, summing to 1 .* Got 0\.93 at round 2, position 0 instead\."),
    (dict(pscore=np.array([0.5, 0.0, 0.5, 0.25])), r"'pscore' of ips must be a probability in \(0, 1\] at every round\. Got 0 at round 1"),
    (dict(pscore=np.array([0.5, 1.5, 0.5, 0.25])), r"'pscore' of ips must be a probability in \(0, 1\].* Got 1\.5 at round 1"),
    (dict(reward=np.array([1.0, np.nan, 0.0, 0.0])), r"The 'reward' of ips must be finite at every round\. Got nan at round 1"),
    (dict(reward=np.ones(3)), r"'reward' of ips must be as long as the other arrays \(4 rounds\)\. Got '3 rounds'"),
    (dict(action=np.array([0, 1, 3, 0])), r"'action' of ips must be an integer in \[0, 3\).* Got 3 at round 2"),
    (dict(action=np.array([0.0, 1.0, 2.0, 0.0])), r"'action' of ips must be an array of integers"),
    (dict(action_dist=DIST[:, :, 0]), r"'action_dist' of ips must be a non-empty 3-d array .* Got 'an array of shape \(4, 3\)'"),
    (dict(action_dist=np.where(np.arange(3) == 0, -0.5, 0.75)[None, :, None].repeat(4, axis=0)),
     r"'action_dist' of ips must be a probability ≥ 0 for every action at every round's position\. Got -0\.5 at round 0, action 0"),
])
def test_bad_input_is_refused_by_field_rule_and_value(change, message):
    with pytest.raises(EvaluationError, match=message):
        ope.ips(**dict(LOG, **change))


def test_bad_reward_model_and_lambda_are_refused():
    with pytest.raises(EvaluationError, match=r"'estimated_rewards_by_reg_model' of dr must be an array of action_dist's shape \(4, 3"):
        ope.dr(**LOG, estimated_rewards_by_reg_model=Q[:3])
    bad = Q.copy()
    bad[2, 1, 0] = np.inf
    with pytest.raises(EvaluationError, match="of dm must be finite for every action at every round's position. Got inf at round 2, ac"):
        ope.dm(DIST, bad)
    # finite predictions whose weighted sum overflows (the target's sum is within tolerance above 1)
    dist = DIST.copy()
    dist[0, 2, 0] += 9e-6
    with pytest.raises(EvaluationError, match="'estimated_rewards_by_reg_model' of dm must be small enough .* Got inf at round 0"):
        ope.dm(dist, np.full_like(Q, 1.79769e308))
    for lam in (-1.0, float("nan"), "1"):
        with pytest.raises(EvaluationError, match="'lambda_' of switch_dr must be a number ≥ 0"):
            ope.switch_dr(**LOG, estimated_rewards_by_reg_model=Q, lambda_=lam)

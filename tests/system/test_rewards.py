from __future__ import annotations

import json
from datetime import timedelta

import pytest

from closedloop import BestAction, F, Float, Reward, RewardPolicy, Str, System, Thresholds
from closedloop.errors import SpecError

H = timedelta(hours=1)
S = 10**9


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Reward("1click"), r"reward's 'kind' must be a name .* Got '1click'"),
        (lambda: Reward("click", "mean"), r"'aggregate' must be one of \['any', 'first', 'sum', 'max'\]. Got 'mean'"),
        (lambda: Reward("click", scale=0), r"'scale' of reward 'click' must be a finite non-zero number. Got 0"),
        (lambda: Reward("click", scale=float("nan")), r"Got nan instead"),
        (lambda: RewardPolicy([], window=H), r"'rewards' must be a non-empty list of Reward. Got \[\]"),
        (lambda: RewardPolicy(["click"], window=H), r"non-empty list of Reward. Got \['click'\]"),
        (lambda: RewardPolicy([Reward("click"), Reward("click", "sum")], window=H), r"one Reward per outcome kind"),
        (lambda: RewardPolicy([Reward("click")], window=timedelta(0)), r"'window' must be a positive timedelta"),
        (lambda: RewardPolicy([Reward("click")], window=3600), r"'window' must be a positive timedelta. Got 3600"),
        (lambda: RewardPolicy([Reward("click")], window=H, per="item"), r"'per' must be one of \['slot', 'decision'\]"),
        (lambda: RewardPolicy([Reward("click")], window=H, default=float("inf")), r"'default' must be a finite number"),
        (lambda: RewardPolicy([Reward("click")], window=H, default="0"), r"Got '0' instead"),
        (lambda: RewardPolicy([Reward("click")], window=H, link="cookie"), r"'link' must be one of"),
    ],
)
def test_bad_declarations_name_field_rule_and_value(make, match):
    with pytest.raises(SpecError, match=match):
        make()


def test_first_reward_in_order_decides_each_by_its_aggregate():
    policy = RewardPolicy([Reward("purchase", "sum"), Reward("click", "any"), Reward("dwell", "max", scale=0.1)],
                          window=H)
    t = 1_000 * S
    assert policy.reward([], t) == 0.0  # nothing came back: the default
    assert policy.reward([("click", 1, t + S), ("click", 1, t + 2 * S)], t) == 1.0
    assert policy.reward([("click", 0, t + S)], t) == 0.0
    assert policy.reward([("click", 1, t + S), ("purchase", 20.0, t + 9 * S), ("purchase", 5.5, t + 10 * S)], t) == 25.5
    assert policy.reward([("dwell", 30, t), ("dwell", 50, t + S)], t) == pytest.approx(5.0)
    # Outside the window (either side) or of an undeclared kind: not counted.
    assert policy.reward([("purchase", 9.0, t - 1), ("purchase", 9.0, t + 3600 * S + 1), ("like", 1, t)], t) == 0.0
    assert policy.reward([("purchase", 9.0, t + 3600 * S)], t) == 9.0  # the window's end is inclusive
    first = RewardPolicy([Reward("rating", "first")], window=H, default=None)
    assert first.reward([("rating", 4, t + 5 * S), ("rating", 2, t + S), ("rating", 3, t + S)], t) == 2.0
    assert first.reward([], t) is None


def test_describe_is_json_ready_and_says_what_an_outcome_needs():
    p = RewardPolicy([Reward("click")], window=timedelta(minutes=30), per="slot", link="unit_time")
    d = json.loads(json.dumps(p.describe()))
    assert d == {"rewards": [{"kind": "click", "aggregate": "any", "scale": 1.0}], "window_seconds": 1800.0,
                 "per": "slot", "default": 0.0, "link": "unit_time", "requires": ["unit", "event_time", "candidate_id"]}
    assert RewardPolicy([Reward("buy", "sum")], window=H, per="decision").requires() == ("decision_id",)


def _system(experience, rewards, actions=("a", "b")):
    return System("s", context=[Str("u"), Float("x", default=0.0)], unit="u", features={"x": F.col("x")},
                  actions=list(actions), experience=experience, rewards=rewards)


def test_system_declares_rewards_on_a_choosing_or_ranking_system():
    per_decision = RewardPolicy([Reward("click")], window=H, per="decision")
    s = _system(BestAction(), per_decision)
    assert s.rewards is per_decision and s.describe()["rewards"]["per"] == "decision"
    assert _system(BestAction(), None).describe()["rewards"] is None
    from examples.feed.system import feed

    assert feed.rewards is None
    from examples.obd.system import men

    assert men.rewards is not None and men.describe()["rewards"]["requires"] == ["decision_id", "candidate_id"]


@pytest.mark.parametrize(
    ("experience", "rewards", "match"),
    [
        (BestAction(), RewardPolicy([Reward("click")], window=H, per="slot"), r"'per' of System 's' must be 'decision'"),
        (Thresholds("b", {"b": 0.5}, otherwise="a"), RewardPolicy([Reward("click")], window=H, per="decision"),
         r"need a BestAction or Ranking experience .* Got Thresholds"),
        (BestAction(), {"click": 1}, r"'rewards' of System 's' must be a RewardPolicy or None. Got \{'click': 1\}"),
    ],
)
def test_system_refuses_rewards_that_do_not_fit(experience, rewards, match):
    with pytest.raises(SpecError, match=match):
        _system(experience, rewards)

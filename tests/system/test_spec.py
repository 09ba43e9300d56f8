"""Declaring a system: every bad declaration is refused with the parameter, rule and value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from closedloop import F, Float, Goal, LabelPolicy, OutcomeRule, SpecError, Str, System, Thresholds


def declare(**changes):
    kw = dict(
        context=[Str("user"), Float("age", ge=0, default=1.0)],
        unit="user",
        features={"young": F.col("age") < 30},
        actions=["allow", "warn", "block"],
        experience=Thresholds("score", {"block": 0.9, "warn": 0.5}, otherwise="allow"),
        labels=("legit", "bad"),
    )
    name = changes.pop("name", "demo")
    kw.update(changes)
    return System(name, **kw)


def test_a_valid_declaration_describes_itself():
    s = declare(slices=["age"], goals=[Goal("recall", "model", "recall@warn", 0.9)])
    d = s.describe()
    assert d["name"] == "demo" and d["unit"] == "user" and [a["name"] for a in d["actions"]] == ["allow", "warn", "block"]
    assert d["default_action"] == "allow" and d["feature_fingerprint"] == s.feature_fingerprint
    assert s.schema_version == "1"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "Bad Name"}, "'name' of a System"),
        ({"unit": "age"}, "'unit' of System 'demo' must name a text or integer"),
        ({"unit": "nobody"}, "undeclared"),
        ({"actions": []}, "'actions' of System 'demo' must be a non-empty list"),
        ({"actions": ["allow", "allow", "block", "warn"]}, "must be unique"),
        ({"actions": ["allow", "block"]}, r"Threshold actions must be declared actions \['allow', 'block'\]. Got 'warn'"),
        ({"default_action": "explode"}, "'default_action'"),
        ({"labels": ("x", "x")}, "two distinct class names"),
        ({"costs": {"nuke": {"bad": 1.0}}}, "keyed by declared actions"),
        ({"costs": {"block": {"meh": 1.0}}}, "keyed by the classes"),
        ({"costs": {"block": {"legit": -1.0}}}, r"cost of 'block' when the truth is 'legit' must be a number ≥ 0. Got -1.0"),
        ({"latency_budget_ms": 0}, "'latency_budget_ms'.*> 0. Got 0"),
        ({"slices": ["country"]}, "Slice fields must be declared"),
        ({"mistake_outcomes": ["has space"]}, "mistake outcome kind"),
        ({"experience": "thresholds"}, "must be a Thresholds"),
        (
            {"label_policy": LabelPolicy(timedelta(days=7), [OutcomeRule("report", label="phish")])},
            "must name a class",
        ),
        ({"goals": [Goal("g", "model", "m", 1.0), Goal("g", "user", "m", 1.0)]}, "Goal names must be unique"),
    ],
)
def test_bad_declarations(changes, message):
    with pytest.raises(SpecError, match=message):
        declare(**changes)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Thresholds("score", {}, otherwise="allow"), "at least one action"),
        (lambda: Thresholds("score", {"block": float("nan")}, otherwise="allow"), "'block' must be a finite number. Got nan"),
        (lambda: Thresholds("score", {"block": "high"}, otherwise="allow"), "finite number"),
        (lambda: Thresholds("score", {"block": 0.5, "warn": 0.9}, otherwise="allow"), "strictly decrease"),
        (lambda: Thresholds("score", {"block": 0.5, "warn": 0.5}, otherwise="allow"), "strictly decrease"),
        (lambda: Thresholds("score", {"block": 0.5}, otherwise="block"), "must not also have a threshold"),
        (lambda: Thresholds("", {"block": 0.5}, otherwise="allow"), "'score' of Thresholds"),
        (lambda: Thresholds("score", [("block", 0.9, 1)], otherwise="allow"), r"\(action, threshold\)"),
    ],
)
def test_bad_thresholds(make, message):
    with pytest.raises(SpecError, match=message):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Goal("g", "galactic", "m", 1.0), "'level' of goal 'g' must be one of"),
        (lambda: Goal("g", "model", "m", float("inf")), "'target' of goal 'g' must be a finite number"),
        (lambda: Goal("g", "model", "m", 1.0, direction="up"), "'direction'"),
        (lambda: Goal("g", "model", "m", 1.0, cadence="yearly"), "'cadence'"),
        (lambda: LabelPolicy(timedelta(0), [OutcomeRule("r")]), "positive timedelta"),
        (lambda: LabelPolicy(timedelta(days=1), []), "non-empty list of OutcomeRule"),
        (lambda: OutcomeRule("r", aggregate="median"), "'aggregate' must be one of"),
    ],
)
def test_bad_goals_and_label_policies(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_with_levels_refuses_other_actions():
    t = Thresholds("score", {"block": 0.9, "warn": 0.5}, otherwise="allow")
    assert t.with_levels({"warn": 0.4, "block": 0.8}).levels == (("block", 0.8), ("warn", 0.4))
    with pytest.raises(SpecError, match="exactly the actions"):
        t.with_levels({"block": 0.8, "nuke": 0.7})

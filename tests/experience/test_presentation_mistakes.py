"""What a decision presents names the mistake outcomes its system declares: an action whose
outcomes are its mode's default yields the system's ``mistake_outcomes`` (an automated action
instead of the generic ``reported_mistake``); outcomes an Action was given are kept as given."""

from __future__ import annotations

import pytest

from closedloop import (
    Action,
    Bundle,
    F,
    Float,
    LinearModel,
    Runtime,
    SpecError,
    Str,
    System,
    Thresholds,
)


def make(actions, mistakes=("reported_false_block",)) -> System:
    return System(
        "mini",
        context=[Str("user"), Float("s", default=0.0)],
        unit="user",
        features={"s": F.col("s")},
        actions=actions,
        experience=Thresholds("score", {"block": 0.5}, otherwise="allow"),
        mistake_outcomes=mistakes,
    )


def test_a_string_action_presents_the_declared_mistake_kinds():
    system = make(["allow", "block"])
    assert system.action_specs["block"].presentation.outcomes == ("reported_false_block",)
    rt = Runtime(system, Bundle.build(system, LinearModel({"s": 1.0})))
    d = rt.decide({"user": "u", "s": 0.9})
    assert d.action == "block" and d.presentation.outcomes == ("reported_false_block",)
    batch = rt.decide_batch({"user": ["u"], "s": [0.9]})
    assert batch[0].presentation.outcomes == ("reported_false_block",)
    assert tuple(system.describe()["actions"][1]["outcomes"]) == ("reported_false_block",)


def test_other_modes_add_them_to_their_own_feedback_and_given_outcomes_are_kept():
    warn = Action("warn", "prompt", choices=("go_back", "continue"))
    given = Action("block", "automate", outcomes=("user_unblocked",))
    system = System(
        "mini", context=[Str("user"), Float("s", default=0.0)], unit="user", features={"s": F.col("s")},
        actions=[Action("allow", "none"), warn, given, Action("flag", "annotate")],
        experience=Thresholds("score", {"block": 0.9, "warn": 0.5, "flag": 0.2}, otherwise="allow"),
        mistake_outcomes=["reported_false_block", "reported_false_warning"],
    )
    specs = system.action_specs
    assert specs["warn"].presentation.outcomes == (
        "chose:go_back", "chose:continue", "reported_false_block", "reported_false_warning")
    assert specs["flag"].presentation.outcomes == (
        "acted_on_annotation", "ignored_annotation", "reported_false_block", "reported_false_warning")
    assert specs["block"].presentation.outcomes == ("user_unblocked",)  # as given
    assert specs["allow"].presentation.outcomes == ()  # nothing shown, nothing to report
    # the declared Action is not changed: another system completes it with its own kinds
    assert warn.presentation.outcomes == ("chose:go_back", "chose:continue")
    other = make([Action("allow", "none"), warn, Action("block")], mistakes=("complained",))
    assert other.action_specs["warn"].presentation.outcomes == ("chose:go_back", "chose:continue", "complained")
    assert other.action_specs["block"].presentation.outcomes == ("complained",)


def test_without_declared_mistakes_the_defaults_stay():
    system = make(["allow", "block"], mistakes=())
    assert system.action_specs["block"].presentation.outcomes == ("reported_mistake",)


def test_mistake_outcomes_as_one_string_is_refused():
    with pytest.raises(SpecError, match="'mistake_outcomes' of System 'mini' must be a list of outcome kinds"):
        make(["allow", "block"], mistakes="reported_false_block")

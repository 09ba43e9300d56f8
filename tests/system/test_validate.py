"""The checks of a declaration, one function per part (closedloop.system.validate): each returns the
part's clean value, System.__init__ runs them in its order, and the parts' classes are the same
objects from every module that names them."""

from __future__ import annotations

import pytest

from closedloop import F, Float, SpecError, Str, System, Thresholds
from closedloop.context.schema import Schema
from closedloop.experience.experiences import Action, Ranking
from closedloop.system import goals, labels, spec, validate
from closedloop.system.splits import Split


def test_each_check_returns_the_clean_part():
    schema = validate.check_schema("demo", [Str("user"), Float("age")], "3")
    assert isinstance(schema, Schema) and schema.version == "3"
    assert validate.check_schema("demo", schema, "1") is schema
    assert validate.check_unit("demo", schema, "user") == "user"
    assert validate.check_candidates("demo", schema, None, None) == (None, None)
    cand, cid = validate.check_candidates("demo", schema, [Str("item")], "item")
    assert cid == "item" and cand is not None and cand.version == "3"
    fs = validate.check_features({"a": F.col("age") + F.col("item").length()}, schema, cand)
    assert [f.name for f in fs.schema.fields] == ["user", "age", "item"]
    specs = validate.check_actions("demo", ["allow", Action("block", "automate")])
    assert [a.name for a in specs] == ["allow", "block"] and specs[0].mode == "automate"
    th = Thresholds("score", {"block": 0.9}, otherwise="allow")
    assert validate.check_experience("demo", th, None, specs, ("allow", "block")) is th
    assert validate.check_default_action("demo", th, ("allow", "block"), None) == "allow"
    assert validate.check_default_action("demo", Ranking("s", 2), (), None) is None
    assert validate.check_labels("demo", ["no", "yes"]) == ("no", "yes")
    assert validate.check_costs({"block": {"no": 2}}, ["allow", "block"], ("allow", "block"), ("no", "yes")) == {"block": {"no": 2.0}}
    assert validate.check_latency_budget("demo", 3) == 3.0
    assert validate.check_mistake_outcomes("demo", ["reported"]) == ("reported",)
    assert validate.check_label_policy("demo", None, schema, ("allow",), ("no", "yes")) is None
    assert validate.check_goals("demo", []) == ()
    assert validate.check_slices(schema, ["age"]) == ("age",)
    assert validate.check_retention_days("demo", 30) == 30.0 and validate.check_retention_days("demo", None) is None
    assert validate.check_split("demo", None).describe() == Split("unit").describe()


def test_the_costs_message_names_the_actions_as_declared():
    declared = ["allow", Action("block", "automate")]
    with pytest.raises(SpecError, match=r"declared actions \['allow', Action\('block'"):
        validate.check_costs({"nuke": {}}, declared, ("allow", "block"), ("no", "yes"))


def test_the_first_bad_part_in_the_constructor_order_is_the_one_reported():
    kw = dict(
        context=[Str("user"), Float("age", ge=0)], unit="user", features={"young": F.col("age") < 30},
        actions=["allow", "block"], experience=Thresholds("score", {"block": 0.9}, otherwise="allow"),
    )
    with pytest.raises(SpecError, match="'labels' of System"):  # labels come before the retention
        System("demo", labels=("x", "x"), retention_days=-1, **kw)
    with pytest.raises(SpecError, match="'retention_days' of System"):  # the retention before the split
        System("demo", retention_days=-1, split="unit", **kw)
    s = System("demo", **kw)
    assert list(vars(s))[:4] == ["name", "description", "schema", "unit"] and list(vars(s))[-2:] == ["split", "retention_days"]


def test_the_parts_classes_are_one_object_wherever_imported():
    import closedloop

    assert spec.LabelPolicy is labels.LabelPolicy is closedloop.LabelPolicy
    assert spec.OutcomeRule is labels.OutcomeRule is closedloop.OutcomeRule
    assert spec.Goal is goals.Goal is closedloop.Goal

"""Heuristics and models: behaviour, parameter validation, and the conformance suite over every
kind this package ships."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from closedloop import (
    IntelligenceError,
    LinearModel,
    LogisticModel,
    LookupTable,
    Rule,
    ScoringRules,
    ThresholdRule,
    checks,
)
from closedloop.intelligence import (
    KINDS,
    AffinityModel,
    Calibrated,
    LightGBMModel,
    SklearnModel,
    load_intelligence,
    sigmoid,
)
from closedloop.intelligence.combine import Partitioned, Stacking, WeightedVote


@functools.cache
def trained(system) -> tuple[LightGBMModel, SklearnModel]:
    """Small tree models trained on the phishing example (once per session)."""
    import lightgbm as lgb
    from examples.phishing.data import generate
    from sklearn.ensemble import HistGradientBoostingClassifier

    columns, labels = generate(600, 0)
    X = system.features.batch(system.schema.validate_batch(columns))
    names = list(system.features.names)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(X, labels, feature_name=names), 10)
    forest = HistGradientBoostingClassifier(max_iter=10).fit(X, labels)
    return LightGBMModel.from_booster(booster, output="phish"), SklearnModel(forest, names, output="phish")


def shipped(system) -> dict[str, object]:
    """One configured instance of every kind in KINDS (the conformance test fails if one is missing)."""
    names = system.features.names
    rng = np.random.default_rng(0)
    weights = {n: float(w) for n, w in zip(names, rng.normal(scale=0.7, size=len(names)), strict=True)}
    rules = ScoringRules(
        [Rule("ip_in_url", ">", 0.5, 0.5), Rule("brand_not_in_domain", ">=", 1.0, 0.4), Rule("domain_age_log", "<", 3.0, 0.3)],
        base=0.05,
        output="phish",
    )
    return {
        "linear": LinearModel(weights, 0.1, output="phish"),
        "logistic": LogisticModel(weights, -0.5, output="phish"),
        "scoring_rules": rules,
        "threshold_rule": ThresholdRule("young_domain", ">", 0.5, then=0.8, otherwise=0.1, output="phish"),
        "lookup_table": LookupTable("domain", {"Evil.example": 1.0, "good.example": 0.0}, fallback=rules, output="phish"),
        "weighted_vote": WeightedVote([(LogisticModel(weights, -0.5, output="phish"), 2.0), (rules, 1.0)], output="phish"),
        "stacking": Stacking([LogisticModel(weights, -0.5, output="phish"), rules], [1.5, 0.8], -1.0, output="phish"),
        "partitioned": Partitioned("browser", {"chrome": rules}, default=LogisticModel(weights, -0.5, output="phish")),
        "lightgbm": trained(system)[0],
        "sklearn": trained(system)[1],
        "calibrated": Calibrated(LogisticModel(weights, -0.5, output="phish"), "isotonic", x=[0.1, 0.5, 0.9], y=[0.05, 0.4, 0.95]),
        "affinity": AffinityModel(weights, -0.5, keys=("user_id", "domain"), table={("u1", "evil.example"): 1.5, ("u2", "a.b"): -0.7},
                                  output="phish"),
    }


def test_every_shipped_kind_is_covered(phishing):
    assert sorted(shipped(phishing)) == sorted(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_conformance_of_every_shipped_kind(phishing, kind):
    intelligence = shipped(phishing)[kind]
    checks.check_intelligence(
        phishing, intelligence, n=400, score_range=None if kind == "linear" else (0.0, 1.0)
    )


def test_sigmoid_is_overflow_free_and_symmetric():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert math.isclose(sigmoid(2.0) + sigmoid(-2.0), 1.0, rel_tol=1e-15)


def test_scoring_rules_add_points_and_clip(phishing):
    fs = phishing.features
    r = ScoringRules([Rule("ip_in_url", ">", 0.5, 0.7), Rule("no_https", ">", 0.5, 0.7)], output="phish").bind(fs)
    x = [0.0] * len(fs)
    x[fs.index["ip_in_url"]] = 1.0
    assert r.one(tuple(x), None) == (0.7,)
    x[fs.index["no_https"]] = 1.0
    assert r.one(tuple(x), None) == (1.0,)  # 1.4 clipped


def test_lookup_table_hits_are_case_insensitive_and_misses_fall_back(phishing):
    fs = phishing.features
    table = LookupTable("domain", {"Bad.Example": 0.99}, default=0.2, output="phish").bind(fs)
    c = phishing.schema.validate({"user_id": "u", "url": "https://bad.example/", "domain": "BAD.example"})
    assert table.one(fs.one(c), c) == (0.99,)
    c = phishing.schema.validate({"user_id": "u", "url": "https://ok.example/", "domain": "ok.example"})
    assert table.one(fs.one(c), c) == (0.2,)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LogisticModel({}, 0.0), "'weights' parameter of LogisticModel must be a non-empty mapping"),
        (lambda: LogisticModel({"a": float("nan")}), r"'weights\['a'\]' parameter of LogisticModel must be a finite number"),
        (lambda: LogisticModel({"a": 1.0}, intercept=math.inf), "'intercept' parameter"),
        (lambda: LogisticModel({"a": 1.0}, output="not valid"), "'output' parameter"),
        (lambda: Rule("f", "=>", 1.0), "'op' of a Rule must be one of"),
        (lambda: ScoringRules([]), "non-empty list of Rule"),
        (lambda: ScoringRules([Rule("f", ">", 0.0)], lo=1.0, hi=0.0), "lo ≤ hi"),
        (lambda: LookupTable("domain", {"a": "high"}), "finite number"),
        (lambda: LookupTable("domain", {1: 1.0}), "keys of LookupTable's table must be strings"),
    ],
)
def test_bad_parameters_name_the_parameter_rule_and_value(make, message):
    with pytest.raises(IntelligenceError, match=message):
        make()


def test_binding_refuses_features_the_system_lacks(phishing):
    with pytest.raises(IntelligenceError, match=r"reads features \['nope'\]"):
        LogisticModel({"nope": 1.0}).bind(phishing.features)
    with pytest.raises(IntelligenceError, match="text context field"):
        LookupTable("domain_age_days", {"a": 1.0}).bind(phishing.features)


def test_loading_refuses_unknown_kinds_and_never_imports_by_name():
    with pytest.raises(IntelligenceError, match="kind must be one of"):
        load_intelligence({"kind": "os.system"}, {})
    with pytest.raises(IntelligenceError, match="kind must be one of"):
        load_intelligence({"kind": "closedloop.intelligence.linear:LogisticModel"}, {})


def test_saved_parameters_are_plain_json(phishing):
    for kind, intel in shipped(phishing).items():
        files: dict[str, bytes] = {}
        spec = intel.to_dict(files)
        assert json.loads(json.dumps(spec, allow_nan=False))["kind"] == kind
        assert files == {} or kind in ("lightgbm", "sklearn", "affinity")  # their models (a table) are files of their own

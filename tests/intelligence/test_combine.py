"""Combinations: WeightedVote, Stacking, Partitioned and fit_stacking — behaviour on hand-computed
examples, named refusals, the conformance suite, JSON and bundle round trips."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from closedloop import (
    Bundle,
    IntelligenceError,
    LogisticModel,
    LookupTable,
    Rule,
    ScoringRules,
    SpecError,
    ThresholdRule,
    checks,
)
from closedloop.intelligence import (
    KINDS,
    Intelligence,
    Partitioned,
    Scorer,
    Stacking,
    WeightedVote,
    load_intelligence,
    sigmoid,
)
from closedloop.intelligence.base import check_output
from closedloop.intelligence.combine import LOGIT_EPS, logit, logit_array
from closedloop.training import fit_stacking, roc_auc, train_logistic

# ---------------------------------------------------------------------------------------------
# members


def ip_rule(then: float = 0.9, otherwise: float = 0.1) -> ThresholdRule:
    return ThresholdRule("ip_in_url", ">", 0.5, then=then, otherwise=otherwise, output="phish")


def https_rule(then: float = 0.6, otherwise: float = 0.2) -> ThresholdRule:
    return ThresholdRule("no_https", ">", 0.5, then=then, otherwise=otherwise, output="phish")


def logistic(system, seed: int = 0, intercept: float = -0.5) -> LogisticModel:
    names = system.features.names
    w = np.random.default_rng(seed).normal(scale=0.7, size=len(names))
    return LogisticModel({n: float(v) for n, v in zip(names, w, strict=True)}, intercept, output="phish")


def rules() -> ScoringRules:
    return ScoringRules(
        [Rule("ip_in_url", ">", 0.5, 0.5), Rule("brand_not_in_domain", ">=", 1.0, 0.4), Rule("domain_age_log", "<", 3.0, 0.3)],
        base=0.05,
        output="phish",
    )


def heuristic() -> Intelligence:
    from examples.phishing.heuristic import heuristic_intelligence

    return heuristic_intelligence()


class TwoScores(Intelligence):
    """A test kind with two outputs: (s, 1 − s) where s is a feature clipped to [0, 1]."""

    kind: ClassVar[str] = "test_two_scores"

    def __init__(self, feature: str, names: tuple[str, str] = ("a", "b")) -> None:
        self.feature = feature
        self.names = tuple(check_output(n, "TwoScores") for n in names)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.names

    def inputs(self) -> tuple[str, ...]:
        return (self.feature,)

    def bind(self, features) -> Scorer:
        return _TwoScorer(features, self._indices(features, [self.feature])[0], self.names)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {"kind": self.kind, "feature": self.feature, "names": list(self.names)}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        return cls(spec["feature"], tuple(spec["names"]))


class _TwoScorer(Scorer):
    def __init__(self, features, i: int, names: tuple[str, ...]) -> None:
        self.features, self._i, self.outputs = features, i, names

    def one(self, x, context):
        s = min(max(x[self._i], 0.0), 1.0)
        return (s, 1.0 - s)

    def batch(self, X, cols):
        s = np.clip(X[:, self._i], 0.0, 1.0)
        return np.column_stack([s, 1.0 - s])


class FileConstant(Intelligence):
    """A test kind that keeps its one parameter in a file it names 'value.json' (as a model
    kind keeps its model file), to show members' files do not collide."""

    kind: ClassVar[str] = "test_file_constant"

    def __init__(self, value: float) -> None:
        self.value = float(value)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("phish",)

    def inputs(self) -> tuple[str, ...]:
        return ()

    def bind(self, features) -> Scorer:
        return _ConstantScorer(features, self.value)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        files["value.json"] = json.dumps(self.value).encode()
        return {"kind": self.kind, "file": "value.json"}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        return cls(json.loads(files[spec["file"]]))


class _ConstantScorer(Scorer):
    def __init__(self, features, value: float) -> None:
        self.features, self.outputs, self._v = features, ("phish",), value

    def one(self, x, context):
        return (self._v,)

    def batch(self, X, cols):
        return np.full((X.shape[0], 1), self._v)


TEST_KINDS = {**KINDS, TwoScores.kind: TwoScores, FileConstant.kind: FileConstant}


def features_with(system, **values: float) -> tuple[float, ...]:
    x = [0.0] * len(system.features)
    for name, v in values.items():
        x[system.features.index[name]] = v
    return tuple(x)


def context(system, **fields: Any):
    return system.schema.validate({"user_id": "u", "url": "https://a.example/", "domain": "a.example", **fields})


def batch_of(system, rows: list[dict[str, Any]]):
    full = [{"user_id": "u", "url": "https://a.example/", "domain": "a.example", **r} for r in rows]
    columns = {k: [r.get(k) for r in full] for k in {k for r in full for k in r}}
    cols = system.schema.validate_batch(columns)
    return system.features.batch(cols), cols


# ---------------------------------------------------------------------------------------------
# WeightedVote


def test_weighted_vote_is_the_weighted_mean(phishing):
    vote = WeightedVote([(ip_rule(), 3.0), (https_rule(), 1.0)], output="phish")
    scorer = vote.bind(phishing.features)
    c = context(phishing)
    (s,) = scorer.one(features_with(phishing, ip_in_url=1.0), c)
    assert s == pytest.approx((3 * 0.9 + 1 * 0.2) / 4) and s == (0.0 + 0.9 * 3.0 + 0.2 * 1.0) / 4.0
    (s,) = scorer.one(features_with(phishing, no_https=1.0), c)
    assert s == pytest.approx((3 * 0.1 + 1 * 0.6) / 4)
    X, cols = batch_of(phishing, [{"url": "http://10.0.0.1/"}, {"https": False}, {}])
    S = scorer.batch(X, cols)
    assert S.shape == (3, 1)
    assert S[:, 0].tolist() == pytest.approx([(2.7 + 0.2) / 4, (0.3 + 0.6) / 4, (0.3 + 0.2) / 4])


def test_weighted_vote_weights_as_pairs_or_list_and_equal_by_default(phishing):
    a = WeightedVote([(ip_rule(), 2.0), (https_rule(), 1.0)], output="phish")
    b = WeightedVote([ip_rule(), https_rule()], weights=[2.0, 1.0], output="phish")
    assert a.to_dict({}) == b.to_dict({})
    mean = WeightedVote([ip_rule(), https_rule()], output="phish")
    assert mean.weights == (1.0, 1.0)
    (s,) = mean.bind(phishing.features).one(features_with(phishing), context(phishing))
    assert s == pytest.approx((0.1 + 0.2) / 2)


# ---------------------------------------------------------------------------------------------
# Stacking


def test_stacking_is_a_linear_meta_model_with_a_link(phishing):
    members = [ip_rule(), https_rule()]
    x, c = features_with(phishing, ip_in_url=1.0), context(phishing)
    identity = Stacking(members, [2.0, -1.0], intercept=-0.5, link="identity", output="phish")
    (z,) = identity.bind(phishing.features).one(x, c)
    assert z == pytest.approx(-0.5 + 2.0 * 0.9 - 1.0 * 0.2)
    stacked = Stacking(members, [2.0, -1.0], intercept=-0.5, output="phish")
    (p,) = stacked.bind(phishing.features).one(x, c)
    assert p == sigmoid(z) and p == pytest.approx(1 / (1 + math.exp(-1.1)))
    X, cols = batch_of(phishing, [{"url": "http://10.0.0.1/"}, {"https": False}])
    S = stacked.bind(phishing.features).batch(X, cols)[:, 0]
    assert S.tolist() == pytest.approx([sigmoid(-0.5 + 1.8 - 0.2), sigmoid(-0.5 + 0.2 - 0.6)])


def test_stacking_can_weigh_log_odds(phishing):
    x, c = features_with(phishing, ip_in_url=1.0), context(phishing)
    (p,) = Stacking([ip_rule()], [1.0], transform="logit", output="phish").bind(phishing.features).one(x, c)
    assert p == pytest.approx(0.9, rel=1e-12)  # sigmoid(logit(p)) = p
    sure = ThresholdRule("ip_in_url", ">", 0.5, then=1.0, otherwise=0.0, output="phish")
    stack = Stacking([sure, ip_rule()], [0.5, 2.0], intercept=0.25, link="identity", transform="logit", output="phish")
    (z,) = stack.bind(phishing.features).one(x, c)
    assert z == pytest.approx(0.25 + 0.5 * math.log((1 - LOGIT_EPS) / LOGIT_EPS) + 2.0 * math.log(9.0))


def test_logit_is_clipped_and_equal_on_both_paths():
    values = [0.0, -0.0, 1.0, 0.5, 0.9, 0.1, 1e-300, 1e-9, 1 - 1e-12, -3.0, 7.0, math.inf, -math.inf, math.nan]
    values += np.random.default_rng(0).random(500).tolist()
    batch = logit_array(np.array(values))
    for v, b in zip(values, batch.tolist(), strict=True):
        assert checks.same_float(logit(v), b), v
    assert logit(0.5) == 0.0 and logit(0.0) == logit(-3.0) == -logit(1.0) and math.isnan(logit(math.nan))
    assert logit(0.9) == pytest.approx(math.log(9.0), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Partitioned


def test_partitioned_scores_each_value_with_its_part(phishing):
    part = Partitioned(
        "browser", {"chrome": ip_rule(0.9, 0.1), "safari": ip_rule(0.7, 0.3)}, default=https_rule(), output="phish"
    )
    scorer = part.bind(phishing.features)
    x = features_with(phishing, ip_in_url=1.0)
    assert scorer.one(x, context(phishing, browser="chrome")) == (0.9,)
    assert scorer.one(x, context(phishing, browser="safari")) == (0.7,)
    assert scorer.one(x, context(phishing, browser="edge")) == (0.2,)  # the default
    rows = [
        {"browser": "safari", "url": "http://10.0.0.1/"},
        {"browser": "edge"},
        {"browser": "chrome"},
        {"browser": "safari"},
        {"browser": "chrome", "url": "http://10.0.0.1/"},
        {"https": False},  # browser defaults to "other"
    ]
    X, cols = batch_of(phishing, rows)
    assert scorer.batch(X, cols)[:, 0].tolist() == [0.7, 0.2, 0.1, 0.3, 0.9, 0.6]


def test_partitioned_one_group_many_groups_and_empty_batches(phishing):
    part = Partitioned("browser", {"chrome": ip_rule()}, default=logistic(phishing))
    scorer = part.bind(phishing.features)
    X, cols = batch_of(phishing, [{"browser": "firefox"}, {"browser": "edge"}])
    direct = logistic(phishing).bind(phishing.features).batch(X, cols)
    assert np.array_equal(scorer.batch(X, cols), direct)  # every row to the default
    empty = np.array([], dtype=np.int64)
    assert scorer.batch(X[:0], cols.take(empty)).shape == (0, 1)


def test_partitioned_keeps_several_outputs_and_names_them(phishing):
    part = Partitioned(
        "browser", {"chrome": TwoScores("ip_in_url", ("p", "q"))}, default=TwoScores("no_https"),
        output=["phish", "safe"],
    )
    assert part.outputs == ("phish", "safe")
    assert Partitioned("browser", {"chrome": TwoScores("ip_in_url")}, default=TwoScores("no_https")).outputs == ("a", "b")
    scorer = part.bind(phishing.features)
    X, cols = batch_of(phishing, [{"browser": "chrome", "url": "http://1.2.3.4/"}, {"browser": "edge", "https": False}, {}])
    assert scorer.batch(X, cols).tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    checks.check_intelligence(phishing, part, kinds=TEST_KINDS)


def test_partitioned_on_free_text(phishing):
    part = Partitioned("country", {"": ip_rule(), "US": https_rule()}, default=rules(), output="phish")
    checks.check_intelligence(phishing, part)


# ---------------------------------------------------------------------------------------------
# what all three share


def test_inputs_and_context_fields_are_the_members_union(phishing):
    table = LookupTable("domain", {"bad.example": 1.0}, fallback=https_rule(), output="phish")
    vote = WeightedVote([ip_rule(), table, https_rule(), rules()], output="phish")
    assert vote.inputs() == ("ip_in_url", "no_https", "brand_not_in_domain", "domain_age_log")
    assert vote.context_fields() == ("domain",)
    stack = Stacking([table, ip_rule()], [1.0, 1.0], output="phish")
    assert stack.inputs() == ("no_https", "ip_in_url") and stack.context_fields() == ("domain",)
    part = Partitioned("browser", {"chrome": table}, default=vote)
    assert part.inputs() == ("no_https", "ip_in_url", "brand_not_in_domain", "domain_age_log")
    assert part.context_fields() == ("browser", "domain")


def nested(system) -> Intelligence:
    """A stacking of a vote, a partition and the phishing heuristic, nested three deep."""
    vote = WeightedVote([(logistic(system, 1), 2.0), (rules(), 1.0)], output="phish")
    part = Partitioned("browser", {"chrome": logistic(system, 2), "firefox": heuristic()}, default=vote)
    return Stacking([vote, part, heuristic()], [1.5, 2.0, -0.7], intercept=-1.0, output="phish")


def combinations(system) -> dict[str, Intelligence]:
    return {
        "vote": WeightedVote([(logistic(system), 2.0), (heuristic(), 1.0), (rules(), 0.5)], output="phish"),
        "stacking": Stacking([logistic(system), heuristic(), ip_rule()], [1.2, 2.5, -0.8], intercept=-1.5, output="phish"),
        "stacking_identity": Stacking([logistic(system), rules()], [0.5, 0.25], intercept=0.1, link="identity", output="phish"),
        "stacking_logit": Stacking([logistic(system), heuristic()], [0.9, 0.4], intercept=0.3, transform="logit", output="phish"),
        "partitioned": Partitioned(
            "browser", {"chrome": logistic(system), "firefox": heuristic(), "safari": ip_rule()}, default=rules()
        ),
        "nested": nested(system),
    }


@pytest.mark.parametrize("name", ["vote", "stacking", "stacking_identity", "stacking_logit", "partitioned", "nested"])
def test_conformance(phishing, name):
    checks.check_intelligence(phishing, combinations(phishing)[name], n=400)


@pytest.mark.parametrize("name", ["vote", "stacking_logit", "partitioned", "nested"])
def test_bundle_build_save_load(phishing, name, tmp_path):
    intel = combinations(phishing)[name]
    bundle = Bundle.build(phishing, intel)
    loaded = Bundle.load(bundle.save(tmp_path / "b"), phishing)
    assert loaded.version == bundle.version
    assert loaded.intelligence.kind == intel.kind
    assert loaded.intelligence.to_dict({}) == intel.to_dict({})
    assert json.loads(json.dumps(intel.to_dict({}), allow_nan=False)) == intel.to_dict({})


def test_runtime_decides_identically_on_both_paths(phishing):
    checks.check_runtime(phishing, Bundle.build(phishing, nested(phishing)), n=150)


def test_members_files_are_kept_apart(phishing, tmp_path):
    vote = WeightedVote([FileConstant(0.2), FileConstant(0.8)], weights=[1.0, 3.0], output="phish")
    part = Partitioned("browser", {"chrome": FileConstant(0.9)}, default=vote)
    files: dict[str, bytes] = {}
    part.to_dict(files)
    assert sorted(files) == ["default.m0.value.json", "default.m1.value.json", "p0.value.json"]
    saved = Bundle.build(phishing, part).save(tmp_path / "b")
    loaded = Bundle.load(saved, phishing, kinds=TEST_KINDS).intelligence
    scorer = loaded.bind(phishing.features)
    x = features_with(phishing)
    assert scorer.one(x, context(phishing, browser="chrome")) == (0.9,)
    assert scorer.one(x, context(phishing, browser="edge")) == ((0.0 + 0.2 * 1.0 + 0.8 * 3.0) / 4.0,)


def test_loading_refuses_unknown_kinds_however_deep(phishing):
    spec = nested(phishing).to_dict({})
    spec["members"][1]["default"]["members"][0] = {"kind": "os.system"}
    with pytest.raises(IntelligenceError, match="kind must be one of"):
        load_intelligence(json.loads(json.dumps(spec)), {})
    with pytest.raises(IntelligenceError, match="kind must be one of"):
        load_intelligence(WeightedVote([FileConstant(0.5)]).to_dict({}), {})  # not in the default KINDS


def test_loading_refuses_nesting_deeper_than_the_recursion_limit():
    spec = ip_rule().to_dict({})
    for _ in range(3000):
        spec = {"kind": "weighted_vote", "output": "phish", "weights": [1.0], "members": [spec]}
    with pytest.raises(IntelligenceError, match="nested deeper than Python's recursion limit"):
        load_intelligence(spec, {})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "weighted_vote", "output": "s", "weights": [1.0]}, "must contain 'members'"),
        ({"kind": "weighted_vote", "output": "s", "weights": {}, "members": []}, "saved 'weights' of WeightedVote must be a list"),
        (
            {"kind": "stacking", "output": "s", "weights": [1.0], "intercept": 0, "link": "logistic", "members": "x"},
            "saved 'members' of Stacking must be a list",
        ),
        ({"kind": "partitioned", "outputs": ["s"], "field": "browser", "parts": [["a"]], "default": {}}, r"\[value, intelligence\] pairs"),
        (
            {"kind": "partitioned", "outputs": ["s"], "field": "browser", "parts": [["b", {}], ["a", {}]], "default": {}},
            "sorted by value",
        ),
    ],
)
def test_loading_refuses_malformed_parameters(spec, message):
    with pytest.raises(IntelligenceError, match=message):
        load_intelligence(spec, {})


# ---------------------------------------------------------------------------------------------
# refusals


def _inf_sum() -> WeightedVote:
    return WeightedVote([(ip_rule(), 1e308), (ip_rule(), 1e308)])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: WeightedVote([]), "'members' of WeightedVote must be a non-empty list of Intelligence"),
        (lambda: WeightedVote(ip_rule()), "'members' of WeightedVote must be a non-empty list"),
        (lambda: WeightedVote([ip_rule(), "x"]), "Member 1 of WeightedVote must be an Intelligence. Got 'x'"),
        (lambda: WeightedVote([TwoScores("ip_in_url")]), r"Member 0 of WeightedVote must have exactly one output. Got \('a', 'b'\)"),
        (lambda: WeightedVote([ip_rule()], weights=[0.0]), r"'weights\[0\]' parameter of WeightedVote must be > 0. Got 0.0"),
        (lambda: WeightedVote([ip_rule()], weights=[-1.0]), r"'weights\[0\]' parameter of WeightedVote must be > 0"),
        (lambda: WeightedVote([ip_rule()], weights=[math.nan]), r"'weights\[0\]' parameter of WeightedVote must be a finite number"),
        (lambda: WeightedVote([ip_rule(), https_rule()], weights=[1.0]), r"one weight per member \(2\). Got 1"),
        (lambda: WeightedVote([(ip_rule(), 1.0)], weights=[1.0]), "not both"),
        (lambda: WeightedVote([(ip_rule(), 1.0, 2.0)]), "must be an \\(intelligence, weight\\) pair"),
        (lambda: WeightedVote([ip_rule()], output="not valid"), "'output' parameter of WeightedVote"),
        (_inf_sum, "must have a finite sum. Got a sum of inf"),
        (lambda: Stacking([], []), "'members' of Stacking must be a non-empty list"),
        (lambda: Stacking([ip_rule()], [1.0, 2.0]), r"'weights' of Stacking must have one weight per member \(1\). Got 2"),
        (lambda: Stacking([ip_rule()], "1"), "'weights' of Stacking must be a list of 1 numbers"),
        (lambda: Stacking([ip_rule()], [math.inf]), r"'weights\[0\]' parameter of Stacking must be a finite number. Got inf"),
        (lambda: Stacking([ip_rule()], [1.0], intercept=math.nan), "'intercept' parameter of Stacking must be a finite number"),
        (
            lambda: Stacking([ip_rule()], [1.0], link="probit"),
            r"'link' of Stacking must be one of \['logistic', 'identity'\]. Got 'probit'",
        ),
        (lambda: Stacking([TwoScores("ip_in_url")], [1.0]), "Member 0 of Stacking must have exactly one output"),
        (
            lambda: Stacking([ip_rule()], [1.0], transform="log"),
            r"'transform' of Stacking must be one of \['identity', 'logit'\]. Got 'log'",
        ),
        (lambda: Partitioned("", {"a": ip_rule()}, ip_rule()), "'field' of Partitioned must be a context field name"),
        (lambda: Partitioned("browser", {}, ip_rule()), "'parts' of Partitioned must be a non-empty mapping"),
        (lambda: Partitioned("browser", {1: ip_rule()}, ip_rule()), "keys of Partitioned's parts must be strings. Got 1"),
        (lambda: Partitioned("browser", {"chrome": "x"}, ip_rule()), "part 'chrome' of Partitioned must be an Intelligence"),
        (lambda: Partitioned("browser", {"chrome": ip_rule()}, None), "'default' of Partitioned must be an Intelligence. Got None"),
        (
            lambda: Partitioned("browser", {"chrome": TwoScores("ip_in_url")}, ip_rule()),
            "same number of outputs: the part 'chrome' has 2",
        ),
        (
            lambda: Partitioned("browser", {"chrome": ip_rule()}, ip_rule(), output=["a", "b"]),
            r"name each of the members' 1 outputs. Got \['a', 'b'\]",
        ),
        (
            lambda: Partitioned("browser", {"chrome": TwoScores("ip_in_url")}, TwoScores("no_https"), output=["a", "a"]),
            "must be unique",
        ),
        (lambda: Partitioned("browser", {"chrome": ip_rule()}, ip_rule(), output=3), "must be a name or a list of names. Got 3"),
    ],
)
def test_bad_parameters_name_the_parameter_rule_and_value(make, message):
    with pytest.raises(IntelligenceError, match=message):
        make()


def test_partitioned_refuses_a_non_text_field_and_unknown_choices_at_bind(phishing):
    fs = phishing.features
    with pytest.raises(IntelligenceError, match=r"text context field. Got 'domain_age_days' \(Float\)"):
        Partitioned("domain_age_days", {"1": ip_rule()}, ip_rule()).bind(fs)
    with pytest.raises(IntelligenceError, match=r"text context field. Got 'nope' \(undeclared\)"):
        Partitioned("nope", {"1": ip_rule()}, ip_rule()).bind(fs)
    with pytest.raises(IntelligenceError, match=r"values of context field 'browser' .*Got \['chrom'\]"):
        Partitioned("browser", {"chrom": ip_rule(), "edge": ip_rule()}, ip_rule()).bind(fs)


def test_binding_refuses_members_reading_undeclared_features(phishing):
    bad = LogisticModel({"nope": 1.0}, output="phish")
    for intel in (WeightedVote([ip_rule(), bad]), Stacking([bad], [1.0]), Partitioned("browser", {"edge": bad}, ip_rule())):
        with pytest.raises(IntelligenceError, match=r"reads features \['nope'\]"):
            intel.bind(phishing.features)


# ---------------------------------------------------------------------------------------------
# fit_stacking


@pytest.fixture(scope="module")
def splits():
    from examples.phishing.data import generate

    return generate(3000, 11), generate(3000, 12), generate(3000, 13)


def test_fit_stacking_matches_or_beats_its_best_member(phishing, splits):
    (a, ya), (b, yb), (c, yc) = splits
    model = train_logistic(phishing, a, ya).model
    members = [model, heuristic()]
    stack = fit_stacking(phishing, members, b, yb)
    assert isinstance(stack, Stacking) and stack.outputs == ("phish",) and stack.link == "logistic"
    assert stack.members == tuple(members)
    fs = phishing.features
    cols = phishing.schema.validate_batch(c)
    X = fs.batch(cols)
    aucs = [roc_auc(yc, m.bind(fs).batch(X, cols)[:, 0]) for m in members]
    stacked = roc_auc(yc, stack.bind(fs).batch(X, cols)[:, 0])
    assert stacked >= max(aucs) - 0.002, (stacked, aucs)
    assert stack.transform == "logit" and stack.weights[0] > 0.5  # the model carries the stack
    checks.check_intelligence(phishing, stack, n=200)
    raw = fit_stacking(phishing, members, b, yb, transform="identity", output="risk")
    assert raw.transform == "identity" and raw.outputs == ("risk",)
    assert roc_auc(yc, raw.bind(fs).batch(X, cols)[:, 0]) > max(aucs) - 0.02


def test_fit_stacking_of_one_member_keeps_its_ranking(phishing, splits):
    (a, ya), (b, yb), (c, yc) = splits
    model = train_logistic(phishing, a, ya).model
    stack = fit_stacking(phishing, [model], b, yb)
    assert stack.weights[0] > 0
    fs = phishing.features
    cols = phishing.schema.validate_batch(c)
    X = fs.batch(cols)
    own = roc_auc(yc, model.bind(fs).batch(X, cols)[:, 0])
    assert roc_auc(yc, stack.bind(fs).batch(X, cols)[:, 0]) == pytest.approx(own, abs=1e-4)


def test_fit_stacking_refusals(phishing, splits):
    (_, _), (b, yb), (_, _) = splits
    with pytest.raises(SpecError, match="'C' parameter of fit_stacking must be a finite number > 0. Got 0"):
        fit_stacking(phishing, [heuristic()], b, yb, C=0)
    with pytest.raises(SpecError, match="'max_iter' parameter of fit_stacking"):
        fit_stacking(phishing, [heuristic()], b, yb, max_iter=0)
    with pytest.raises(SpecError, match="'system' parameter of fit_stacking must be a closedloop.System"):
        fit_stacking("phishing", [heuristic()], b, yb)
    with pytest.raises(IntelligenceError, match="'members' of Stacking must be a non-empty list"):
        fit_stacking(phishing, [], b, yb)
    with pytest.raises(IntelligenceError, match="Member 0 of Stacking must have exactly one output"):
        fit_stacking(phishing, [TwoScores("ip_in_url")], b, yb)
    with pytest.raises(IntelligenceError, match="must contain both classes"):
        fit_stacking(phishing, [heuristic()], b, np.zeros(len(yb), dtype=int))
    with pytest.raises(IntelligenceError, match="'labels' of fit_stacking must have one label per row"):
        fit_stacking(phishing, [heuristic()], b, yb[:10])
    raw = Stacking([ip_rule()], [2.0], intercept=0.0, link="identity", output="phish")  # scores 0.2 or 1.8
    with pytest.raises(IntelligenceError, match=r"must be in \[0, 1\] for fit_stacking with transform='logit'.*Got 1.8"):
        fit_stacking(phishing, [raw], b, yb)
    with pytest.raises(IntelligenceError, match="'transform' of Stacking must be one of"):
        fit_stacking(phishing, [heuristic()], b, yb, transform="probit")
    linear = Stacking([ip_rule()], [1e308], intercept=1e308, link="identity", output="phish")
    with pytest.raises(IntelligenceError, match=r"score of member 0 .* must be finite for fit_stacking. Got inf"):
        fit_stacking(phishing, [linear], b, yb)

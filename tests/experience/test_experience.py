"""Experience: modes and what they present, best-action choice, exploration with exact,
replayable propensities, shadows and the kill switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop import (
    Action,
    BestAction,
    Bundle,
    DecisionIds,
    EpsilonGreedy,
    F,
    Float,
    LinearModel,
    LogisticModel,
    Runtime,
    Softmax,
    SpecError,
    Str,
    System,
    Thresholds,
    checks,
)
from closedloop.experience.exploration import choose, uniform

CTX = {"user_id": "u1", "url": "http://10.0.0.1/login", "domain": "10.0.0.1", "page_brand": "PayPal",
       "domain_age_days": 3, "has_password_field": True}
LEGIT = {"user_id": "u2", "url": "https://example.org/", "domain": "example.org", "popularity_rank": 5000}


def logistic(system, bias=-0.3, seed=4):
    rng = np.random.default_rng(seed)
    return LogisticModel(
        {n: float(w) for n, w in zip(system.features.names, rng.normal(size=len(system.features)), strict=True)}, bias, output="phish"
    )


# -- modes ---------------------------------------------------------------------------------------

def test_each_mode_presents_itself_and_names_its_outcomes(phishing):
    rt = Runtime(phishing, Bundle.build(phishing, logistic(phishing), thresholds={"block": 0.9, "warn": 0.2}))
    by_action = {}
    for ctx in (CTX, LEGIT, {**LEGIT, "url": "http://login-verify.example/", "domain_age_days": 2, "page_brand": "Bank"}):
        d = rt.decide(ctx)
        by_action[d.action] = d.presentation
    block = phishing.action_specs["block"].presentation
    warn = phishing.action_specs["warn"].presentation
    allow = phishing.action_specs["allow"].presentation
    assert block.mode == "automate" and block.outcomes == ("reported_false_block",)
    assert warn.mode == "prompt" and warn.choices == ("go_back", "continue")
    # the user's choice is the feedback, then the mistakes the system declares (a false warning)
    assert warn.outcomes == ("chose:go_back", "chose:continue", "reported_false_block", "reported_false_warning")
    assert allow.mode == "none" and allow.outcomes == ()
    for action, presentation in by_action.items():
        assert presentation == phishing.action_specs[action].presentation


def test_annotate_and_organize_modes_have_their_own_feedback():
    a = Action("flag", "annotate")
    assert a.presentation.mode == "annotate"
    assert a.presentation.outcomes == ("acted_on_annotation", "ignored_annotation")
    assert Action("slot", "organize").presentation.outcomes == ("clicked", "skipped")
    with pytest.raises(SpecError, match="at least two choices"):
        Action("warn", "prompt", choices=("ok",))
    with pytest.raises(SpecError, match="'mode' of action 'x' must be one of"):
        Action("x", "shout")
    with pytest.raises(SpecError, match="Only prompt actions have choices"):
        Action("x", "automate", choices=("a", "b"))


def test_annotate_system_marks_without_acting():
    system = System(
        "mail",
        context=[Str("user"), Float("spamminess", ge=0, le=1)],
        unit="user",
        features={"s": F.col("spamminess")},
        actions=[Action("inbox", "none"), Action("mark_suspicious", "annotate")],
        experience=Thresholds("score", {"mark_suspicious": 0.5}, otherwise="inbox"),
    )
    rt = Runtime(system, Bundle.build(system, LinearModel({"s": 1.0})))
    d = rt.decide({"user": "u", "spamminess": 0.8})
    assert d.action == "mark_suspicious" and d.presentation.mode == "annotate"
    assert rt.decide({"user": "u", "spamminess": 0.1}).presentation.mode == "none"


# -- best action and softmax -----------------------------------------------------------------------

def best_system(explore=None) -> System:
    return System(
        "offers",
        context=[Str("user"), Float("a", default=0.0), Float("b", default=0.0)],
        unit="user",
        features={"a": F.col("a"), "b": F.col("b")},
        actions=["none", "discount", "upsell"],
        experience=BestAction(explore=explore),
    )


def three_scores(system):
    """Three outputs from two features: none = 0, discount = a, upsell = b (a test intelligence)."""
    from closedloop.intelligence import Intelligence, Scorer

    class Scorer3(Scorer):
        def __init__(self, features):
            self.features = features
            self.outputs = ("none", "discount", "upsell")

        def batch(self, X, cols):
            return np.column_stack([np.zeros(X.shape[0]), X[:, 0], X[:, 1]])

        def one(self, x, c):
            return (0.0, x[0], x[1])

    class Three(Intelligence):
        kind = "three"

        @property
        def outputs(self):
            return ("none", "discount", "upsell")

        def inputs(self):
            return ("a", "b")

        def bind(self, features):
            return Scorer3(features)

        def to_dict(self, files):
            return {"kind": "three"}

        @classmethod
        def from_dict(cls, spec, files, kinds):
            return cls()

    return Three()


def test_trainers_refuse_a_best_action_system_by_name(tmp_path):
    """A BestAction experience reads one score per action: a trainer must be told which score to
    fit (train_logistic, fit_stacking) or refuse (train) — never an AttributeError."""
    from closedloop.training import train_logistic
    from closedloop.training.stacking import fit_stacking
    from closedloop.training.train import train

    system = best_system()
    batch = {"user": ["u"] * 6, "a": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7], "b": [1.0, 0.0, 1.0, 0.0, 0.5, 0.5]}
    labels = [0, 1, 0, 1, 0, 1]
    with pytest.raises(SpecError, match="'output' parameter of train_logistic must name the score"):
        train_logistic(system, batch, labels)
    assert train_logistic(system, batch, labels, output="discount").model.outputs == ("discount",)
    members = [LogisticModel({"a": 1.0}, 0.0, output="s1"), LogisticModel({"b": 1.0}, 0.0, output="s2")]
    with pytest.raises(SpecError, match="'output' parameter of fit_stacking must name the score"):
        fit_stacking(system, members, batch, labels)
    with pytest.raises(SpecError, match="train fits one score"):
        train(system, tmp_path / "never-read")  # refused before the dataset is read


def test_a_chooser_that_does_not_explore_has_no_probabilities():
    actions = ("allow", "warn", "block")
    greedy = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow").bind(["phish"], actions)
    best = BestAction().bind(actions, actions)
    for ch in (greedy, best):
        assert not ch.explores
        with pytest.raises(SpecError, match="does not explore"):
            ch.probs([0.7, 0.1, 0.2], 0)
        with pytest.raises(SpecError, match="does not explore"):
            ch.probs_batch(np.array([[0.7, 0.1, 0.2]]), np.array([0]))


def test_best_action_takes_the_highest_score():
    system = best_system()
    rt = Runtime(system, Bundle.build(system, three_scores(system)))
    assert rt.decide({"user": "u", "a": 2.0, "b": 1.0}).action == "discount"
    assert rt.decide({"user": "u", "a": -2.0, "b": -1.0}).action == "none"
    d = rt.decide({"user": "u", "a": 1.0, "b": 3.0})
    assert (d.action, d.propensity, d.why) == ("upsell", 1.0, "best score → upsell")


def test_softmax_propensity_is_exact_and_replayable():
    system = best_system(Softmax(temperature=1.0))
    rt = Runtime(system, Bundle.build(system, three_scores(system)), ids=DecisionIds(seed=3))
    ctx = {"user": "u", "a": 1.0, "b": 0.5}
    z = [math.exp(0.0 - 1.0), math.exp(0.0), math.exp(0.5 - 1.0)]
    expected = [v / sum(z) for v in z]
    seen = set()
    for _ in range(200):
        d = rt.decide(ctx)
        i = system.actions.index(d.action)
        assert math.isclose(d.propensity, expected[i], rel_tol=1e-12)
        assert choose(expected, uniform(d.decision_id)) == i  # replay from the id alone
        again = rt.decide(ctx, decision_id=d.decision_id, timestamp_ns=d.timestamp_ns)
        assert (again.action, again.propensity) == (d.action, d.propensity)
        seen.add(d.action)
    assert seen == set(system.actions)  # every action gets explored


def test_softmax_decide_equals_decide_batch():
    from closedloop.intelligence import KINDS

    system = best_system(Softmax(0.5))
    intel = three_scores(system)
    checks.check_runtime(system, Bundle.build(system, intel), n=300, kinds={**KINDS, "three": type(intel)})


# -- epsilon within a score band -------------------------------------------------------------------

def eps_system(phishing, epsilon=0.3, low=0.2, high=0.8, to=None):
    exp = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow", explore=EpsilonGreedy(epsilon, low, high, to=to))
    return System(
        "phishing", context=phishing.schema.fields, unit=phishing.unit,
        features={f.name: f.expr for f in phishing.features.features},
        actions=list(phishing.action_specs.values()), experience=exp, labels=phishing.labels,
    )


def test_epsilon_explores_only_inside_the_band(phishing):
    system = eps_system(phishing, epsilon=0.3, low=0.2, high=0.8)
    rt = Runtime(system, Bundle.build(system, logistic(system)), ids=DecisionIds(seed=1))
    outside_seen, inside = set(), []
    rng = np.random.default_rng(0)
    cols = checks.generate_contexts(system.schema, 600, seed=5)
    for row in checks.records(cols):
        d = rt.decide(row)
        s = d.scores["phish"]
        if 0.2 <= s <= 0.8:
            inside.append(d)
        else:
            outside_seen.add(d.propensity)
    assert outside_seen == {1.0}
    assert inside
    greedy_p, other_p = 0.7 + 0.1, 0.1
    for d in inside:
        assert math.isclose(d.propensity, greedy_p) or math.isclose(d.propensity, other_p)
    explored = [d for d in inside if d.why.startswith("explored")]
    assert explored and all(math.isclose(d.propensity, other_p) for d in explored)
    del rng


def test_epsilon_to_shows_only_the_named_actions_with_exact_propensities(phishing):
    # The block band, explored as warnings only: a block hides the outcome, a warning does not.
    system = eps_system(phishing, epsilon=0.2, low=0.5, high=1.0, to=("warn",))
    bundle = Bundle.build(system, logistic(system))
    rt = Runtime(system, bundle, ids=DecisionIds(seed=3))
    cols = checks.generate_contexts(system.schema, 1500, seed=7)
    seen = {}
    for row in checks.records(cols):
        d = rt.decide(row)
        s = d.scores["phish"]
        greedy = "block" if s >= 0.9 else "warn" if s >= 0.6 else "allow"
        if not 0.5 <= s <= 1.0:
            assert (d.action, d.propensity) == (greedy, 1.0)
        elif greedy == "warn":
            assert (d.action, d.propensity) == ("warn", 1.0)  # already what exploration would show
        elif greedy == "block":
            assert d.action in ("block", "warn")
            assert math.isclose(d.propensity, 0.8 if d.action == "block" else 0.2)
        else:  # allow in the band: stays allow (p 0.8) or is shown a warning (p 0.2)
            assert d.action in ("allow", "warn")
            assert math.isclose(d.propensity, 0.8 if d.action == "allow" else 0.2)
        seen[(greedy, d.action)] = seen.get((greedy, d.action), 0) + 1
    assert seen.get(("block", "warn")) and not seen.get(("block", "allow"))
    checks.check_runtime(system, bundle, n=400)
    with pytest.raises(SpecError, match="'to' of EpsilonGreedy must name declared actions"):
        eps_system(phishing, to=("nag",))
    with pytest.raises(SpecError, match="'to' of EpsilonGreedy must be a non-empty sequence"):
        EpsilonGreedy(0.1, to="warn")


def test_epsilon_decide_equals_decide_batch(phishing):
    system = eps_system(phishing, epsilon=0.5, low=0.0, high=1.0)
    checks.check_runtime(system, Bundle.build(system, logistic(system)), n=400)


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=8),
    temperature=st.floats(0.05, 20),
    epsilon=st.floats(0.01, 1.0),
    decision_id=st.text(min_size=1, max_size=40),
)
def test_propensities_are_in_0_1_and_sum_to_one(scores, temperature, epsilon, decision_id):
    p = Softmax(temperature).probs(scores)
    assert all(0.0 <= v <= 1.0 for v in p)  # an action far below the best may underflow to 0 ...
    assert math.isclose(sum(p), 1.0, rel_tol=1e-9)
    shown = choose(p, uniform(decision_id))
    assert 0.0 < p[shown] <= 1.0  # ... but what is shown always has a propensity in (0, 1]
    k = len(scores)
    greedy = int(np.argmax(scores))
    q = EpsilonGreedy(epsilon).probs(greedy, k, scores[greedy])
    assert all(0.0 < v <= 1.0 for v in q)
    assert math.isclose(sum(q), 1.0, rel_tol=1e-9)
    assert 0.0 < q[choose(q, uniform(decision_id, salt=1))] <= 1.0
    P = Softmax(temperature).probs_batch(np.array([scores]))
    assert np.array_equal(P[0], np.array(p))


# -- shadows and the kill switch -----------------------------------------------------------------

def test_shadows_are_scored_and_recorded_but_never_acted_on(phishing):
    prod = Bundle.build(phishing, logistic(phishing, bias=-8.0))  # almost always allow
    shadow = Bundle.build(phishing, logistic(phishing, bias=8.0))  # almost always block
    rt = Runtime(phishing, prod, shadows=[shadow])
    d = rt.decide(CTX)
    assert d.bundle_version == prod.version and d.action != "block"
    (sh,) = d.shadows
    assert sh.bundle_version == shadow.version and sh.action == "block"
    assert sh.scores["phish"] > d.scores["phish"]
    assert rt.shadows == (shadow.version,)
    checks.check_runtime(phishing, prod, n=50)  # no shadows: identity holds
    batch = Runtime(phishing, prod, shadows=[shadow]).decide_batch({k: [v, v] for k, v in CTX.items()})
    assert batch[0].shadows[0].action == "block" and batch.to_arrow().num_rows == 2
    rt.load(prod, shadows=[])
    assert rt.decide(CTX).shadows == ()


def test_shadow_decisions_match_between_paths(phishing):
    prod = Bundle.build(phishing, logistic(phishing, bias=-1.0))
    shadow = Bundle.build(phishing, logistic(phishing, bias=1.0, seed=9))
    cols = checks.generate_contexts(phishing.schema, 200, seed=2)
    ids = [f"{i:032x}" for i in range(200)]
    ts = list(range(200))
    batch = Runtime(phishing, prod, shadows=[shadow]).decide_batch(cols, decision_ids=ids, timestamps_ns=ts)
    rt = Runtime(phishing, prod, shadows=[shadow])
    singles = [rt.decide(r, decision_id=ids[i], timestamp_ns=ts[i]) for i, r in enumerate(checks.records(cols))]
    checks._same_decisions(singles, batch, "decide", "decide_batch")


def test_the_kill_switch_skips_intelligence(phishing):
    rt = Runtime(phishing, Bundle.build(phishing, logistic(phishing, bias=8.0)))
    assert rt.decide(CTX).action == "block"
    rt.set_killswitch(True)
    d = rt.decide(CTX)
    assert (d.action, d.propensity, d.killswitch, d.scores) == ("allow", 1.0, True, {})
    assert d.why == "kill switch on → allow"
    b = rt.decide_batch({k: [v] * 3 for k, v in CTX.items()})
    assert b.action.tolist() == ["allow"] * 3 and b[0] == rt.decide(CTX, decision_id=b[0].decision_id, timestamp_ns=b[0].timestamp_ns)
    rt.set_killswitch(False)
    assert rt.decide(CTX).action == "block"


def test_organize_mode_ranks_candidates_through_the_runtime():
    from examples.feed import data
    from examples.feed.system import feed, model

    bundle = Bundle.build(feed, model)
    contexts = data.generate(30, [1, 5, 80] * 10, seed=4)
    requests, candidates = data.columnar(contexts)
    batch = Runtime(feed, bundle, ids=DecisionIds(seed=2)).decide_batch(requests, candidates=candidates)
    rt = Runtime(feed, bundle)
    for i, ctx in enumerate(contexts):
        d = rt.decide(ctx, decision_id=batch[i].decision_id, timestamp_ns=batch[i].timestamp_ns)
        assert d == batch[i]
        assert d.mode == "organize" and len(d.ranking) == min(5, len(ctx["candidates"]))
        assert 0.0 < d.propensity <= 1.0 and all(0.0 < p <= 1.0 for p in d.slot_propensities)
    rt.set_killswitch(True)
    d = rt.decide(contexts[2])
    assert d.killswitch and d.ranking == [c["item_id"] for c in contexts[2]["candidates"][:5]]


def test_ranking_systems_log_through_telemetry(tmp_path):
    from examples.feed.system import feed, model

    from closedloop.telemetry import MemorySink, Telemetry

    sink = MemorySink()
    tel = Telemetry(sink, system=feed)
    rt = Runtime(feed, Bundle.build(feed, model), telemetry=tel)
    d = rt.decide({"user_id": "u1", "hour": 9, "candidates": [{"item_id": "a", "category": "news", "item_ctr": 0.1,
                                                               "age_hours": 1.0}]})
    tel.close()
    assert sink.table("decisions").to_pylist()[0]["slate"] == d.ranking == ["a"]

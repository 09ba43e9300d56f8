"""The runtime: one path for every decision; decide ≡ decide_batch."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop import (
    BatchContextError,
    Bundle,
    ContextError,
    DecisionIds,
    LogisticModel,
    LookupTable,
    ManualClock,
    Rule,
    Runtime,
    ScoringRules,
    SpecError,
    checks,
)
from closedloop.runtime.checks import contexts_strategy, same_float

CTX = {
    "user_id": "u1",
    "url": "http://10.0.0.1/login",
    "domain": "10.0.0.1",
    "page_brand": "PayPal",
    "domain_age_days": 3,
    "has_password_field": True,
}


def logistic_bundle(system, **kw) -> Bundle:
    rng = np.random.default_rng(4)
    weights = {n: float(w) for n, w in zip(system.features.names, rng.normal(size=len(system.features)), strict=True)}
    return Bundle.build(system, LogisticModel(weights, -0.3, output="phish"), **kw)


def heuristic_bundle(system) -> Bundle:
    rules = ScoringRules(
        [Rule("ip_in_url", ">", 0.5, 0.6), Rule("brand_not_in_domain", ">", 0.5, 0.35), Rule("young_domain", ">", 0.5, 0.3)],
        output="phish",
    )
    return Bundle.build(system, LookupTable("domain", {"evil.example": 1.0}, fallback=rules, output="phish"))


@pytest.fixture(scope="module")
def runtimes(phishing):
    return [Runtime(phishing, logistic_bundle(phishing)), Runtime(phishing, heuristic_bundle(phishing))]


def test_a_decision_carries_what_learning_needs(phishing):
    rt = Runtime(phishing, heuristic_bundle(phishing), clock=ManualClock(5_000_000_000), ids=DecisionIds(seed=1))
    d = rt.decide(CTX)
    assert d.system == "phishing" and d.unit == "u1" and d.timestamp_ns == 5_000_000_000
    assert d.bundle_version == rt.bundle.version
    assert d.scores == {"phish": 1.0}
    assert d.action == "block" and d.propensity == 1.0
    assert d.why == "phish ≥ 0.9 → block"
    assert len(d.decision_id) == 32 and d.decision_id.startswith(f"{5000:012x}")
    low = rt.decide({"user_id": "u2", "url": "https://example.org/", "domain": "example.org"})
    assert low.action == "allow" and low.why == "phish < 0.6 → allow"
    assert low.to_dict()["scores"] == {"phish": 0.0}


def test_decision_ids_are_unique_time_ordered_and_reproducible(phishing):
    def run(seed):
        clock = ManualClock(1_000_000_000_000, step_ns=250_000)  # 0.25 ms per reading
        rt = Runtime(phishing, heuristic_bundle(phishing), clock=clock, ids=DecisionIds(seed=seed))
        ids = [rt.decide(CTX).decision_id for _ in range(50)]
        ids += rt.decide_batch({k: [v] * 20 for k, v in CTX.items()}).decision_ids.to_pylist()
        return ids

    a = run(7)
    assert len(set(a)) == len(a)
    assert a == sorted(a)
    assert a == run(7)
    assert a != run(8)


def test_ids_stay_ordered_when_the_clock_goes_back():
    ids = DecisionIds(seed=0)
    first = ids.next_id(10_000_000_000)
    second = ids.next_id(5_000_000_000)
    assert second > first


@pytest.mark.parametrize("which", [0, 1])
def test_decide_equals_decide_batch_on_generated_contexts(phishing, runtimes, which):
    checks.check_runtime(phishing, runtimes[which].bundle, n=500, seed=which)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decide_equals_decide_batch_property(phishing, runtimes, data):
    """Same action, same propensity, same reason and bitwise-equal scores, row by row."""
    rows = data.draw(st.lists(contexts_strategy(phishing.schema), min_size=1, max_size=25))
    as_table = data.draw(st.booleans())
    names = [f.name for f in phishing.schema.fields]
    columns = {k: [r.get(k) for r in rows] for k in names}
    batch_input = pa.table(columns) if as_table and all(any(v is not None for v in c) for c in columns.values()) else columns
    ids = [f"{i:032x}" for i in range(len(rows))]
    ts = list(range(1, len(rows) + 1))
    for shared in runtimes:
        # Fresh runtimes per path: frequency caps count shows, and both paths start from zero.
        batch = Runtime(phishing, shared.bundle).decide_batch(batch_input, decision_ids=ids, timestamps_ns=ts)
        rt = Runtime(phishing, shared.bundle)
        for i, r in enumerate(rows):
            d = rt.decide(r, decision_id=ids[i], timestamp_ns=ts[i])
            e = batch[i]
            assert (d.action, d.why, d.unit, d.decision_id, d.timestamp_ns, d.guardrail, d.presentation) == (
                e.action, e.why, e.unit, e.decision_id, e.timestamp_ns, e.guardrail, e.presentation
            )
            assert same_float(d.propensity, e.propensity)
            assert all(same_float(d.scores[k], e.scores[k]) for k in d.scores), (r, d.scores, e.scores)


def test_thresholds_at_the_boundary_agree(phishing):
    """A score exactly at a threshold takes the level in both paths."""
    from closedloop import ThresholdRule

    b = Bundle.build(phishing, ThresholdRule("young_domain", ">", 0.5, then=0.9, otherwise=0.6, output="phish"))
    rt = Runtime(phishing, b)
    old = {**CTX, "domain_age_days": 400}
    assert rt.decide(CTX).action == "block" and rt.decide(old).action == "warn"
    batch = rt.decide_batch({k: [CTX[k], old[k]] for k in CTX})
    assert batch.action.tolist() == ["block", "warn"]


def test_bundle_thresholds_override_the_systems(phishing):
    never = Runtime(phishing, logistic_bundle(phishing, thresholds={"block": 2.0, "warn": 1.5}))
    always = Runtime(phishing, logistic_bundle(phishing, thresholds={"block": -1.0, "warn": -2.0}))
    d, e = never.decide(CTX), always.decide(CTX)
    assert d.scores == e.scores
    assert (d.action, d.why) == ("allow", "phish < 1.5 → allow")
    assert (e.action, e.why) == ("block", "phish ≥ -1.0 → block")


def test_nan_scores_take_the_otherwise_action_with_a_reason(phishing):
    from closedloop import F, Float, System, Thresholds

    sys2 = System(
        "nanny",
        context=[phishing.schema.by_name["user_id"], Float("x", default=0.0, nonfinite="keep")],
        unit="user_id",
        features={"x": F.col("x")},
        actions=["allow", "block"],
        experience=Thresholds("score", {"block": 0.5}, otherwise="allow"),
    )
    rt = Runtime(sys2, Bundle.build(sys2, LogisticModel({"x": 1.0})))
    d = rt.decide({"user_id": "u", "x": math.nan})
    assert d.action == "allow" and d.why == "score is NaN → allow" and math.isnan(d.scores["score"])
    b = rt.decide_batch({"user_id": ["u", "v"], "x": [math.nan, 10.0]})
    assert b.action.tolist() == ["allow", "block"] and b.why[0] == "score is NaN → allow"


def test_bad_contexts_raise_and_bad_rows_can_be_skipped(phishing, runtimes):
    rt = runtimes[0]
    with pytest.raises(ContextError, match="'domain_age_days' must be a number ≥ 0. Got -3 instead"):
        rt.decide({**CTX, "domain_age_days": -3})
    cols = {k: [v, v, v] for k, v in CTX.items()}
    cols["domain_age_days"] = [1.0, -3.0, 2.0]
    with pytest.raises(BatchContextError) as err:
        rt.decide_batch(cols)
    assert err.value.row == 1
    batch = rt.decide_batch(cols, errors="skip", decision_ids=["a", "b", "c"])
    assert len(batch) == 2 and batch.rows.tolist() == [0, 2]
    assert batch.decision_ids.to_pylist() == ["a", "c"]
    assert [e.row for e in batch.errors] == [1]


def test_replay_arguments_are_validated(phishing, runtimes):
    cols = {k: [v, v] for k, v in CTX.items()}
    with pytest.raises(ContextError, match="decision_ids"):
        runtimes[0].decide_batch(cols, decision_ids=["only-one"])
    with pytest.raises(ContextError, match="timestamps_ns"):
        runtimes[0].decide_batch(cols, timestamps_ns=[1, 2, 3])


def test_decision_batch_to_arrow(phishing, runtimes):
    batch = runtimes[1].decide_batch({k: [v] * 3 for k, v in CTX.items()})
    t = batch.to_arrow()
    assert t.num_rows == 3
    assert t.column("action").to_pylist() == ["block"] * 3
    assert t.column("score_phish").to_pylist() == [1.0] * 3
    assert batch.to_pylist()[0]["unit"] == "u1"


def test_load_swaps_the_bundle_and_refuses_a_foreign_one(phishing):
    rt = Runtime(phishing, heuristic_bundle(phishing))
    before = rt.decide(CTX).bundle_version
    rt.load(logistic_bundle(phishing))
    assert rt.decide(CTX).bundle_version != before
    with pytest.raises(SpecError):
        Runtime(phishing, object())  # type: ignore[arg-type]


def test_integer_units_become_strings(phishing):
    from closedloop import F, Int, System, Thresholds

    sys2 = System(
        "intunit",
        context=[Int("uid", ge=0), Int("n", default=0)],
        unit="uid",
        features={"n": F.col("n")},
        actions=["no", "yes"],
        experience=Thresholds("score", {"yes": 0.5}, otherwise="no"),
    )
    rt = Runtime(sys2, Bundle.build(sys2, LogisticModel({"n": 1.0})))
    assert rt.decide({"uid": 42, "n": 3}).unit == "42"
    assert rt.decide_batch({"uid": np.array([42, 7]), "n": [3, 0]}).units.to_pylist() == ["42", "7"]

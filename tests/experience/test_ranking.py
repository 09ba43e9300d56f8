"""Ranking: multi-action decisions (k of N candidates) — greedy, Plackett–Luce softmax,
ε-greedy per slot; exact slot propensities; decide ≡ decide_batch bitwise."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from examples.feed import system as feed_module
from examples.feed.data import columnar, generate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop import (
    BatchContextError,
    Bundle,
    BundleError,
    ContextError,
    DecisionIds,
    F,
    Float,
    Int,
    LinearModel,
    SpecError,
    Str,
    System,
)
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB, choose, uniform
from closedloop.experience.ranking import (
    RankedDecision,
    RankedDecisionBatch,
    RankingPlan,
    _pick,
    rank,
    ranking_plan,
    slot_probabilities,
)

ID = "0123456789abcdef0123456789abcdef"


def variant(experience: Ranking) -> System:
    """The feed system with another ranking experience (same fields and features)."""
    f = feed_module
    return System(
        "feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
        features=f.features, experience=experience,
    )


def plan_for(experience: Ranking | None = None, model=None) -> RankingPlan:
    system = feed_module.feed if experience is None else variant(experience)
    return RankingPlan(system, Bundle.build(system, model or feed_module.model))


#: score = item_ctr exactly (0.0 + ctr * 1.0): rankings can be read off the input
CTR = LinearModel({"ctr": 1.0}, 0.0, output="score")


def item(i: int, ctr: float, **kw) -> dict:
    return {"item_id": f"i{i}", "category": "news", "item_ctr": ctr, "age_hours": 5.0, **kw}


def request(cands: list[dict], **kw) -> dict:
    return {"user_id": "u1", "country": "de", "hour": 9, "candidates": cands, **kw}


def bits(xs) -> bytes:
    return np.asarray(xs, dtype=np.float64).tobytes()


def reference(scores, k, explore, decision_id):
    """Plackett–Luce / ε-greedy / SquareCB the plain way: the exploration primitives on the remaining
    candidates, slot by slot."""
    keys = sorted(range(len(scores)), key=lambda i: (scores[i] != scores[i], -scores[i] if scores[i] == scores[i] else 0))
    remaining = list(range(len(scores)))
    ranking, slots = [], []
    for j in range(min(k, len(scores))):
        best = next(i for i in keys if i in remaining)
        if explore is None:
            pos, q = remaining.index(best), 1.0
        elif isinstance(explore, Softmax):
            probs = explore.probs([scores[i] for i in remaining])
            pos = choose(probs, uniform(decision_id, j))
            q = probs[pos]
        elif isinstance(explore, SquareCB):
            probs = explore.probs([scores[i] for i in remaining], remaining.index(best))
            pos = choose(probs, uniform(decision_id, j))
            q = probs[pos]
        else:
            probs = explore.probs(remaining.index(best), len(remaining), scores[best])
            pos = choose(probs, uniform(decision_id, j))
            q = probs[pos]
        ranking.append(remaining.pop(pos))
        slots.append(q)
    return ranking, slots


# -- greedy ------------------------------------------------------------------------------------


def test_greedy_shows_the_top_k_by_score_ties_in_input_order():
    plan = plan_for(Ranking("score", k=3), CTR)
    ctrs = [0.1, 0.5, 0.3, 0.5, 0.9, 0.0]
    d = plan.decide(request([item(i, c) for i, c in enumerate(ctrs)]), ID, 7)
    assert d.ranking == ["i4", "i1", "i3"]  # 0.9, then the two 0.5s in input order
    assert d.scores == ctrs
    assert d.candidates == [f"i{i}" for i in range(6)]
    assert d.slot_propensities == [1.0, 1.0, 1.0] and d.propensity == 1.0
    assert d.mode == "organize" and not d.killswitch
    assert d.why == "top 3 of 6 candidates by score"
    assert (d.decision_id, d.unit, d.timestamp_ns, d.system) == (ID, "u1", 7, "feed")
    assert d.bundle_version == plan.version


def test_nan_scores_come_last():
    order, slots, p, _ = rank([math.nan, 0.2, math.nan, -math.inf, 0.7], 5, None, ID)
    assert order == [4, 1, 3, 0, 2]
    assert slots == [1.0] * 5 and p == 1.0


def test_k_larger_than_n_shows_every_candidate():
    plan = plan_for()  # k=5, Softmax(0.5)
    d = plan.decide(request([item(i, c) for i, c in enumerate([0.2, 0.4, 0.1])]), ID, 1)
    assert sorted(d.ranking) == ["i0", "i1", "i2"] and len(d.slot_propensities) == 3
    assert d.slot_propensities[-1] == 1.0  # the last one left is certain
    assert "3 of 3 candidates" in d.why
    empty = plan.decide(request([]), ID, 1)
    assert (empty.ranking, empty.scores, empty.slot_propensities, empty.propensity) == ([], [], [], 1.0)


# -- exploration: exact propensities ------------------------------------------------------------


def pl_by_hand(scores, ranking, t):
    """Plackett–Luce slot probabilities from the textbook formula."""
    remaining = list(range(len(scores)))
    out = []
    for i in ranking:
        z = sum(math.exp(scores[r] / t) for r in remaining)
        out.append(math.exp(scores[i] / t) / z)
        remaining.remove(i)
    return out


def test_softmax_slot_propensities_are_plackett_luce():
    plan = plan_for()
    ctx = generate(1, 12, seed=3)[0]
    d = plan.decide(ctx, ID, 1)
    idx = [d.candidates.index(c) for c in d.ranking]
    assert d.slot_propensities == pytest.approx(pl_by_hand(d.scores, idx, 0.5), rel=1e-12)
    assert d.propensity == pytest.approx(math.prod(pl_by_hand(d.scores, idx, 0.5)), rel=1e-12)
    # bitwise: the exploration primitives applied slot by slot give the same draw and numbers
    ref_rank, ref_slots = reference(d.scores, 5, Softmax(0.5), ID)
    assert idx == ref_rank and bits(d.slot_propensities) == bits(ref_slots)
    assert bits(slot_probabilities(d.scores, idx, Softmax(0.5))) == bits(d.slot_propensities)
    p = 1.0
    for q in d.slot_propensities:
        p *= q
    assert d.propensity == p
    assert "Plackett–Luce" in d.why and "temperature 0.5" in d.why


def test_softmax_small_example_by_hand():
    scores = [0.0, math.log(2.0), math.log(3.0)]  # weights 1 : 2 : 3 at temperature 1
    order, slots, p, _ = rank(scores, 2, Softmax(1.0), ID)
    w = {0: 1.0, 1: 2.0, 2: 3.0}
    first = w[order[0]] / 6.0
    second = w[order[1]] / (6.0 - w[order[0]])
    assert slots == pytest.approx([first, second], rel=1e-12)
    assert p == pytest.approx(first * second, rel=1e-12)


def test_epsilon_greedy_slot_propensities():
    eps = EpsilonGreedy(0.3)
    scores = [0.2, 0.9, 0.5, 0.7, 0.1, 0.4]
    seen_explore = False
    for n in range(200):
        did = f"req-{n}"
        order, slots, p, explored = rank(scores, 3, eps, did)
        ref = reference(scores, 3, eps, did)
        assert order == ref[0] and bits(slots) == bits(ref[1])
        remaining = list(range(6))
        for j, pick in enumerate(order):
            r = len(remaining)
            best = max(remaining, key=lambda i: scores[i])
            want = (1 - 0.3) + 0.3 / r if pick == best else 0.3 / r
            assert slots[j] == pytest.approx(want, rel=1e-15)
            assert (pick != best) == (j in explored)
            remaining.remove(pick)
        seen_explore |= bool(explored)
    assert seen_explore


def test_epsilon_greedy_outside_the_band_is_greedy():
    eps = EpsilonGreedy(0.5, low=0.0, high=0.6)  # explore only while the best remaining ≤ 0.6
    scores = [0.9, 0.8, 0.5, 0.4, 0.3]
    for n in range(50):
        order, slots, _, _ = rank(scores, 4, eps, f"d{n}")
        assert order[:2] == [0, 1] and slots[:2] == [1.0, 1.0]  # 0.9 and 0.8 are above the band
        assert slots[2] in (0.5 + 0.5 / 3, 0.5 / 3)


def test_epsilon_greedy_system_end_to_end():
    plan = plan_for(Ranking("score", k=4, explore=EpsilonGreedy(0.2)))
    ctxs = generate(30, 10, seed=5)
    ids = [f"id-{i}" for i in range(30)]
    batch = plan.decide_batch(*columnar(ctxs), ids, 11)
    for i, ctx in enumerate(ctxs):
        d = plan.decide(ctx, ids[i], 11)
        assert batch[i] == d
        assert "ε-greedy" in d.why


def test_replay_is_deterministic_and_ids_matter():
    plan = plan_for()
    ctx = generate(1, 40, seed=9)[0]
    a = plan.decide(ctx, ID, 1)
    assert plan.decide(ctx, ID, 1) == a
    others = {tuple(plan.decide(ctx, f"{i:032x}", 1).ranking) for i in range(20)}
    assert len(others) > 1  # the draw depends on the decision id


finite = st.floats(-30, 30, allow_nan=False)
any_score = st.one_of(finite, st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.just(0.0), st.just(-0.0))
policies = st.one_of(
    st.none(),
    st.builds(Softmax, st.floats(0.05, 20)),
    st.builds(EpsilonGreedy, st.floats(0.01, 1.0), st.sampled_from([-math.inf, -1.0, 0.0]), st.sampled_from([math.inf, 1.0, 5.0])),
    st.builds(SquareCB, st.floats(0.01, 1000.0)),
)


@settings(max_examples=300, deadline=None)
@given(
    scores=st.one_of(st.lists(finite, max_size=30), st.lists(any_score, max_size=12)),
    k=st.integers(1, 8),
    explore=policies,
    did=st.one_of(st.text(min_size=1, max_size=10), st.integers(0, 2**128 - 1).map(lambda v: f"{v:032x}")),
)
def test_rank_properties(scores, k, explore, did):
    order, slots, p, explored = rank(scores, k, explore, did)
    m = min(k, len(scores))
    assert len(order) == m == len(slots) and len(set(order)) == m
    assert all(0.0 < q <= 1.0 for q in slots)
    assert 0.0 < p <= 1.0 or (p == 0.0 and m > 0)  # a product of many small numbers may underflow
    # the recorded numbers are the policy's probabilities for this ranking, bitwise
    assert bits(slot_probabilities(scores, order, explore)) == bits(slots)
    ref = reference(scores, k, explore, did)
    if not any(s in (math.inf, -math.inf) for s in scores):  # the reference knows no limits
        assert order == ref[0] and bits(slots) == bits(ref[1])
    # at every slot the probabilities over the remaining candidates sum to 1
    remaining = list(range(len(scores)))
    for pick in order:
        total = sum(slot_probabilities(scores, [*[o for o in order if o not in remaining], c], explore)[-1]
                    for c in remaining)
        if explore is not None:
            assert total == pytest.approx(1.0, abs=1e-9)
        remaining.remove(pick)
    if explore is None:
        assert slots == [1.0] * m and not explored


@settings(max_examples=300, deadline=None)
@given(probs=st.lists(st.floats(0, 1), min_size=1, max_size=20), u=st.floats(0, 1, exclude_max=True))
def test_pick_is_choose(probs, u):
    assert _pick(probs, u) == choose(probs, u)


# -- decide ≡ decide_batch ----------------------------------------------------------------------


def same_decision(a: RankedDecision, b: RankedDecision) -> None:
    assert a == b
    assert bits(a.scores) == bits(b.scores)
    assert bits(a.slot_propensities) == bits(b.slot_propensities)
    assert bits([a.propensity]) == bits([b.propensity])


@pytest.mark.parametrize("explore", [Softmax(0.5), Softmax(0.05), EpsilonGreedy(0.25, low=0.1, high=0.4), SquareCB(50.0), None])
def test_decide_equals_decide_batch(explore):
    plan = plan_for(Ranking("score", k=5, explore=explore))
    counts = [80, 0, 1, 5, 6, 37, 3, 80, 12, 2]
    ctxs = generate(len(counts), counts, seed=21)
    ids = DecisionIds(seed=2).next_ids(len(counts), 10**18).to_pylist()
    requests, cands = columnar(ctxs)
    batch = plan.decide_batch(requests, cands, ids, 99)
    assert isinstance(batch, RankedDecisionBatch) and len(batch) == len(ctxs)
    for i, ctx in enumerate(ctxs):
        same_decision(batch[i], plan.decide(ctx, ids[i], 99))
    assert batch[-1] == batch[len(batch) - 1]
    assert [d.decision_id for d in batch] == ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=12),
    seed=st.integers(0, 10_000),
    shuffle=st.booleans(),
    as_dict=st.booleans(),
)
def test_decide_equals_decide_batch_property(counts, seed, shuffle, as_dict):
    plan = PLAN
    ctxs = generate(len(counts), counts, seed=seed)
    ids = [f"{seed:08x}{i:024x}" for i in range(len(counts))]
    requests, cands = columnar(ctxs)
    if shuffle and cands.num_rows:  # requests interleaved; each request's candidates keep order
        rng = np.random.default_rng(seed)
        keys = rng.permutation(len(counts))[cands.column("request").to_numpy()]
        cands = cands.take(pa.array(np.argsort(keys, kind="stable")))
    if as_dict:
        requests = {n: requests.column(n).to_pylist() for n in requests.column_names}
        cands = {n: cands.column(n).to_pylist() for n in cands.column_names}
    batch = plan.decide_batch(requests, cands, ids, np.arange(len(counts)) * 10)
    for i, ctx in enumerate(ctxs):
        same_decision(batch[i], plan.decide(ctx, ids[i], i * 10))


PLAN = plan_for()


def test_decide_batch_draws_ids_from_a_source_and_one_timestamp():
    ctxs = generate(4, 6, seed=1)
    batch = PLAN.decide_batch(*columnar(ctxs), DecisionIds(seed=5), 123)
    ids = DecisionIds(seed=5).next_ids(4, 123).to_pylist()
    assert [d.decision_id for d in batch] == ids
    for i, ctx in enumerate(ctxs):
        same_decision(batch[i], PLAN.decide(ctx, ids[i], 123))


def test_batch_to_arrow_matches_the_decisions():
    ctxs = generate(5, [3, 0, 8, 5, 1], seed=4)
    batch = PLAN.decide_batch(*columnar(ctxs), [f"d{i}" for i in range(5)], 1)
    assert batch.to_arrow().to_pylist() == batch.to_pylist()
    assert batch[2].to_dict()["mode"] == "organize"


# -- kill switch ---------------------------------------------------------------------------------


def test_kill_switch_shows_the_first_k_in_input_order():
    ctxs = generate(3, [8, 2, 0], seed=6)
    d = PLAN.decide(ctxs[0], ID, 5, killswitch=True)
    assert d.ranking == d.candidates[:5] and d.scores == []
    assert d.slot_propensities == [1.0] * 5 and d.propensity == 1.0
    assert d.killswitch and "kill switch" in d.why
    ids = ["a", "b", "c"]
    batch = PLAN.decide_batch(*columnar(ctxs), ids, 5, killswitch=True)
    for i, ctx in enumerate(ctxs):
        same_decision(batch[i], PLAN.decide(ctx, ids[i], 5, killswitch=True))
    assert batch[1].ranking == batch[1].candidates and batch[2].ranking == []
    assert batch.to_arrow().to_pylist() == batch.to_pylist()


def test_kill_switch_skips_the_intelligence():
    class Boom(LinearModel):
        def bind(self, features):
            scorer = super().bind(features)

            def fail(X, cols):
                raise AssertionError("scored under the kill switch")

            scorer.batch = fail  # type: ignore[method-assign]
            return scorer

    plan = RankingPlan(feed_module.feed, Bundle.build(feed_module.feed, Boom({"ctr": 1.0})))
    ctx = generate(1, 7, seed=1)[0]
    assert plan.decide(ctx, ID, 1, killswitch=True).ranking == [c["item_id"] for c in ctx["candidates"][:5]]
    with pytest.raises(AssertionError):
        plan.decide(ctx, ID, 1)


# -- bad input, named ----------------------------------------------------------------------------


def test_a_bad_candidate_is_named():
    cands = [item(i, 0.1) for i in range(5)]
    cands[3]["item_ctr"] = 1.5
    with pytest.raises(BatchContextError) as e:
        PLAN.decide(request(cands), ID, 1)
    assert e.value.field == "candidates[3].item_ctr" and e.value.value == 1.5
    assert "candidates[3].item_ctr" in str(e.value) and "[0, 1]" in str(e.value)

    cands = [item(i, 0.1) for i in range(5)]
    del cands[2]["category"]
    cands[4]["age_hours"] = "old"
    with pytest.raises(BatchContextError) as e:
        PLAN.decide(request(cands), ID, 1)
    assert [(x.field, x.rule) for x in e.value.errors] == [
        ("candidates[2].category", "present"), ("candidates[4].age_hours", "a number ≥ 0"),
    ]

    cands = [item(i, 0.1) for i in range(3)]
    cands[1]["is_new"] = 1  # an integer is not a boolean
    with pytest.raises(ContextError, match=r"candidates\[1\]\.is_new"):
        PLAN.decide(request(cands), ID, 1)


@pytest.mark.parametrize(
    "ctx, field",
    [
        ({"user_id": "u", "hour": 3}, "candidates"),
        ({"user_id": "u", "hour": 3, "candidates": "abc"}, "candidates"),
        ({"user_id": "u", "hour": 3, "candidates": [item(0, 0.1), 7]}, "candidates[1]"),
        ({"user_id": "u", "hour": 30, "candidates": [item(0, 0.1)]}, "hour"),
        ({"user_id": "u", "hour": 3, "candidates": [item(0, 0.1), item(1, 0.2), item(0, 0.3)]}, "candidates[2].item_id"),
        ([1, 2], "<context>"),
    ],
)
def test_bad_requests_are_named(ctx, field):
    with pytest.raises(ContextError) as e:
        PLAN.decide(ctx, ID, 1)
    assert e.value.field == field


def test_bad_batches_are_named():
    ctxs = generate(3, 4, seed=2)
    requests, cands = columnar(ctxs)
    ids = ["a", "b", "c"]
    bad = cands.set_column(cands.column_names.index("request"), "request", pa.array([0] * 11 + [3], pa.int64()))
    with pytest.raises(ContextError) as e:
        PLAN.decide_batch(requests, bad, ids, 1)
    assert (e.value.field, e.value.row, e.value.value) == ("candidates.request", 11, 3)
    with pytest.raises(ContextError, match="'candidates.request' is required"):
        PLAN.decide_batch(requests, cands.drop_columns(["request"]), ids, 1)
    ctr = cands.column("item_ctr").to_pylist()
    ctr[6] = -0.5
    bad = cands.set_column(cands.column_names.index("item_ctr"), "item_ctr", pa.array(ctr))
    with pytest.raises(BatchContextError) as e:
        PLAN.decide_batch(requests, bad, ids, 1)
    assert (e.value.field, e.value.row, e.value.value) == ("candidates.item_ctr", 6, -0.5)
    item_ids = cands.column("item_id").to_pylist()
    item_ids[5] = item_ids[4]
    bad = cands.set_column(cands.column_names.index("item_id"), "item_id", pa.array(item_ids))
    with pytest.raises(ContextError) as e:
        PLAN.decide_batch(requests, bad, ids, 1)
    assert (e.value.field, e.value.row) == ("candidates.item_id", 5) and "request 1" in str(e.value)
    with pytest.raises(ContextError, match="decision_ids"):
        PLAN.decide_batch(requests, cands, ["a", "b"], 1)
    with pytest.raises(ContextError, match="timestamps_ns"):
        PLAN.decide_batch(requests, cands, ids, [1, 2])
    with pytest.raises(BatchContextError) as e:
        PLAN.decide_batch({"user_id": ["u"] * 3, "hour": [1, 2, 99]}, cands, ids, 1)
    assert (e.value.field, e.value.row) == ("hour", 2)


# -- plans ---------------------------------------------------------------------------------------


def test_plan_checks_system_and_bundle(phishing):
    assert ranking_plan(phishing, None) is None
    assert isinstance(ranking_plan(feed_module.feed, Bundle.build(feed_module.feed, CTR)), RankingPlan)
    with pytest.raises(SpecError, match="Ranking experience"):
        RankingPlan(phishing, None)
    other = System(
        "other", context=feed_module.request, candidates=feed_module.candidates, candidate_id="item_id",
        unit="user_id", features=feed_module.features, experience=Ranking("score", k=2),
    )
    with pytest.raises(BundleError):
        RankingPlan(other, Bundle.build(feed_module.feed, CTR))
    with pytest.raises(SpecError, match="does not produce"):
        Bundle.build(feed_module.feed, LinearModel({"ctr": 1.0}, output="click"))


def test_integer_candidate_ids_and_units_are_text():
    system = System(
        "numbers", context=[Int("user", ge=0), Str("country", default="")],
        candidates=[Int("item"), Float("quality", ge=0)], candidate_id="item", unit="user",
        features={"q": F.col("quality")}, experience=Ranking("score", k=2, explore=Softmax(1.0)),
    )
    plan = RankingPlan(system, Bundle.build(system, LinearModel({"q": 1.0})))
    ctx = {"user": 7, "candidates": [{"item": 10, "quality": 0.5}, {"item": 11, "quality": 2.0}, {"item": 12, "quality": 1.0}]}
    d = plan.decide(ctx, ID, 1)
    assert d.unit == "7" and d.candidates == ["10", "11", "12"] and set(d.ranking) <= set(d.candidates)
    batch = plan.decide_batch(
        {"user": [7]}, {"item": [10, 11, 12], "quality": [0.5, 2.0, 1.0], "request": [0, 0, 0]}, [ID], 1
    )
    same_decision(batch[0], d)

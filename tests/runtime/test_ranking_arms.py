"""Flights, shadows and the kill switch for ranking systems: a unit's arm decides its requests in
both paths (bitwise: slates, slot propensities, scores), shadows score the same feature rows and
record their greedy slates, telemetry writes the flight, the per-row bundle version and the
shadows, and the sample-ratio check counts a ranking's arms as any other's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from examples.feed.data import columnar, generate
from examples.feed.system import feed, model
from test_runtime import heuristic_bundle  # tests/runtime/test_runtime.py

from closedloop import Bundle, LogisticModel, Runtime
from closedloop.errors import ClosedLoopError, ContextError
from closedloop.experience.ranked import RankedShadow
from closedloop.registry import srm
from closedloop.registry.srm import exposure_counts
from closedloop.runtime.deployment import Deployment, Flight, expected_shares, flight_bucket
from closedloop.telemetry import MemorySink, Sampling, SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000_000_000_000


def _bundle(**change: float) -> Bundle:
    """The feed's model with some weights changed (another bundle version, other scores)."""
    return Bundle.build(feed, LogisticModel({**model.weights, **change}, intercept=model.intercept, output="score"))


PROD = Bundle.build(feed, model)
CAND = _bundle(ctr=3.0, fresh=2.5)
SHADOW = _bundle(ctr=1.0, age_log=0.4)
SHADOW2 = _bundle(is_new=-2.0)


def _contexts(n: int, seed: int) -> list[dict]:
    counts = np.random.default_rng(seed).integers(0, 9, size=n).tolist()  # some requests without candidates
    ctxs = generate(n, counts, seed=seed)
    for i, c in enumerate(ctxs):
        c["user_id"] = f"user-{i}"  # one unit per request: both arms get many
    ctxs[1]["candidates"][:0] = [dict(ctxs[1]["candidates"][0], item_id="tie")] if ctxs[1]["candidates"] else []
    return ctxs


def _runtime(**kw) -> Runtime:
    return Runtime(feed, PROD, flights=[Flight("cand", CAND, 0.3)], shadows=[SHADOW, SHADOW2], **kw)


def _both(rt_single: Runtime, rt_batch: Runtime, ctxs: list[dict]) -> tuple[list, object]:
    ids = [f"d{i:04d}" for i in range(len(ctxs))]
    ts = [T0 + i for i in range(len(ctxs))]
    singles = [rt_single.decide(c, decision_id=d, timestamp_ns=t) for c, d, t in zip(ctxs, ids, ts, strict=True)]
    req, cand = columnar(ctxs)
    batch = rt_batch.decide_batch(req, candidates=cand, decision_ids=ids, timestamps_ns=ts)
    return singles, batch


def _bits(xs: list[float]) -> bytes:
    return np.asarray(xs, dtype=np.float64).tobytes()


def _same(a, b) -> None:
    """Equal decisions, every float bitwise."""
    assert a.to_dict() == b.to_dict()
    assert _bits(a.scores) == _bits(b.scores) and _bits(a.slot_propensities) == _bits(b.slot_propensities)
    assert _bits([a.propensity]) == _bits([b.propensity])
    for x, y in zip(a.shadows, b.shadows, strict=True):
        assert _bits(x.scores) == _bits(y.scores) and x.ranking == y.ranking


def test_flights_and_shadows_decide_the_same_in_both_paths_bitwise():
    ctxs = _contexts(240, seed=1)
    singles, batch = _both(_runtime(), _runtime(), ctxs)
    assert len(batch) == len(singles)
    for i, d in enumerate(singles):
        _same(d, batch[i])
    assert batch.to_pylist() == [d.to_dict() for d in singles]
    assert batch.to_arrow().to_pylist() == batch.to_pylist()
    flights = [d.flight for d in singles]
    assert {None, "cand"} == set(flights)
    for d in singles:  # the arm: the unit's bucket, exactly as assign_flight puts it
        want = "cand" if flight_bucket("cand", d.unit) < 0.3 else None
        assert d.flight == want and d.bundle_version == (CAND.version if want else PROD.version)
        assert [s.bundle_version for s in d.shadows] == [SHADOW.version, SHADOW2.version]
    assert any(not d.candidates for d in singles) and all(s == RankedShadow(s.bundle_version, [], [])
                                                          for d in singles if not d.candidates for s in d.shadows)


def test_each_arm_and_shadow_scores_as_its_bundle_does_in_production():
    ctxs = _contexts(120, seed=2)
    got, _ = _both(_runtime(), _runtime(), ctxs)
    alone = {b.version: Runtime(feed, b) for b in (PROD, CAND, SHADOW, SHADOW2)}
    for i, (c, d) in enumerate(zip(ctxs, got, strict=True)):
        ref = alone[d.bundle_version].decide(c, decision_id=f"d{i:04d}", timestamp_ns=T0 + i)
        assert d.to_dict() == {**ref.to_dict(), "shadows": d.to_dict()["shadows"], "flight": d.flight}
        for sh in d.shadows:
            s = alone[sh.bundle_version].decide(c, decision_id="x", timestamp_ns=0).scores
            assert _bits(sh.scores) == _bits(s)
            # the greedy slate: top min(k, N) by score, ties to the lower input index
            order = sorted(range(len(s)), key=lambda j: (-s[j], j))[: min(feed.experience.k, len(s))]
            assert sh.ranking == [d.candidates[j] for j in order]
    # the shadows are never acted on: the slates shown are production's / the flight's own
    assert any(d.shadows[0].ranking != d.ranking for d in got if d.candidates)


def test_shadow_greedy_slates_break_ties_by_input_order_in_both_paths():
    ctxs = generate(3, [6, 6, 6], seed=9)
    for c in ctxs:  # every candidate the same but its id: all scores tie
        c["candidates"] = [dict(c["candidates"][0], item_id=f"{c['user_id']}-{j}") for j in range(6)]
    rt = Runtime(feed, PROD, shadows=[SHADOW])
    singles, batch = _both(rt, Runtime(feed, PROD, shadows=[SHADOW]), ctxs)
    for i, d in enumerate(singles):
        assert d.shadows[0].ranking == d.candidates[:5] and d.flight is None
        _same(d, batch[i])
    assert batch.to_arrow().to_pylist() == batch.to_pylist()


def test_kill_switch_with_flights_and_shadows_shows_the_first_k_in_input_order():
    ctxs = _contexts(60, seed=3)
    singles, batch = _both(_runtime(killswitch=True), _runtime(killswitch=True), ctxs)
    for i, (c, d) in enumerate(zip(ctxs, singles, strict=True)):
        ids = [x["item_id"] for x in c["candidates"]]
        assert d.killswitch and d.flight is None and d.shadows == [] and d.scores == []
        assert d.ranking == ids[:5] and d.slot_propensities == [1.0] * len(d.ranking) and d.propensity == 1.0
        assert d.bundle_version == PROD.version
        _same(d, batch[i])
    assert batch.to_arrow().to_pylist() == batch.to_pylist()
    rt = _runtime()
    rt.set_killswitch(True)
    assert rt.decide(ctxs[0]).flight is None
    rt.set_killswitch(False)
    assert {rt.decide(c).flight for c in ctxs} == {None, "cand"}


def test_apply_reuses_bound_plans_and_checks_every_bundle(phishing):
    rt = Runtime(feed, PROD)
    plan = rt._serving.plan
    assert rt._serving.ranking_arms is None  # production alone: the plain path
    rt.apply(Deployment(PROD, shadows=(SHADOW,), flights=(Flight("cand", CAND, 1.0),), revision=3))
    assert rt._serving.plan is plan and rt.shadows == (SHADOW.version,)
    cand_plan = rt._serving.arms[0]
    d = rt.decide(_contexts(3, seed=4)[2])
    assert d.flight == "cand" and d.bundle_version == CAND.version
    every = rt.decide_batch(*columnar(_contexts(30, seed=4))[:1], candidates=columnar(_contexts(30, seed=4))[1])
    assert {(x.flight, x.bundle_version) for x in every} == {("cand", CAND.version)}  # the flight takes every unit
    rt.apply(Deployment(CAND, shadows=(PROD,)))  # promoted: the flight's plan serves, production's shadows
    assert rt._serving.plan is cand_plan and rt._serving.ranking_arms.shadows[0] is plan
    other = heuristic_bundle(phishing)
    with pytest.raises(ClosedLoopError, match="built for system 'phishing', not 'feed'"):
        rt.apply(Deployment(PROD, flights=(Flight("bad", other, 0.5),)))
    with pytest.raises(ClosedLoopError, match="built for system 'phishing', not 'feed'"):
        rt.apply(Deployment(PROD, shadows=(other,)))
    assert rt.deployment.production is CAND  # a refused deployment changes nothing


def _rows(tel: Telemetry, home) -> dict[str, dict]:
    tel.close()
    skip = {"seq", "writer", "ingest_ns"}
    return {r["decision_id"]: {k: v for k, v in r.items() if k not in skip}
            for r in TelemetryStore(home).read("decisions").to_pylist()}


@pytest.mark.parametrize("sampling", [None, Sampling(0.6)])
def test_telemetry_of_both_paths_reads_back_equal(tmp_path, sampling):
    ctxs = _contexts(150, seed=5)
    t1 = Telemetry(SegmentLog(tmp_path / "a"), system=feed, sampling=sampling)
    t2 = Telemetry(SegmentLog(tmp_path / "b"), system=feed, sampling=sampling)
    singles, _ = _both(_runtime(telemetry=t1), _runtime(telemetry=t2), ctxs)
    a, b = _rows(t1, tmp_path / "a"), _rows(t2, tmp_path / "b")
    assert a == b
    assert (len(a) == len(ctxs)) == (sampling is None) and len(a) > 0
    by_id = {d.decision_id: d for d in singles}
    for k, r in a.items():
        d = by_id[k]
        assert r["flight"] == d.flight and r["bundle_version"] == d.bundle_version
        assert r["sample_prob"] == (1.0 if sampling is None else 0.6)
        shadows = json.loads(r["shadows_json"])
        assert shadows == [{"bundle_version": s.bundle_version, "action": s.ranking[0] if s.ranking else "",
                            "slate": s.ranking, "candidate_scores": s.scores} for s in d.shadows]
    assert {r["flight"] for r in a.values()} == {None, "cand"}


def test_telemetry_under_the_kill_switch_has_no_flight_and_no_shadows():
    sink = MemorySink()
    tel = Telemetry(sink, system=feed, flush_interval_ms=10_000)
    rt = _runtime(telemetry=tel, killswitch=True)
    ctxs = _contexts(20, seed=6)
    rt.decide(ctxs[0])
    rt.decide_batch(*columnar(ctxs[1:])[:1], candidates=columnar(ctxs[1:])[1])
    tel.flush()
    t = sink.table("decisions").to_pylist()
    assert len(t) == 20 and all(r["killswitch"] and r["flight"] is None and r["shadows_json"] is None for r in t)
    tel.close()


def _exposure(serving_share: float, declared_share: float, units: int = 3000) -> dict:
    sink = MemorySink()
    tel = Telemetry(sink, system=feed, flush_interval_ms=10_000)
    rt = Runtime(feed, PROD, flights=[Flight("cand", CAND, serving_share)], telemetry=tel)
    ctxs = generate(units, 2, seed=7)
    for i, c in enumerate(ctxs):
        c["user_id"] = f"u{i}"
    half = units // 2
    for c in ctxs[:200]:
        rt.decide(c)
    rt.decide_batch(*columnar(ctxs[200:half])[:1], candidates=columnar(ctxs[200:half])[1])
    rt.decide_batch(*columnar(ctxs[half:])[:1], candidates=columnar(ctxs[half:])[1])
    rt.decide_batch(*columnar(ctxs[:half])[:1], candidates=columnar(ctxs[:half])[1])  # units come back: counted once
    tel.flush()
    counts, info = exposure_counts(sink.table("decisions"), "feed", 0, 2**62, [])
    tel.close()
    assert info["decisions"] == units + half
    observed = {None: counts.get((None, PROD.version), 0), "cand": counts.get(("cand", CAND.version), 0)}
    assert sum(observed.values()) == units
    return srm(observed, expected_shares([Flight("cand", CAND, declared_share)]))


def test_sample_ratio_check_counts_ranking_arms():
    ok = _exposure(0.3, 0.3)
    assert ok["verdict"] == "ok" and not ok["mismatch"]
    assert 0.25 < ok["arms"][0]["observed_share"] < 0.35
    broken = _exposure(0.4, 0.3)  # the runtime's split is not the declared one
    assert broken["mismatch"] and broken["verdict"] == "mismatch"


def test_interleaved_candidates_with_arms_decide_as_in_order():
    ctxs = _contexts(80, seed=8)
    ids = [f"d{i:04d}" for i in range(len(ctxs))]
    ts = [T0] * len(ctxs)
    req, cand = columnar(ctxs)
    rows = cand["request"].to_numpy()
    inter = np.concatenate([np.flatnonzero(rows % 2 == 1), np.flatnonzero(rows % 2 == 0)])  # odd requests first
    a = _runtime().decide_batch(req, candidates=cand, decision_ids=ids, timestamps_ns=ts)
    b = _runtime().decide_batch(req, candidates=cand.take(inter), decision_ids=ids, timestamps_ns=ts)
    assert a.to_pylist() == b.to_pylist() and {d.flight for d in b} == {None, "cand"}
    with pytest.raises(ContextError, match=r"'timestamps_ns' must be one timestamp per input row \(80\)\. Got 'an array of shape \(\)'"):
        _runtime().decide_batch(req, candidates=cand, decision_ids=ids, timestamps_ns=T0)


def test_shadow_disagreement_reads_ranking_rows_on_slot_one():
    from closedloop.registry.guard import shadow_disagreement

    sink = MemorySink()
    tel = Telemetry(sink, system=feed, flush_interval_ms=10_000)
    rt = Runtime(feed, PROD, shadows=[SHADOW], telemetry=tel)
    ctxs = [c for c in _contexts(100, seed=10) if c["candidates"]]
    decided = rt.decide_batch(*columnar(ctxs)[:1], candidates=columnar(ctxs)[1])
    tel.flush()
    got = shadow_disagreement(sink.table("decisions"), "feed", 0, 2**62)[SHADOW.version]
    tel.close()
    differ = sum(d.ranking[0] != d.shadows[0].ranking[0] for d in decided)
    assert got["n"] == len(ctxs) and got["disagree"] == differ and 0 < differ < len(ctxs)


def test_a_flight_whose_intelligence_reads_context_fields_decides_the_same_in_both_paths():
    from closedloop.intelligence.combine import Partitioned

    def m(**change: float) -> LogisticModel:
        return LogisticModel({**model.weights, **change}, intercept=model.intercept, output="score")

    by_field = Bundle.build(feed, Partitioned("category", {"news": m(ctr=9.0), "fun": m(fresh=-3.0)}, default=m(), output="score"))
    by_request = Bundle.build(feed, Partitioned("country", {"de": m(ctr=0.5)}, default=m(age_log=1.0), output="score"))

    def rt() -> Runtime:
        return Runtime(feed, PROD, flights=[Flight("cat", by_field, 0.3), Flight("country", by_request, 0.5)],
                       shadows=[by_request])

    ctxs = _contexts(200, seed=11)
    singles, batch = _both(rt(), rt(), ctxs)
    for i, d in enumerate(singles):
        _same(d, batch[i])
    assert {d.flight for d in singles} == {None, "cat", "country"}
    alone = Runtime(feed, by_field)
    d = next(d for d in singles if d.flight == "cat" and d.candidates)
    i = singles.index(d)
    assert _bits(d.scores) == _bits(alone.decide(ctxs[i], decision_id="x", timestamp_ns=0).scores)

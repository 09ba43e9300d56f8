"""Decisions logged with ``Telemetry(candidates="digest")`` (candidate ids and the digest of their
fields, no fields) build a per-slot reward dataset too: the rewards, propensities and request
fields as decided, each row's ``candidates_digest``, and the candidate fields and features that
cannot be rebuilt named in the manifest as absent."""

from __future__ import annotations

import json
from datetime import timedelta

from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop import Bundle, Reward, RewardPolicy, Runtime, System
from closedloop.datasets.dataset import load_dataset
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9

SYSTEM = System("feed", context=feed_module.request, candidates=feed_module.candidates, candidate_id="item_id",
                unit="user_id", features=feed_module.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
                rewards=RewardPolicy([Reward("click")], window=timedelta(minutes=10), per="slot"))


def _log(home, mode, contexts, t0):
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=SYSTEM, candidates=mode, clock=clock.now_ns)
    rt = Runtime(SYSTEM, Bundle.build(SYSTEM, feed_module.model), telemetry=tel, clock=clock)
    decided = [rt.decide(c, timestamp_ns=t0 + i * S) for i, c in enumerate(contexts)]
    for d in decided:
        tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + S, source="app", candidate=d.ranking[1])
    tel.close()
    return decided


def _build(home, out):
    store = TelemetryStore(home)
    store.compact()
    return build_reward_dataset(SYSTEM, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                since_ns=T0, until_ns=T0 + 10**4 * S, cutoff_ns=T0 + 10**5 * S, out=out), store


def test_digest_only_decisions_build_a_dataset_without_candidate_fields(tmp_path):
    contexts = generate(30, 5, seed=4)
    decided = _log(tmp_path / "home", "digest", contexts, T0)
    m, store = _build(tmp_path / "home", tmp_path / "ds")
    table, cols = load_dataset(tmp_path / "ds", SYSTEM)
    assert table.num_rows == 90 and m.counts["decisions"] == 30
    got = {(d, a): r for d, a, r in zip(table["decision_id"].to_pylist(), table["action"].to_pylist(),
                                        table["reward"].to_pylist(), strict=True)}
    assert got == {(d.decision_id, c): float(j == 1) for d in decided for j, c in enumerate(d.ranking)}
    assert table["propensity"].to_pylist()[:3] == decided[0].slot_propensities
    # each row carries the digest its decision logged, and the request fields as decided
    logged = dict(zip(*store.read("decisions", ["decision_id", "candidates_digest"]).to_pydict().values(), strict=True))
    assert table["candidates_digest"].to_pylist() == [logged[d] for d in table["decision_id"].to_pylist()]
    assert cols.pylist("user_id")[:3] == [contexts[0]["user_id"]] * 3
    assert json.loads(table["context_json"][0].as_py()) == {k: contexts[0][k] for k in ("user_id", "country", "hour")}
    # what cannot be rebuilt from a digest is absent, and named
    assert "candidate_json" not in table.column_names and "features" not in table.column_names
    assert not set(table.column_names) & set(feed_module.features) and m.content["columns"]["features"] == []
    absent = m.content["absent"]
    assert absent["candidate_fields"] == ["item_id", "category", "item_ctr", "age_hours", "is_new"]
    assert absent["features"] == list(feed_module.features) and "30 of the 30 decisions" in absent["why"]


def test_one_digest_only_writer_leaves_the_candidate_fields_out_of_the_whole_dataset(tmp_path):
    contexts = generate(20, 4, seed=5)
    _log(tmp_path / "home", "full", contexts[:10], T0)
    _log(tmp_path / "home", "digest", contexts[10:], T0 + 100 * S)
    m, _ = _build(tmp_path / "home", tmp_path / "ds")
    assert m.counts["slots"]["rows"] == 60 and "10 of the 20 decisions" in m.content["absent"]["why"]
    # the full writer alone: the candidate fields and features are there, nothing absent
    _log(tmp_path / "full", "full", contexts[:10], T0)
    full, _ = _build(tmp_path / "full", tmp_path / "ds-full")
    assert "absent" not in full.content and full.content["columns"]["features"]
    assert set(feed_module.features) <= set(load_dataset(tmp_path / "ds-full", SYSTEM)[0].column_names)

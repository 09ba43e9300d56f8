"""A ranking system's decisions, through Runtime and real telemetry, with click outcomes for some
slots → a per-slot dataset whose rows, rewards and propensities are exactly what was decided and
reported."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from examples.feed import system as feed_module
from examples.feed.data import columnar, generate

from closedloop import Bundle, Reward, RewardPolicy, Runtime, System
from closedloop.datasets.dataset import load_dataset
from closedloop.datasets.slots import build_reward_dataset
from closedloop.errors import DatasetError
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9


def _feed(default=0.0) -> System:
    f = feed_module
    return System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                  features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
                  rewards=RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=10),
                                       per="slot", default=default))


def _run(home, system, n=300):
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, feed_module.model), telemetry=tel, clock=clock)
    ctxs = generate(n, 6, seed=1)
    decided = [rt.decide(c, timestamp_ns=T0 + i * S) for i, c in enumerate(ctxs[: n // 2])]
    req, cand = columnar(ctxs[n // 2:])
    decided += list(rt.decide_batch(req, candidates=cand, timestamps_ns=[T0 + (n // 2 + i) * S for i in range(n - n // 2)]))
    expect = {}
    rng = np.random.default_rng(0)
    for d in decided:
        for j, cid in enumerate(d.ranking):
            r = 0.0
            if rng.random() < 0.2:
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 5 * S, source="app", candidate=cid)
                r = 1.0
                if rng.random() < 0.3:
                    tel.log_outcome(d.decision_id, kind="buy", value=2.5, event_ns=d.timestamp_ns + 9 * S, source="app", slot=j + 1)
                    tel.log_outcome(d.decision_id, kind="buy", value=1.0, event_ns=d.timestamp_ns + 20 * 60 * S,
                                    source="app", slot=j + 1)  # after the window: not counted
                    r = 2.5
            expect[(d.decision_id, j + 1)] = (cid, r, d.slot_propensities[j])
    # reported twice (a retry: the same outcome id), and one for a candidate never shown
    d0 = decided[0]
    tel.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + S, source="app", candidate=d0.ranking[0])
    tel.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + S, source="app", candidate=d0.ranking[0])
    expect[(d0.decision_id, 1)] = (d0.ranking[0], max(expect[(d0.decision_id, 1)][1], 1.0), d0.slot_propensities[0])
    tel.close()
    store = TelemetryStore(home)
    store.compact()
    return store, decided, expect


def test_per_slot_rewards_are_exactly_what_was_decided_and_reported(tmp_path):
    system = _feed()
    store, decided, expect = _run(tmp_path / "home", system)
    other = Telemetry(SegmentLog(tmp_path / "home"), system=system, clock=lambda: T0 + 10**4 * S)
    other.log_outcome(decided[1].decision_id, kind="click", event_ns=decided[1].timestamp_ns + S, source="app", candidate="never")
    other.close()
    store.compact()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 10**5 * S, out=tmp_path / "ds")
    table, cols = load_dataset(tmp_path / "ds", system)
    got = {(d, p): (a, r, q) for d, p, a, r, q in zip(table["decision_id"].to_pylist(), table["position"].to_pylist(),
                                                     table["action"].to_pylist(), table["reward"].to_pylist(),
                                                     table["propensity"].to_pylist(), strict=True)}
    assert got == expect and len(got) == 3 * len(decided)
    np.testing.assert_array_equal(table["weight"].to_numpy(), 1.0 / table["propensity"].to_numpy())
    assert m.content["rows"] == "slot" and m.counts["decisions"] == len(decided)
    assert m.counts["outcomes"]["not_in_slate"] == 1 and m.counts["outcomes"]["after_window"] > 0
    # each row's candidate fields are the ones decided, and its features read them
    by_id = {c["item_id"]: c for c in generate(300, 6, seed=1)[0]["candidates"]}
    first = [json.loads(c) for c in table["candidate_json"].to_pylist()[:3]]
    assert [c["item_id"] for c in first] == decided[0].ranking
    assert all(c["item_ctr"] == by_id[c["item_id"]]["item_ctr"] for c in first)
    assert table["ctr"].to_pylist()[:3] == [c["item_ctr"] for c in first]
    assert cols.pylist("user_id")[:3] == [decided[0].unit] * 3


def test_open_windows_and_point_in_time(tmp_path):
    system = _feed(default=None)
    store, decided, expect = _run(tmp_path / "home", system, n=40)
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 10**5 * S, out=tmp_path / "ds")
    assert m.counts["slots"]["rows"] == sum(1 for v in expect.values() if v[1] > 0)  # no default: unrewarded left out
    # a cut-off before the windows closed: every decision is open
    with pytest.raises(DatasetError, match="has no rows"):
        build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 60 * S, out=tmp_path / "ds2")

"""A ranking flight end to end: the registry deploys it, the runtime ranks the flight's units
with its bundle, users click per slot, and the guard stops the flight whose slates earn fewer
clicks per decision (``reward_per_decision``) — and lets an equal one fly on."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop import Bundle, LogisticModel, Reward, RewardPolicy, Runtime, System
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.registry import GuardPolicy, Registry, guard_check
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.signing import SigningKey
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9
MIN = 60 * S
FORCE = "a test bundle without an evaluation report"


def _feed() -> System:
    f = feed_module
    return System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                  features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.05)),
                  rewards=RewardPolicy([Reward("click")], window=timedelta(minutes=10), per="slot"))


def _fly(tmp_path, flight_model, n=3000):
    """Production ranks by the feed's click model; flight ``b`` (30 % of units) by ``flight_model``.
    A shown item is clicked with three times its ``item_ctr`` (one draw per slot): slates of better items earn more."""
    system = _feed()
    key = SigningKey.generate()
    A = Bundle.build(system, feed_module.model).signed(key)
    B = Bundle.build(system, flight_model).signed(key)
    clock = ManualClock(T0)
    home = tmp_path / "home"
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    reg.trust_key(key.public_key, name="tests", actor="a")
    for b in (A, B):
        reg.add_bundle(b, actor="a")
    reg.deploy(system, A.version, actor="a", reason="first", force=FORCE)
    reg.deploy(system, B.version, actor="a", reason="try B", flight="b", share=0.3, force=FORCE)
    rng = np.random.default_rng(5)
    with Telemetry(SegmentLog(home), system=system, clock=clock.now_ns) as tel:
        rt = Runtime(system, A, telemetry=tel, clock=clock)
        assert reg.refresh(rt)["applied"]
        for i, req in enumerate(generate(n, n_candidates=20, seed=9)):
            d = rt.decide(req, decision_id=f"d{i:05d}", timestamp_ns=T0 + i * S)  # ids fixed: the draws repeat
            ctr = {c["item_id"]: c["item_ctr"] for c in req["candidates"]}
            for cid in d.ranking:
                if rng.random() < 3 * ctr[cid]:
                    tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + MIN, source="app", candidate=cid)
        tel.flush()
    return reg, system, TelemetryStore(home), T0 + n * S + 11 * MIN


# alpha 0.001: an equal flight is stopped by chance once in a thousand logs, not once in a hundred
# (the worse flight's p-value is ~1e-19)


def _reward(report):
    (entry,) = report["flights"]
    return entry, next(m for m in entry["metrics"] if m["metric"] == "reward_per_decision")


def test_a_ranking_flight_whose_slates_earn_fewer_clicks_is_stopped(tmp_path):
    m = feed_module.model
    worse = LogisticModel({**m.weights, "ctr": -6.0}, intercept=m.intercept, output="score")  # shows the worst items
    reg, system, store, now = _fly(tmp_path, worse)
    with reg:
        report = guard_check(reg, system, store, policy=GuardPolicy(alpha=0.001, min_decisions=200), now_ns=now, apply=True)
        entry, r = _reward(report)
        assert r["breach"] and r["flight"] < r["production"], r
        assert [f.name for f in reg.state("feed").flights] == []
        last = reg.history("feed")[-1]
        assert "reward_per_decision" in str(last)


def test_an_equal_ranking_flight_flies_on(tmp_path):
    m = feed_module.model
    same = LogisticModel({**m.weights, "fresh": m.weights["fresh"] + 1e-9}, intercept=m.intercept, output="score")  # another version
    reg, system, store, now = _fly(tmp_path, same)
    with reg:
        report = guard_check(reg, system, store, policy=GuardPolicy(alpha=0.001, min_decisions=200), now_ns=now, apply=True)
        _, r = _reward(report)
        assert not r["breach"], r
        assert [f.name for f in reg.state("feed").flights] == ["b"]

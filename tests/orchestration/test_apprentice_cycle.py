"""Apprentice mode through the cycle: a bandit-world system starts from its heuristic; the first
candidate imitates it, passes the held-out agreement gate, serves as a shadow until it agrees with
production on the declared share, and is promoted; the next candidate learns from rewards and the
off-policy gate decides. ``loop status`` and the cycle's report show the agreement over time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from closedloop import Bundle, ManualClock, Runtime
from closedloop.errors import SpecError
from closedloop.experience.exploration import SquareCB
from closedloop.orchestration import Apprentice, Cycle, LoopPlan, Rollout
from closedloop.registry import GuardPolicy, Registry
from closedloop.telemetry import SegmentLog, Telemetry
from closedloop.world.bandit import BanditWorld

DAY = 86_400 * 10**9
START = 1_767_571_200 * 10**9
PER_DAY = 2000


def test_an_apprentice_imitates_then_graduates_and_a_reward_model_follows(tmp_path, capsys):
    world = BanditWorld(seed=5, n_candidates=8)
    system = world.system(k=2, explore=SquareCB(30.0))  # every candidate keeps ≥ 1/(8 + 30) of a slot: the log supports learning
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{tmp_path}/registry.sqlite", tmp_path / "bundles", clock=clock).open()
    heuristic = Bundle.build(system, world.heuristic(), version="heuristic")
    plan = LoopPlan(system, heuristic=heuristic, apprentice=Apprentice(agreement=0.85, min_decisions=300),
                    train_window=timedelta(days=7), retrain_every=timedelta(days=1), min_labeled=500, evaluate_bootstrap=50,
                    rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=1),
                                    guard=GuardPolicy(min_decisions=200)))
    cycle = Cycle(plan, tmp_path, reg, clock=clock)
    assert cycle.run_once()["outcome"] == "bootstrapped"
    tel = Telemetry(SegmentLog(tmp_path), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, reg.load_bundle(reg.state(system.name).production, system), telemetry=tel)
    records = []
    try:
        for day in range(6):
            rt.apply(reg.deployment(system))
            tel.clock = ManualClock(START + (day + 1) * DAY).now_ns
            world.log(rt, world.contexts(PER_DAY, seed=200 + day), tel, t0_ns=START + day * DAY, seed=200 + day,
                      spacing_ns=DAY // (2 * PER_DAY))
            tel.flush()
            clock.set_ns(START + (day + 1) * DAY)
            records.append(cycle.run_once())
    finally:
        tel.close()
    outcomes = [r["outcome"] for r in records]
    assert outcomes[:2] == ["shadow", "promoted"], [(r["outcome"], r["reason"]) for r in records]
    # the apprentice: an imitation, judged by its agreement with the logger's greedy choice on held-out logs
    first = records[0]["steps"]
    apprentice = first["train"]["result"]["version"]
    gate = first["evaluate"]["result"]["gate"]
    assert gate["estimator"] == "agreement" and gate["passed"] and gate["agreement"]["agreement"] >= 0.85
    assert "promoted" in records[1]["reason"] and "in shadow" in records[1]["reason"]
    # then a reward model, judged off-policy against the apprentice as production, flown and promoted
    assert outcomes[2:5] == ["shadow", "flight", "promoted"], [(r["outcome"], r["reason"]) for r in records]
    third = records[2]["steps"]
    assert third["evaluate"]["result"]["gate"]["estimator"] == "snips"
    assert third["evaluate"]["result"]["gate"]["baseline"] == apprentice
    status = cycle.status()["apprentice"]
    assert status["graduated"] and status["candidate"] == apprentice and status["agreement"] == 0.85
    where = [(p["where"], p["candidate"]) for p in status["history"]]
    assert where == [("held_out", apprentice), ("shadow", apprentice)]
    assert all(p["agreement"] >= 0.85 and p["n"] >= 300 and p["low"] <= p["agreement"] <= p["high"] for p in status["history"])
    from closedloop.cli.loop import _print_status

    _print_status(cycle.status())  # what `closedloop loop status` prints
    out = capsys.readouterr().out
    assert "apprentice graduated" in out and "apprentice agreement over time" in out and "held_out" in out and "shadow" in out
    import json

    report = json.loads((tmp_path / "orchestration" / "cycles" / f"{records[0]['id']:06d}" / "report.json").read_text())
    assert report["apprentice"]["history"][0]["where"] == "held_out"
    promoted = reg.state(system.name).production
    assert promoted == third["train"]["result"]["version"]
    contexts = world.contexts(2000, seed=999)
    truth = {name: world.true_value(system, reg.load_bundle(v, system), contexts)
             for name, v in (("apprentice", apprentice), ("rewarded", promoted))}
    truth["heuristic"] = world.true_value(system, heuristic, contexts)
    reg.close()
    assert abs(truth["apprentice"] - truth["heuristic"]) < 0.02, truth
    assert truth["rewarded"] > truth["apprentice"] + 0.02, truth


def test_an_apprentice_is_for_a_system_that_learns_from_rewards():
    from support.orchestration import make_system

    with pytest.raises(SpecError, match=r"'apprentice' parameter of LoopPlan is for a system that learns from rewards"):
        LoopPlan(make_system(), apprentice=Apprentice())
    with pytest.raises(SpecError, match=r"'agreement' of Apprentice must be a number in \(0, 1\]. Got 1.5"):
        Apprentice(agreement=1.5)

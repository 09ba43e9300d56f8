"""The loop closes for a system that learns from rewards: a ranking system of the bandit world starts
from its heuristic, and each simulated day's cycle builds the reward dataset, trains a reward model,
judges it off-policy against production, shadows, flies it under the reward guard and promotes it —
and the promoted bundle's true value beats the heuristic's."""

from __future__ import annotations

from datetime import timedelta

import pytest

from closedloop import Bundle, ManualClock, Runtime
from closedloop.errors import SpecError
from closedloop.evaluation.report import Gate
from closedloop.experience.exploration import Softmax
from closedloop.orchestration import Cycle, LoopPlan, Rollout
from closedloop.orchestration.steps import reward_pipeline
from closedloop.registry import GuardPolicy, Registry
from closedloop.telemetry import SegmentLog, Telemetry
from closedloop.world.bandit import BanditWorld

DAY = 86_400 * 10**9
START = 1_767_571_200 * 10**9
PER_DAY = 2500


def _day(world, rt, day: int) -> list:
    """One simulated day of requests decided by ``rt`` (its deployment applied first), ingested at the day's end."""
    tel = rt.telemetry
    tel.clock = ManualClock(START + (day + 1) * DAY).now_ns
    out = world.log(rt, world.contexts(PER_DAY, seed=100 + day), tel, t0_ns=START + day * DAY, seed=100 + day,
                    spacing_ns=DAY // (2 * PER_DAY))
    tel.flush()
    return out


@pytest.fixture(params=["reward", "dr"])
def loop(tmp_path, request):
    world = BanditWorld(seed=11, n_candidates=8)
    system = world.system(k=2, explore=Softmax(0.1))
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{tmp_path}/registry.sqlite", tmp_path / "bundles", clock=clock).open()
    heuristic = Bundle.build(system, world.heuristic(), version="heuristic")
    plan = LoopPlan(system, heuristic=heuristic, model="logistic", objective=request.param, train_window=timedelta(days=7),
                    reward_model="fitted" if request.param == "dr" else None,
                    retrain_every=timedelta(days=30), min_labeled=500, evaluate_bootstrap=100, drift=None,
                    gate=Gate(policy_tolerance=0.0),
                    rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=1),
                                    guard=GuardPolicy(min_decisions=200)))
    yield world, system, clock, reg, plan, tmp_path
    reg.close()


def test_a_reward_model_is_trained_judged_off_policy_flown_and_promoted(loop):
    world, system, clock, reg, plan, home = loop
    assert plan.steps == reward_pipeline() and plan.describe()["objective"] == plan.objective
    cycle = Cycle(plan, home, reg, clock=clock)
    assert cycle.run_once()["outcome"] == "bootstrapped"
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, reg.load_bundle(reg.state(system.name).production, system), telemetry=tel)
    records = []
    try:
        for day in range(4):
            rt.apply(reg.deployment(system))
            _day(world, rt, day)
            clock.set_ns(START + (day + 1) * DAY)
            records.append(cycle.run_once())
    finally:
        tel.close()
    outcomes = [r["outcome"] for r in records]
    assert outcomes[:3] == ["shadow", "flight", "promoted"], [(r["outcome"], r["reason"]) for r in records]
    first = records[0]["steps"]
    assert first["dataset"]["result"]["counts"]["decisions"] == PER_DAY
    gate = first["evaluate"]["result"]["gate"]
    assert gate["passed"] and gate["estimator"] == ("dr" if plan.reward_model else "snips") and gate["ci"][0] > 0
    cand = first["train"]["result"]["version"]
    assert reg.state(system.name).production == cand
    objective = reg.load_bundle(cand, system).metrics["lineage"].get("objective")
    assert objective == ("dr" if plan.objective == "dr" else None), objective
    guard = records[2]["steps"]["advance"]["result"]["guard"]
    assert any(m["metric"] == "reward_per_decision" for m in guard["metrics"])
    contexts = world.contexts(2000, seed=999)
    promoted = reg.load_bundle(cand, system)
    assert world.true_value(system, promoted, contexts) > world.true_value(system, plan.heuristic_bundle(), contexts) + 0.03


def test_a_plan_for_a_ranking_without_rewards_is_refused(loop):
    from examples.feed.system import feed  # a ranking with a label policy and no rewards

    with pytest.raises(SpecError, match=r"Thresholds experience, or a Ranking with rewards \(System\(rewards=...\)\); 'feed' has"):
        LoopPlan(feed)
    s = loop[1]
    with pytest.raises(SpecError, match=r"'objective' parameter of LoopPlan must be one of \['reward', 'dr'\]. Got 'imitate'"):
        LoopPlan(s, objective="imitate")
    with pytest.raises(SpecError, match=r"'model' parameter of LoopPlan must be 'logistic', 'affinity' or 'lightgbm'.*Got 'heuristic'"):
        LoopPlan(s, model="heuristic")


def test_the_dr_click_model_is_the_candidates_fit_when_the_plan_fits_the_same_model(tmp_path):
    """A plan that trains a default logistic reward model and judges it by DR with a fitted click
    model fits once: the report is the one a click model fitted again gives, to the last digit."""
    import json

    from closedloop.evaluation.report import evaluate
    from closedloop.training import train

    world = BanditWorld(seed=11, n_candidates=8)
    system = world.system(k=2, explore=Softmax(0.1))
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{tmp_path}/registry.sqlite", tmp_path / "bundles", clock=clock).open()
    heuristic = Bundle.build(system, world.heuristic(), version="heuristic")
    plan = LoopPlan(system, heuristic=heuristic, model="logistic", train_window=timedelta(days=7), reward_model="fitted",
                    retrain_every=timedelta(days=30), min_labeled=500, evaluate_bootstrap=50, drift=None,
                    rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=1), guard=GuardPolicy(min_decisions=200)))
    cycle = Cycle(plan, tmp_path, reg, clock=clock)
    try:
        assert cycle.run_once()["outcome"] == "bootstrapped"
        tel = Telemetry(SegmentLog(tmp_path), system=system, clock=clock.now_ns, flush_interval_ms=1)
        rt = Runtime(system, reg.load_bundle(reg.state(system.name).production, system), telemetry=tel)
        _day(world, rt, 0)
        tel.close()
        clock.set_ns(START + DAY)
        rec = cycle.run_once()
        steps = rec["steps"]
        ds, cand = steps["dataset"]["result"]["path"], reg.load_bundle(steps["train"]["result"]["version"], system)
        report = json.loads((tmp_path / steps["evaluate"]["result"]["path"]).read_text())
        again = evaluate(system, [reg.load_bundle(reg.state(system.name).production, system), cand], ds, gate=plan.gate,
                         bootstrap=plan.evaluate_bootstrap, seed=rec["id"], reward_model=train(system, ds, model="logistic").bundle)
    finally:
        reg.close()
    assert report["gate"]["estimator"] == "dr"
    got, want = report["policy_value"], json.loads(json.dumps(again["policy_value"]))
    assert got["bundles"] == want["bundles"] and got["comparison"] == want["comparison"]
    assert report["gate"] == json.loads(json.dumps(again["gate"]))


def test_a_plan_that_does_not_compare_the_heuristic_judges_the_candidate_the_same(tmp_path):
    """``LoopPlan(compare_heuristic=False)``: the report holds production and the candidate only, and
    the gate's verdict and both bundles' policy values are the ones of the report with the
    heuristic beside them (the same draws: common random numbers per bundle)."""
    from types import SimpleNamespace

    from closedloop.evaluation.report import evaluate
    from closedloop.orchestration.steps.evaluate import baselines
    from closedloop.training import train

    world = BanditWorld(seed=11, n_candidates=8)
    system = world.system(k=2, explore=Softmax(0.1))
    heuristic = Bundle.build(system, world.heuristic(), version="heuristic")
    prod = Bundle.build(system, world.heuristic(), version="production")  # production that is not the heuristic
    tel = Telemetry(SegmentLog(tmp_path), system=system, clock=ManualClock(START).now_ns, flush_interval_ms=1)
    _day(world, Runtime(system, prod, telemetry=tel), 0)
    tel.close()
    from closedloop.datasets.slots import build_reward_dataset
    from closedloop.telemetry.store import TelemetryStore

    store = TelemetryStore(tmp_path)
    store.compact()
    ds = tmp_path / "dataset"
    build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                         since_ns=START, until_ns=START + DAY, cutoff_ns=START + DAY, out=ds)
    cand = train(system, ds, model="logistic").bundle

    def plan(compare: bool) -> SimpleNamespace:
        p = LoopPlan(system, heuristic=heuristic, model="logistic", compare_heuristic=compare)
        return SimpleNamespace(plan=p, production=lambda: prod)

    assert [b.version for b in baselines(plan(True), cand)] == ["production", "heuristic"]
    assert [b.version for b in baselines(plan(False), cand)] == ["production"]
    nothing = SimpleNamespace(plan=plan(False).plan, production=lambda: None)  # no production: the heuristic is the baseline
    assert [b.version for b in baselines(nothing, cand)] == ["heuristic"]
    assert LoopPlan(system, compare_heuristic=False).describe()["compare_heuristic"] is False
    assert "compare_heuristic" not in LoopPlan(system).describe()
    with pytest.raises(SpecError, match=r"'compare_heuristic' parameter of LoopPlan must be True or False. Got 'no'"):
        LoopPlan(system, compare_heuristic="no")

    both = evaluate(system, [prod, heuristic, cand], ds, bootstrap=50, seed=3, reward_model=cand, gate=Gate(policy_tolerance=0.0))
    two = evaluate(system, [prod, cand], ds, bootstrap=50, seed=3, reward_model=cand, gate=Gate(policy_tolerance=0.0))
    assert [b["version"] for b in two["policy_value"]["bundles"]] == ["production", cand.version]
    pick = {b["version"]: b for b in both["policy_value"]["bundles"]}
    assert two["policy_value"]["bundles"] == [pick["production"], pick[cand.version]]
    assert two["gate"] == both["gate"]

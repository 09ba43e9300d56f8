"""When the registry's own sanity checks refuse a deployment the cycle asked for (a latency
measured on a busy machine, say), the cycle records the refusal and goes on — it never crashes,
and nothing is deployed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from closedloop import ManualClock
from closedloop.errors import SanityCheckError
from closedloop.orchestration import Cycle, LoopPlan, Rollout
from closedloop.registry import GuardPolicy, Registry
from support.orchestration import DAY, START, Synth, first_bundle, make_system, open_runtime


def test_a_refused_shadow_stops_the_cycle_and_the_next_one_trains_again(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    system = make_system()
    clock = ManualClock(START)
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock) as reg:
        plan = LoopPlan(system, heuristic=first_bundle(system), model="logistic", train_window=timedelta(days=4),
                        evaluate_bootstrap=0, drift=None, abuse=None,
                        rollout=Rollout(guard=GuardPolicy(min_decisions=50)))
        cycle = Cycle(plan, home, reg, clock=clock)
        assert cycle.run_once()["outcome"] == "bootstrapped"
        synth = Synth(home, system, per_day=800, seed=2)
        rt = open_runtime(home, system, reg.load_bundle(reg.state(system.name).production, system))
        try:
            for day in range(5):
                rt.apply(reg.deployment(system))
                synth.run_day(rt)
                clock.set_ns(START + (day + 1) * DAY)
        finally:
            rt.telemetry.close()
        real_deploy = reg.deploy

        def refuse(*args, **kw):
            if kw.get("shadow"):
                raise SanityCheckError("Bundle x failed sanity check(s) latency: p99 6 ms, budget 5 ms", [])
            return real_deploy(*args, **kw)

        monkeypatch.setattr(reg, "deploy", refuse)
        rec = cycle.run_once()
        assert rec["outcome"] == "sanity_failed" and "latency" in rec["reason"], (rec["outcome"], rec["reason"])
        assert rec["finished"] and rec["rollout"] is None and reg.state(system.name).shadows == ()
        monkeypatch.setattr(reg, "deploy", real_deploy)
        clock.set_ns(START + 6 * DAY)
        again = cycle.run_once()
        assert again["steps"]["train"]["status"] == "done", (again["outcome"], again["reason"])  # it trains again

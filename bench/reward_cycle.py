"""Benchmark: one reward cycle of the feed world over a 7-day window, timed step by step.

Run it as ``.venv/bin/python bench/reward_cycle.py`` (``--quick`` for a small run, ``--sessions N``
a day, ``--days D``; ``--reward-model fitted`` as the feed demo's plan: the gate's DR click model is
fitted each cycle; ``--warm``: what the demo's cycle of the day before leaves for the next — the reward dataset's
per-file cache of the decoded decisions — is filled first, by building the dataset at the end of
the day before the last, untimed; as in every cycle of the demo after its first).

A ``FeedWorld`` (seed 1, 5,000 users, ``k=5``, ``SquareCB(50)``) is bootstrapped by a cycle (its
heuristic in production); then ``--days`` days of ``--sessions`` sessions each run through a Runtime
with Telemetry (the heuristic deciding: no cycle in between), and one cycle runs at the end of the
last day with ``train_window=7 days`` — the setting of the feed demo's seventh cycle. Each step of
that cycle is timed (``Cycle(on_event=…)``): ``rewards`` builds the per-slot reward dataset
(``build_reward_dataset``), ``train`` fits the candidate, ``evaluate`` computes the off-policy
report (the sampled slot marginals of each bundle's policy, the candidate-set catalogue). The
baseline is the same script run against the code before this work (``PYTHONPATH`` at that commit;
docs/performance.md records both with their commits). The last line printed is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop import ManualClock, Runtime
from closedloop.experience.exploration import SquareCB
from closedloop.orchestration import Cycle, LoopPlan, Rollout
from closedloop.registry import GuardPolicy, Registry
from closedloop.telemetry import SegmentLog, Telemetry
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_driver import run_feed_day

DAY = 86_400 * 10**9


def _world(home: Path, sessions: int, reward_model: str | None) -> tuple[FeedWorld, Any, Cycle, Registry, ManualClock, int]:
    cfg = FeedConfig.load(overrides={"world": {"sessions_per_day": sessions}, "users": {"count": 5000}})
    world = FeedWorld(cfg, seed=1)
    system = world.system(k=5, explore=SquareCB(50.0))
    start = world.day_start_ns(0)
    clock = ManualClock(start)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    plan = LoopPlan(system, heuristic=world.heuristic_bundle(system), model="logistic", train_window=timedelta(days=7),
                    retrain_every=timedelta(days=1), min_labeled=1000, evaluate_bootstrap=50,
                    rollout=Rollout(shadow_for=None, flight_for=timedelta(days=1), guard=GuardPolicy(min_decisions=500)),
                    reward_model=reward_model)
    return world, system, Cycle(plan, home, reg, clock=clock), reg, clock, start


def _warm(home: Path, system: Any, cycle: Cycle, now: int) -> float:
    """What the demo's cycle of the day before left for this one: the reward dataset's per-file
    cache, filled by building that day's dataset into it, and the candidates its reward rows
    decoded, kept by the cycle's reader (nothing with code that keeps neither)."""
    import inspect

    from closedloop.datasets.slots import build_reward_dataset
    from closedloop.orchestration.steps import rewards
    from closedloop.telemetry import TelemetryStore

    store = TelemetryStore(home)
    store.compact()  # as the ingest step of the day before did, with any code: the timed ingest compacts one day
    if not hasattr(rewards, "reward_cache_dir") or "cache" not in inspect.signature(build_reward_dataset).parameters:
        return 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=now - 7 * DAY, until_ns=now, cutoff_ns=now, out=Path(tmp) / "dataset",
                             cache=rewards.reward_cache_dir(home, system))
        from closedloop.training.rewards import load_reward_rows

        cycle.reader.carry("reward_candidates", load_reward_rows(system, Path(tmp) / "dataset")[1])  # as steps/rewards.py keeps it
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reward-model", choices=["none", "fitted"], default="none")
    ap.add_argument("--warm", action="store_true", help="fill the per-file cache as the cycle of the day before did")
    ap.add_argument("--keep", metavar="DIR", help="keep the home (lake, registry, datasets) at DIR")
    args = ap.parse_args()
    sessions = 1_000 if args.quick else args.sessions
    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-reward-cycle-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        world, system, cycle, reg, clock, start = _world(home, sessions, None if args.reward_model == "none" else args.reward_model)
        assert cycle.run_once()["outcome"] == "bootstrapped"
        tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, flush_interval_ms=1)
        rt = Runtime(system, reg.load_bundle(reg.state(system.name).production, system), telemetry=tel)
        t0 = time.perf_counter()
        for d in range(args.days):
            if args.warm and d == args.days - 1:
                tel.flush()
                print(f"warm-up: the dataset at the end of day {d} built in {_warm(home, system, cycle, start + d * DAY):.2f} s")
            tel.clock = ManualClock(start + (d + 1) * DAY).now_ns
            run_feed_day(world, rt, tel, d, seed=100 + d)
        tel.close()
        logged = time.perf_counter() - t0
        print(f"feed world: {args.days} days × {sessions} sessions logged in {logged:.1f} s")
        clock.set_ns(start + args.days * DAY)
        steps: dict[str, float] = {}
        began: dict[str, float] = {}

        def on_event(name: str, phase: str) -> None:
            if phase == "start":
                began[name] = time.perf_counter()
            else:
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - began[name]

        cycle.on_event = on_event
        t0 = time.perf_counter()
        rec = cycle.run_once()
        total = time.perf_counter() - t0
        ds = (rec["steps"].get("dataset") or {}).get("result") or {}
        gate = ((rec["steps"].get("evaluate") or {}).get("result") or {}).get("gate") or {}
        for name, sec in steps.items():
            print(f"  {name:<12} {sec:7.2f} s")
        print(f"cycle: {total:.2f} s, outcome {rec['outcome']}; gate {gate.get('estimator')} {gate.get('difference')} {gate.get('ci')}")
        reg.close()
        print(json.dumps({"sessions_per_day": sessions, "days": args.days, "reward_model": args.reward_model, "warm": args.warm,
                          "cycle_s": round(total, 3),
                          "steps_s": {k: round(v, 3) for k, v in steps.items()}, "outcome": rec["outcome"],
                          "dataset_rows": (ds.get("counts") or {}).get("slots", {}).get("rows") if isinstance(ds, dict) else None,
                          "gate": {k: gate.get(k) for k in ("estimator", "difference", "ci")}}))
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

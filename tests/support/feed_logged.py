"""A small feed world logged for a few days under its heuristic and the reward dataset of those
days — what tests that train a feed learner on real logged rankings start from."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def logged_feed_days(tmp: Path, *, size: dict[str, Any], days: int, seed: int = 4) -> tuple[Any, Any, Path]:
    """``days`` days of ``FeedWorld(seed)`` (config ``size``) under the heuristic exploring with
    SquareCB(50), logged to ``tmp/telemetry``, and their reward dataset: (world, system, dataset path)."""
    from closedloop import ManualClock, Runtime
    from closedloop.datasets import build_reward_dataset
    from closedloop.experience.exploration import SquareCB
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
    from closedloop.world.feed import FeedWorld
    from closedloop.world.feed_config import FeedConfig
    from closedloop.world.feed_driver import run_feed_day

    w = FeedWorld(FeedConfig.load(overrides=size), seed=seed)
    system = w.system(k=5, explore=SquareCB(50.0))
    clock = ManualClock(w.day_start_ns(0))
    tel = Telemetry(SegmentLog(tmp / "telemetry"), system=system, clock=clock.now_ns)
    rt = Runtime(system, w.heuristic_bundle(system), telemetry=tel, clock=clock)
    try:
        for d in range(days):
            clock.set_ns(w.day_start_ns(d + 1))
            run_feed_day(w, rt, tel, d, seed=30 + d)
    finally:
        tel.close()
    store = TelemetryStore(tmp / "telemetry")
    store.compact()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=w.day_start_ns(0), until_ns=w.day_start_ns(days), cutoff_ns=w.day_start_ns(days + 1),
                             out=tmp / "dataset")
    return w, system, m.path

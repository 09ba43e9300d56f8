"""Benchmark: the click-farm check's cost in the monitor step, against the reward dataset build the
same cycle runs over the same window, measured in the same run — on two lakes.

Run it as ``.venv/bin/python bench/click_farm.py`` (``--quick`` for small lakes; ``--decisions N``
for the bandit lake, ``--sessions N`` a day for the feed lake, ``--only bandit|feed``).

* **bandit** — a ``BanditWorld`` (8 candidates per request, 2 slots) whose quality heuristic,
  exploring with ``Softmax(0.1)``, decides ``N`` requests of its 500 users over seven simulated
  days, with the world's clicks: an honest world (no unit may be quarantined).
* **feed** — the ``FeedWorld`` (seed 1, users = half the sessions a day, as the feed demo), its
  heuristic exploring with ``SquareCB(50)``, seven days of ``--sessions`` sessions (the demo's
  10,000 by default) with its click farm: five units clicking only the farm's items (the check
  must quarantine exactly ``world.farm_units``, the world's truth, read for this assertion only).
  Its items are shared by many users, so the ring's tables (ring items, top clickers, partners)
  carry real work here, unlike the bandit world's one-off items.

Each lake is written through a Runtime with Telemetry and compacted. Then, best of ``--repeat``:
``ClickFarmPolicy().check`` over the seven days against ``build_reward_dataset`` of the same seven
days — the ratio is what turning the check on adds to a reward cycle's heaviest read. The check
must also count every decision's shown slots. The last line printed is one JSON object with every
figure (``ratio``: the larger of the lakes').
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop import Bundle, ManualClock, Runtime
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.exploration import Softmax, SquareCB
from closedloop.orchestration import ClickFarmPolicy
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.bandit import BanditWorld
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_driver import run_feed_day

DAY = 86_400 * 10**9
START = 1_767_571_200 * 10**9


def _bandit(home: Path, n: int) -> tuple[Any, int, list[str], int]:
    """The bandit lake: (system, now, the units to quarantine, shown slots)."""
    world = BanditWorld(seed=3, n_candidates=8)
    system = world.system(k=2, explore=Softmax(0.1))
    clock = ManualClock(START)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, world.heuristic(), version="h"), telemetry=tel, clock=clock)
    per_day = n // 7
    for day in range(7):
        world.log(rt, world.contexts(per_day, seed=day), tel, t0_ns=START + day * DAY, seed=day, spacing_ns=DAY // (2 * per_day))
    tel.close()
    return system, START + 7 * DAY, [], 2 * 7 * per_day


def _feed(home: Path, sessions: int) -> tuple[Any, int, list[str], int]:
    """The feed lake: (system, now, the farm's units, shown slots)."""
    cfg = FeedConfig.load(overrides={"world": {"sessions_per_day": sessions}, "users": {"count": max(500, sessions // 2)}})
    world = FeedWorld(cfg, seed=1)
    system = world.system(k=5, explore=SquareCB(50.0))
    start = world.day_start_ns(0)
    clock = ManualClock(start)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, world.heuristic_bundle(system), telemetry=tel)
    shown = 0
    for d in range(7):
        clock.set_ns(start + (d + 1) * DAY)  # the day's records are ingested at its end
        shown += run_feed_day(world, rt, tel, d, seed=100 + d).shown
    tel.close()
    return system, start + 7 * DAY, sorted(world.farm_units), shown


def _measure(name: str, lake: Any, size: int, repeat: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"bench-farm-{name}-"))
    try:
        t0 = time.perf_counter()
        system, now, farm, shown = lake(home, size)
        store = TelemetryStore(home)
        store.compact()
        dec, out = store.decision_files(), store.outcome_files()
        print(f"{name} lake: {size:,} {'decisions' if name == 'bandit' else 'sessions a day'} over 7 days, "
              f"written in {time.perf_counter() - t0:.1f} s")
        check_s, build_s = [], []
        report = None
        for i in range(repeat):
            t = time.perf_counter()
            report = ClickFarmPolicy().check(system, dec, out, now)
            check_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            built = build_reward_dataset(system, decision_files=dec, outcome_files=out, since_ns=now - 7 * DAY, until_ns=now,
                                         cutoff_ns=now, out=home / f"ds{i}")
            build_s.append(time.perf_counter() - t)
        assert report is not None and report.quarantined == farm, (report.quarantined if report else None, farm)
        assert report.population["shown"] == shown, report.population
        figures = {"size": size, "decisions": built.counts["decisions"], "units": report.population["units"],
                   "check_s": min(check_s), "build_reward_dataset_s": min(build_s), "ratio": min(check_s) / min(build_s),
                   "quarantined": len(report.quarantined), "ring_members": report.population["ring_members"],
                   "listed": len(report.units)}
        print(f"  ClickFarmPolicy.check: {figures['check_s'] * 1000:.0f} ms; build_reward_dataset of the same window: "
              f"{figures['build_reward_dataset_s'] * 1000:.0f} ms; ratio {figures['ratio']:.3f}; "
              f"quarantined {figures['quarantined']} (ring members {figures['ring_members']}), listed {figures['listed']}")
        return figures
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=35_000, help="the bandit lake's decisions")
    ap.add_argument("--sessions", type=int, default=10_000, help="the feed lake's sessions a day")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["bandit", "feed"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    figures: dict[str, Any] = {}
    if args.only in (None, "bandit"):
        figures["bandit"] = _measure("bandit", _bandit, 3500 if args.quick else args.decisions, args.repeat)
    if args.only in (None, "feed"):
        figures["feed"] = _measure("feed", _feed, 2000 if args.quick else args.sessions, args.repeat)
    figures["ratio"] = max(f["ratio"] for f in figures.values())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

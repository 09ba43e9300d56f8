"""Benchmark: the click-farm check's cost in the monitor step, against the reward dataset build the
same cycle runs over the same window, measured in the same run.

Run it as ``.venv/bin/python bench/click_farm.py`` (``--quick`` for a small run, ``--decisions N``).

A ``BanditWorld`` (8 candidates per request, 2 slots) whose quality heuristic, exploring with
``Softmax(0.1)``, decides ``N`` requests of its 500 users over seven simulated days through a
Runtime with Telemetry, with the world's clicks; the lake is compacted. Then, best of
``--repeat``: ``ClickFarmPolicy().check`` over the seven days against ``build_reward_dataset`` of the
same seven days — the ratio is what turning the check on adds to a reward cycle's heaviest read.
Correctness: no unit of the honest world is quarantined, and the check counts every decision's
shown slots. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop import Bundle, ManualClock, Runtime
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.exploration import Softmax
from closedloop.orchestration import ClickFarmPolicy
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.bandit import BanditWorld

DAY = 86_400 * 10**9
START = 1_767_571_200 * 10**9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=35_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 3500 if args.quick else args.decisions
    world = BanditWorld(seed=3, n_candidates=8)
    system = world.system(k=2, explore=Softmax(0.1))
    home = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    try:
        clock = ManualClock(START)
        tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
        rt = Runtime(system, Bundle.build(system, world.heuristic(), version="h"), telemetry=tel, clock=clock)
        per_day = n // 7
        t0 = time.perf_counter()
        for day in range(7):
            world.log(rt, world.contexts(per_day, seed=day), tel, t0_ns=START + day * DAY, seed=day,
                      spacing_ns=DAY // (2 * per_day))
        tel.close()
        store = TelemetryStore(home)
        store.compact()
        print(f"lake: {7 * per_day} decisions over 7 days, written in {time.perf_counter() - t0:.1f} s")
        now = START + 7 * DAY
        dec, out = store.decision_files(), store.outcome_files()
        check_s, build_s = [], []
        report = None
        for i in range(args.repeat):
            t = time.perf_counter()
            report = ClickFarmPolicy().check(system, dec, out, now)
            check_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            build_reward_dataset(system, decision_files=dec, outcome_files=out, since_ns=now - 7 * DAY, until_ns=now,
                                 cutoff_ns=now, out=home / f"ds{i}")
            build_s.append(time.perf_counter() - t)
        assert report is not None and report.quarantined == [], report.quarantined
        assert report.population["shown"] == 2 * 7 * per_day, report.population
        figures = {"decisions": 7 * per_day, "units": report.population["units"], "check_s": min(check_s),
                   "build_reward_dataset_s": min(build_s), "ratio": min(check_s) / min(build_s),
                   "quarantined": len(report.quarantined), "listed": len(report.units)}
        print(f"ClickFarmPolicy.check: {figures['check_s'] * 1000:.0f} ms; build_reward_dataset of the same window: "
              f"{figures['build_reward_dataset_s'] * 1000:.0f} ms; ratio {figures['ratio']:.3f}")
        print(json.dumps(figures))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

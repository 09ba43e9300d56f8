"""Benchmark: what the affinity model's table costs a ranking decision.

Run it as ``.venv/bin/python bench/affinity.py`` (``--quick`` for a small run).

The feed world's ranking system (``FeedWorld(seed=1).system(k=5)``, ≤ 20 candidates a session)
decides the same sessions with two bundles of the same weights: the logistic model (the
baseline) and an :class:`~closedloop.intelligence.AffinityModel` with a table of ``--pairs``
(user, category) offsets (default 240,000: 30,000 users × 8 categories — a week of a 20,000-session
day's users). One ``Runtime.decide`` per session (interleaved rounds, the median of each) and one
``decide_batch`` of all sessions. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop import Bundle, Runtime
from closedloop.intelligence import AffinityModel
from closedloop.runtime.ids import DecisionIds
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig


def _contexts(world: FeedWorld, n: int) -> tuple[list[dict[str, Any]], Any]:
    s = world.day(0)
    reqs, cands = s.requests().to_pylist(), s.candidates().to_pylist()
    by: dict[int, list[dict[str, Any]]] = {}
    for c in cands:
        by.setdefault(c.pop("request"), []).append(c)
    return [dict(r, candidates=by.get(i, [])) for i, r in enumerate(reqs)][:n], s


def _load_seconds(system: Any, rts: dict[str, Runtime], rounds: int) -> dict[str, float]:
    """The median time to load each bundle from disk and bind it (what every deployment and evaluation pays)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: rt.deployment.production.save(Path(tmp) / k) for k, rt in rts.items()}
        got: dict[str, list[float]] = {k: [] for k in rts}
        for _ in range(rounds):
            for k, p in paths.items():
                t0 = time.perf_counter()
                Bundle.load(p, system).intelligence.bind(system.features)
                got[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pairs", type=int, default=240_000)
    args = ap.parse_args()
    n, rounds = (300, 3) if args.quick else (2000, 7)
    world = FeedWorld(FeedConfig.load(overrides={"world": {"sessions_per_day": 4 * n}, "users": {"count": 30_000}}), seed=1)
    system = world.system(k=5)
    base = world.heuristic_bundle(system).intelligence
    rng = np.random.default_rng(0)
    cats = world.config.categories
    table = {(f"u{i // len(cats)}", cats[i % len(cats)]): float(v) for i, v in enumerate(rng.normal(0, 0.5, args.pairs))}
    aff = AffinityModel(base.weights, base.intercept, keys=("user_id", "category"), table=table, output=base.output)
    ctxs, sessions = _contexts(world, n)
    ids = DecisionIds(1).next_ids(len(ctxs), 0).to_pylist()
    rts = {"logistic": Runtime(system, Bundle.build(system, base)), "affinity": Runtime(system, Bundle.build(system, aff))}
    per: dict[str, list[float]] = {k: [] for k in rts}
    for _ in range(rounds):
        for name, rt in rts.items():
            t0 = time.perf_counter()
            for c, i in zip(ctxs, ids, strict=True):
                rt.decide(c, decision_id=i)
            per[name].append((time.perf_counter() - t0) / len(ctxs))
    one = {k: statistics.median(v) for k, v in per.items()}
    batch: dict[str, float] = {}
    bids = DecisionIds(2).next_ids(sessions.n, 0).to_pylist()
    for name, rt in rts.items():
        t0 = time.perf_counter()
        rt.decide_batch(sessions.requests(), candidates=sessions.candidates(), decision_ids=bids, timestamps_ns=sessions.timestamps_ns)
        batch[name] = (time.perf_counter() - t0) / sessions.n
    load = _load_seconds(system, rts, rounds)
    out = {"sessions": len(ctxs), "pairs": len(table), "decide_us": {k: v * 1e6 for k, v in one.items()},
           "decide_ratio": one["affinity"] / one["logistic"], "batch_us_per_session": {k: v * 1e6 for k, v in batch.items()},
           "batch_ratio": batch["affinity"] / batch["logistic"], "load_ms": {k: v * 1e3 for k, v in load.items()},
           "load_ratio": load["affinity"] / load["logistic"]}
    print(f"decide: logistic {out['decide_us']['logistic']:.0f} µs, affinity {out['decide_us']['affinity']:.0f} µs "
          f"({out['decide_ratio']:.2f}×); decide_batch per session: {out['batch_us_per_session']['logistic']:.1f} / "
          f"{out['batch_us_per_session']['affinity']:.1f} µs ({out['batch_ratio']:.2f}×); table {len(table):,} pairs")
    print(f"Bundle.load + bind: logistic {out['load_ms']['logistic']:.1f} ms, affinity {out['load_ms']['affinity']:.1f} ms "
          f"({out['load_ratio']:.1f}×)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Benchmark: Vowpal Wabbit's contextual bandit (examples/feed/vw.py) per session, at 20 and 80 candidates,
against the closed loop deciding the same sessions, measured in the same run.

Run it as ``.venv/bin/python bench/vw.py`` (``--quick`` for a small run, ``--sessions N``).

For each candidate count a ``BanditWorld`` (seed 3, full features: 32 per candidate) draws the
sessions; a ``VWPolicy`` (``--cb_explore_adf --cb_type dr -q ui``) first learns online from 500 of
them, then, best of ``--repeat`` rounds over ``N`` sessions (VW keeps learning):

* ``vw_ms``: VW's predict + learn per session (``decide`` then ``learn``: parse the ADF lines,
  predict the pmf and scores, draw slot 1, learn its click) — the lines prebuilt;
* ``lines_ms``: featurizing a session with the System's features and writing its VW lines,
  one session at a time (``sessions([context])``) and in one batch (``lines_batch_ms``);
* ``closedloop_ms``: ``Runtime.decide`` of the same session with the quality heuristic (the
  baseline: validation, the System's features, scores, the ranking) — ``vw_vs_closedloop`` is the ratio.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.feed.vw import VWPolicy, run_online

from closedloop import Bundle, Runtime
from closedloop.world.bandit import BanditWorld


def _best(fn: Callable[[], Any], repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def _one_count(n_candidates: int, sessions: int, repeat: int) -> dict[str, float]:
    world = BanditWorld(seed=3, n_candidates=n_candidates)
    system = world.system(k=1)
    warm, ctxs = world.contexts(500, seed=1), world.contexts(sessions, seed=2)
    policy = VWPolicy(system, seed=1)
    run_online(policy, warm, world.click_probability, seed=1)
    prebuilt = policy.sessions(ctxs)
    p = [world.click_probability(c) for c in ctxs]
    rng = np.random.default_rng(0)

    def vw() -> None:
        for s, pc in zip(prebuilt, p, strict=True):
            d = policy.decide(s)
            policy.learn(d, float(rng.random() < pc[d.chosen]))

    rt = Runtime(system, Bundle.build(system, world.heuristic()))
    ids = [f"{i:032x}" for i in range(sessions)]

    def closedloop() -> None:
        for i, c in enumerate(ctxs):
            rt.decide(c, decision_id=ids[i], timestamp_ns=1)

    def lines() -> None:
        for c in ctxs:
            policy.sessions([c])

    out = {}
    for name, fn in (("vw_ms", vw), ("closedloop_ms", closedloop), ("lines_ms", lines),
                     ("lines_batch_ms", lambda: policy.sessions(ctxs))):
        out[name] = _best(fn, repeat) / sessions * 1e3
    out["vw_vs_closedloop"] = out["vw_ms"] / out["closedloop_ms"]
    out["vw_with_lines_ms"] = out["vw_ms"] + out["lines_ms"]
    policy.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    sessions = 200 if a.quick else a.sessions
    out: dict[str, Any] = {"sessions": sessions}
    for n in (20, 80):
        for k, v in _one_count(n, sessions, a.repeat).items():
            out[f"{k.removesuffix('_ms')}_{n}{'_ms' if k.endswith('_ms') else ''}"] = v
    out["vw_arguments"] = VWPolicy(BanditWorld(seed=3).system(k=1), seed=1).arguments
    for k, v in out.items():
        print(f"{k:32s} {v:.4g}" if isinstance(v, float) else f"{k:32s} {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: doubly robust against direct-method policy learning in the bandit world, by the TRUE
value of each learned policy (expected clicks per decision, exact: ``BanditWorld.true_value``).

Run it as ``nice .venv/bin/python bench/policy_dr.py`` (``--seeds 0 1 2``, ``--decisions N``,
``--temperatures 0.05 0.1``, ``--clip C``, ``--features misspecified|full``, ``--model logistic|lightgbm``). Per
world seed and logging temperature: ``BanditWorld(seed).system(k=1, features=…,
explore=Softmax(T))`` logs N decisions of its popularity heuristic through a real Runtime and
Telemetry (seeded decision ids), ``build_reward_dataset`` makes the per-slot dataset, and
``train_policy`` learns DM and DR policies on its train side. Each is valued greedily on 2,000
fresh requests, beside the baselines measured in the same run: the logger (the heuristic with its
exploration), the heuristic greedy, DR with the heuristic's score as a (badly miscalibrated) given
reward model, the oracle (each request's best candidate by the world's truth) and the **ceiling of the
feature set**: the logistic-score policy that maximizes the TRUE value of its softmax over the logged
candidate sets (fitted to the world's click probabilities, L-BFGS from the log-loss fit, L2 1e-3 on
standardized features) — about the best any learner can rank with these features. The last line is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from closedloop import Bundle, Runtime
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.ids import DecisionIds
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.training.policy import DEFAULT_CLIP, train_policy
from closedloop.world.bandit import BanditWorld

T0 = 1_700_000_000 * 10**9
S = 10**9


def logged_dataset(home: Path, world: BanditWorld, system: Any, n: int, seed: int) -> Any:
    """``n`` decisions of the heuristic through Runtime + Telemetry → the built reward dataset's manifest."""
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home / "tel"), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, world.heuristic()), telemetry=tel, clock=clock, ids=DecisionIds(seed=seed))
    world.log(rt, world.contexts(n, seed=seed), tel, t0_ns=T0, seed=seed)
    tel.close()
    store = TelemetryStore(home / "tel")
    store.compact()
    return build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                since_ns=T0, until_ns=T0 + (n + 10) * S, cutoff_ns=T0 + (n + 10**4) * S, out=home / "ds")


def _softmax_value_fit(X: np.ndarray, offsets: np.ndarray, target: np.ndarray, lam: float = 1e-3) -> np.ndarray:
    """Weights (raw features) maximizing mean over decisions of Σ softmax(X·w)·target − lam/2·‖w‖²
    (standardized), started from the log-loss fit to ``target``."""
    from scipy.optimize import minimize

    from closedloop.training.pseudo_rewards import _logistic_on_targets

    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = (X - mu) / sd
    starts = offsets[:-1]
    of = np.repeat(np.arange(starts.size), np.diff(offsets))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        f = Z @ w
        e = np.exp(f - np.maximum.reduceat(f, starts)[of])
        pi = e / np.add.reduceat(e, starts)[of]
        v = np.add.reduceat(pi * target, starts)
        return float(-v.mean() + 0.5 * lam * w @ w), Z.T @ (-(pi * (target - v[of])) / starts.size) + lam * w

    w0, _ = _logistic_on_targets(X, target, C=1.0)
    return minimize(loss, w0 * sd, jac=True, method="L-BFGS-B").x / sd


def ceiling(world: BanditWorld, system: Any, dataset: Path, contexts: list[dict[str, Any]]) -> Any:
    """The ceiling policy (module doc) fitted on the logged decisions' candidate sets."""
    from closedloop import LogisticModel
    from closedloop.datasets.candidate_sets import read_candidate_sets

    sets = read_candidate_sets(system, dataset)
    p = {x["item_id"]: q for c in contexts for x, q in zip(c["candidates"], world.click_probability(c), strict=True)}
    truth = np.array([p[i] for i in sets.candidate_ids])
    w = _softmax_value_fit(system.features.batch(sets.flat(system)), sets.offsets, truth)
    return LogisticModel(dict(zip(system.features.names, w.tolist(), strict=True)), 0.0, output="score")


def one(seed: int, temperature: float, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    world = BanditWorld(seed=seed)
    system = world.system(k=1, features=args.features, explore=Softmax(temperature))
    greedy = world.system(k=1, features=args.features)
    m = logged_dataset(home, world, system, args.decisions, seed=1)
    ctxs = world.contexts(2000, seed=99)
    logged_contexts = world.contexts(args.decisions, seed=1)

    def value(sys_: Any, intelligence: Any) -> float:
        return world.true_value(sys_, Bundle.build(sys_, intelligence), ctxs)

    out: dict[str, Any] = {"seed": seed, "temperature": temperature}
    out["oracle"] = float(np.mean([world.click_probability(c).max() for c in ctxs]))
    out["logger"] = value(system, world.heuristic())
    out["heuristic_greedy"] = value(greedy, world.heuristic())
    for objective in ("dm", "dr"):
        t = time.perf_counter()
        run = train_policy(system, m.path, objective=objective, model=args.model, clip=args.clip)
        out[f"{objective}_seconds"] = round(time.perf_counter() - t, 2)
        out[objective] = value(greedy, run.model)
    run = train_policy(system, m.path, objective="dr", model=args.model, reward_model=Bundle.build(system, world.heuristic()))
    out["dr_heuristic_reward_model"] = value(greedy, run.model)
    out["ceiling"] = value(greedy, ceiling(world, system, m.path, logged_contexts))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.05, 0.1])
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--features", default="misspecified")
    ap.add_argument("--model", default="logistic")
    ap.add_argument("--clip", type=float, default=DEFAULT_CLIP)
    args = ap.parse_args()
    rows = []
    for temperature in args.temperatures:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                r = one(seed, temperature, args, Path(tmp))
            rows.append(r)
            print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    gaps = np.array([r["dr"] - r["dm"] for r in rows])
    summary = {"features": args.features, "model": args.model, "clip": args.clip, "decisions": args.decisions, "runs": rows,
               "dr_minus_dm": {"mean": round(float(gaps.mean()), 4), "min": round(float(gaps.min()), 4),
                               "max": round(float(gaps.max()), 4)},
               "dr_over_logger_min": round(min(r["dr"] - r["logger"] for r in rows), 4),
               "ceiling_minus_dm_max": round(max(r["ceiling"] - r["dm"] for r in rows), 4)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

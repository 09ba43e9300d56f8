"""Benchmark: what sampling the slot marginals does to a ranking report's policy value, against the
exact marginals of the same report, and what it costs.

Run it as ``.venv/bin/python bench/ranking_marginals.py`` (``--quick`` for a small run).

The feed example's system (``Ranking(k=5, explore=Softmax(0.5))``) and two bundles (the example's
model and a noise model) on a log where each decision shows 5 of 10 items of a small catalogue in a
uniformly random order (propensity 1/5 per slot), a click's probability the item's ctr times the
slot's examination. With 10 candidates and k = 5 the exact marginals enumerate 10 × C(10, 4) = 2,100
prefixes per decision — affordable — so the report is made once exact, then with the marginals
forced to be sampled (``EXACT_WORK = 0``) at several draws and seeds: each estimate's distance to
the exact one, as a share of the exact estimate's 95% half-interval (bootstrap by unit), and the
time of the marginals. The last line printed is one JSON object with every figure.
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop import Bundle, LogisticModel
from closedloop.datasets.importer import import_dataset
from closedloop.evaluation import ranking_marginals
from closedloop.evaluation.report import evaluate

EXAMINATION = np.array([1.0, 0.6, 0.4, 0.25, 0.15])


def _log(n_dec: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ctr = np.linspace(0.05, 0.8, 10)
    age = rng.exponential(20.0, 10)
    shown = np.argsort(rng.random((n_dec, 10)), axis=1)[:, :5].ravel()
    dec, slot = np.repeat(np.arange(n_dec), 5), np.tile(np.arange(5), n_dec)
    click = (rng.random(dec.size) < ctr[shown] * EXAMINATION[slot]).astype(np.float64)
    return pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 2}" for d in dec], "hour": rng.integers(0, 24, n_dec)[dec],
        "country": ["fr"] * dec.size, "item": [f"it{i}" for i in shown], "slot": slot + 1, "click": click,
        "p": np.full(dec.size, 0.2), "ts": 10**18 + dec * 10**9, "category": ["news"] * dec.size, "item_ctr": ctr[shown],
        "age_hours": age[shown], "is_new": [False] * dec.size,
    })


def _estimates(rep: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each (bundle or difference, estimator) → (value, half-interval)."""
    pv = rep["policy_value"]
    out = {}
    for b in pv["bundles"]:
        for name, e in b["estimates"].items():
            out[f"{b['version']}.{name}"] = (e["value"], (e["high"] - e["low"]) / 2)
    for name, e in pv["comparison"][0]["differences"].items():
        out[f"difference.{name}"] = (e["value"], (e["high"] - e["low"]) / 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=4000)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_dec, seeds = (800, 2) if args.quick else (args.decisions, args.seeds)
    from examples.feed.system import feed, model

    good = Bundle.build(feed, model, version="informative")
    noise = Bundle.build(feed, LogisticModel({"age_log": 1.0}, intercept=-3.0, output="score"), version="noise")
    home = Path(tempfile.mkdtemp(prefix="bench-marginals-"))
    try:
        pq.write_table(_log(n_dec, seed=3), home / "log.parquet")
        m = import_dataset(home / "log.parquet", feed, action="item", position="slot", reward="click", propensity="p",
                           decision="impression", unit="user_id", time="ts", out=home / "ds")
        t0 = time.perf_counter()
        exact = evaluate(feed, [noise, good], m.path, split="all", bootstrap=100, seed=1)
        t_exact = time.perf_counter() - t0
        assert exact["policy_value"]["marginals"]["method"] == "exact"
        want = _estimates(exact)
        print(f"{n_dec} decisions × 5 slots; exact report {t_exact:.2f} s")
        figures: dict[str, Any] = {"decisions": n_dec, "exact_report_s": round(t_exact, 3), "sampled": {}}
        saved = ranking_marginals.EXACT_WORK, ranking_marginals.DRAWS
        ranking_marginals.EXACT_WORK = 0
        try:
            for draws in (32, 128, 256, 512):
                ranking_marginals.DRAWS = draws
                shares: dict[str, list[float]] = {"estimate": [], "difference": []}
                took = []
                for seed in range(seeds):
                    t0 = time.perf_counter()
                    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=100, seed=1 + 10 * seed)
                    took.append(time.perf_counter() - t0)
                    assert rep["policy_value"]["marginals"] == {"method": "sampled", "draws": draws}
                    got = _estimates(rep)
                    for key, (v, h) in want.items():
                        shares["difference" if key.startswith("difference.") else "estimate"].append(abs(got[key][0] - v) / h)
                mid = float(np.median(took))
                row = {f"{g}_{stat}": round(float(f(np.asarray(x))), 4) for g, x in shares.items()
                       for stat, f in (("rms", lambda a: np.sqrt((a**2).mean())), ("worst", np.max))}
                print(f"  {draws:>4} draws: |sampled − exact| / exact half-interval — estimates rms {row['estimate_rms']:.3f} "
                      f"worst {row['estimate_worst']:.3f}; differences rms {row['difference_rms']:.3f} worst "
                      f"{row['difference_worst']:.3f}; report {mid:.2f} s")
                figures["sampled"][str(draws)] = {**row, "report_s": round(mid, 3)}
        finally:
            ranking_marginals.EXACT_WORK, ranking_marginals.DRAWS = saved
        print(json.dumps(figures))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

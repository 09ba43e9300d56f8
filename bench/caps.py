"""Benchmark: frequency caps in the batch path — ``GuardLayer.batch`` with the vectorized
``InMemoryCapStore.admit_batch`` against two baselines measured in the same run on the same
batches: ``legacy``, the per-row loop the batch path ran before (a dict of caps and a list of
targets per row, ``units.to_pylist()`` first), and ``per_row``, a store with only
``count``/``add`` (``CapStore.admit_batch``'s row-by-row default).

Run it as ``nice .venv/bin/python bench/caps.py`` (``--rows N`` per batch, ``--batches B``).
Each batch is N decisions of 20,000 users (Zipf-like: some users decide often), a warn cap of 5
a day falling back to allow, an hour of decisions per batch (as the demo decides a day in 24
batches), with exploration (propensities through the cap). Both paths must give the same
actions, rules and propensities (checked); the figure is the time ratio vectorized / legacy
(target ≤ 0.25). The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta

import numpy as np
import pyarrow as pa

from closedloop import FrequencyCap
from closedloop.experience.guardrails import CapStore, GuardLayer, InMemoryCapStore


class _RowByRow(CapStore):
    def __init__(self) -> None:
        self.inner = InMemoryCapStore()

    def count(self, cap: int, bucket: int, unit: str) -> int:
        return self.inner.count(cap, bucket, unit)

    def add(self, cap: int, bucket: int, unit: str, n: int = 1) -> None:
        self.inner.add(cap, bucket, unit, n)


def _legacy_batch(layer: GuardLayer, chosen: np.ndarray, P: np.ndarray, units: pa.Array, ts: np.ndarray) -> tuple:
    """The batch path's cap loop before vectorization (no plain rules here), row by row."""
    n, k = chosen.shape[0], len(layer.actions)
    b = chosen.astype(np.int64, copy=True)
    fired = np.full(n, -1, dtype=np.int64)
    T = np.tile(np.arange(k, dtype=np.int64), (n, 1))
    us, tsl, bl, fl, Tl = units.to_pylist(), ts.tolist(), b.tolist(), fired.tolist(), T.tolist()
    caps, cap_of, store = layer._caps, layer._cap_of, layer.store
    for i in range(n):
        full = {}
        for j, (act, fb, limit, per_ns) in enumerate(caps):
            full[act] = store.count(j, tsl[i] // per_ns, us[i]) >= limit
            if full[act] and bl[i] == act:
                fl[i] = layer._n_plain + j
                bl[i] = fb
        Tl[i] = [caps[cap_of[t]][1] if full.get(t) else t for t in Tl[i]]
        j = cap_of.get(bl[i])
        if j is not None:
            store.add(j, tsl[i] // caps[j][3], us[i])
    b, fired, T = np.asarray(bl, dtype=np.int64), np.asarray(fl, dtype=np.int64), np.asarray(Tl, dtype=np.int64)
    prop = np.zeros(n, dtype=np.float64)
    for j in range(k):
        prop = prop + np.where(T[:, j] == b, P[:, j], 0.0)
    return b, fired, prop


class _System:
    actions = ("block", "warn", "allow")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_100, help="decisions per batch (default 2,100: 50,000 a day / 24)")
    ap.add_argument("--batches", type=int, default=240, help="batches (default 240: ten simulated days)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cap = FrequencyCap("warn", 5, timedelta(days=1), fallback="allow")
    hour = 3_600 * 10**9
    batches = []
    for b in range(args.batches):
        users = (rng.zipf(1.3, args.rows) % 20_000).astype(np.int64)
        units = pa.array([f"u{u:05d}" for u in users.tolist()], pa.string())
        chosen = rng.choice(3, size=args.rows, p=[0.02, 0.18, 0.8]).astype(np.int64)
        P = np.full((args.rows, 3), 0.0)
        P[np.arange(args.rows), chosen] = 0.95
        P += 0.05 / 3
        ts = b * hour + np.sort(rng.integers(0, hour, args.rows)).astype(np.int64)
        batches.append((chosen, P, units, ts))
    out = {}
    results = {}
    for name, store in (("legacy", InMemoryCapStore()), ("per_row", _RowByRow()), ("vectorized", InMemoryCapStore())):
        layer = GuardLayer(_System(), [cap], store)
        run = _legacy_batch if name == "legacy" else (lambda ly, c, P, u, ts: ly.batch(None, c, P, u, ts))
        t0 = time.perf_counter()
        res = [run(layer, c, P, u, ts) for c, P, u, ts in batches]
        out[name] = time.perf_counter() - t0
        results[name] = res
    for other in ("per_row", "vectorized"):
        for a, b in zip(results["legacy"], results[other], strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), f"{other} disagrees with legacy"
    n = args.rows * args.batches
    fig = {"rows": n, "legacy_s": round(out["legacy"], 3), "per_row_s": round(out["per_row"], 3),
           "vectorized_s": round(out["vectorized"], 3), "vectorized_rows_per_s": round(n / out["vectorized"]),
           "ratio": round(out["vectorized"] / out["legacy"], 3), "ratio_per_row": round(out["vectorized"] / out["per_row"], 3),
           "target_ratio": 0.25, "same_results": True}
    print(f"{n:,} capped decisions: legacy loop {out['legacy']:.2f} s, row-by-row store {out['per_row']:.2f} s, "
          f"vectorized {out['vectorized']:.2f} s (ratio to legacy {fig['ratio']})")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()

"""Benchmark: the registry on SQLite, as ratios against baselines measured in the same run.

Run it as ``.venv/bin/python bench/registry.py`` (``--quick`` for fewer repetitions).

* ``poll`` — ``Registry.revision(system)`` (what a serving process polls every second) vs the same
  ``SELECT revision FROM deployments WHERE system = ?`` through the raw ``sqlite3`` module on an
  open connection. Target: well under a millisecond, so polling costs nothing.
* ``change`` — one lifecycle change, ``Registry.killswitch`` on/off (read the state, optimistic
  ``UPDATE … WHERE revision``, insert the event, commit) and ``Registry.rollback`` vs a raw
  ``sqlite3`` transaction doing one UPDATE and one INSERT with the same pragmas (WAL). Rollback is
  "instant" when it costs about one small transaction.
* ``deployment`` — ``Registry.deployment(system)`` (bundles loaded from the store, every file
  hashed and checked, registered digests compared) vs ``Bundle.load`` of the same bundles.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.phishing.heuristic import heuristic_intelligence  # noqa: E402
from examples.phishing.system import phishing  # noqa: E402

from closedloop import Bundle  # noqa: E402
from closedloop.registry import Registry  # noqa: E402


def _best(fn: Callable[[], Any], n: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``n`` calls: seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 200 if args.quick else 2000
    tmp = Path(tempfile.mkdtemp(prefix="closedloop-bench-registry-"))
    try:
        db = tmp / "registry.sqlite"
        reg = Registry(f"sqlite:///{db}", tmp / "bundles").open()
        key = reg.signing_key(tmp)
        bundles = [Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9 - i / 100, "warn": 0.5})
                   .signed(key) for i in range(3)]
        v = [b.version for b in bundles]
        reg.deploy(phishing, bundles[0], actor="bench", reason="first", force="bench")
        reg.deploy(phishing, bundles[1], actor="bench", reason="shadow", shadow=True, force="bench")
        reg.deploy(phishing, bundles[2], actor="bench", reason="flight", flight="f", share=0.1, force="bench")

        raw = sqlite3.connect(db, isolation_level=None)
        raw.execute("PRAGMA journal_mode = WAL")
        poll = _best(lambda: reg.revision("phishing"), n)
        poll_raw = _best(lambda: raw.execute("SELECT revision FROM deployments WHERE system = ?",
                                             ("phishing",)).fetchone(), n)

        m = max(20, n // 20)
        state = {"on": False}

        def toggle() -> None:
            state["on"] = not state["on"]
            reg.killswitch("phishing", state["on"], actor="bench", reason="bench")

        change = _best(toggle, m, repeat=3)
        raw.execute("CREATE TABLE bench_t (k TEXT PRIMARY KEY, v INTEGER)")
        raw.execute("CREATE TABLE bench_e (id INTEGER PRIMARY KEY, body TEXT)")
        raw.execute("INSERT INTO bench_t VALUES ('x', 0)")
        body = "x" * 600

        def raw_tx() -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("UPDATE bench_t SET v = v + 1 WHERE k = 'x'")
            raw.execute("INSERT INTO bench_e (body) VALUES (?)", (body,))
            raw.execute("COMMIT")

        change_raw = _best(raw_tx, m, repeat=3)
        # rollbacks: each undoes one kill-switch toggle (the toggles above left plenty to undo)
        rollback = _best(lambda: reg.rollback("phishing", actor="bench", reason="bench"), min(m, 20), repeat=3)

        dep = _best(lambda: reg.deployment(phishing), max(10, n // 100), repeat=3)
        paths = [tmp / "bundles" / x for x in v]
        dep_raw = _best(lambda: [Bundle.load(p, phishing) for p in paths], max(10, n // 100), repeat=3)
        raw.close()
        reg.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {
        "poll_us": round(poll * 1e6, 1), "poll_raw_sqlite_us": round(poll_raw * 1e6, 1),
        "poll_ratio": round(poll / poll_raw, 2),
        "change_ms": round(change * 1e3, 3), "change_raw_tx_ms": round(change_raw * 1e3, 3),
        "change_ratio": round(change / change_raw, 2), "rollback_ms": round(rollback * 1e3, 3),
        "rollback_ratio": round(rollback / change_raw, 2),
        "deployment_ms": round(dep * 1e3, 3), "bundle_load_ms": round(dep_raw * 1e3, 3),
        "deployment_ratio": round(dep / dep_raw, 2),
    }
    print(f"poll        Registry.revision {out['poll_us']} µs   raw sqlite3 {out['poll_raw_sqlite_us']} µs   "
          f"ratio {out['poll_ratio']}×")
    print(f"change      kill switch {out['change_ms']} ms   rollback {out['rollback_ms']} ms   raw UPDATE+INSERT "
          f"tx {out['change_raw_tx_ms']} ms   ratios {out['change_ratio']}× / {out['rollback_ratio']}×")
    print(f"deployment  Registry.deployment {out['deployment_ms']} ms   Bundle.load ×3 {out['bundle_load_ms']} ms   "
          f"ratio {out['deployment_ratio']}×")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

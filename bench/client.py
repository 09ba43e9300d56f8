"""Benchmark: one phishing decision in the JavaScript client runtime (Node) against Python's
``Runtime.decide``, in the same run, and the size of the bundle exported for clients.

Run it as ``.venv/bin/python bench/client.py`` (``--quick`` for a small run).

* The phishing example's trained logistic bundle (and its heuristic), exported with
  :func:`closedloop.runtime.export_js.export_client_bundle` (signed);
* Python: ``Runtime.decide(context)`` on parsed-JSON dicts — validation, features, the model,
  the thresholds, the guardrails (the top-sites limit, the warning cap), a new decision id;
* Node: ``runtime.decide(context)`` on the same contexts (``clients/js/tools/bench.mjs``; the
  same steps, a new random decision id per call), after a warm-up;
* per-call µs: the median over repeats of N calls each; the ratio Node / Python (target ≤ 1);
* the exported file's size, raw and gzip-compressed (what a client downloads);
* one feed ranking decision (the feed example's logistic model, Softmax over slates of 5 from 10
  candidates): Python's ``Runtime.decide`` on a request with its candidates against Node's
  ``runtime.rank`` (validation of the request and candidates, 9 features per candidate, the
  model, the Plackett–Luce draw from the decision id, a new decision id), reported as ``feed_rank``.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.phishing.data import generate, records  # noqa: E402
from examples.phishing.heuristic import heuristic_intelligence  # noqa: E402
from examples.phishing.system import phishing  # noqa: E402

from closedloop import Bundle, Runtime  # noqa: E402
from closedloop.runtime.export_js import export_client_bundle  # noqa: E402
from closedloop.runtime.signing import SigningKey  # noqa: E402
from closedloop.training import train_logistic  # noqa: E402


def _python_us(bundle: Bundle, contexts: list[dict[str, Any]], calls: int, repeats: int, system: Any = phishing) -> list[float]:
    rt = Runtime(system, bundle)
    decide = rt.decide
    n = len(contexts)
    for i in range(calls):  # warm-up, as Node's
        decide(contexts[i % n])
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for i in range(calls):
            decide(contexts[i % n])
        out.append((time.perf_counter_ns() - t0) / 1000 / calls)
    return out


def _node_us(exported: Path, ctx_file: Path, calls: int, repeats: int) -> list[float]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed (bash scripts/ensure_system_deps.sh installs nodejs)")
    proc = subprocess.run([node, "tools/bench.mjs", str(exported), str(ctx_file), str(calls), str(repeats)],
                          cwd=ROOT / "clients" / "js", capture_output=True, text=True, check=True)
    return list(json.loads(proc.stdout)["per_call_us"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run (tests)")
    args = ap.parse_args()
    calls, repeats = (2_000, 3) if args.quick else (20_000, 7)
    cols, y = generate(5000, seed=1)
    bundles = {
        "model": Bundle.build(phishing, train_logistic(phishing, cols, y).model),
        "heuristic": Bundle.build(phishing, heuristic_intelligence()),
    }
    contexts = records(generate(1000, seed=2)[0])
    key = SigningKey.generate()
    result: dict[str, Any] = {"benchmark": "client", "calls": calls, "repeats": repeats,
                              "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        ctx_file = Path(tmp) / "contexts.json"
        ctx_file.write_text(json.dumps(contexts))
        print(f"{'bundle':<10} {'python µs':>10} {'node µs':>9} {'node/python':>12} {'bytes':>7} {'gzip':>6}")
        for name, bundle in bundles.items():
            data = export_client_bundle(phishing, bundle, key)
            exported = Path(tmp) / f"{name}.json"
            exported.write_bytes(data)
            py = statistics.median(_python_us(bundle, contexts, calls, repeats))
            js = statistics.median(_node_us(exported, ctx_file, calls, repeats))
            size, packed = len(data), len(gzip.compress(data, 9))
            print(f"{name:<10} {py:>10.2f} {js:>9.2f} {js / py:>12.3f} {size:>7} {packed:>6}")
            result[name] = {"python_us": round(py, 3), "node_us": round(js, 3), "node_over_python": round(js / py, 4),
                            "bundle_bytes": size, "bundle_gzip_bytes": packed}
        result["feed_rank"] = _feed(Path(tmp), key, calls, repeats)
    result["node_not_slower"] = all(result[n]["node_over_python"] <= 1.0 for n in bundles)
    print(json.dumps(result))


def _feed_requests(n: int) -> list[dict[str, Any]]:
    from examples.feed.system import CATEGORIES

    rng = random.Random(5)
    return [{"user_id": f"u{rng.randrange(1000)}", "country": rng.choice(["de", "fr", ""]), "hour": rng.randrange(24),
             "candidates": [{"item_id": f"i{j}", "category": rng.choice(CATEGORIES), "item_ctr": rng.random() / 10,
                             "age_hours": rng.expovariate(1 / 20), "is_new": rng.random() < 0.2} for j in range(10)]}
            for _ in range(n)]


def _feed(tmp: Path, key: SigningKey, calls: int, repeats: int) -> dict[str, Any]:
    """One feed ranking decision (10 candidates, 5 slots) in Python and in Node, and its bundle's size."""
    from examples.feed.system import feed, model

    bundle = Bundle.build(feed, model)
    requests = _feed_requests(500)
    req_file = tmp / "feed-requests.json"
    req_file.write_text(json.dumps(requests))
    data = export_client_bundle(feed, bundle, key)
    exported = tmp / "feed.json"
    exported.write_bytes(data)
    py = statistics.median(_python_us(bundle, requests, calls // 4, repeats, feed))
    js = statistics.median(_node_us(exported, req_file, calls // 4, repeats))
    size, packed = len(data), len(gzip.compress(data, 9))
    print(f"{'feed_rank':<10} {py:>10.2f} {js:>9.2f} {js / py:>12.3f} {size:>7} {packed:>6}")
    return {"python_us": round(py, 3), "node_us": round(js, 3), "node_over_python": round(js / py, 4), "candidates": 10,
            "slots": 5, "bundle_bytes": size, "bundle_gzip_bytes": packed}


if __name__ == "__main__":
    main()

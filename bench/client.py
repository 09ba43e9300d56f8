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
* the exported file's size, raw and gzip-compressed (what a client downloads).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
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


def _python_us(bundle: Bundle, contexts: list[dict[str, Any]], calls: int, repeats: int) -> list[float]:
    rt = Runtime(phishing, bundle)
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
    result["node_not_slower"] = all(result[n]["node_over_python"] <= 1.0 for n in bundles)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

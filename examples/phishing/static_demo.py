"""The phishing system end to end, in-process: heuristic → trained model → bundles → decisions.

Run it from the repository root::

    python -m examples.phishing.static_demo [--home DIR] [--train N] [--test N] [--seed S]

It generates synthetic page loads (:mod:`examples.phishing.data`), packages the hand-written
heuristic (:mod:`examples.phishing.heuristic`) and a logistic model trained on the system's own
features (:func:`closedloop.training.train_logistic`) as bundles under ``<home>/bundles/<version>``,
loads them back (verified), makes a few single decisions, then runs both bundles over a held-out
set through ``Runtime.decide_batch`` and prints AUC, actions, expected mistake cost and speed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from closedloop import Bundle, BundleError, DecisionIds, Intelligence, Runtime, System
from closedloop.training import roc_auc, train_logistic

from .data import generate, records
from .heuristic import heuristic_intelligence
from .system import phishing

__all__ = ["expected_cost_per_1k", "main", "store_bundle"]


def store_bundle(bundle: Bundle, home: Path, system: System) -> tuple[Bundle, bool]:
    """Save ``bundle`` as ``<home>/bundles/<version>`` unless that version is already there,
    then load it back from disk, verified. Returns (loaded bundle, whether it was written now).

    Bundles are content-versioned and immutable: an existing directory with the same version
    holds the same intelligence, so it is reused (and verified) rather than overwritten.
    """
    path = home / "bundles" / bundle.version
    written = False
    if not path.exists():
        bundle.save(path)
        written = True
    loaded = Bundle.load(path, system)
    if loaded.version != bundle.version:
        raise BundleError("version", f"holds version {loaded.version!r}, expected {bundle.version!r}", str(path))
    return loaded, written


def expected_cost_per_1k(system: System, actions: np.ndarray, labels: np.ndarray) -> float:
    """Mean mistake cost per 1,000 decisions: ``system.costs[action][true label]`` (0 if unset)."""
    total = 0.0
    for action, row in system.costs.items():
        for j, name in enumerate(system.labels):
            total += row.get(name, 0.0) * float(np.sum((actions == action) & (labels == j)))
    return 1000.0 * total / max(1, labels.shape[0])


def _train_metrics(system: System, intelligence: Intelligence, columns: Mapping[str, Any], labels: np.ndarray) -> dict[str, Any]:
    cols = system.schema.validate_batch(columns)
    X = system.features.batch(cols)
    p = intelligence.bind(system.features).batch(X, cols)[:, 0]
    return {"n": int(labels.shape[0]), "positives": int(labels.sum()), "train_auc": roc_auc(labels, p)}


def _time_single(runtime: Runtime, rows: Sequence[dict[str, Any]]) -> float:
    """Mean seconds per ``Runtime.decide`` over ``rows`` (after a short warm-up)."""
    decide = runtime.decide
    for r in rows[:50]:
        decide(r)
    t0 = time.perf_counter()
    for r in rows:
        decide(r)
    return (time.perf_counter() - t0) / max(1, len(rows))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m examples.phishing.static_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=Path(".closedloop"), help="project home (default: ./.closedloop)")
    ap.add_argument("--train", type=int, default=20_000, help="training page loads (default: 20000)")
    ap.add_argument("--test", type=int, default=5_000, help="held-out page loads (default: 5000)")
    ap.add_argument("--single", type=int, default=3_000, help="single decide() calls to time (default: 3000)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(width=120) if not Console().is_terminal else Console()
    system = phishing
    t_start = time.perf_counter()

    # 1. data: what the browser saw, and what each page turned out to be
    train_cols, train_y = generate(args.train, seed=args.seed)
    test_cols, test_y = generate(args.test, seed=args.seed + 1)
    console.print(
        f"[bold]{system.name}[/]: {args.train:,} training page loads ({int(train_y.sum()):,} phish), "
        f"{args.test:,} held-out ({int(test_y.sum()):,} phish); {len(system.features)} features"
    )

    # 2. intelligence: the hand-written heuristic, then a model trained on the same features
    heuristic = heuristic_intelligence()
    h_bundle = Bundle.build(system, heuristic, metrics=_train_metrics(system, heuristic, train_cols, train_y))
    trained = train_logistic(system, train_cols, train_y)
    m_bundle = Bundle.build(system, trained.model, parent=h_bundle.version, metrics=trained.metrics)

    # 3. package: immutable, content-versioned bundle directories, loaded back and verified
    stored = []
    for b in (h_bundle, m_bundle):
        loaded, written = store_bundle(b, args.home, system)
        stored.append(loaded)
        console.print(f"bundle [cyan]{loaded.version}[/] ({loaded.manifest['intelligence']['kind']}) "
                      f"{'saved to' if written else 'already at'} {loaded.path} — verified")
    h_bundle, m_bundle = stored

    # 4. a few decisions, in-process
    test_rows = records(test_cols)
    picks = [int(i) for i in np.flatnonzero(test_y == 0)[:3]] + [int(i) for i in np.flatnonzero(test_y == 1)[:2]]
    runtime = Runtime(system, m_bundle, ids=DecisionIds(seed=args.seed))
    console.print(f"\n[bold]Example decisions[/] (bundle {m_bundle.version}):")
    for i in picks:
        d = runtime.decide(test_rows[i])
        print(f"# {test_rows[i]['url'][:90]}  (truly {system.labels[int(test_y[i])]})")
        print(json.dumps(d.to_dict(), ensure_ascii=False))

    # 5. every held-out page through decide_batch, for both bundles
    table = Table(title=f"Held-out evaluation: {args.test:,} page loads via Runtime.decide_batch")
    for col, kw in (
        ("bundle", {}), ("kind", {}), ("AUC", {"justify": "right"}), ("allow", {"justify": "right"}),
        ("warn", {"justify": "right"}), ("block", {"justify": "right"}),
        ("cost / 1k", {"justify": "right"}), ("decide µs", {"justify": "right"}),
        ("batch µs/row", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    single_rows = [test_rows[i % len(test_rows)] for i in range(args.single)] if test_rows else []
    summary = []
    for b in (h_bundle, m_bundle):
        rt = Runtime(system, b, ids=DecisionIds(seed=args.seed))
        t0 = time.perf_counter()
        batch = rt.decide_batch(test_cols)
        per_row = (time.perf_counter() - t0) / max(1, len(batch))
        per_decision = _time_single(rt, single_rows) if single_rows else float("nan")
        actions = batch.action
        counts = {a: int(np.sum(actions == a)) for a in system.actions}
        auc = roc_auc(test_y, batch.scores(system.experience.score))
        cost = expected_cost_per_1k(system, actions, test_y)
        summary.append({"version": b.version, "auc": auc, "actions": counts, "cost_per_1k": cost,
                        "decide_us": per_decision * 1e6, "batch_us_per_row": per_row * 1e6})
        table.add_row(
            b.version, b.manifest["intelligence"]["kind"], f"{auc:.3f}",
            *(f"{counts[a]:,}" for a in ("allow", "warn", "block")),
            f"{cost:,.0f}", f"{per_decision * 1e6:.1f}", f"{per_row * 1e6:.2f}",
        )
    console.print()
    console.print(table)
    h, m = summary
    console.print(
        "Mistake cost per 1,000 decisions uses system.costs\\[action]\\[truth]; the trained model "
        f"cuts it from {h['cost_per_1k']:,.0f} to {m['cost_per_1k']:,.0f} "
        f"(AUC {h['auc']:.3f} → {m['auc']:.3f}). Latency budget: {system.latency_budget_ms:g} ms per decision."
    )
    console.print(f"Bundles are in {(args.home / 'bundles').resolve()} "
                  f"(parent of {m_bundle.version} is {m_bundle.parent}). "
                  f"Done in {time.perf_counter() - t_start:.1f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

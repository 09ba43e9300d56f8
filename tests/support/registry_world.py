"""Shared material for the registry tests: a labelled phishing dataset, three bundles and the
evaluation reports that attach golden rows and gate verdicts to them.

* ``H`` — the hand-written heuristic (the first production);
* ``A`` — a logistic model trained on the dataset (its gate against H passes);
* ``B`` — the heuristic with low thresholds: it blocks far too much (its gate against A fails).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from support.pages import import_pages


@dataclass
class World:
    root: Path
    dataset: Path
    H: Any
    A: Any
    B: Any
    report_HA: dict[str, Any]
    report_AB: dict[str, Any]
    key: Any  # the SigningKey that signed H, A and B: a registry must trust it (trust(reg))

    def trust(self, reg: Any) -> Any:
        reg.trust_key(self.key.public_key, name="tests", actor="alice")
        return reg


def build_world(system: Any, root: Path, n: int = 3000) -> World:
    from examples.phishing.data import generate
    from examples.phishing.heuristic import heuristic_intelligence

    from closedloop import Bundle
    from closedloop.evaluation.report import evaluate
    from closedloop.runtime.signing import SigningKey
    from closedloop.training import train

    root.mkdir(parents=True, exist_ok=True)
    cols, labels = generate(n, 11, phish_rate=0.3)
    ds = import_pages(system, cols, labels, root)
    key = SigningKey.generate()
    A = train(system, ds.path, model="logistic").bundle.signed(key)
    H = Bundle.build(system, heuristic_intelligence()).signed(key)
    B = Bundle.build(system, heuristic_intelligence(), thresholds={"block": 0.3, "warn": 0.2}).signed(key)
    report_HA = evaluate(system, [H, A], ds.path, bootstrap=10, golden=30)
    report_AB = evaluate(system, [A, B], ds.path, bootstrap=10, golden=30)
    assert report_HA["gate"]["passed"] and not report_AB["gate"]["passed"]
    return World(root, ds.path, H, A, B, report_HA, report_AB, key)


def page_traffic(rt, tel, n, seed, report_prob=0.6):
    """n page loads through the runtime (logged); users report most false blocks and warnings."""
    from examples.phishing.data import generate

    cols, labels = generate(n, seed, phish_rate=0.3)
    contexts = {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in cols.items()}
    batch = rt.decide_batch(contexts)
    rng = np.random.default_rng(seed)
    ids = batch.decision_ids.to_pylist()
    kinds = {"block": "reported_false_block", "warn": "reported_false_warning"}
    for i, (a, y) in enumerate(zip(batch.action, labels, strict=True)):
        if a in kinds and y == 0 and rng.random() < report_prob:
            tel.log_outcome(ids[i], kind=kinds[a], event_ns=int(batch.timestamps_ns[i]) + 1_000, source="user")
    return batch


def served_home(system, world, home, traffic=(1500, 700), seeds=(21, 22)):
    """A home whose registry holds the world's bundles and reports, with the heuristic H in
    production, A flighted on 30 % and B in shadow, and ``traffic`` page loads served through a
    Runtime on that deployment: the first batch compacted into the Parquet lake, the second left
    in the live segments → (the open registry, the first batch, the second batch)."""
    from closedloop import Runtime
    from closedloop.registry import Registry
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

    reg = world.trust(Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open())
    for b in (world.H, world.A, world.B):
        reg.add_bundle(b, actor="alice")
    reg.add_report(world.report_HA, actor="alice")
    reg.add_report(world.report_AB, actor="alice")
    reg.deploy(system, world.H.version, actor="alice", reason="the heuristic first")
    reg.deploy(system, world.A.version, actor="alice", reason="try A on 30%", flight="a", share=0.3)
    reg.deploy(system, world.B.version, actor="bob", reason="watch B", shadow=True)
    with Telemetry(SegmentLog(home), system=system) as tel:
        rt = Runtime(system, world.H, telemetry=tel)
        if not reg.refresh(rt)["applied"]:
            raise RuntimeError("the runtime did not apply the registry's deployment")
        first = page_traffic(rt, tel, traffic[0], seed=seeds[0])
        tel.flush()
        TelemetryStore(home).compact()
        second = page_traffic(rt, tel, traffic[1], seed=seeds[1])
        tel.flush()
    return reg, first, second

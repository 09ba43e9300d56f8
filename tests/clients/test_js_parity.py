"""Parity of the JavaScript client runtime with Python's: the same bundles, exported for clients,
decide ≥ 100,000 generated contexts each in Node (one run over a JSON-lines file) and in Python
(``Runtime.decide_batch``, bitwise equal to ``Runtime.decide``): the same actions, reasons and
propensities, scores equal within a relative 1e-12 (JavaScript's Math.exp / Math.log1p are not the
C library's: see clients/js/README.md), and invalid contexts refused by both naming the same field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from parity_systems import conformance_bundles, conformance_contexts, conformance_system, invalid_contexts, phishing_bundles

from closedloop import Runtime
from closedloop.errors import BundleError, ContextError
from closedloop.runtime.checks import records
from closedloop.runtime.export_js import export_client_bundle
from closedloop.runtime.signing import SigningKey
from support.node_runtime import run_node

N = 100_000
T0 = 1_760_000_000_000_000_000


def _ids(n: int) -> list[str]:
    """Decision ids: 32 hex digits (splitmix64) for most, other text (BLAKE2b) for every fifth."""
    rng = np.random.default_rng(3)
    hi, lo = rng.integers(0, 2**63, size=n), rng.integers(0, 2**63, size=n)
    return [f"req-{i}-é" if i % 5 == 0 else f"{int(h):016x}{int(q):016x}" for i, (h, q) in enumerate(zip(hi, lo, strict=True))]


def _write_rows(path: Path, contexts: list[Any], ids: list[str], ts: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for c, i, t in zip(contexts, ids, ts.tolist(), strict=True):
            fh.write(json.dumps({"c": c, "id": i, "ts": str(t)}) + "\n")


def _node(bundle_file: Path, rows: Path, out: Path) -> tuple[np.ndarray, list[list[Any]]]:
    refused = json.loads(run_node("tools/decide-file.mjs", str(bundle_file), str(rows), str(out)))["refused"]
    return np.fromfile(out, dtype="<f8").reshape(-1, 4), refused


def _compare(name: str, batch: Any, got: np.ndarray) -> float:
    """Asserts parity of one bundle's decisions; returns the share of scores equal bit for bit."""
    assert got.shape[0] == len(batch), name
    actions = got[:, 0].astype(np.int64)
    bad = np.flatnonzero(actions != batch.action_codes)
    assert bad.size == 0, f"{name}: actions differ on {bad.size} rows, first {bad[:5].tolist()}"
    why = got[:, 1].astype(np.int64)
    reasons = np.asarray(batch.reasons, dtype=object)
    bad = np.flatnonzero(reasons[why] != reasons[batch.why_codes])
    assert bad.size == 0, f"{name}: reasons differ on {bad.size} rows, first {bad[:5].tolist()}"
    bad = np.flatnonzero(got[:, 2] != batch.propensities)
    assert bad.size == 0, f"{name}: propensities differ on {bad.size} rows: {got[bad[:3], 2]} vs {batch.propensities[bad[:3]]}"
    s_js, s_py = got[:, 3], batch.score_matrix[:, 0]
    assert np.array_equal(np.isnan(s_js), np.isnan(s_py)), name
    ok = ~np.isnan(s_py)
    rel = np.abs(s_js[ok] - s_py[ok]) / np.maximum(np.abs(s_py[ok]), np.finfo(float).tiny)
    assert rel.size == 0 or float(rel.max()) <= 1e-12, f"{name}: scores differ by a relative {float(rel.max())}"
    return float(np.mean(s_js[ok] == s_py[ok])) if ok.any() else 1.0


def _exercised(batch: Any) -> dict[str, int]:
    """How many decisions explored, were changed by a guardrail, and scored NaN (what the parity covered)."""
    why = np.asarray(batch.reasons, dtype=object)[batch.why_codes]
    fired = 0 if batch.guardrail_codes is None else int((batch.guardrail_codes >= 0).sum())
    return {"explored": int(sum(w.startswith("explored") for w in why)), "guardrail": fired,
            "nan": int(np.isnan(batch.score_matrix[:, 0]).sum())}


def _refusals(system: Any, bundle: Any, bad: list[Any]) -> list[list[Any]]:
    rt = Runtime(system, bundle)
    out = []
    for i, c in enumerate(bad):
        try:
            rt.decide(c, decision_id="x", timestamp_ns=T0)
        except ContextError as e:
            out.append([i, e.field])
    assert len(out) == len(bad)
    return out


def _run(tmp_path: Path, system: Any, bundles: dict[str, Any], columns: dict[str, Any],
         contexts: list[Any]) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    n = len(contexts)
    ids = _ids(n)
    ts = T0 + np.cumsum(np.random.default_rng(4).integers(0, 120_000_000_000, size=n))  # minutes apart: caps roll over
    rows = tmp_path / f"{system.name}.jsonl"
    _write_rows(rows, contexts, ids, ts)
    bad = invalid_contexts(system, contexts, 2000, seed=9)
    bad_rows = tmp_path / f"{system.name}-bad.jsonl"
    _write_rows(bad_rows, bad, ids[: len(bad)], ts[: len(bad)])
    key = SigningKey.generate()
    exact, seen = {}, {}
    for name, bundle in bundles.items():
        exported = tmp_path / f"{name}.json"
        exported.write_bytes(export_client_bundle(system, bundle, key))
        batch = Runtime(system, bundle).decide_batch(columns, decision_ids=ids, timestamps_ns=ts)
        got, refused = _node(exported, rows, tmp_path / f"{name}.bin")
        assert refused == [], f"{name}: node refused valid contexts {refused[:3]}"
        exact[name] = _compare(name, batch, got)
        seen[name] = _exercised(batch)
        _, node_refused = _node(exported, bad_rows, tmp_path / f"{name}-bad.bin")
        assert node_refused == _refusals(system, bundle, bad), name
    return exact, seen


def test_phishing_bundles_decide_alike_in_node_and_python(tmp_path: Path) -> None:
    from examples.phishing.data import generate
    from examples.phishing.data import records as phishing_records

    system, bundles = phishing_bundles()
    columns, _ = generate(N, seed=21)
    exact, seen = _run(tmp_path, system, bundles, columns, phishing_records(columns))
    assert exact["phishing_heuristic"] == 1.0  # no library function on its path: bit for bit
    assert exact["phishing_model"] > 0.5
    assert seen["phishing_model"]["guardrail"] > 0, seen  # the hard limit and the warning cap fired


def test_conformance_bundles_decide_alike_in_node_and_python(tmp_path: Path) -> None:
    system = conformance_system()
    columns = conformance_contexts(system, N, seed=22)
    exact, seen = _run(tmp_path, system, conformance_bundles(system), columns, records(columns))
    assert set(exact) == {"logistic", "lightgbm_isotonic", "stacking_platt", "partitioned_vote"}
    for name, s in seen.items():  # exploration, guardrails and NaN scores all ran
        assert s["explored"] > 100 and s["guardrail"] > 100, (name, s)
    assert seen["logistic"]["nan"] > 100, seen


def test_export_refuses_what_cannot_run_in_a_client() -> None:
    from examples.feed.system import feed

    from closedloop import Bundle, F, LogisticModel, System

    system = conformance_system()
    custom = F.custom("twice", scalar=lambda c: 2.0 * c.x, vector=lambda cols: 2.0 * cols["x"], inputs=["x"])
    with_custom = System("conf", context=list(system.schema.fields), schema_version="3", unit="unit",
                         features={**{"f_log": F.log1p(F.col("x"))}, "twice": custom}, actions=list(system.action_specs.values()),
                         experience=system.experience, labels=("no", "yes"))
    b = Bundle.build(with_custom, LogisticModel({"twice": 1.0}, output="score"))
    with pytest.raises(BundleError, match="custom feature 'twice'") as e:
        export_client_bundle(with_custom, b)
    assert e.value.check == "features"
    from sklearn.linear_model import LogisticRegression

    from closedloop import SklearnModel, WeightedVote

    X = np.random.default_rng(1).normal(size=(60, 2))
    estimator = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    vote = WeightedVote([LogisticModel({"f_dots": 0.1}, output="score"), SklearnModel(estimator, ["f_len", "f_dots"], output="score")])
    with pytest.raises(BundleError, match=r"intelligence.members\[1\] is of kind 'sklearn', which cannot run in a client") as e:
        export_client_bundle(system, Bundle.build(system, vote))
    assert e.value.check == "intelligence" and "skops" in str(e.value)
    rb = Bundle.build(feed, WeightedVote([LogisticModel({"ctr": 1.0}, output="score"),
                                          SklearnModel(estimator, ["ctr", "fresh"], output="score")]))
    with pytest.raises(BundleError, match=r"intelligence.members\[1\] is of kind 'sklearn'") as e:
        export_client_bundle(feed, rb)  # a ranking system's bundle exports, but not what cannot run in a client
    assert e.value.check == "intelligence"

"""LabelCheck (a day of labels unlike the others), build_dataset(exclude_ingested=...), the
monitoring view's deduplication of decisions, and the gate's cost tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import SpecError
from closedloop.orchestration import LabelCheck
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

DAY = 86_400 * 10**9
T0 = 1_767_571_200 * 10**9  # a UTC midnight


def _table(schema: pa.Schema, n: int, **cols) -> pa.Table:
    out = {}
    for f in schema:
        if f.name in cols:
            out[f.name] = pa.array(cols[f.name], f.type)
        elif f.nullable:
            out[f.name] = pa.nulls(n, f.type)
        else:
            zero = {"string": "x", "int64": 0, "double": 0.0, "bool": False}[str(f.type)]
            out[f.name] = pa.array([zero] * n, f.type)
    return pa.table(out, schema=schema)


def _labels(path: Path, days: int, per_day: int, positive_share: dict[int, float], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = {"outcome_id": [], "decision_id": [], "system": [], "kind": [], "value": [], "ingest_ns": [],
            "event_ns": [], "source": [], "unit": []}
    for d in range(days):
        share = positive_share.get(d, 0.1)
        for i in range(per_day):
            t = T0 + d * DAY + int(i * DAY / per_day)
            rows["outcome_id"].append(f"o{d}-{i}")
            rows["decision_id"].append(f"d{d}-{i}")
            rows["system"].append("phishing")
            rows["kind"].append("analyst_label")
            rows["value"].append(float(rng.random() < share))
            rows["ingest_ns"].append(t)
            rows["event_ns"].append(t)
            rows["source"].append("analyst:0")
            rows["unit"].append(f"u{i}")
    f = path / "outcomes.parquet"
    pq.write_table(_table(OUTCOME_SCHEMA, len(rows["outcome_id"]), **rows), f)
    return f


def test_a_day_of_flipped_labels_is_an_anomaly_named_in_words(tmp_path: Path, phishing) -> None:
    f = _labels(tmp_path, days=8, per_day=300, positive_share={5: 0.9})
    rep = LabelCheck().check(phishing, outcome_files=[f], since_ns=T0, until_ns=T0 + 8 * DAY, cutoff_ns=T0 + 8 * DAY)
    assert [a["start_ns"] for a in rep["anomalies"]] == [T0 + 5 * DAY]
    a = rep["anomalies"][0]
    assert a["end_ns"] == T0 + 6 * DAY and a["n"] == 300 and a["share"] > 0.8 and a["others_share"] < 0.15
    assert "2026-01-10" in a["reason"] and "analyst_label" in a["reason"] and a["p_value"] < 1e-6
    # excluded, the day no longer counts; ordinary days are never anomalies
    rep2 = LabelCheck().check(phishing, outcome_files=[f], since_ns=T0, until_ns=T0 + 8 * DAY,
                              cutoff_ns=T0 + 8 * DAY, exclude=[("analyst_label", T0 + 5 * DAY, T0 + 6 * DAY)])
    assert rep2["anomalies"] == [] and len(rep2["days"]) == 7
    # a day that says "legitimate" to everything is one too; labels ingested after the cut-off do not exist
    (tmp_path / "g").mkdir()
    g = _labels(tmp_path / "g", days=8, per_day=300, positive_share={6: 0.0})
    rep3 = LabelCheck().check(phishing, outcome_files=[g], since_ns=T0, until_ns=T0 + 8 * DAY, cutoff_ns=T0 + 6 * DAY)
    assert rep3["anomalies"] == []
    rep4 = LabelCheck().check(phishing, outcome_files=[g], since_ns=T0, until_ns=T0 + 8 * DAY, cutoff_ns=T0 + 8 * DAY)
    assert [a["start_ns"] for a in rep4["anomalies"]] == [T0 + 6 * DAY]


def test_small_days_are_not_judged_and_the_check_is_validated(tmp_path: Path, phishing) -> None:
    f = _labels(tmp_path, days=5, per_day=30, positive_share={2: 1.0})
    rep = LabelCheck(min_count=50).check(phishing, outcome_files=[f], since_ns=T0, until_ns=T0 + 5 * DAY,
                                         cutoff_ns=T0 + 5 * DAY)
    assert rep["anomalies"] == []
    for kw, name in (({"ratio": 1.0}, "'ratio'"), ({"alpha": 0}, "'alpha'"), ({"min_count": 0}, "'min_count'"),
                     ({"kind": ""}, "'kind'")):
        with pytest.raises(SpecError, match=name):
            LabelCheck(**kw)


def test_build_dataset_leaves_excluded_ingest_ranges_out(tmp_path: Path, phishing) -> None:
    from closedloop.datasets import build_dataset
    from closedloop.errors import DatasetError

    n = 40
    ids = [f"d{i}" for i in range(n)]
    dec = _table(DECISION_SCHEMA, n, decision_id=ids, system=["phishing"] * n, unit=[f"u{i}" for i in range(n)],
                 timestamp_ns=[T0 + i * 10**9 for i in range(n)], ingest_ns=[T0 + i * 10**9 for i in range(n)],
                 action=["warn"] * n, propensity=[1.0] * n, sample_prob=[1.0] * n, seq=list(range(n)),
                 writer=["w"] * n)
    pq.write_table(dec, tmp_path / "d.parquet")
    # analysts label every decision phish; half of the labels arrive on a day found corrupted
    t_lab = [T0 + DAY + (0 if i % 2 else DAY) for i in range(n)]
    out = _table(OUTCOME_SCHEMA, n, outcome_id=[f"o{i}" for i in range(n)], decision_id=ids,
                 system=["phishing"] * n, unit=[f"u{i}" for i in range(n)], kind=["analyst_label"] * n,
                 value=[1.0] * n, event_ns=t_lab, ingest_ns=t_lab, source=["analyst:0"] * n, seq=list(range(n)),
                 writer=["w"] * n)
    pq.write_table(out, tmp_path / "o.parquet")
    kw = dict(decision_files=[tmp_path / "d.parquet"], outcome_files=[tmp_path / "o.parquet"], since_ns=T0,
              until_ns=T0 + DAY, cutoff_ns=T0 + 10 * DAY)
    full = build_dataset(phishing, out=tmp_path / "a", **kw)
    cut = build_dataset(phishing, out=tmp_path / "b", exclude_ingested=[("analyst_label", T0 + DAY, T0 + 2 * DAY)], **kw)
    a = pq.read_table(full.data_path)["label"].to_pylist()
    b = pq.read_table(cut.data_path)["label"].to_pylist()
    assert a.count("phish") == n
    assert b.count("phish") == n // 2 and b.count("legit") == n // 2  # the policy's default for a warning
    assert cut.id != full.id
    with pytest.raises(DatasetError, match="exclude_ingested"):
        build_dataset(phishing, out=tmp_path / "c", exclude_ingested=[("analyst_label", 5, 5)], **kw)


def test_monitoring_keeps_the_first_copy_of_a_decision_logged_twice(tmp_path: Path) -> None:
    from closedloop.orchestration import _data

    def part(ids, ingest, writer, seq):
        n = len(ids)
        return _table(DECISION_SCHEMA, n, decision_id=ids, system=["s"] * n, ingest_ns=ingest, writer=writer,
                      seq=seq, timestamp_ns=[1] * n, unit=["u"] * n,
                      bundle_version=[f"v{i}-{w}" for i, w in zip(ingest, writer, strict=True)])

    pq.write_table(part(["a", "b", "c"], [5, 5, 5], ["w1", "w1", "w1"], [1, 2, 3]), tmp_path / "1.parquet")
    pq.write_table(part(["a", "b", "d"], [3, 7, 5], ["w2", "w0", "w1"], [9, 1, 1]), tmp_path / "2.parquet")
    files = [tmp_path / "1.parquet", tmp_path / "2.parquet"]
    con = _data.connect("s", files, [], 100)
    assert sorted(con.execute("SELECT decision_id, bundle_version FROM decisions").fetchall()) == [
        ("a", "v3-w2"), ("b", "v5-w1"), ("c", "v5-w1"), ("d", "v5-w1")]
    con = _data.connect("s", files, [], 4)  # the cut-off: only what was ingested by then
    assert con.execute("SELECT decision_id, bundle_version FROM decisions").fetchall() == [("a", "v3-w2")]


def test_the_gate_tolerates_a_declared_cost_rise_and_no_more() -> None:
    from closedloop.evaluation.report import Gate

    def rep(version: str, cost: float) -> dict:
        return {"version": version, "quality": {"auc": 0.9}, "slices": {}, "mistakes": {"cost_per_1000": cost}}

    assert not Gate().check(rep("a", 100.0), rep("b", 100.5))["passed"]
    assert Gate(cost_tolerance=0.02).check(rep("a", 100.0), rep("b", 101.9))["passed"]
    v = Gate(cost_tolerance=0.02).check(rep("a", 100.0), rep("b", 102.1))
    assert not v["passed"] and "more than 2%" in v["reasons"][0]
    with pytest.raises(SpecError, match="'cost_tolerance'"):
        Gate(cost_tolerance=-0.1)

"""A dataset's row order is set (the same records give the same file, row for row), a labels-only
dataset holds the same labels as the full one, and the telemetry store names its compacted files
in write order — what makes a seeded demo run reproducible (docs/demo.md, "Reproducibility")."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_join import SYSTEM, T0, S, decision, outcome

from closedloop.datasets import DatasetError, build_dataset


def _files(tmp_path, n_files=6, per_file=400):
    """Several decision files (rows in no id order, a retried write) and outcomes for some rows."""
    from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

    rng = np.random.default_rng(5)
    d = tmp_path / "telemetry" / "parquet" / "decisions" / "day=1970-01-01"
    d.mkdir(parents=True)
    outs, k = [], 0
    for f in range(n_files):
        rows = []
        for _ in range(per_file):
            i = int(rng.integers(0, 10**9))
            ts = T0 + k * S
            rows.append(decision(f"d{i:09d}-{k}", ts, unit=f"u{k % 37}", action=["allow", "warn", "block"][k % 3]))
            if k % 5 == 0:
                outs.append(outcome(f"o{k}", "report" if k % 2 else "analyst", ts + S, did=rows[-1]["decision_id"],
                                    value=float(k % 3 == 0)))
            k += 1
        rows.append(dict(rows[0], seq=rows[0]["seq"] + 10**6, ingest_ns=rows[0]["ingest_ns"] + S))  # a retry
        pq.write_table(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), d / f"part-{f}.parquet",
                       row_group_size=97)
    o = tmp_path / "telemetry" / "parquet" / "outcomes" / "day=1970-01-01"
    o.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(outs, schema=OUTCOME_SCHEMA), o / "part-0.parquet")
    return sorted(d.glob("*.parquet")), sorted(o.glob("*.parquet"))


def _build(dfiles, ofiles, out, **kw):
    return build_dataset(SYSTEM, decision_files=dfiles, outcome_files=ofiles, since_ns=0, until_ns=10**6 * S,
                         cutoff_ns=10**5 * S, out=out, **kw)


def test_the_rows_come_in_one_order_whatever_the_file_order_and_duckdbs_threads(tmp_path, monkeypatch):
    import duckdb

    dfiles, ofiles = _files(tmp_path)
    first = pq.read_table(_build(dfiles, ofiles, tmp_path / "a").data_path)
    ids = first["decision_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 6 * 400  # deduplicated (the retries)

    real = duckdb.connect
    for threads, files in ((8, dfiles[::-1]), (3, dfiles[2:] + dfiles[:2]), (1, dfiles)):
        def connect(*a, threads=threads, **k):  # a connection that runs on more (or fewer) threads
            con = real(*a, **k)
            con.execute(f"SET threads={threads}")
            return con

        monkeypatch.setattr(duckdb, "connect", connect)
        again = pq.read_table(_build(files, ofiles[::-1], tmp_path / f"t{threads}").data_path)
        assert again["decision_id"].to_pylist() == ids
        assert again.equals(first)


def test_a_labels_only_dataset_holds_the_same_labels(tmp_path):
    dfiles, ofiles = _files(tmp_path, n_files=2, per_file=300)
    full = _build(dfiles, ofiles, tmp_path / "full")
    cols = ["decision_id", "timestamp_ns", "action", "label_value", "weight"]
    lean = _build(dfiles, ofiles, tmp_path / "lean", columns=cols)
    t = pq.read_table(lean.data_path)
    assert t.column_names == [*cols, "label"]  # and nothing else: no contexts read or written
    by_id = [("decision_id", "ascending")]  # the same rows (in an order of their own, as set as the full one's)
    assert t.sort_by(by_id).equals(pq.read_table(full.data_path, columns=[*cols, "label"]).sort_by(by_id))
    assert pq.read_table(_build(dfiles, ofiles, tmp_path / "lean2", columns=cols).data_path).equals(t)
    assert lean.counts == full.counts
    assert json.loads((lean.path / "manifest.json").read_text())["written_columns"] == [*cols, "label"]
    with pytest.raises(DatasetError, match="'columns' must be columns of the dataset"):
        _build(dfiles, ofiles, tmp_path / "bad", columns=["decision_id", "nope"])


def test_compacted_files_are_named_in_write_order(tmp_path):
    from closedloop import ManualClock
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

    clock = ManualClock(T0)
    store = TelemetryStore(tmp_path)
    for batch in range(3):
        with Telemetry(SegmentLog(tmp_path), system=SYSTEM, clock=clock.now_ns) as tel:
            for i in range(3):
                tel.log_outcome(f"d{batch}-{i}", "u1", kind="report", value=1.0, event_ns=T0, source="s",
                                outcome_id=f"o{batch}-{i}")
        clock.set_ns(T0 + (batch + 1) * 10 * S)
        store.compact()
    files = store.outcome_files()
    assert len(files) == 3
    # by name is by write time: listing the files lists the records in the order they were written
    ids = [pq.read_table(f)["outcome_id"].to_pylist() for f in files]
    assert ids == [[f"o{b}-{i}" for i in range(3)] for b in range(3)]


def test_cycle_records_are_written_as_json_with_numpy_numbers(tmp_path):
    from closedloop.orchestration.steps.base import atomic_json as _atomic_json

    rec = {"b": np.float64(0.1), "a": [1, 2.5, {"z": None}], "c": np.int64(3), "big": 1e300}
    _atomic_json(tmp_path / "r.json", rec)
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == {"a": [1, 2.5, {"z": None}], "b": 0.1, "big": 1e300, "c": "3"}
    assert text.index('"a"') < text.index('"b"') < text.index('"big"')  # sorted keys, indented
    assert "\n" in text


def test_the_cycle_reuses_decoded_contexts_and_reads_what_load_dataset_reads(tmp_path, monkeypatch):
    """Consecutive training windows overlap: the cycle decodes only the contexts the last
    dataset did not hold (or held with another text), and returns exactly load_dataset's."""
    from closedloop.datasets import load_dataset
    from closedloop.orchestration import Cycle, LoopPlan
    from closedloop.telemetry.records import DECISION_SCHEMA

    d = tmp_path / "telemetry" / "parquet" / "decisions" / "day=1970-01-01"
    d.mkdir(parents=True)
    rows = [decision(f"d{k:05d}", T0 + k * S, unit=f"u{k % 7}", ctx={"user": f"u{k % 7}", "age": float(k % 50)})
            for k in range(600)]
    rows[450]["context_json"] = None  # a decision logged without its context: left out
    pq.write_table(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), d / "part-0.parquet")
    # the same decision ids, later, with other contexts (as if they had been logged differently)
    changed = [dict(r, context_json=json.dumps({"user": r["unit"], "age": 99.0}), seq=r["seq"] + 10**6,
                    ingest_ns=r["ingest_ns"] - 1) for r in rows[500:520]]
    other = tmp_path / "other" / "day=1970-01-01"
    other.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(changed, schema=DECISION_SCHEMA), other / "part-0.parquet")
    files = [d / "part-0.parquet"]

    def ds(name, a, b, extra=()):
        return build_dataset(SYSTEM, decision_files=[*files, *extra], outcome_files=[], since_ns=T0 + a * S,
                             until_ns=T0 + b * S, cutoff_ns=10**5 * S, out=tmp_path / name).path

    paths = [ds("a", 0, 400), ds("b", 100, 550), ds("c", 200, 600, [other / "part-0.parquet"])]
    wanted = [load_dataset(p, SYSTEM) for p in paths]
    import closedloop.orchestration.reading as reading

    decoded = []
    real = reading.decode_contexts

    def spy(raws, system):
        decoded.append(len(raws))
        return real(raws, system)

    monkeypatch.setattr(reading, "decode_contexts", spy)
    cyc = Cycle(LoopPlan(SYSTEM, thresholds="system"), tmp_path / "home", registry=None)
    for path, (want_t, want_c) in zip(paths, wanted, strict=True):
        table, cols = cyc.reader.load(str(path))
        cyc.reader.end_cycle()  # the next cycle
        # the columns the cycle reads, the same rows and values as load_dataset's
        assert table.column_names == ["decision_id", "unit", "timestamp_ns", "context_json", "weight", "label_value"]
        assert table.equals(want_t.select(table.column_names))
        assert cols.names() == want_c.names() and cols.n == want_c.n
        for n in cols.names():
            a, b = cols[n], want_c[n]
            assert a.equals(b) if isinstance(b, pa.Array) else (a.dtype == b.dtype and np.array_equal(a, b))
        assert np.array_equal(cols.rows, want_c.rows)
    # a: all 400 rows; b: the 149 new ones (one has no context);
    # c: the 50 new ones and the 20 whose context text changed
    assert decoded == [400, 149, 70]

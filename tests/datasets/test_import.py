from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from closedloop.datasets.dataset import DatasetManifest, load_dataset
from closedloop.datasets.importer import import_dataset
from closedloop.errors import DatasetError


def _table(n: int = 200, seed: int = 0) -> pa.Table:
    from examples.phishing.data import generate

    cols, y = generate(n, seed)
    t = pa.table({k: (pa.array(v) if isinstance(v, np.ndarray) else pa.array(v, pa.string())) for k, v in cols.items()})
    t = t.append_column("is_phish", pa.array(y, pa.int64()))
    return t.append_column("ts", pa.array(np.arange(n, dtype=np.int64) * 1_000_000_000 + 10**18))


def test_parquet_round_trip(tmp_path, phishing):
    t = _table()
    pq.write_table(t, tmp_path / "pages.parquet")
    m = import_dataset(tmp_path / "pages.parquet", phishing, label="is_phish", unit="user_id", time="ts",
                       out=tmp_path / "ds")
    assert (tmp_path / "ds" / "data.parquet").is_file()
    assert DatasetManifest.read(tmp_path / "ds").id == m.id and len(m.id) == 64
    src = m.content["source"]
    assert src == {**src, "kind": "import", "file": "pages.parquet", "unit_stand_in": False, "time_stand_in": False}
    table, cols = load_dataset(tmp_path / "ds", phishing)
    assert table.num_rows == cols.n == 200 and m.counts["decisions"]["rows"] == 200
    assert table["unit"].to_pylist() == t["user_id"].to_pylist()
    assert table["timestamp_ns"].to_pylist() == t["ts"].to_pylist()
    assert table["label_value"].to_pylist() == t["is_phish"].to_pylist()
    assert set(table["label"].to_pylist()) == {"legit", "phish"}
    assert table["decision_id"].to_pylist() == [str(i) for i in range(200)]
    assert table["weight"].to_pylist() == [1.0] * 200 and table["sample_prob"].to_pylist() == [1.0] * 200
    # Feature columns are the system's own features of the same contexts.
    X = phishing.features.batch(phishing.schema.validate_batch(t.select(list(phishing.schema.by_name))))
    for j, f in enumerate(phishing.features.features):
        np.testing.assert_array_equal(table[f.name].to_numpy(), X[:, j])
    assert cols.pylist("url") == t["url"].to_pylist()


def test_csv_with_stand_ins_class_names_and_rejected_rows(tmp_path, phishing):
    t = _table(100, seed=3)
    names = np.where(t["is_phish"].to_numpy() == 1, "phish", "legit")
    t = t.set_column(t.column_names.index("is_phish"), "kind", pa.array(names))
    ages = t["domain_age_days"].to_numpy().copy()
    ages[[5, 17]] = -1.0  # violates ge=0
    t = t.set_column(t.column_names.index("domain_age_days"), "domain_age_days", pa.array(ages))
    pcsv.write_csv(t, tmp_path / "pages.csv")
    m = import_dataset(tmp_path / "pages.csv", phishing, label="kind", out=tmp_path / "ds")
    assert m.content["source"]["unit_stand_in"] and m.content["source"]["time_stand_in"]
    assert m.counts["decisions"] == {**m.counts["decisions"], "read": 100, "rows": 98, "rejected": 2}
    assert sum(m.counts["rejected"].values()) == 2
    assert all(k.startswith("domain_age_days") for k in m.counts["rejected"])
    assert [e["row"] for e in m.content["rejected_examples"]] == [5, 17]
    table, cols = load_dataset(tmp_path / "ds", phishing)
    kept = [i for i in range(100) if i not in (5, 17)]
    assert table["unit"].to_pylist() == [str(i) for i in kept]
    assert table["timestamp_ns"].to_pylist() == kept
    assert table["label"].to_pylist() == [names[i] for i in kept]
    # The same file imports to the same id; a different one (or option) does not.
    m2 = import_dataset(tmp_path / "pages.csv", phishing, label="kind", out=tmp_path / "ds2")
    assert m2.id == m.id
    m3 = import_dataset(tmp_path / "pages.csv", phishing, label="kind", unit="user_id", out=tmp_path / "ds3")
    assert m3.id != m.id
    assert json.loads((tmp_path / "ds3" / "manifest.json").read_text())["id"] == m3.id


def test_iso_times(tmp_path, phishing):
    t = _table(20).drop_columns(["ts"])
    iso = [f"2024-03-01T00:00:{i:02d}Z" for i in range(20)]
    t = t.append_column("when", pa.array(iso))
    pq.write_table(t, tmp_path / "f.parquet")
    import_dataset(tmp_path / "f.parquet", phishing, label="is_phish", time="when", out=tmp_path / "ds")
    table, _ = load_dataset(tmp_path / "ds", phishing)
    base = 1709251200 * 10**9
    assert table["timestamp_ns"].to_pylist() == [base + i * 10**9 for i in range(20)]


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        (lambda t: t.drop_columns(["is_phish"]), {}, "label column 'is_phish' must be in the file"),
        (lambda t: t.set_column(t.column_names.index("is_phish"), "is_phish", pa.array([0] * t.num_rows)),
         {}, "both classes"),
        (lambda t: t.set_column(t.column_names.index("is_phish"), "is_phish", pa.array([2] * t.num_rows)),
         {}, "must hold 0/1 or the classes"),
        (lambda t: t.set_column(t.column_names.index("is_phish"), "is_phish",
                                pa.array(["legit", "spam"] * (t.num_rows // 2))), {}, "'spam'"),
        (lambda t: t.drop_columns(["url"]), {}, "at least one valid row. Got none of 40: url"),
        (lambda t: t, {"unit": "session"}, "unit column 'session'"),
        (lambda t: t, {"time": "when"}, "time column 'when'"),
    ],
)
def test_bad_input_is_named(tmp_path, phishing, change, kwargs, match):
    pq.write_table(change(_table(40)), tmp_path / "f.parquet")
    with pytest.raises(DatasetError, match=match):
        import_dataset(tmp_path / "f.parquet", phishing, label="is_phish", out=tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_refuses_existing_out_and_unknown_format(tmp_path, phishing):
    (tmp_path / "ds").mkdir()
    pq.write_table(_table(40), tmp_path / "f.parquet")
    with pytest.raises(DatasetError, match="already exists"):
        import_dataset(tmp_path / "f.parquet", phishing, label="is_phish", out=tmp_path / "ds")
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"\.csv or \.parquet"):
        import_dataset(tmp_path / "f.json", phishing, label="is_phish", out=tmp_path / "ds2")


def test_null_unit_rejects_the_row(tmp_path, phishing):
    t = _table(30)
    sessions = [None if i == 4 else f"s{i % 5}" for i in range(30)]
    pq.write_table(t.append_column("session", pa.array(sessions, pa.string())), tmp_path / "f.parquet")
    m = import_dataset(tmp_path / "f.parquet", phishing, label="is_phish", unit="session", out=tmp_path / "ds")
    assert m.counts["rejected"] == {"session: null unit": 1}
    table, _ = load_dataset(tmp_path / "ds", phishing)
    assert "4" not in table["decision_id"].to_pylist() and table.num_rows == 29


def test_each_rows_json_is_the_bytes_a_per_row_dict_encodes_to():
    """``_json_rows`` builds every row's JSON column by column; each row is byte for byte what
    ``msgspec.json.encode(dict(zip(names, row)))`` gives — quotes, newlines, non-ASCII, nulls,
    non-finite floats, bools, large ints — so a dataset's ``context_json`` (and its id) is unchanged."""
    import msgspec

    from closedloop.datasets.importer import _json_rows

    class _Cols:
        def __init__(self, data):
            self.data, self.n = data, len(next(iter(data.values()))) if data else 0

        def pylist(self, name):
            return self.data[name]

    data = {"s": ['a"b', "line\nbreak", "é ✓ \u2028", "", None, "\\"], "x": [1.5, float("nan"), float("inf"), -0.0, None, 1e300],
            "b": [True, False, None, True, False, True], "i": [0, -1, 2**62, None, 7, 3]}
    got = _json_rows(_Cols(data), list(data)).to_pylist()
    want = [msgspec.json.encode(dict(zip(data, row, strict=True))).decode() for row in zip(*data.values(), strict=True)]
    assert got == want and json.loads(got[1])["s"] == "line\nbreak"
    import closedloop.datasets.importer as importer

    chunk, importer._JSON_CHUNK = importer._JSON_CHUNK, 4  # several chunks: the same rows, in order
    try:
        assert _json_rows(_Cols(data), list(data)).to_pylist() == want
    finally:
        importer._JSON_CHUNK = chunk
    assert _json_rows(_Cols({"s": []}), ["s"]).to_pylist() == []
    assert _json_rows(_Cols({"s": ["x"]}), []).to_pylist() == ["{}"]

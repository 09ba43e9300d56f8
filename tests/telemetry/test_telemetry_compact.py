"""Telemetry's compact decision records (typed contexts, constants stored once): what readers get
is the same rows and values as the JSON form and as the same decisions logged one by one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from closedloop import Bool, Bundle, F, Float, Int, LogisticModel, Runtime, Str, System, Thresholds
from closedloop.errors import SpecError
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import (
    DECISION_SCHEMA,
    MemorySink,
    SegmentLog,
    Telemetry,
    TelemetryStore,
    read_segments,
)
from closedloop.telemetry.compact import CONTEXT, context_json, is_decision_form, to_decision_schema
from closedloop.telemetry.segments import list_segments, scan_segment

KEY = b"k" * 32
T0 = 20_718 * 86_400 * 10**9


def system(sensitive: bool = False, int_default: bool = True) -> System:
    ctx = [
        Str("user", sensitive="hash" if sensitive else None),
        Str("email", default="", sensitive="drop" if sensitive else None),
        Str("note", default="", sensitive="hash" if sensitive else None),
        Float("x", default=0.0),
        # an int default: a context holds 0 and its JSON says 0, not 0.0 (such a batch is written as JSON)
        Float("w", default=0 if int_default else 0.0),
        Int("n", default=3),
        Bool("flag", default=False),
        Str("lang", choices=("en", "de", "fr"), default="en"),
    ]
    feats = {"f0": F.col("x"), "f1": F.col("x") * 2.0 + F.col("n"), "f2": F.col("w")}
    return System("compact", context=ctx, unit="user", features=feats, actions=["allow", "block"],
                  experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"))


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r: dict = {"user": f"u{i % 13}", "x": float(rng.normal()), "n": int(rng.integers(-5, 5)),
                   "note": "é ✓ \"quoted\" \\ back" if i % 5 == 0 else f"n{i}", "lang": ("en", "de", "fr")[i % 3]}
        if i % 2:
            r["w"] = float(rng.normal()) * 1e-7  # short and long floats, exponents
            r["flag"] = bool(i % 4 == 1)
        if i % 7 == 0:
            r["email"] = f"p{i}@example.org"
        if i % 11 == 0:
            r["x"] = 3  # an int for a Float field: validated to 3.0
        out.append(r)
    return out


def runtime(sys_: System, telemetry: Telemetry | None) -> Runtime:
    bundle = Bundle.build(sys_, LogisticModel({"f0": 1.0, "f1": 0.3, "f2": -2.0}, -0.2, output="p"))
    return Runtime(sys_, bundle, telemetry=telemetry)


def ids_for(n: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + n)]


def decide_all(sys_: System, tel: Telemetry, rs: list[dict], how: str) -> None:
    """Log the decisions of ``rs``: one by one, as a batch of validated contexts (the service's
    path), or as a validated columnar batch."""
    rt = runtime(sys_, tel)
    ids = ids_for(len(rs))
    ts = [T0 + i for i in range(len(rs))]
    if how == "one":
        for i, r in enumerate(rs):
            rt.decide(r, decision_id=ids[i], timestamp_ns=ts[i])
    elif how == "contexts":
        good = [sys_.schema.validate(r) for r in rs]
        rt.decide_batch(sys_.schema.columns(good), decision_ids=ids, timestamps_ns=ts)
    else:
        names = [f.name for f in sys_.schema.fields]
        cols = {k: [r.get(k, f.default) for r in rs] for k, f in zip(names, sys_.schema.fields, strict=True)}
        cols["x"] = [float(v) for v in cols["x"]]
        cols["w"] = [float(v) for v in cols["w"]]
        rt.decide_batch(cols, decision_ids=ids, timestamps_ns=ts)


def logged(tmp_path, name: str, sys_: System, rs: list[dict], how: str, compact: bool, **kw) -> pa.Table:
    home = tmp_path / name
    tel = Telemetry(SegmentLog(home, writer="w"), system=sys_, clock=lambda: T0 + 10**9, compact=compact,
                    flush_interval_ms=10_000, key=KEY, **kw)
    decide_all(sys_, tel, rs, how)
    tel.close()
    return read_segments(home, "decisions")


@pytest.mark.parametrize("sensitive", [False, True])
def test_a_batch_logged_compact_reads_back_equal_to_the_same_decisions_logged_one_by_one(tmp_path, sensitive):
    sys_ = system(sensitive)
    rs = rows(300)
    one = logged(tmp_path, "one-json", sys_, rs, "one", compact=False)  # the reference: JSON, one at a time
    assert one.num_rows == 300 and one.schema.equals(DECISION_SCHEMA)
    for how in ("contexts", "one"):
        got = logged(tmp_path, f"{how}-compact", sys_, rs, how, compact=True)
        assert got.schema.equals(DECISION_SCHEMA)
        assert got.to_pylist() == one.to_pylist(), how
    # without the int default every frame is compact, and still reads back the same
    sys2 = system(sensitive, int_default=False)
    ref = logged(tmp_path, "one-json-2", sys2, rs, "one", compact=False)
    for how in ("contexts", "one"):
        home = tmp_path / f"{how}-compact-2"
        tel = Telemetry(SegmentLog(home, writer="w"), system=sys2, clock=lambda: T0 + 10**9, flush_interval_ms=10_000, key=KEY)
        decide_all(sys2, tel, rs, how)
        tel.close()
        (seg,) = list_segments(home, "decisions")
        frames = scan_segment(seg.read_bytes()).frames
        # batches are written compact; single decisions (a few dozen a commit) as DECISION_SCHEMA rows
        assert all((CONTEXT in f.raw().schema.names) is (how == "contexts") for f in frames)
        assert read_segments(home, "decisions").to_pylist() == ref.to_pylist(), how
    # the context JSON is byte for byte what the single path writes for each context
    ctx = one.column("context_json").to_pylist()
    if not sensitive:
        import msgspec

        assert ctx == [msgspec.json.encode(sys_.schema.validate(r)).decode() for r in rs]
        assert '"w":0,' in ctx[0] and '"x":3.0' in ctx[0]  # held values, not converted ones
    else:
        assert all('"email"' not in c and '"user":"u' not in c for c in ctx)


def test_a_validated_columnar_batch_logged_compact_reads_back_as_its_json_form(tmp_path):
    sys_ = system(True)
    rs = [{**r, "w": float(r.get("w", 0.0))} for r in rows(200, seed=3)]
    a = logged(tmp_path, "cols-json", sys_, rs, "columns", compact=False)
    b = logged(tmp_path, "cols-compact", sys_, rs, "columns", compact=True)
    assert a.num_rows == 200 and b.to_pylist() == a.to_pylist()


def test_compact_frames_are_smaller_and_hold_typed_contexts(tmp_path):
    sys_ = system(int_default=False)
    rs = rows(500)
    sizes = {}
    for compact in (False, True):
        home = tmp_path / str(compact)
        tel = Telemetry(SegmentLog(home, writer="w"), system=sys_, compact=compact, flush_interval_ms=10_000)
        decide_all(sys_, tel, rs, "contexts")
        tel.close()
        (seg,) = list_segments(home, "decisions")
        data = seg.read_bytes()
        sizes[compact] = len(data)
        (frame,) = scan_segment(data).frames
        raw = frame.raw()
        assert (CONTEXT in raw.schema.names) is compact and is_decision_form(raw.schema)
        if compact:
            ctx = raw.schema.field(CONTEXT).type
            assert [ctx.field(i).type for i in range(ctx.num_fields)][:8] == [
                pa.string(), pa.string(), pa.string(), pa.float64(), pa.float64(), pa.int64(), pa.bool_(), pa.string()]
            assert isinstance(raw.schema.field("writer").type, pa.RunEndEncodedType)
    assert sizes[True] < 0.8 * sizes[False]


def test_a_commit_of_compact_and_json_parts_reads_back_whole(tmp_path):
    """Single decisions are written as DECISION_SCHEMA rows (one a plain dict context); a batch
    in the same commit is compact: two frames of one commit, every row reads back."""
    sys_ = system(int_default=False)
    home = tmp_path / "mixed"
    tel = Telemetry(SegmentLog(home, writer="w"), system=sys_, flush_interval_ms=10_000)
    _log_mixed(sys_, tel)
    (seg,) = list_segments(home, "decisions")
    frames = scan_segment(seg.read_bytes()).frames
    assert [CONTEXT in f.raw().schema.names for f in frames] == [False, True]
    _check_mixed(sys_, read_segments(home, "decisions"))
    sink = MemorySink()
    _check_mixed(sys_, _log_mixed(sys_, Telemetry(sink, system=sys_, flush_interval_ms=10_000), sink))


def _log_mixed(sys_: System, tel: Telemetry, sink: MemorySink | None = None) -> pa.Table | None:
    rt = runtime(sys_, None)
    rs = rows(50)
    good = [sys_.schema.validate(r) for r in rs]
    db = rt.decide_batch(sys_.schema.columns(good), decision_ids=ids_for(50), timestamps_ns=[T0] * 50)
    d = rt.decide(rs[0], decision_id=ids_for(1, 99)[0], timestamp_ns=T0)
    tel.log_decision(d, {"user": "u0", "x": 1.5})  # a plain dict: written as JSON
    tel.log_batch(db, sys_.schema.columns(good), sys_.features.batch(sys_.schema.columns(good)))
    tel.log_decision(d, good[1], sys_.features.one(good[1]))
    tel.close()
    return None if sink is None else sink.table("decisions")


def _check_mixed(sys_: System, t: pa.Table) -> None:
    rs = rows(50)
    good = [sys_.schema.validate(r) for r in rs]
    assert t.num_rows == 52 and t.schema.equals(DECISION_SCHEMA)
    ctx = t.column("context_json").to_pylist()
    assert ctx[0] == '{"user":"u0","x":1.5}'
    import msgspec

    assert ctx[1] == msgspec.json.encode(good[1]).decode()
    assert ctx[2:] == [msgspec.json.encode(c).decode() for c in good]


def test_the_store_reads_compacts_and_selects_columns_of_compact_frames(tmp_path):
    sys_ = system()
    rs = rows(120)
    ref = logged(tmp_path, "json", sys_, rs, "contexts", compact=False)
    home = tmp_path / "store"
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=sys_, clock=clock.now_ns, flush_interval_ms=10_000)
    decide_all(sys_, tel, rs, "contexts")
    tel.flush()
    store = TelemetryStore(home)
    live = store.read("decisions")  # a live segment, not compacted
    cols = ["decision_id", "unit", "action", "flight"]
    assert store.read("decisions", cols).to_pylist() == live.select(cols).to_pylist()
    tel.close()
    store.compact()
    assert not list_segments(home, "decisions")
    back = store.read("decisions")
    drop = ["writer", "ingest_ns", "seq"]
    key = lambda t: t.drop(drop).sort_by("decision_id").to_pylist()  # noqa: E731
    assert key(back) == key(live) == key(ref)
    with pytest.raises(SpecError, match="no column 'nope'"):
        store.read("decisions", ["nope"])


def test_conversion_of_sliced_and_null_contexts():
    t = pa.struct([pa.field("a", pa.int64()), pa.field("s", pa.string()), pa.field("f", pa.float64())])
    arr = pa.StructArray.from_arrays([pa.array([1, 2, 3]), pa.array(["x", "y", "z"]), pa.array([0.5, float("nan"), 1e300])],
                                     fields=list(t), mask=pa.array([False, True, False]))
    assert context_json(arr).to_pylist() == ['{"a":1,"s":"x","f":0.5}', None, '{"a":3,"s":"z","f":1e300}']
    assert context_json(arr.slice(1)).to_pylist() == [None, '{"a":3,"s":"z","f":1e300}']
    outcome_like = pa.table({"seq": [1]})
    assert to_decision_schema(outcome_like) is outcome_like

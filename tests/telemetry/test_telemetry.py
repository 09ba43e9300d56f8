"""Telemetry: the writer (buffer, group commit, watermark, sampling, privacy) and the store."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, F, Float, LogisticModel, Runtime, Str, System, Thresholds
from closedloop.runtime.decision import Decision
from closedloop.telemetry import (
    DECISION_SCHEMA,
    MemorySink,
    OutcomeError,
    Sampling,
    SegmentLog,
    Telemetry,
    TelemetryStore,
    read_segments,
)
from closedloop.telemetry.segments import encode_frame, list_segments
from support.waiting import eventually

KEY = b"k" * 32
DAY = 86_400 * 10**9
T0 = 20_718 * DAY  # 2026-09-22 00:00 UTC


def tiny(sensitive: bool = False) -> System:
    ctx = [
        Str("user", sensitive="hash" if sensitive else None),
        Str("email", default="", sensitive="drop" if sensitive else None),
        Str("note", default="", sensitive="hash" if sensitive else None),
        Float("x", default=0.0),
    ]
    feats = {f"f{i}": F.col("x") * float(i) for i in range(3)}
    return System("tiny", context=ctx, unit="user", features=feats, actions=["allow", "block"],
                  experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"))


def decision(i: int, unit: str = "u1", ts: int = T0, p: float = 0.3) -> Decision:
    return Decision(f"{i:032x}", "tiny", unit, ts, "v1", {"p": p}, "block" if p >= 0.5 else "allow", 1.0, "p < 0.5")


def log_some(tel: Telemetry, system: System, n: int, unit: str = "u1", start: int = 0, ts: int = T0, **ctx) -> list[str]:
    ids = []
    for i in range(start, start + n):
        c = system.schema.validate({"user": unit, "x": float(i), **ctx})
        d = decision(i, unit, ts + i, p=(i % 10) / 10)
        tel.log_decision(d, c, system.features.one(c))
        ids.append(d.decision_id)
    return ids


# -- the writer --------------------------------------------------------------------------------
def test_watermark_is_what_the_sink_made_durable():
    sink = MemorySink()
    tel = Telemetry(sink, system=tiny(), flush_interval_ms=10_000)
    assert tel.durable_watermark == -1
    log_some(tel, tiny(), 100)
    assert tel.durable_watermark == -1 and not sink.synced["decisions"]  # nothing committed yet
    assert tel.flush() == 99 == tel.durable_watermark
    t = sink.table("decisions")
    assert t.num_rows == 100 and t.column("seq").to_pylist() == list(range(100))
    assert t.schema.equals(DECISION_SCHEMA)
    seq = tel.log_outcome("00" * 16, kind="reported", event_ns=T0, source="user")
    assert seq == 100 and tel.flush() == 100
    assert sink.table("outcomes").num_rows == 1
    assert tel.stats()["logged"] == 100
    assert sink.feature_sets[tiny().features.fingerprint] == ["f0", "f1", "f2"]
    tel.close()
    assert sink.closed


def test_group_commit_happens_on_its_own_every_interval():
    sink = MemorySink()
    tel = Telemetry(sink, system=tiny(), flush_interval_ms=2)
    log_some(tel, tiny(), 10)
    eventually(lambda: tel.durable_watermark >= 9, step=0.002, what="a commit on its own")
    assert tel.durable_watermark == 9
    tel.close()


class BlockedSink(MemorySink):
    """A sink whose ``sync`` waits until released: a committer stuck in the sink (a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def sync(self) -> None:
        self.entered.set()
        self.release.wait(60)
        super().sync()


def test_a_full_buffer_drops_and_counts_without_blocking():
    # No wall-clock bound: the caller logs (and overflows the buffer) while the committer is
    # stuck in the sink, and returns before the sink is released — it never waited for it.
    sink = BlockedSink()
    tel = Telemetry(sink, system=tiny(), buffer_limit=50, flush_interval_ms=10_000)
    log_some(tel, tiny(), 10)
    flusher = threading.Thread(target=tel.flush, daemon=True)
    flusher.start()
    assert sink.entered.wait(30)  # the committer took the 10 and is in the sink
    caller = threading.Thread(target=log_some, args=(tel, tiny(), 80), kwargs={"start": 10}, daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive() and not sink.release.is_set()  # returned while the sink still blocks
    s = tel.stats()
    assert s["dropped_buffer_full"] == 30 and s["buffered"] == 50
    sink.release.set()
    flusher.join(30)
    assert tel.flush() == 59
    tel.close()


def test_sampling_probability_is_recorded_and_reweights():
    system = tiny()
    sink = MemorySink()
    tel = Telemetry(sink, system=system, sampling=Sampling(0.25, actions={"block": 1.0}), flush_interval_ms=10_000)
    log_some(tel, system, 4000)
    tel.flush()
    t = sink.table("decisions")
    p = dict(zip(t.column("action").to_pylist(), t.column("sample_prob").to_pylist(), strict=False))
    assert p == {"allow": 0.25, "block": 1.0}
    s = tel.stats()
    assert s["logged"] == t.num_rows and s["logged"] + s["sampled_out"] == 4000
    weighted = sum(1 / x for x in t.column("sample_prob").to_pylist())
    assert abs(weighted - 4000) / 4000 < 0.05
    tel.close()


def test_the_batch_path_keeps_the_same_decisions_as_the_single_path():
    system = tiny()
    rng = np.random.default_rng(0)
    bundle = Bundle.build(system, LogisticModel({"f0": 0.0, "f1": 1.0, "f2": 0.5}, -1.0, output="p"))
    rt = Runtime(system, bundle)
    x = rng.normal(size=500)
    batch = pa.table({"user": [f"u{i % 7}" for i in range(500)], "x": x})
    ids = [f"{i:032x}" for i in range(500)]
    db = rt.decide_batch(batch, decision_ids=ids)
    cols = system.schema.validate_batch(batch)
    X = system.features.batch(cols)
    sampling = Sampling(0.5, actions={"block": 0.8})
    one, many = MemorySink(), MemorySink()
    t1 = Telemetry(one, system=system, sampling=sampling, flush_interval_ms=10_000)
    t2 = Telemetry(many, system=system, sampling=sampling, flush_interval_ms=10_000)
    for i, d in enumerate(db):
        c = system.schema.validate({"user": batch["user"][i].as_py(), "x": float(x[i])})
        t1.log_decision(d, c, system.features.one(c))
    t2.log_batch(db, cols, X)
    t1.flush()
    t2.flush()
    a, b = one.table("decisions"), many.table("decisions")
    drop = ["ingest_ns", "writer"]
    assert a.drop(drop).to_pylist() == b.drop(drop).to_pylist()
    assert 0 < a.num_rows < 500
    t1.close()
    t2.close()


def test_outcomes_are_validated_field_by_field_and_deduplicate_by_content():
    tel = Telemetry(MemorySink(), system=tiny(), flush_interval_ms=10_000)
    cases = [
        (dict(kind="", event_ns=T0, source="s", decision_id="d"), "kind"),
        (dict(kind="k", event_ns=-1, source="s", decision_id="d"), "event_ns"),
        (dict(kind="k", event_ns=T0, source="s"), "decision_id"),
        (dict(kind="k", event_ns=T0, source="", unit="u"), "source"),
        (dict(kind="k", event_ns=T0, source="s", unit="u", value=float("nan")), "value"),
        (dict(kind="k", event_ns=T0, source="s", unit="u", value=True), "value"),
        (dict(kind="k", event_ns=1.5, source="s", unit="u"), "event_ns"),
        # the rules every boundary shares (records.outcome_field_problem): names, bounds, and no
        # control characters in a source (it is printed in abuse verdicts and alert lines)
        (dict(kind="9bad", event_ns=T0, source="s", unit="u"), "kind"),
        (dict(kind="k", event_ns=T0, source="s\nALERT forged", unit="u"), "source"),
        (dict(kind="k", event_ns=T0, source="s" * 201, unit="u"), "source"),
        (dict(kind="k", event_ns=T0, source="s", decision_id="d" * 129), "decision_id"),
        (dict(kind="k", event_ns=T0, source="s", unit="u", outcome_id=""), "outcome_id"),
    ]
    for kw, field in cases:
        with pytest.raises(OutcomeError, match=f"Outcome field '{field}' must be") as e:
            tel.log_outcome(**kw)
        assert e.value.field == field
    tel.log_outcome("d1", kind="k", event_ns=T0, source="s")
    tel.log_outcome("d1", kind="k", event_ns=T0, source="s")
    tel.log_outcome("d1", kind="k", event_ns=T0, source="s", outcome_id="mine")
    tel.flush()
    ids = tel.sink.table("outcomes").column("outcome_id").to_pylist()  # type: ignore[attr-defined]
    assert ids[0] == ids[1] and ids[2] == "mine"
    tel.close()


# -- the segment log -------------------------------------------------------------------------------
def test_segments_roll_and_a_torn_tail_is_counted_skipped_and_cut_on_reopen(tmp_path):
    system = tiny()
    tel = Telemetry(SegmentLog(tmp_path, writer="w1", segment_bytes=4096), system=system, flush_interval_ms=10_000)
    for k in range(5):
        log_some(tel, system, 20, start=20 * k)
        tel.flush()
    tel.close()
    segs = list_segments(tmp_path, "decisions")
    assert len(segs) >= 2 and all(p.name.startswith("w1-") for p in segs)
    # A crash in the middle of a write: half a frame at the end of the last segment.
    frame = encode_frame(read_segments(tmp_path, "decisions").slice(0, 3).to_batches()[0])
    with open(segs[-1], "ab") as f:
        f.write(frame[: len(frame) // 2])
    stats: dict[str, int] = {}
    t = read_segments(tmp_path, "decisions", stats=stats)
    assert t.num_rows == 100 and stats["torn_tails"] == 1
    tel = Telemetry(SegmentLog(tmp_path, writer="w1", segment_bytes=4096), system=system, flush_interval_ms=10_000)
    log_some(tel, system, 5, start=100)
    assert tel.flush() == 104  # numbering continues after the last durable record
    assert tel.stats()["torn_tails"] == 1
    tel.close()
    stats = {}
    t = read_segments(tmp_path, "decisions", stats=stats)
    assert sorted(t.column("seq").to_pylist()) == list(range(105)) and stats.get("torn_tails", 0) == 0


def test_a_sensitive_raw_value_is_nowhere_on_disk(tmp_path):
    system = tiny(sensitive=True)
    raw = {"user": "alice-7731@corp", "email": "alice.secret@mail.example", "note": "ssn-078-05-1120"}
    tel = Telemetry(SegmentLog(tmp_path), system=system, key=KEY, flush_interval_ms=1)
    log_some(tel, system, 50, unit=raw["user"], email=raw["email"], note=raw["note"])
    tel.log_outcome(unit=raw["user"], kind="reported", event_ns=T0, source="user")
    tel.close()
    store = TelemetryStore(tmp_path)
    before = store.read("decisions")
    half = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}  # segments, before compaction
    store.compact()
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for data in [*half.values(), *after.values()]:
        for v in raw.values():
            assert v.encode() not in data
    for t in (before, store.read("decisions"), store.read("outcomes")):
        assert not any(v in str(t.to_pylist()) for v in raw.values())
    ctx = msgspec.json.decode(before.column("context_json")[0].as_py())
    assert "email" not in ctx and ctx["note"] == tel.sanitizer.hash(raw["note"])
    assert set(before.column("unit").to_pylist()) == {tel.sanitizer.unit(raw["user"])}
    # features computed from the context are logged as features
    assert before.column("features")[3].as_py() == [0.0, 3.0, 6.0]


# -- the store -------------------------------------------------------------------------------------
def write(home: Path, n: int, unit: str = "u1", ts: int = T0, start: int = 0, outcomes: int = 0) -> Telemetry:
    system = tiny()
    tel = Telemetry(SegmentLog(home), system=system, flush_interval_ms=10_000)
    for i in range(start, start + n):
        c = system.schema.validate({"user": unit, "x": float(i)})
        tel.log_decision(decision(i, unit, ts + i * DAY // 4, p=(i % 10) / 10), c, system.features.one(c))
    for i in range(start, start + outcomes):
        tel.log_outcome(f"{i:032x}", kind="reported" if i % 2 else "clicked", event_ns=ts + i * DAY // 4 + 1, source="user")
    tel.close()
    return tel


def test_compaction_partitions_by_day_and_is_idempotent(tmp_path):
    write(tmp_path, 40, outcomes=10)
    store = TelemetryStore(tmp_path)
    before = store.read("decisions")
    r = store.compact()
    assert r["decisions"] == 40 and r["outcomes"] == 10 and r["segments_deleted"] == 2
    assert store.compact()["decisions"] == 0
    files = store.decision_files()
    days = sorted({f.parent.name for f in files})
    assert len(days) == 10 and days[0] == "day=2026-09-22"
    for f in files:
        t = pq.read_table(f)
        day = f.parent.name[4:]
        assert {time.strftime("%Y-%m-%d", time.gmtime(x // 10**9)) for x in t.column("timestamp_ns").to_pylist()} == {day}
    after = store.read("decisions")
    assert sorted(after.column("seq").to_pylist()) == sorted(before.column("seq").to_pylist())
    # more data from another writer, compaction again: nothing doubles
    write(tmp_path, 10, unit="u2", start=100)
    store.compact()
    store.compact()
    t = store.read("decisions")
    assert t.num_rows == 50 and len(set(t.column("decision_id").to_pylist())) == 50


def test_a_compaction_that_crashed_before_its_commit_is_rolled_back(tmp_path):
    write(tmp_path, 20)
    store = TelemetryStore(tmp_path)
    # As if a compaction died after renaming one of two Parquet files into place:
    state = store._load()
    d = tmp_path / "telemetry/parquet/decisions/day=2026-09-22"
    d.mkdir(parents=True)
    pq.write_table(store.read("decisions"), d / "part-crashed.parquet")
    state["pending"] = {"files": ["parquet/decisions/day=2026-09-22/part-crashed.parquet",
                                  "parquet/decisions/day=2026-09-23/part-missing.parquet"], "offsets": {}}
    store._save(state)
    store.compact()
    t = store.read("decisions")
    assert t.num_rows == 20 and not (d / "part-crashed.parquet").exists()


def test_forget_removes_a_units_decisions_and_outcomes_everywhere(tmp_path):
    write(tmp_path, 20, unit="gone", outcomes=20)
    store = TelemetryStore(tmp_path)
    store.compact()
    write(tmp_path, 20, unit="stays", start=100, outcomes=0)  # still in segments
    tel = write(tmp_path, 5, unit="gone", start=200)  # not compacted yet either
    r = store.forget("gone")
    assert r["decisions"] == 25 and r["outcomes"] == 20
    d, o = store.read("decisions"), store.read("outcomes")
    assert set(d.column("unit").to_pylist()) == {"stays"} and d.num_rows == 20 and o.num_rows == 0
    for f in tmp_path.rglob("*.parquet"):
        assert "gone" not in str(pq.read_table(f).column("unit").to_pylist())
    assert not list_segments(tmp_path, "decisions")
    # with a hashed unit: forget by the raw unit and the sanitizer
    assert tel is not None
    system = tiny(sensitive=True)
    home = tmp_path / "h2"
    t2 = Telemetry(SegmentLog(home), system=system, key=KEY, flush_interval_ms=1)
    log_some(t2, system, 10, unit="alice")
    log_some(t2, system, 10, unit="bob", start=10)
    t2.close()
    s2 = TelemetryStore(home)
    assert s2.forget("alice", sanitizer=t2.sanitizer)["decisions"] == 10
    assert set(s2.read("decisions").column("unit").to_pylist()) == {t2.sanitizer.unit("bob")}


def test_retention_drops_data_older_than_n_days(tmp_path):
    write(tmp_path, 40, outcomes=40)  # 4 per day over 10 days
    store = TelemetryStore(tmp_path)
    now = T0 + 10 * DAY
    r = store.apply_retention(3, now)
    d = store.read("decisions")
    assert r["decisions"] == 28 and d.num_rows == 12
    assert min(d.column("timestamp_ns").to_pylist()) >= now - 3 * DAY
    assert min(store.read("outcomes").column("event_ns").to_pylist()) >= now - 3 * DAY


def test_stats_count_by_day_version_action_kind_and_the_open_window_backlog(tmp_path):
    write(tmp_path, 40, outcomes=10)
    store = TelemetryStore(tmp_path)
    store.compact()
    write(tmp_path, 4, start=100, ts=T0)  # uncompacted ones count too
    s = store.stats(window_ns=7 * DAY, now_ns=T0 + 10 * DAY)
    assert s["decisions"] == 44 and s["outcomes"] == 10
    assert sum(r["n"] for r in s["decisions_by_day"]) == 44 and s["decisions_by_day"][0]["day"] == "2026-09-22"
    assert s["decisions_by_bundle_version"] == [{"bundle_version": "v1", "n": 44}]
    assert {r["action"] for r in s["decisions_by_action"]} == {"allow", "block"}
    assert {r["kind"]: r["n"] for r in s["outcomes_by_kind"]} == {"clicked": 5, "reported": 5}
    # windows still open: decisions in the last 7 days before now
    expected = sum(1 for i in range(40) if T0 + i * DAY // 4 + 7 * DAY > T0 + 10 * DAY) + sum(
        1 for i in range(100, 104) if T0 + i * DAY // 4 + 7 * DAY > T0 + 10 * DAY)
    assert s["backlog_open_windows"] == expected
    assert s["parquet_files"]["decisions"] == 10 and s["segments"]["decisions"] == 1


def test_feature_names_are_written_once_per_fingerprint(tmp_path):
    write(tmp_path, 1)
    system = tiny()
    p = tmp_path / "telemetry" / "feature_sets" / f"{system.features.fingerprint}.json"
    assert msgspec.json.decode(p.read_bytes())["names"] == ["f0", "f1", "f2"]
    assert os.listdir(p.parent) == [p.name]

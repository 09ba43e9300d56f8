"""The replica's sink on a distributed log (TransportSink), on the in-memory log; with a real
nats-server: tests/service/test_service_jetstream.py.

- a commit is durable once the log acknowledged it (its outcomes confirmed for a 202);
- an outage: the commit fails (outcomes not confirmed), its records are spilled and re-published
  after recovery in order, under the same message ids, and the spill files are deleted;
- the spill is bounded: the oldest decisions are dropped first, counted; outcomes are kept;
- a spill left by a crashed process is re-published by the next one (not one still alive).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from closedloop import Bundle, F, Float, LogisticModel, Runtime, Str, System, Thresholds
from closedloop.errors import SpecError
from closedloop.runtime.decision import Decision
from closedloop.service.durability import AckingSink
from closedloop.telemetry import Telemetry
from closedloop.telemetry.segments import list_segments, scan_segment
from closedloop.telemetry.sink_transport import TransportSink, spill_root
from closedloop.telemetry.transport import MemoryTransport, Message, Outgoing

FORK = mp.get_context("fork")


def tiny() -> System:
    return System("tiny", context=[Str("user"), Float("x", default=0.0)], unit="user",
                  features={f"f{i}": F.col("x") * float(i) for i in range(4)}, actions=["allow", "block"],
                  experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"))


class RecordingLog(MemoryTransport):
    """The in-memory log, remembering every msg id it was asked to publish (acknowledged or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempted: list[str] = []

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 5.0) -> None:
        self.attempted.extend(m.msg_id for m in messages)
        super().publish(messages, timeout=timeout)


def _log_decisions(tel: Telemetry, system: System, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        c = system.schema.validate({"user": f"u{i}", "x": float(i % 100)})
        d = Decision(uuid.uuid4().hex, "tiny", f"u{i}", time.time_ns(), "v1", {"p": 0.3}, "allow", 1.0, "p < 0.5")
        tel.log_decision(d, c, system.features.one(c))


def _outcome(tel: Telemetry, i: int) -> int:
    seq = tel.log_outcome(unit=f"u{i}", kind="bad", event_ns=time.time_ns(), source="test", outcome_id=f"o{i}")
    assert seq is not None
    return seq


def _all(log: MemoryTransport, stream: str, group: str = "reader") -> list[Message]:
    sub = log.subscribe("tiny", stream, group)
    out: list[Message] = []
    while got := sub.fetch(1000, timeout=0.05):
        out.extend(got)
    return out


def _records(msgs: list[Message], column: str) -> list:
    return [v for m in msgs for v in scan_segment(bytes(m.data)).frames[0].batch().column(column).to_pylist()]


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def _telemetry(log: MemoryTransport, home: Path, **kw) -> tuple[Telemetry, AckingSink, TransportSink]:
    sink = TransportSink(log, home, system="tiny", retry_interval=kw.pop("retry_interval", 0.05), **kw)
    acking = AckingSink(sink)
    return Telemetry(acking, system=tiny(), flush_interval_ms=2).start(), acking, sink


def test_a_commit_is_durable_once_the_log_acknowledged_it(tmp_path):
    log = MemoryTransport()
    tel, acking, sink = _telemetry(log, tmp_path)
    system = tiny()
    _log_decisions(tel, system, 30)
    seqs = [_outcome(tel, i) for i in range(5)]
    tel.flush(timeout=10)
    assert acking.confirmed(seqs) and tel.healthy
    decisions, outcomes = _all(log, "decisions"), _all(log, "outcomes")
    assert sorted(_records(decisions, "unit")) == sorted(f"u{i}" for i in range(30))
    assert _records(outcomes, "outcome_id") == [f"o{i}" for i in range(5)]
    m = outcomes[0]
    assert m.msg_id == f"{sink.writer}:outcomes:{m.headers['first_seq']}-{m.headers['last_seq']}"
    assert m.headers["writer"] == sink.writer and m.headers["rows"] == str(len(_records([m], "seq")))
    fs = _all(log, "feature_sets")
    assert [x.msg_id for x in fs] == [f"fs:{system.features.fingerprint}"]
    st = sink.stats()
    assert st["acknowledged"] == 35 and st["spilled"] == 0 and st["reachable"] and sink.problem() is None
    tel.close()
    assert not (spill_root(tmp_path) / sink.writer).exists()  # nothing waits: the folder is gone


def test_an_outage_fails_the_commit_spills_it_and_republishes_it_in_order_with_the_same_ids(tmp_path):
    log = RecordingLog()
    tel, acking, sink = _telemetry(log, tmp_path)
    system = tiny()
    _log_decisions(tel, system, 5)
    tel.flush(timeout=10)
    log.available = False
    before = len(log.attempted)
    seqs = []
    for i in range(6):
        _log_decisions(tel, system, 10, start=100 + 10 * i)
        seqs.append(_outcome(tel, i))
        tel.flush(timeout=10)
    assert not acking.confirmed(seqs) and not tel.healthy  # not durable: no 202 for these outcomes
    assert "TransportUnavailable" in tel.stats()["last_error"] and len(sink.last_error or "") < 300  # no error nesting
    st = sink.stats()
    assert st["spilled"] == 66 and st["spill_backlog"] == 66 and not st["reachable"] and st["unavailable"] >= 1
    assert "unreachable" in (sink.problem() or "")
    spill = spill_root(tmp_path) / sink.writer
    assert list_segments(spill, "decisions") and list_segments(spill, "outcomes")
    tried = {m for m in log.attempted[before:] if ":decisions:" in m or ":outcomes:" in m}
    assert tried  # the first commit of the outage tried the log
    log.available = True
    _wait(lambda: sink.stats()["spill_backlog"] == 0)
    later = _outcome(tel, 99)  # after the backlog: in order behind it
    tel.flush(timeout=10)
    assert acking.confirmed([later]) and tel.healthy
    decisions, outcomes = _all(log, "decisions"), _all(log, "outcomes")
    assert _records(outcomes, "outcome_id") == [*(f"o{i}" for i in range(6)), "o99"]
    assert len(_records(decisions, "unit")) == 65
    for stream in (decisions, outcomes):
        firsts = [int(m.headers["first_seq"]) for m in stream]
        assert firsts == sorted(firsts)
    assert tried <= {m.msg_id for m in decisions + outcomes}  # re-published under the ids first tried
    for m in decisions + outcomes:
        seq = _records([m], "seq")
        assert m.msg_id == f"{sink.writer}:{m.stream}:{min(seq)}-{max(seq)}" and m.headers["rows"] == str(len(seq))
    assert not list_segments(spill, "decisions") and not list_segments(spill, "outcomes")
    st = sink.stats()
    assert st["republished"] == 66 and st["reachable"] and sink.problem() is None
    tel.close()


def test_the_spill_is_bounded_dropping_the_oldest_decisions_first_and_counting_them(tmp_path):
    log = MemoryTransport()
    tel, acking, sink = _telemetry(log, tmp_path, spill_bytes=40_000, retry_interval=60)
    system = tiny()
    log.available = False
    seqs = [_outcome(tel, i) for i in range(3)]
    tel.flush(timeout=10)
    for i in range(40):
        _log_decisions(tel, system, 20, start=20 * i)
        tel.flush(timeout=10)
    st = sink.stats()
    assert st["dropped"]["decisions"] > 0 and st["dropped"]["outcomes"] == 0
    assert st["spill_bytes"] <= 40_000 + 40_000 // 8 + 16_000  # the bound, within a segment and a frame
    assert st["spill_backlog"] == 3 + 800 - st["dropped"]["decisions"]
    log.available = True
    sink._last_failure = None  # noqa: SLF001 - retry now rather than in a minute
    _log_decisions(tel, system, 1, start=5000)
    tel.flush(timeout=10)
    assert _records(_all(log, "outcomes"), "outcome_id") == ["o0", "o1", "o2"]
    units = _records(_all(log, "decisions"), "unit")
    assert len(units) == 801 - st["dropped"]["decisions"]
    assert "u799" in units and "u0" not in units  # the oldest went first
    assert not acking.confirmed(seqs)
    tel.close()


def _crashing_child(home: str) -> None:
    log = MemoryTransport()
    log.available = False
    tel, _, sink = _telemetry(log, Path(home), retry_interval=60)
    _log_decisions(tel, tiny(), 7)
    _outcome(tel, 1)
    tel.flush(timeout=10)
    os._exit(3 if sink.stats()["spilled"] == 8 else 4)  # a crash: no close, nothing cleaned up


def test_a_spill_left_by_a_crash_is_republished_by_the_next_process_and_a_live_one_is_not(tmp_path):
    live_log = MemoryTransport()
    live_log.available = False
    live_tel, _, live = _telemetry(live_log, tmp_path, retry_interval=60)
    _outcome(live_tel, 50)
    live_tel.flush(timeout=10)
    assert live.stats()["spilled"] == 1
    child = FORK.Process(target=_crashing_child, args=(str(tmp_path),))
    child.start()
    child.join(30)
    assert child.exitcode == 3
    dead = [p for p in spill_root(tmp_path).iterdir() if p.name != live.writer]
    assert len(dead) == 1 and list_segments(dead[0], "decisions")
    log = MemoryTransport()
    tel, _, sink = _telemetry(log, tmp_path)
    _wait(lambda: not dead[0].exists())
    outcomes = _all(log, "outcomes")
    assert _records(outcomes, "outcome_id") == ["o1"]  # the crashed writer's, not the live one's o50
    assert outcomes[0].msg_id.startswith(f"{dead[0].name}:outcomes:")
    assert len(_records(_all(log, "decisions"), "unit")) == 7
    assert sink.stats()["republished"] == 8 and list_segments(spill_root(tmp_path) / live.writer, "outcomes")
    tel.close()
    live_tel.close()  # the log still down: its spill stays for the next process
    assert list_segments(spill_root(tmp_path) / live.writer, "outcomes")


def test_settings_are_checked_with_named_errors(tmp_path):
    log = MemoryTransport()
    with pytest.raises(SpecError, match="'system' parameter of TransportSink"):
        TransportSink(log, tmp_path, system="a.b")
    with pytest.raises(SpecError, match="'spill_bytes' parameter of TransportSink"):
        TransportSink(log, tmp_path, system="tiny", spill_bytes=10)
    with pytest.raises(SpecError, match="'transport' parameter"):
        TransportSink(object(), tmp_path, system="tiny")  # type: ignore[arg-type]


def test_a_large_batch_is_split_into_messages_under_the_limit(tmp_path):
    log = MemoryTransport()
    sink = TransportSink(log, tmp_path, system="tiny", max_message_bytes=8192)
    sink.open()
    n = 3000
    batch = pa.RecordBatch.from_pydict({"seq": list(range(n))})
    with pytest.raises(SpecError):  # not an outcome batch
        sink.append("outcomes", batch)
    system = tiny()
    tel = Telemetry(MemorySinkTap(), system=system, flush_interval_ms=2).start()
    _log_decisions(tel, system, 20)  # single decisions: their contexts as JSON
    bundle = Bundle.build(system, LogisticModel({f: 0.1 for f in system.features.names}, 0.0, output="p"))
    Runtime(system, bundle, telemetry=tel).decide_batch({"user": [f"b{i}" for i in range(600)], "x": [1.0] * 600})
    tel.close()  # a batch: the compact form (typed contexts, run-end encoded constants)
    for b in tel.sink.got:
        sink.append("decisions", b)
    sink.sync()
    msgs = _all(log, "decisions")
    assert len(msgs) > 2 and all(len(m.data) <= 8192 or int(m.headers["rows"]) == 1 for m in msgs)
    assert sorted(_records(msgs, "seq")) == list(range(620))
    assert sorted(_records(msgs, "unit")) == sorted([f"u{i}" for i in range(20)] + [f"b{i}" for i in range(600)])
    sink.close()


class MemorySinkTap(AckingSink):
    """A sink keeping the batches a Telemetry appends, as appended (the compact form included)."""

    def __init__(self) -> None:
        from closedloop.telemetry import MemorySink

        super().__init__(MemorySink())
        self.got: list[pa.RecordBatch | pa.Table] = []

    def append(self, stream, batch) -> None:
        super().append(stream, batch)
        self.got.append(batch)

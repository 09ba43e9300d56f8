"""Telemetry reliability with real processes, signals and OS errors (no mocks).

- crash safety: a child logs continuously and reports its durable watermark through a pipe; it
  is SIGKILLed at random moments; everything up to the last reported watermark must be readable,
  torn tails are detected, counted and skipped, and the restarted writer continues;
- concurrency: threads and processes logging at once (with compaction running) lose nothing and
  corrupt nothing;
- disk full: RLIMIT_FSIZE makes the writer's writes fail with a real EFBIG; the runtime keeps
  deciding, the failure is reported and the unlogged decisions are counted.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import resource
import select
import signal
import struct
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from closedloop import Bundle, F, Float, LogisticModel, Runtime, Str, System, Thresholds
from closedloop.runtime.decision import Decision
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore, read_segments
from closedloop.telemetry.segments import encode_frame, list_segments

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

FORK = mp.get_context("fork")
MSG = struct.Struct("<qqq")


def tiny() -> System:
    return System("tiny", context=[Str("user"), Float("x", default=0.0)], unit="user",
                  features={f"f{i}": F.col("x") * float(i) for i in range(4)}, actions=["allow", "block"],
                  experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"))


def make(system: System, i: int, unit: str) -> tuple[Decision, object, tuple[float, ...]]:
    c = system.schema.validate({"user": unit, "x": float(i % 100)})
    d = Decision(uuid.uuid4().hex, "tiny", unit, time.time_ns(), "v1", {"p": 0.3}, "allow", 1.0, "p < 0.5")
    return d, c, system.features.one(c)


# -- crash safety ----------------------------------------------------------------------------------
def _crash_child(home: str, writer: str, wfd: int) -> None:
    system = tiny()
    tel = Telemetry(SegmentLog(home, writer=writer, segment_bytes=64 << 10), system=system, flush_interval_ms=2)
    tel.start()
    os.write(wfd, MSG.pack(-2, tel.durable_watermark, tel.stats()["torn_tails"]))
    last, i = None, 0
    while True:
        for _ in range(25):
            tel.log_decision(*make(system, i, f"u{i % 13}"))
            i += 1
        wm = tel.durable_watermark
        if wm != last:
            os.write(wfd, MSG.pack(wm, 0, 0))
            last = wm
        time.sleep(0.0005)


def _messages(rfd: int, until: float, first: bool = False) -> list[tuple[int, int, int]]:
    out, buf = [], b""
    while not (first and out):
        left = until - time.monotonic()
        r, _, _ = select.select([rfd], [], [], max(left, 0))
        if not r:
            break
        chunk = os.read(rfd, MSG.size * 2048)  # whole messages (each write is atomic)
        if not chunk:
            break
        buf += chunk
        if first and len(buf) < MSG.size:
            continue
        while len(buf) >= MSG.size:
            out.append(MSG.unpack(buf[: MSG.size]))
            buf = buf[MSG.size:]
    return out


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(7)
    writer = "crashy"
    acked = -1
    torn_made = torn_seen = 0
    t_end = time.monotonic() + 30
    kills = 0
    while kills < 20 or (kills < 40 and time.monotonic() < t_end - 10):
        rfd, wfd = os.pipe()
        p = FORK.Process(target=_crash_child, args=(str(tmp_path), writer, wfd), daemon=True)
        p.start()
        os.close(wfd)
        first = _messages(rfd, time.monotonic() + 10, first=True)
        assert first and first[0][0] == -2, "the child did not start"
        _, start_wm, torn_cut = first[0]
        # a restarted writer continues after everything that was durable, and cut the torn tail
        assert start_wm >= acked
        torn_seen += torn_cut
        msgs = first[1:] + _messages(rfd, time.monotonic() + rng.uniform(0.02, 0.25))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        msgs += _messages(rfd, time.monotonic() + 0.05)  # what it reported before dying
        os.close(rfd)
        kills += 1
        wms = [m[0] for m in msgs if m[0] >= 0]
        if wms:
            acked = max(acked, max(wms))
        stats: dict[str, int] = {}
        t = read_segments(tmp_path, "decisions", stats=stats)
        seqs = t.column("seq").to_numpy()
        assert len(np.unique(seqs)) == len(seqs), "a sequence number was written twice"
        assert set(range(acked + 1)) <= set(seqs.tolist()), f"lost acknowledged records (watermark {acked})"
        if kills % 2:
            # A kill in the middle of a write leaves a partial frame; make one for certain.
            seg = list_segments(tmp_path, "decisions")[-1]
            frame = encode_frame(t.slice(0, 2).to_batches()[0])
            with open(seg, "ab") as f:
                f.write(frame[: rng.randrange(1, len(frame))])
            torn_made += 1
            stats = {}
            t2 = read_segments(tmp_path, "decisions", stats=stats)
            assert stats["torn_tails"] >= 1 and t2.num_rows == t.num_rows  # counted and skipped
    assert kills >= 20 and acked > 0
    assert torn_seen >= torn_made - 1  # each restart cut the torn tail it found (the last one is unread)
    # one more restart cuts the last tail; then everything compacts cleanly
    tel = Telemetry(SegmentLog(tmp_path, writer=writer), system=tiny(), flush_interval_ms=2)
    tel.start()
    tel.close()
    store = TelemetryStore(tmp_path)
    before = store.read("decisions").num_rows
    store.compact()
    t = store.read("decisions")
    assert t.num_rows == before and set(range(acked + 1)) <= set(t.column("seq").to_pylist())
    assert store.stats()["torn_tails"] == 0


# -- concurrency -----------------------------------------------------------------------------------
N = 2000


def _log_many(tel: Telemetry, system: System, tag: str, n: int) -> None:
    for i in range(n):
        d, c, x = make(system, i, f"{tag}-{i % 5}")
        tel.log_decision(d, c, x)
        if i % 4 == 0:
            tel.log_outcome(d.decision_id, kind="clicked", event_ns=d.timestamp_ns + 1, source=tag)


def _process_writer(home: str, tag: str) -> None:
    system = tiny()
    tel = Telemetry(SegmentLog(home, segment_bytes=32 << 10), system=system, flush_interval_ms=1)
    threads = [threading.Thread(target=_log_many, args=(tel, system, f"{tag}t{k}", N)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tel.close()
    os._exit(0 if tel.stats()["logged"] == 2 * N and tel.healthy else 3)


def test_threads_and_processes_logging_at_once_lose_and_corrupt_nothing(tmp_path):
    procs = [FORK.Process(target=_process_writer, args=(str(tmp_path), f"p{k}")) for k in range(3)]
    for p in procs:
        p.start()
    system = tiny()
    tel = Telemetry(SegmentLog(tmp_path, segment_bytes=32 << 10), system=system, flush_interval_ms=1)
    threads = [threading.Thread(target=_log_many, args=(tel, system, f"main{k}", N)) for k in range(4)]
    for th in threads:
        th.start()
    store = TelemetryStore(tmp_path)
    compactions = 0
    # Compaction runs while everyone writes (at least twice, however fast the writers finish).
    while any(p.is_alive() for p in procs) or any(th.is_alive() for th in threads) or compactions < 2:
        store.compact()
        compactions += 1
        time.sleep(0.01)
    for th in threads:
        th.join()
    tel.close()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    store.compact()
    d, o = store.read("decisions"), store.read("outcomes")
    total = (4 + 3 * 2) * N
    assert d.num_rows == total and len(set(d.column("decision_id").to_pylist())) == total
    assert o.num_rows == total // 4
    assert set(o.column("decision_id").to_pylist()) <= set(d.column("decision_id").to_pylist())
    writers = d.column("writer").to_pylist()
    assert len(set(writers)) == 4
    pairs = list(zip(writers, d.column("seq").to_pylist(), strict=True)) + list(
        zip(o.column("writer").to_pylist(), o.column("seq").to_pylist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # no (writer, seq) twice
    for w in set(writers):  # each writer's numbering is complete: nothing in between was lost
        s = sorted(q for ww, q in pairs if ww == w)
        assert s == list(range(len(s)))
    assert compactions > 1 and not list_segments(tmp_path, "decisions")
    assert store.stats()["torn_tails"] == 0


# -- disk full -------------------------------------------------------------------------------------
def _disk_full_child(home: str, wfd: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    system = tiny()
    rt = Runtime(system, Bundle.build(system, LogisticModel({"f0": 0.0, "f1": 1.0, "f2": 0.0, "f3": 0.1}, -1.0, output="p")))
    tel = Telemetry(SegmentLog(home), system=system, flush_interval_ms=1)
    decided = 0
    for _ in range(60):
        for i in range(100):
            ctx = {"user": f"u{i % 9}", "x": float(i % 3)}
            d = rt.decide(ctx)
            c = system.schema.validate(ctx)
            tel.log_decision(d, c, system.features.one(c))
            decided += 1
        tel.flush()
    s = tel.stats()
    tel.close()
    s["decided"] = decided
    os.write(wfd, json.dumps(s).encode())
    os._exit(0)


def test_disk_full_is_reported_and_counted_while_decisions_go_on(tmp_path):
    rfd, wfd = os.pipe()
    p = FORK.Process(target=_disk_full_child, args=(str(tmp_path), wfd))
    p.start()
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 1 << 16):
        data += chunk
    os.close(rfd)
    p.join()
    assert p.exitcode == 0
    s = json.loads(data)
    assert s["decided"] == 6000  # the runtime kept deciding
    assert s["healthy"] is False
    assert "EFBIG" in s["last_error"] and "File too large" in s["last_error"], s["last_error"]
    assert s["unlogged_errors"] > 0 and s["logged"] > 0
    assert s["logged"] + s["unlogged_errors"] == s["decided"]
    # what was written is intact: the failed partial frames were cut off
    stats: dict[str, int] = {}
    t = read_segments(Path(tmp_path), "decisions", stats=stats)
    assert t.num_rows == s["logged"] and stats.get("torn_tails", 0) == 0

"""``bench/cluster.py --jetstream``: the cluster with telemetry through NATS JetStream and two collectors.

1. The same N replicas and load as the embedded-sink run, every replica publishing to one
   ``nats-server`` (``--telemetry-url``), two ``closedloop telemetry collect`` processes writing one
   lake: sustained decisions/s and acknowledged outcomes/s; the collectors' consumer group's pending
   messages (not yet acknowledged by a collector) polled every 0.2 s during the load (its max); the
   lag: seconds from the load's end until the group has acknowledged every message (a collector
   acknowledges only once the records are in the lake), then checked — every acknowledged outcome
   is in the lake.
2. The JetStream sink against raw nats-py publish-with-ack, on the same server in the same run, the
   same messages: ``--commits`` commits of 100 decision records each. The sink
   (:class:`~closedloop.telemetry.sink_transport.TransportSink`): ``append`` + ``sync`` per commit
   (it encodes the frame and waits for JetStream's acknowledgement). Raw: ``await js.publish`` of
   the same encoded frames with the same headers, awaiting every acknowledgement. Three
   alternating rounds each (a new writer per round, so no message is a duplicate); the medians'
   ratio (sink / raw, records/s) must be ≥ 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import nats
import pyarrow as pa

from closedloop.runtime.decision import Decision
from closedloop.telemetry import MemorySink, Telemetry
from closedloop.telemetry.jetstream import JetStreamTransport, stream_name, subject
from closedloop.telemetry.sink_transport import TransportSink, message_for
from closedloop.telemetry.transport import Outgoing
from support.cluster import Cluster
from support.cluster_load import Load, LoadResult
from support.cluster_system import context, system

__all__ = ["jetstream_run", "sink_vs_raw"]

Measure = Callable[[Cluster, list[str], list[int], float, int, str], tuple[LoadResult, dict[str, Any]]]
Show = Callable[[str, dict[str, Any]], None]
PER_COMMIT = 100
ROUNDS = 3
#: The stream of the comparison: not the cluster's system, so the collectors do not read it.
BENCH_SYSTEM = "bench_publish"


def _poll_pending(c: Cluster, stop: threading.Event, seen: list[int]) -> None:
    js = c.jetstream
    while js is not None and not stop.wait(0.2):
        n = js.pending()
        if n is not None:
            seen.append(n)


def jetstream_run(args: argparse.Namespace, seconds: float, warm: float, measure: Measure, show: Show) -> dict[str, Any]:
    """Part 1 (the module doc): figures, pending, lag, missing; then part 2 on the same server.
    ``measure`` and ``show`` are bench/cluster.py's."""
    t0 = time.monotonic()
    with Cluster(args.replicas, telemetry="jetstream", serve_args=("--guard-interval", "0")) as c:
        js = c.jetstream
        if js is None:
            raise RuntimeError("the cluster has no JetStream")
        print(f"JetStream cluster up in {time.monotonic() - t0:.1f} s: {args.replicas} replicas, NATS, two collectors")
        pids = [r.proc.pid for r in c.replicas if r.proc is not None]
        Load(c.bases, c.tokens["app"], threads=args.threads, tag="jswarm").run(warm)
        js.wait_drained(60)
        stop, seen = threading.Event(), [0]
        poller = threading.Thread(target=_poll_pending, args=(c, stop, seen), daemon=True)
        poller.start()
        try:
            res, fig = measure(c, c.bases, pids, seconds, args.threads, "js")
        finally:
            stop.set()
            poller.join(10)
        t_end = time.monotonic()
        js.wait_drained(120)
        lag = time.monotonic() - t_end
        stored = set(js.ids()["outcomes"])
        missing = sum(1 for _, o, _ in res.acked if o not in stored)
        show(f"{args.replicas} replicas, telemetry through JetStream", fig)
        print(f"collectors: max {max(seen)} messages pending during the load (polled every 0.2 s, {len(seen) - 1} polls); "
              f"lag {lag:.2f} s from the load's end until every message was in the lake; acknowledged outcomes missing: {missing}")
        sink = sink_vs_raw(js.url, args.commits)
    return {**fig, "max_pending": max(seen), "lag_s": round(lag, 3), "acked_missing": missing, "sink_vs_raw": sink}


def commits(n: int) -> list[pa.Table]:
    """``n`` commits of ``PER_COMMIT`` decision records of the cluster's system (distinct seqs)."""
    mem = MemorySink("bench")
    tel = Telemetry(mem, system=system, flush_interval_ms=60_000)
    now = time.time_ns()
    for i in range(n * PER_COMMIT):
        unit = f"u{i % 97}"
        d = Decision(f"bench-{i:08d}", system.name, unit, now + i, "v1", {"phish": 0.3}, "warn", 1.0, "phish < 0.99")
        c = system.schema.validate(context(unit, i))
        tel.log_decision(d, c, system.features.one(c))
    tel.close()
    t = mem.table("decisions")
    # each commit its own buffers, as the writer's commits are: a slice of one big table would be
    # serialized with its parents' whole child buffers (about twice the bytes: 166 kB instead of 79 kB)
    return [t.take(pa.array(range(k * PER_COMMIT, (k + 1) * PER_COMMIT))) for k in range(n)]


def _sink_round(url: str, batches: list[pa.Table]) -> float:
    """Records/s of TransportSink append + sync, one commit at a time (the first commit warms up)."""
    with tempfile.TemporaryDirectory(prefix="closedloop-bench-sink-") as home:
        sink = TransportSink(JetStreamTransport(url), home, system=BENCH_SYSTEM)
        sink.open()
        try:
            sink.append("decisions", batches[0])
            sink.sync()
            t0 = time.perf_counter()
            for b in batches[1:]:
                sink.append("decisions", b)
                sink.sync()
            dt = time.perf_counter() - t0
        finally:
            sink.close()
    return (len(batches) - 1) * PER_COMMIT / dt


async def _raw_round(url: str, msgs: list[Outgoing]) -> float:
    """Records/s of nats-py ``js.publish`` of the same frames and headers, every ack awaited."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        subj, name = subject(BENCH_SYSTEM, "decisions"), stream_name(BENCH_SYSTEM)

        async def one(m: Outgoing) -> None:
            await js.publish(subj, m.data, stream=name, headers={**m.headers, "Nats-Msg-Id": f"decisions:{m.msg_id}"})

        await one(msgs[0])
        t0 = time.perf_counter()
        for m in msgs[1:]:
            await one(m)
        dt = time.perf_counter() - t0
    finally:
        await nc.close()
    return (len(msgs) - 1) * PER_COMMIT / dt


def sink_vs_raw(url: str, n: int) -> dict[str, Any]:
    """Part 2 (the module doc)."""
    batches = commits(n)
    sink_rates, raw_rates = [], []
    for r in range(ROUNDS):
        sink_rates.append(_sink_round(url, batches))  # its first round also creates the stream
        msgs = [message_for(BENCH_SYSTEM, f"raw-{r}-{time.time_ns()}", "decisions", b) for b in batches]
        raw_rates.append(asyncio.run(_raw_round(url, msgs)))
    sink, raw = statistics.median(sink_rates), statistics.median(raw_rates)
    ratio = round(sink / raw, 2)
    print(f"JetStream sink vs raw nats-py publish-with-ack, {n} commits of {PER_COMMIT} decisions, {ROUNDS} rounds: "
          f"sink {sink:.0f} records/s ({sink / PER_COMMIT:.0f} commits/s), raw {raw:.0f} records/s ({raw / PER_COMMIT:.0f} "
          f"publishes/s); ratio {ratio} (must be >= 0.5); rounds sink {[round(x) for x in sink_rates]}, "
          f"raw {[round(x) for x in raw_rates]}")
    return {"commits": n, "records_per_commit": PER_COMMIT, "sink_records_per_s": round(sink, 1),
            "raw_records_per_s": round(raw, 1), "ratio": ratio}

"""Benchmark: three ``closedloop serve`` replicas on one PostgreSQL registry and one Redis, against one
replica measured in the same run.

Run it as ``nice .venv/bin/python bench/cluster.py`` (``--seconds S`` per measured run, ``--threads T``
load threads, ``--replicas N``; ``--quick`` for a short run). It starts the cluster of
tests/support/cluster.py (each replica its own process and project home; caps and outcome rate limits
on Redis; telemetry in each replica's embedded sink, every outcome answered 202 only once durable),
warms it up, then drives the bounded load of tests/support/cluster_load.py — ``T`` closed-loop
httpx threads, each deciding one context on replica ``k`` and reporting an outcome of that
decision to replica ``k + 1`` — for ``S`` seconds across every replica, then the same load for
``S`` seconds against replica 0 alone (the in-run baseline). Figures: sustained decisions/s and
acknowledged outcomes/s (in all and per replica), p50/p99 latency of each request kind, the ratio
N replicas / 1 replica, and the CPU seconds each replica and the load generator used (on a
machine with fewer cores than processes the ratio says what the replicas cost, not how they scale).

It also checks what it measured: every acknowledged outcome is in the telemetry of the replica
that acknowledged it (exit 1 if not). ``--jetstream`` then runs the same N replicas with telemetry
through NATS JetStream and two collectors (bench/cluster_js.py: the collectors' lag, the
JetStream sink against raw nats-py publish-with-ack; exit 1 if an acknowledged outcome is not in
the lake or the ratio is under 0.5). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "tests", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from support.cluster import Cluster  # noqa: E402
from support.cluster_load import Load, LoadResult  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(c: Cluster, bases: list[str], pids: list[int], seconds: float, threads: int, tag: str) -> tuple[LoadResult, dict[str, Any]]:
    cpu0 = [cpu_seconds(p) for p in pids]
    gen0 = time.process_time()
    res = Load(bases, c.tokens["app"], threads=threads, tag=tag).run(seconds)
    gen = time.process_time() - gen0
    cpu = [cpu_seconds(p) - c0 for p, c0 in zip(pids, cpu0, strict=True)]
    n = len(bases)
    fig = {
        "replicas": n,
        "seconds": round(res.seconds, 2),
        "decisions_per_s": round(len(res.decisions) / res.seconds, 1),
        "outcomes_acked_per_s": round(len(res.acked) / res.seconds, 1),
        "decide_ms_p50": _pct(res.decide_ms, 50), "decide_ms_p99": _pct(res.decide_ms, 99),
        "outcome_ms_p50": _pct(res.outcome_ms, 50), "outcome_ms_p99": _pct(res.outcome_ms, 99),
        "per_replica": [
            {**row, "decisions_per_s": round(row["decisions"] / res.seconds, 1),
             "outcomes_acked_per_s": round(row["outcomes_acked"] / res.seconds, 1), "cpu_s": round(cpu[i], 2)}
            for i, row in enumerate(res.per_replica(n))
        ],
        "load_generator_cpu_s": round(gen, 2),
        "failures": sum(res.failures.values()),
    }
    return res, fig


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 2) if xs else None


def check_durable(c: Cluster, runs: list[LoadResult]) -> int:
    """Acknowledged outcomes missing from the telemetry of the replica that acknowledged them."""
    stored = [set(c.telemetry(i)["outcomes"]) for i in range(c.n)]
    return sum(1 for res in runs for r, o, _ in res.acked if o not in stored[r])


def show(name: str, fig: dict[str, Any]) -> None:
    print(f"{name}: {fig['decisions_per_s']:.0f} decisions/s, {fig['outcomes_acked_per_s']:.0f} acknowledged outcomes/s "
          f"over {fig['seconds']} s; decide p50 {fig['decide_ms_p50']} ms p99 {fig['decide_ms_p99']} ms, "
          f"outcome p50 {fig['outcome_ms_p50']} ms p99 {fig['outcome_ms_p99']} ms; load generator CPU {fig['load_generator_cpu_s']} s")
    for i, row in enumerate(fig["per_replica"]):
        print(f"  replica {i}: {row['decisions_per_s']:.0f} decisions/s, {row['outcomes_acked_per_s']:.0f} outcomes/s, "
              f"CPU {row['cpu_s']} s")


def local_run(args: argparse.Namespace, seconds: float, warm: float) -> dict[str, Any]:
    """The embedded-sink cluster: N replicas, then replica 0 alone; figures, ratio and what is missing."""
    t0 = time.monotonic()
    with Cluster(args.replicas, serve_args=("--guard-interval", "0")) as c:
        print(f"cluster up in {time.monotonic() - t0:.1f} s: {args.replicas} replicas, PostgreSQL registry, Redis")
        pids = [r.proc.pid for r in c.replicas if r.proc is not None]
        Load(c.bases, c.tokens["app"], threads=args.threads, tag="warm").run(warm)
        many, fig_many = measure(c, c.bases, pids, seconds, args.threads, "many")
        one, fig_one = measure(c, c.bases[:1], pids[:1], seconds, args.threads, "one")
        lost = check_durable(c, [many, one])
    show(f"{args.replicas} replicas", fig_many)
    show("1 replica (baseline)", fig_one)
    ratio = {k: round(fig_many[k] / fig_one[k], 2) for k in ("decisions_per_s", "outcomes_acked_per_s") if fig_one[k]}
    print(f"ratio {args.replicas} replicas / 1 replica: {ratio}; acknowledged outcomes missing from telemetry: {lost}; "
          f"cores: {os.cpu_count()}")
    return {"many": fig_many, "one": fig_one, "ratio": ratio, "acked_missing": lost}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up")
    ap.add_argument("--jetstream", action="store_true",
                    help="also the same run with telemetry through NATS JetStream and two collectors (their lag), and the "
                         "JetStream sink against raw nats-py publish-with-ack")
    ap.add_argument("--commits", type=int, default=300, help="--jetstream: commits of the sink-vs-raw comparison")
    args = ap.parse_args()
    seconds, warm = (3.0, 1.0) if args.quick else (args.seconds, 3.0)
    local = local_run(args, seconds, warm)
    out: dict[str, Any] = {"bench": "cluster", "threads": args.threads, "cpus": os.cpu_count(), **local}
    bad = bool(local["acked_missing"])
    if args.jetstream:
        from cluster_js import jetstream_run  # bench/cluster_js.py

        js = jetstream_run(args, seconds, warm, measure, show)
        out["jetstream"] = js
        bad = bad or bool(js["acked_missing"]) or js["sink_vs_raw"]["ratio"] < 0.5
    print(json.dumps(out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

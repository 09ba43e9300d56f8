"""Benchmark: telemetry, as ratios against baselines measured in the same run.

Run it as ``.venv/bin/python bench/telemetry.py`` (``--quick`` for a small run).

Sections (each a function ``bench_<name>(args) -> dict`` listed in ``SECTIONS``; ``main`` runs
them in order, prints each one's table and, as the last line, one JSON object with every
section's figures under its name — add a section by writing its function and listing it):

* ``sink`` — the durable sink fed ready-made Decisions (20 float features, one score, action,
  ids; no raw context) vs a raw pyarrow IPC writer writing the same records: ``pa.ipc.new_stream``
  to a file, one RecordBatch per 10k events, ``fsync`` after each. ``Telemetry(SegmentLog)`` gets
  the same Decisions through ``log_decision`` with the same fsync cadence (``flush_events=10_000``;
  *lockstep*: ``flush()`` after every 10k events, exactly one fsync per 10k; *pipelined*: log
  everything, group commits run beside the caller, one ``flush()`` at the end — its commit count
  is reported). Target: ≥ 0.5× the raw writer's events/s. Also: the payload choice of the
  segment log (Arrow IPC vs JSON lines for the same 10k records: encode time, bytes, decode time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from closedloop import F, Float, Str, System, Thresholds
from closedloop.runtime.decision import Decision
from closedloop.telemetry import DECISION_SCHEMA, SegmentLog, Telemetry
from closedloop.telemetry.segments import encode_frame

CHUNK = 10_000


def make_system() -> System:
    ctx = [Str("user"), *[Float(f"x{i}", default=0.0) for i in range(20)]]
    return System("bench", context=ctx, unit="user", features={f"f{i}": F.col(f"x{i}") for i in range(20)},
                  actions=["allow", "block"], experience=Thresholds("p", {"block": 0.5}, otherwise="allow"),
                  labels=("ok", "bad"))


def make_decisions(n: int, seed: int = 0) -> tuple[list[Decision], list[tuple[float, ...]]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 20))
    p = rng.random(n)
    t0 = time.time_ns()
    ds = [
        Decision(f"{i:032x}", "bench", f"u{i % 1000}", t0 + i, "bench-v1", {"p": float(p[i])},
                 "block" if p[i] >= 0.5 else "allow", 1.0, "p ≥ 0.5 → block" if p[i] >= 0.5 else "p < 0.5 → allow")
        for i in range(n)
    ]
    return ds, [tuple(r) for r in X.tolist()]


def raw_batch(ds: list[Decision], feats: list[tuple[float, ...]], seq0: int, fingerprint: str) -> pa.RecordBatch:
    """The baseline's records: the same columns, built directly with pyarrow."""
    n = len(ds)
    const = lambda v: pa.array([v] * n, pa.string())  # noqa: E731
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * 20)
    names_off = pa.array(np.arange(n + 1, dtype=np.int32))
    return pa.RecordBatch.from_arrays([
        pa.array(np.arange(seq0, seq0 + n, dtype=np.int64)),
        const("raw"),
        pa.array([d.decision_id for d in ds], pa.string()),
        const("bench"),
        pa.array([d.unit for d in ds], pa.string()),
        pa.array([d.timestamp_ns for d in ds], pa.int64()),
        pa.array(np.full(n, time.time_ns(), dtype=np.int64)),
        pa.array([d.bundle_version for d in ds], pa.string()),
        pa.nulls(n, pa.string()),
        const("1"),
        const(fingerprint),
        pa.nulls(n, pa.string()),
        pa.ListArray.from_arrays(offsets, pa.array(np.asarray(feats, dtype=np.float64).ravel())),
        pa.ListArray.from_arrays(names_off, pa.array(["p"] * n, pa.string())),
        pa.ListArray.from_arrays(names_off, pa.array([d.scores["p"] for d in ds], pa.float64())),
        pa.array([d.action for d in ds], pa.string()),
        pa.array([d.propensity for d in ds], pa.float64()),
        pa.array(np.ones(n)),
        pa.array([d.why for d in ds], pa.string()),
        pa.array([d.guardrail for d in ds], pa.string()),
        pa.nulls(n, pa.string()),
        pa.array([d.killswitch for d in ds], pa.bool_()),
    ], schema=DECISION_SCHEMA)


def run_raw(ds: list[Decision], feats: list[tuple[float, ...]], home: Path, fingerprint: str) -> float:
    path = home / "raw.arrows"
    t = time.perf_counter()
    with open(path, "wb") as f, pa.ipc.new_stream(f, DECISION_SCHEMA) as w:
        for s in range(0, len(ds), CHUNK):
            w.write_batch(raw_batch(ds[s:s + CHUNK], feats[s:s + CHUNK], s, fingerprint))
            f.flush()
            os.fsync(f.fileno())
    return time.perf_counter() - t


def run_telemetry(
    ds: list[Decision], feats: list[tuple[float, ...]], home: Path, system: System, lockstep: bool
) -> tuple[float, dict[str, Any]]:
    tel = Telemetry(SegmentLog(home), system=system, flush_interval_ms=60_000, flush_events=CHUNK)
    tel.start()
    log = tel.log_decision
    t = time.perf_counter()
    if lockstep:
        for s in range(0, len(ds), CHUNK):
            for d, x in zip(ds[s:s + CHUNK], feats[s:s + CHUNK], strict=True):
                log(d, None, x)
            tel.flush()
    else:
        for d, x in zip(ds, feats, strict=True):
            log(d, None, x)
        tel.flush()
    dt = time.perf_counter() - t
    tel.close()
    stats = tel.stats()
    assert stats["logged"] == len(ds) and stats["healthy"], stats
    return dt, stats


def payload_choice(ds: list[Decision], feats: list[tuple[float, ...]], fingerprint: str) -> dict[str, float]:
    """Arrow IPC frame vs JSON lines for the same 10k records (the segment log's payload)."""
    n = min(CHUNK, len(ds))
    batch = raw_batch(ds[:n], feats[:n], 0, fingerprint)
    rows = batch.to_pylist()
    enc = msgspec.json.Encoder()
    best = lambda fn: min(_timed(fn) for _ in range(5))  # noqa: E731
    ipc_enc = best(lambda: encode_frame(batch))
    json_enc = best(lambda: b"\n".join(enc.encode(r) for r in rows))
    frame = encode_frame(batch)
    lines = b"\n".join(enc.encode(r) for r in rows)
    ipc_dec = best(lambda: pa.ipc.open_stream(pa.py_buffer(frame[12:])).read_all())
    dec = msgspec.json.Decoder()
    json_dec = best(lambda: pa.Table.from_pylist([dec.decode(x) for x in lines.split(b"\n")], schema=DECISION_SCHEMA))
    return {"events": n, "ipc_encode_ms": ipc_enc * 1e3, "json_encode_ms": json_enc * 1e3,
            "ipc_bytes": len(frame), "json_bytes": len(lines),
            "ipc_decode_ms": ipc_dec * 1e3, "json_decode_to_arrow_ms": json_dec * 1e3}


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_sink(args: argparse.Namespace) -> dict[str, Any]:
    n = 50_000 if args.quick else 500_000
    system = make_system()
    ds, feats = make_decisions(n)
    fp = system.features.fingerprint
    results: dict[str, list[float]] = {"raw": [], "lockstep": [], "pipelined": []}
    commits: dict[str, int] = {}
    for _ in range(1 if args.quick else 3):  # interleaved repeats; the best of each is kept
        for name in results:
            home = Path(tempfile.mkdtemp(prefix="bench-telemetry-", dir=args.dir))
            try:
                if name == "raw":
                    dt = run_raw(ds, feats, home, fp)
                else:
                    dt, st = run_telemetry(ds, feats, home, system, lockstep=name == "lockstep")
                    commits[name] = st["commits"]
            finally:
                shutil.rmtree(home, ignore_errors=True)
            results[name].append(dt)
    rate = {k: n / min(v) for k, v in results.items()}
    out: dict[str, Any] = {
        "events": n,
        "raw_ipc_events_per_s": rate["raw"],
        "telemetry_lockstep_events_per_s": rate["lockstep"],
        "telemetry_pipelined_events_per_s": rate["pipelined"],
        "ratio_lockstep": rate["lockstep"] / rate["raw"],
        "ratio_pipelined": rate["pipelined"] / rate["raw"],
        "fsyncs_raw": -(-n // CHUNK),
        "commits_lockstep": commits["lockstep"],
        "commits_pipelined": commits["pipelined"],
        "target_ratio": 0.5,
        "payload": payload_choice(ds, feats, fp),
    }
    print(f"\n== sink: {n:,} ready-made decisions, fsync per {CHUNK:,} events ==")
    print(f"{'writer':<40}{'events/s':>14}{'× raw':>8}{'fsyncs':>8}")
    print(f"{'raw pyarrow IPC stream + fsync':<40}{rate['raw']:>14,.0f}{1.0:>8.2f}{out['fsyncs_raw']:>8}")
    print(f"{'Telemetry(SegmentLog), lockstep':<40}{rate['lockstep']:>14,.0f}{out['ratio_lockstep']:>8.2f}{commits['lockstep']:>8}")
    print(f"{'Telemetry(SegmentLog), pipelined':<40}{rate['pipelined']:>14,.0f}{out['ratio_pipelined']:>8.2f}{commits['pipelined']:>8}")
    p = out["payload"]
    print(f"\npayload of {p['events']:,} records   encode ms   bytes       decode ms")
    print(f"Arrow IPC frame            {p['ipc_encode_ms']:>9.2f}   {p['ipc_bytes']:>10,}  {p['ipc_decode_ms']:>9.2f}")
    print(f"JSON lines (msgspec)       {p['json_encode_ms']:>9.2f}   {p['json_bytes']:>10,}  {p['json_decode_to_arrow_ms']:>9.2f}")
    return out


def bench_dataset_section(args: argparse.Namespace) -> dict[str, Any]:
    """``dataset build`` on 10M decisions × 2M outcomes (1M × 200k with --quick) against the same
    semantics written by hand as one DuckDB query, each in its own subprocess (bench/dataset.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dataset import bench_dataset

    n_dec, n_out = (1_000_000, 200_000) if args.quick else (10_000_000, 2_000_000)
    root = None if args.dir is None else Path(args.dir) / "dataset"
    r = bench_dataset(n_dec, n_out, root=root)
    print(f"dataset build: {r['decisions']:,} decisions × {r['outcomes']:,} outcomes (generation {r['generate_seconds']} s, untimed)")
    print(f"  {'':24}{'seconds':>10}{'peak RSS GB':>14}{'rows':>12}")
    print(f"  {'hand-written DuckDB':24}{r['hand_seconds']:>10.2f}{r['hand_peak_rss_gb']:>14.3f}{r['hand_rows']:>12}")
    print(f"  {'build_dataset':24}{r['framework_seconds']:>10.2f}{r['framework_peak_rss_gb']:>14.3f}{r['framework_rows']:>12}")
    print(f"  ratio {r['ratio']:.3f} (target ≤ {r['ratio_target']}); peak RSS target ≤ {r['rss_target_gb']} GB; "
          f"rows that differ between the two: {r['label_mismatches']}")
    return {k: v for k, v in r.items() if k != "counts"}


#: name → section; each prints its table and returns its figures (another section: add it here).
SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sink": bench_sink,
    "dataset": bench_dataset_section,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small run (as used in tests)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, comma-separated: {', '.join(SECTIONS)}")
    ap.add_argument("--dir", default=None, help="where temporary files go (default: the system temp dir)")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    figures: dict[str, Any] = {"bench": "telemetry", "quick": bool(args.quick)}
    for name in wanted:
        figures[name] = SECTIONS[name](args)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

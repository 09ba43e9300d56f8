"""The embedded telemetry store: segments compacted into Parquet by day, queried with DuckDB.

Layout (in the project home)::

    telemetry/segments/<stream>/<writer>-<NNNNNN>.seg              written by SegmentLog
    telemetry/parquet/<stream>/day=YYYY-MM-DD/part-<first ingest_ns>-<tag>.parquet  written by compact()
    telemetry/feature_sets/<fingerprint>.json                      feature names of a fingerprint
    telemetry/store.json                                           compaction state (atomic)

Decisions are partitioned by the UTC day of ``timestamp_ns``, outcomes by that of ``event_ns``.

:meth:`TelemetryStore.compact` is crash-safe and idempotent. It reads every segment from the
byte offset already compacted (recorded per segment file and inode in ``store.json``), then

1. records the Parquet files it is about to create and the new offsets as *pending* (atomic
   write of ``store.json``);
2. writes each Parquet file to a hidden temporary name, fsyncs it and renames it into place;
3. commits: the offsets advance and *pending* is cleared (atomic write);
4. deletes the segments that are sealed (no live writer holds them) and fully compacted.

A crash before 3 is rolled back on the next run (the pending files that exist are deleted,
the segments are still there); a crash after 3 leaves only deletable segments. Segments still
held by a live writer are compacted up to their last complete frame and kept until sealed.

Maintenance (compact, forget, retention) takes an exclusive ``flock`` on
``telemetry/.store.lock``; reads take it shared.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop.base.files import (
    atomic_write,
    create_private,
    fsync_dir,
    make_private_dirs,
    open_private,
)
from closedloop.base.times import DAY_NS, date_of_day
from closedloop.errors import SpecError
from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.segments import (
    is_sealed,
    list_segments,
    scan_segment,
)
from closedloop.telemetry.sink import STREAMS

__all__ = ["TelemetryStore"]

_TIME = {"decisions": "timestamp_ns", "outcomes": "event_ns"}


def _tomb(unit: str) -> str:
    return hashlib.sha256(unit.encode("utf-8", "surrogatepass")).hexdigest()


class TelemetryStore:
    """The decisions and outcomes in a project home: compaction, reads, forget, retention, stats."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)
        self.root = self.home / "telemetry"

    # -- plumbing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        make_private_dirs(self.root)
        fd = open_private(self.root / ".store.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _state_path(self) -> Path:
        return self.root / "store.json"

    def _load(self) -> dict[str, Any]:
        try:
            state = msgspec.json.decode(self._state_path().read_bytes())
        except FileNotFoundError:
            state = {}
        state.setdefault("offsets", {})  # "<stream>/<file>" -> [inode, offset]
        state.setdefault("pending", None)
        state.setdefault("torn_tails", 0)
        state.setdefault("forgotten_units", [])  # sha256 of forgotten (possibly hashed) units
        state.setdefault("forgotten_decisions", [])
        return state

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write(self._state_path(), msgspec.json.encode(state))

    def _recover(self, state: dict[str, Any]) -> None:
        """Finish or roll back a compaction that crashed (see the module doc)."""
        for stream in STREAMS:
            d = self.root / "parquet" / stream
            if d.is_dir():
                for tmp in d.glob("day=*/.part-*.tmp"):
                    tmp.unlink(missing_ok=True)
        p = state["pending"]
        if p is None:
            return
        if all((self.root / f).exists() for f in p["files"]):
            state["offsets"].update(p["offsets"])
        else:
            for f in p["files"]:
                (self.root / f).unlink(missing_ok=True)
        state["pending"] = None
        self._save(state)

    def _offsets(self, state: dict[str, Any], stream: str) -> dict[str, int]:
        """Compacted offsets of the stream's segments that still are the file recorded."""
        out = {}
        for path in list_segments(self.home, stream):
            rec = state["offsets"].get(f"{stream}/{path.name}")
            if rec is not None:
                try:
                    if os.stat(path).st_ino == rec[0]:
                        out[path.name] = rec[1]
                except FileNotFoundError:
                    pass
        return out

    # -- compaction ----------------------------------------------------------------------------
    def compact(self) -> dict[str, int]:
        """Move complete segment frames into day-partitioned Parquet; delete sealed segments.
        Returns counts: rows written per stream, segments deleted, torn tails found."""
        with self._locked(True):
            return self._compact()

    def _compact(self) -> dict[str, int]:
        state = self._load()
        self._recover(state)
        result = {"decisions": 0, "outcomes": 0, "segments_deleted": 0, "torn_tails": 0}
        files: list[str] = []
        moves: list[tuple[Path, Path]] = []
        new_offsets: dict[str, list[int]] = {}
        sealed_done: list[Path] = []
        for stream in STREAMS:
            tables: list[pa.Table] = []
            for path in list_segments(self.home, stream):
                key = f"{stream}/{path.name}"
                sealed = is_sealed(path)  # decided before reading: a sealed file no longer grows
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    ino = os.fstat(fd).st_ino
                    data = os.pread(fd, os.fstat(fd).st_size, 0)
                finally:
                    os.close(fd)
                rec = state["offsets"].get(key)
                start = rec[1] if rec is not None and rec[0] == ino else 0
                scan = scan_segment(data, start)
                tables.extend(f.batch() for f in scan.frames)
                new_offsets[key] = [ino, scan.good_end]
                if sealed:
                    if scan.torn:
                        result["torn_tails"] += 1
                    sealed_done.append(path)
            if not tables:
                continue
            t = self._drop_forgotten(stream, pa.concat_tables(tables), state)
            result[stream] = t.num_rows
            for day, part in _by_day(t, _TIME[stream]):
                d = self.root / "parquet" / stream / f"day={day}"
                make_private_dirs(d)
                # named by the part's first ingest time (then a random tag): listing a day's files
                # by name lists them in the order they were written, the same order in every run of
                # the same simulated world (a dataset's row order follows it)
                first = int(pc.min(part["ingest_ns"]).as_py() or 0)
                name = f"part-{first:020d}-{uuid.uuid4().hex[:12]}.parquet"
                tmp = d / f".{name}.tmp"
                _write_parquet(part, tmp)
                files.append(str((d / name).relative_to(self.root)))
                moves.append((tmp, d / name))
        if not new_offsets:
            return result
        state["pending"] = {"files": files, "offsets": new_offsets}
        self._save(state)
        for tmp, final in moves:
            os.rename(tmp, final)
        for d in {final.parent for _, final in moves}:
            fsync_dir(d)
        state["offsets"].update(new_offsets)
        state["pending"] = None
        state["torn_tails"] += result["torn_tails"]
        self._save(state)
        for path in sealed_done:
            path.unlink(missing_ok=True)
            state["offsets"].pop(f"{path.parent.name}/{path.name}", None)
            result["segments_deleted"] += 1
        if sealed_done:
            self._save(state)
        return result

    # -- reading ---------------------------------------------------------------------------------
    def files(self, stream: str) -> list[Path]:
        if stream not in STREAMS:
            raise SpecError(f"The telemetry stream must be one of {sorted(STREAMS)}. Got {stream!r} instead.")
        d = self.root / "parquet" / stream
        return sorted(d.glob("day=*/part-*.parquet")) if d.is_dir() else []

    def decision_files(self) -> list[Path]:
        """The compacted decision Parquet files (call :meth:`compact` first for everything)."""
        return self.files("decisions")

    def outcome_files(self) -> list[Path]:
        return self.files("outcomes")

    def read(self, stream: str, columns: Sequence[str] | None = None) -> pa.Table:
        """Everything of a stream: compacted Parquet plus the segment frames not compacted yet.
        ``columns`` reads only those (a reader that needs no context need not decode any)."""
        need = None
        if columns is not None:
            unknown = [c for c in columns if c not in STREAMS.get(stream, pa.schema([])).names]
            if unknown and stream in STREAMS:
                raise SpecError(f"The {stream!r} records have no column {unknown[0]!r}. Got columns={list(columns)!r}.")
            need = list(dict.fromkeys([*columns, "unit", *(["decision_id"] if stream == "outcomes" else [])]))
        with self._locked(False):
            state = self._load()
            parts = [pq.read_table(f, schema=STREAMS[stream], columns=need) for f in self.files(stream)]
            from closedloop.telemetry.segments import read_segments

            seg = read_segments(self.home, stream, offsets=self._offsets(state, stream), columns=need)
            parts.append(self._drop_forgotten(stream, seg, state))
        out = pa.concat_tables(parts)
        return out if columns is None else out.select(list(columns))

    def torn_tails(self) -> int:
        """Torn tails found so far: deleted by compaction plus those in sealed segments now."""
        from closedloop.telemetry.segments import read_segments

        stats: dict[str, int] = {}
        for stream in STREAMS:
            read_segments(self.home, stream, stats=stats)
        return self._load()["torn_tails"] + stats.get("torn_tails", 0)

    # -- forgetting and retention ----------------------------------------------------------------------
    def _drop_forgotten(self, stream: str, t: pa.Table, state: dict[str, Any]) -> pa.Table:
        units, dids = state["forgotten_units"], state["forgotten_decisions"]
        if t.num_rows == 0 or (not units and not dids):
            return t
        unit_col = t.column("unit")
        tomb = pa.array([None if u is None else _tomb(u) for u in unit_col.to_pylist()], pa.string())
        drop = pc.fill_null(pc.is_in(tomb, pa.array(units, pa.string())), False)
        if stream == "outcomes" and dids:
            drop = pc.or_(drop, pc.fill_null(pc.is_in(t.column("decision_id"), pa.array(dids, pa.string())), False))
        return t.filter(pc.invert(drop))

    def forget(self, unit: str, *, sanitizer: Sanitizer | None = None) -> dict[str, int]:
        """Remove one unit's decisions and outcomes (and outcomes linked to its decisions).

        ``unit`` is the value as written: give the raw unit with the system's ``sanitizer`` when
        the unit is hashed, or the hashed value itself. Sealed segments are compacted first (and
        so deleted); Parquet files holding the unit are rewritten atomically; a tombstone (the
        sha256 of the written unit) keeps frames still in a live writer's segment from being read
        or compacted. Returns the rows removed per stream and the live segments still holding
        raw frames until their writer closes them.
        """
        if not isinstance(unit, str) or not unit:
            raise SpecError(f"forget needs a unit (a non-empty string). Got {unit!r} instead.")
        value = sanitizer.unit(unit) if sanitizer is not None else unit
        with self._locked(True):
            self._compact()
            state = self._load()
            dids: set[str] = set()
            removed = {"decisions": 0, "outcomes": 0}
            for f in self.files("decisions"):
                t = pq.read_table(f, schema=STREAMS["decisions"])
                mask = pc.equal(t.column("unit"), value)
                hit = t.filter(mask)
                if hit.num_rows:
                    dids.update(hit.column("decision_id").to_pylist())
                    removed["decisions"] += hit.num_rows
                    _rewrite(f, t.filter(pc.invert(mask)))
            did_arr = pa.array(sorted(dids), pa.string())
            for f in self.files("outcomes"):
                t = pq.read_table(f, schema=STREAMS["outcomes"])
                mask = pc.or_(pc.fill_null(pc.equal(t.column("unit"), value), False),
                              pc.fill_null(pc.is_in(t.column("decision_id"), did_arr), False))
                n = int(pc.sum(mask).as_py() or 0)
                if n:
                    removed["outcomes"] += n
                    _rewrite(f, t.filter(pc.invert(mask)))
            state["forgotten_units"] = sorted({*state["forgotten_units"], _tomb(value)})
            state["forgotten_decisions"] = sorted({*state["forgotten_decisions"], *dids})
            self._save(state)
            removed["live_segments"] = sum(len(list_segments(self.home, s)) for s in STREAMS)
        return removed

    def apply_retention(self, days: float, now_ns: int) -> dict[str, int]:
        """Drop decisions (by ``timestamp_ns``) and outcomes (by ``event_ns``) older than ``days``
        days before ``now_ns``. Compacts first; returns the rows dropped per stream."""
        if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
            raise SpecError(f"Retention 'days' must be a number > 0. Got {days!r} instead.")
        cutoff = int(now_ns - days * DAY_NS)
        dropped = {"decisions": 0, "outcomes": 0}
        with self._locked(True):
            self._compact()
            for stream in STREAMS:
                col = _TIME[stream]
                for f in self.files(stream):
                    day = _dt.date.fromisoformat(f.parent.name[4:])
                    start = (day - _dt.date(1970, 1, 1)).days * DAY_NS
                    if start >= cutoff:
                        continue
                    t = pq.read_table(f, schema=STREAMS[stream])
                    keep = pc.greater_equal(t.column(col), cutoff)
                    n_keep = int(pc.sum(keep).as_py() or 0)
                    dropped[stream] += t.num_rows - n_keep
                    if n_keep < t.num_rows:
                        _rewrite(f, t.filter(keep))
        return dropped

    # -- stats -----------------------------------------------------------------------------------
    def stats(self, *, window_ns: int | None = None, now_ns: int | None = None) -> dict[str, Any]:
        """Counts by day / bundle version / action (decisions) and by day / kind (outcomes), via
        DuckDB over the Parquet files and the segments not compacted yet; with ``window_ns`` and
        ``now_ns``, the backlog of decisions whose label windows are still open."""
        import duckdb

        dec = self.read("decisions")
        out = self.read("outcomes")
        con = duckdb.connect()
        try:
            con.register("decisions", dec)
            con.register("outcomes", out)

            def rows(sql: str) -> list[dict[str, Any]]:
                cur = con.execute(sql)
                names = [c[0] for c in cur.description]
                return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

            day = "strftime(make_timestamp(({c} // 1000)::BIGINT), '%Y-%m-%d')"
            result: dict[str, Any] = {
                "decisions": int(dec.num_rows),
                "outcomes": int(out.num_rows),
                "decisions_by_day": rows(
                    f"SELECT {day.format(c='timestamp_ns')} AS day, count(*) AS n FROM decisions GROUP BY 1 ORDER BY 1"
                ),
                "decisions_by_bundle_version": rows("SELECT bundle_version, count(*) AS n FROM decisions GROUP BY 1 ORDER BY 1"),
                "decisions_by_action": rows(
                    "SELECT action, count(*) AS n, sum(1.0 / sample_prob) AS weighted FROM decisions GROUP BY 1 ORDER BY 1"
                ),
                "outcomes_by_day": rows(f"SELECT {day.format(c='event_ns')} AS day, count(*) AS n FROM outcomes GROUP BY 1 ORDER BY 1"),
                "outcomes_by_kind": rows("SELECT kind, count(*) AS n FROM outcomes GROUP BY 1 ORDER BY 1"),
            }
            if window_ns is not None:
                now = int(now_ns if now_ns is not None else _now())
                result["backlog_open_windows"] = int(con.execute(
                    "SELECT count(*) FROM decisions WHERE timestamp_ns + ? > ?", [int(window_ns), now]
                ).fetchone()[0])  # type: ignore[index]
        finally:
            con.close()
        result["parquet_files"] = {s: len(self.files(s)) for s in STREAMS}
        result["segments"] = {s: len(list_segments(self.home, s)) for s in STREAMS}
        result["torn_tails"] = self.torn_tails()
        return result


def _now() -> int:
    import time

    return time.time_ns()


def _by_day(t: pa.Table, col: str) -> Iterator[tuple[str, pa.Table]]:
    days = t.column(col).to_numpy() // DAY_NS
    for d in np.unique(days):
        yield date_of_day(int(d)), t.filter(pa.array(days == d))


def _write_parquet(t: pa.Table, path: Path) -> None:
    """Write ``t`` to ``path`` (a new temporary name), ``0600``, and make it durable. The file is
    created private first: Arrow's writer truncates an existing file and keeps its mode."""
    create_private(path)
    pq.write_table(t, path, compression="zstd")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rewrite(path: Path, t: pa.Table) -> None:
    """Replace a Parquet file by ``t`` atomically (or delete it when ``t`` is empty)."""
    if t.num_rows == 0:
        path.unlink()
    else:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        _write_parquet(t, tmp)
        os.replace(tmp, path)
    fsync_dir(path.parent)

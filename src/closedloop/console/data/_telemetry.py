"""Reading a home's telemetry the way the console needs it: a few rows found by a query, not the
whole lake loaded.

The compacted Parquet files (``telemetry/parquet/<stream>/day=…/part-….parquet``) are queried by
DuckDB with the filter and ``LIMIT`` in the query; the frames not compacted yet (the live
segments, read from the offset the store compacted to, forgotten units dropped — exactly what
:meth:`~closedloop.telemetry.TelemetryStore.read` adds to the Parquet files) are registered beside
them as one Arrow table, so one SQL statement sees both.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from closedloop.base.times import DAY_NS, iso_date
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["Lake", "id_days", "open_lake"]

_SCHEMAS = {"decisions": DECISION_SCHEMA, "outcomes": OUTCOME_SCHEMA}


class Lake:
    """One DuckDB connection with a view per stream (``decisions``, ``outcomes``) over the
    home's Parquet files and its uncompacted segment frames; ``files`` / ``segments`` / ``days``
    say what was searched."""

    def __init__(self, con: Any, files: dict[str, list[Path]], segments: dict[str, int]) -> None:
        self.con = con
        self.files = files
        self.segments = segments

    def searched(self, stream: str) -> str:
        """"N files from DAY to DAY" (and the segments) — what a search of ``stream`` read."""
        files = self.files[stream]
        days = sorted({p.parent.name.removeprefix("day=") for p in files})
        span = f" from {days[0]} to {days[-1]}" if days else ""
        seg = self.segments[stream]
        return (f"searched {len(files)} Parquet file(s){span} and {seg} live segment(s)" if seg
                else f"searched {len(files)} Parquet file(s){span}")

    def parquet(self, stream: str, files: Sequence[Path]) -> str:
        """A ``FROM`` source of only ``files`` of the stream (its columns named as the view's)."""
        cols = ", ".join(f'"{n}"' for n in _SCHEMAS[stream].names)
        listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
        return f"(SELECT {cols} FROM read_parquet([{listed}], union_by_name = true))"

    def decisions(self, name: str, ids: Sequence[str], columns: str) -> dict[str, dict[str, Any]]:
        """The decisions of system ``name`` with the ids ``ids`` (``columns``: a SELECT list):
        first from the Parquet files of the days their ids point at (:func:`id_days`) and the live
        segments, then — only for ids not found there — from every file. Keyed by decision id."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        days = set().union(*(id_days(i) for i in wanted))
        near = [p for p in self.files["decisions"] if p.parent.name.removeprefix("day=") in days]
        found: dict[str, dict[str, Any]] = {}
        if near:
            src = f"(SELECT * FROM {self.parquet('decisions', near)} UNION ALL SELECT * FROM _decisions_live)"
            for r in self.rows(f"SELECT {columns} FROM {src} WHERE system = ? AND decision_id IN (SELECT unnest(?))",
                               [name, wanted]):
                found.setdefault(r["decision_id"], r)
        rest = [i for i in wanted if i not in found]
        if rest:
            for r in self.rows(f"SELECT {columns} FROM decisions WHERE system = ? AND decision_id IN (SELECT unnest(?))",
                               [name, rest]):
                found.setdefault(r["decision_id"], r)
        return found

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """The result of ``sql`` as an Arrow table (the DuckDB method's name differs across versions)."""
        rel = self.con.sql(sql, params=list(params))
        fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
        return fetch()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


_DEFAULT_ID = re.compile(r"[0-9a-f]{32}")


def id_days(decision_id: str) -> set[str]:
    """The days a default decision id points at: its first 12 hex digits are the millisecond it
    was made (:class:`~closedloop.runtime.ids.DecisionIds`) — that day and its neighbours (the
    decision's own time may differ from its id's by a clock's step); none for other ids, which are
    then searched everywhere."""
    if not _DEFAULT_ID.fullmatch(decision_id):
        return set()
    ms = int(decision_id[:12], 16)
    return {iso_date(ms * 1_000_000 + k * DAY_NS) for k in (-1, 0, 1)}


def _uncompacted(home: Path, stream: str, columns: Sequence[str] | None = None) -> tuple[pa.Table, int]:
    """The stream's segment frames not compacted yet (``columns`` of them: a decision's context
    is converted to JSON only when asked for), forgotten units dropped (what ``TelemetryStore.read``
    adds to the Parquet files), and how many segment files hold them."""
    from closedloop.telemetry import TelemetryStore
    from closedloop.telemetry.segments import list_segments, read_segments

    store = TelemetryStore(home)
    segs = list_segments(home, stream)
    if not segs:
        schema = _SCHEMAS[stream]
        return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table(), 0
    with store._locked(False):
        state = store._load()
        table = read_segments(home, stream, offsets=store._offsets(state, stream), columns=columns)
        table = store._drop_forgotten(stream, table, state)
    return table, len(segs)


_BASE: Any = None
_BASE_LOCK = threading.Lock()


def _connection() -> Any:
    """A new DuckDB connection to one in-memory database kept for the process: a cursor of it
    costs microseconds where ``duckdb.connect()`` costs tens of milliseconds. Each cursor has its
    own temporary views and registered tables; the database holds no data."""
    global _BASE
    with _BASE_LOCK:
        if _BASE is None:
            import duckdb

            _BASE = duckdb.connect()
        return _BASE.cursor()


@contextlib.contextmanager
def open_lake(home: Any, streams: Sequence[str] = ("decisions", "outcomes"), *,
              columns: Mapping[str, Sequence[str]] | None = None) -> Iterator[Lake]:
    """The home's telemetry as DuckDB views ``decisions`` and ``outcomes`` (closed on exit);
    ``columns``: per stream, the only columns its view has (the live segments convert no other)."""
    from closedloop.telemetry import TelemetryStore

    home = Path(home)
    store = TelemetryStore(home)
    con = _connection()
    files: dict[str, list[Path]] = {}
    segments: dict[str, int] = {}
    try:
        for stream in streams:
            files[stream] = store.files(stream)
            names = list((columns or {}).get(stream) or _SCHEMAS[stream].names)
            live, segments[stream] = _uncompacted(home, stream, None if names == _SCHEMAS[stream].names else names)
            con.register(f"_{stream}_live", live)
            cols = ", ".join(f'"{n}"' for n in names)
            parts = [f"SELECT {cols} FROM _{stream}_live"]
            if files[stream]:
                listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files[stream])
                parts.insert(0, f"SELECT {cols} FROM read_parquet([{listed}], union_by_name = true)")
            con.execute(f"CREATE TEMP VIEW {stream} AS " + " UNION ALL ".join(parts))
        yield Lake(con, files, segments)
    finally:
        con.close()

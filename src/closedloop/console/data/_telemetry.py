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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["Lake", "open_lake"]

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

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _uncompacted(home: Path, stream: str) -> tuple[pa.Table, int]:
    """The stream's segment frames not compacted yet, forgotten units dropped (what
    ``TelemetryStore.read`` adds to the Parquet files), and how many segment files hold them."""
    from closedloop.telemetry import TelemetryStore
    from closedloop.telemetry.segments import list_segments, read_segments

    store = TelemetryStore(home)
    segs = list_segments(home, stream)
    if not segs:
        return _SCHEMAS[stream].empty_table(), 0
    with store._locked(False):
        state = store._load()
        table = read_segments(home, stream, offsets=store._offsets(state, stream))
        table = store._drop_forgotten(stream, table, state)
    return table, len(segs)


@contextlib.contextmanager
def open_lake(home: Any, streams: Sequence[str] = ("decisions", "outcomes")) -> Iterator[Lake]:
    """The home's telemetry as DuckDB views ``decisions`` and ``outcomes`` (closed on exit)."""
    import duckdb

    from closedloop.telemetry import TelemetryStore

    home = Path(home)
    store = TelemetryStore(home)
    con = duckdb.connect()
    files: dict[str, list[Path]] = {}
    segments: dict[str, int] = {}
    try:
        for stream in streams:
            files[stream] = store.files(stream)
            live, segments[stream] = _uncompacted(home, stream)
            con.register(f"_{stream}_live", live)
            cols = ", ".join(f'"{n}"' for n in _SCHEMAS[stream].names)
            parts = [f"SELECT {cols} FROM _{stream}_live"]
            if files[stream]:
                listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files[stream])
                parts.insert(0, f"SELECT {cols} FROM read_parquet([{listed}], union_by_name = true)")
            con.execute(f"CREATE TEMP VIEW {stream} AS " + " UNION ALL ".join(parts))
        yield Lake(con, files, segments)
    finally:
        con.close()

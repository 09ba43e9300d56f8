"""Reading telemetry for monitoring: DuckDB views over the store's decision and outcome files.

Monitoring reads what the dataset join reads (``TelemetryStore.decision_files()`` /
``outcome_files()``, compacted Parquet — the cycle compacts first), point in time: records
ingested after ``cutoff_ns`` do not exist. Outcomes are deduplicated by ``outcome_id``.

Incremental reading
-------------------
Monitoring looks at recent windows, but the telemetry history grows every day. The Parquet
footer of each file records the minimum and maximum of every column (its per-file aggregates,
kept by the file itself: nothing to go stale), so :func:`files_since` keeps only the files that
can hold records at or after a time, and :func:`first_ns` finds the earliest decision by reading
the footers and scanning only the file(s) that can hold it. Reading a subset this way gives the
same records for the time range: copies of a record (a retried write) are the same record, with
the same time, so deduplication among the files kept is deduplication among all of them. A file
without statistics is always read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from closedloop.datasets.dataset import _q, _register
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["connect", "files_since", "first_ns", "sql_list", "time_range"]

#: the time column of each stream: what the store partitions by, and what monitoring filters on
TIME_COLUMN = {"decisions": "timestamp_ns", "outcomes": "event_ns"}


def time_range(path: Path | str, column: str) -> tuple[int, int] | None:
    """``(min, max)`` of ``column`` over the whole file, from its Parquet footer's statistics;
    None when the file has no rows or a row group lacks the statistics (then read the file)."""
    import pyarrow.parquet as pq

    md = pq.read_metadata(path)
    try:
        j = md.schema.to_arrow_schema().get_field_index(column)
    except Exception:  # noqa: BLE001 — an unreadable schema: no statistics to trust
        return None
    if j < 0 or md.num_row_groups == 0:
        return None
    lo = hi = None
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(j).statistics
        if st is None or not st.has_min_max:
            return None
        a, b = int(st.min), int(st.max)
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return None if lo is None or hi is None else (lo, hi)


def files_since(files: Sequence[Path | str], column: str, since_ns: int | None) -> list[Path | str]:
    """The files of ``files`` that can hold a record whose ``column`` is ``>= since_ns`` (all of
    them when ``since_ns`` is None), in the order given."""
    if since_ns is None:
        return list(files)
    out = []
    for f in files:
        r = time_range(f, column)
        if r is None or r[1] >= since_ns:
            out.append(f)
    return out


def first_ns(system_name: str, decision_files: Sequence[Path | str], cutoff_ns: int) -> int | None:
    """The earliest ``timestamp_ns`` of this system's decisions ingested by ``cutoff_ns`` (None:
    none) — what ``SELECT min(timestamp_ns) FROM decisions`` on :func:`connect`'s view gives,
    scanning only the files whose footer says they can hold an earlier one than found so far."""
    import duckdb

    ranges = [(time_range(f, "timestamp_ns"), f) for f in decision_files]
    # files without statistics first (they must be read), then by their smallest timestamp
    ranges.sort(key=lambda rf: (rf[0] is not None, rf[0][0] if rf[0] is not None else 0))
    best: int | None = None
    con = duckdb.connect()
    try:
        for r, f in ranges:
            if best is not None and r is not None and r[0] >= best:
                break
            v = con.execute(
                f"SELECT min(timestamp_ns) FROM read_parquet({_q(str(f))}) "
                f"WHERE system = $s AND ingest_ns <= $c",
                {"s": system_name, "c": int(cutoff_ns)},
            ).fetchone()
            if v is not None and v[0] is not None:
                best = int(v[0]) if best is None else min(best, int(v[0]))
    finally:
        con.close()
    return best


def sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(_q(v) for v in values) + ")"


def connect(
    system_name: str,
    decision_files: Sequence[Path | str],
    outcome_files: Sequence[Path | str],
    cutoff_ns: int,
    exclude_sources: Sequence[str] = (),
) -> Any:
    """A DuckDB connection with two views: ``decisions`` (this system's, ingested by the
    cut-off, deduplicated by id) and ``outcomes`` (likewise, deduplicated by ``outcome_id``,
    without ``exclude_sources``)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order=false")
    _register(con, "dec_files", decision_files, DECISION_SCHEMA)
    _register(con, "out_files", outcome_files, OUTCOME_SCHEMA)
    sysq = _q(system_name)
    cut = int(cutoff_ns)
    # Deduplicated without a window over every column of every decision: the ids logged more
    # than once (a cheap scan of a few columns) and which copy each keeps — the first by
    # (ingest_ns, writer, seq) — go into a small table once; the view then keeps every other row
    # as it is, so a query's time filter reaches the Parquet scan (row-group pruning) instead of
    # waiting behind a sort of the whole history.
    keep = f"system = {sysq} AND ingest_ns <= {cut} AND decision_id IS NOT NULL"
    con.execute(
        f"""CREATE TEMP TABLE dec_dups AS
        WITH h AS (  -- candidates first, by a 64-bit hash of the id: cheaper than grouping the strings
          SELECT hash(decision_id) AS h FROM dec_files WHERE {keep} GROUP BY 1 HAVING count(*) > 1
        )
        SELECT decision_id,
               arg_min(struct_pack(f := filename, r := file_row_number),
                       struct_pack(i := ingest_ns, w := writer, s := seq)) AS keep
        FROM dec_files WHERE {keep} AND hash(decision_id) IN (SELECT h FROM h)
        GROUP BY decision_id HAVING count(*) > 1"""
    )
    con.execute(
        f"""CREATE TEMP VIEW decisions AS
        SELECT * EXCLUDE (filename, file_row_number) FROM dec_files d
        WHERE system = {sysq} AND ingest_ns <= {cut}
          AND (d.decision_id NOT IN (SELECT decision_id FROM dec_dups)
               OR struct_pack(f := d.filename, r := d.file_row_number) IN (SELECT keep FROM dec_dups))"""
    )
    src = f"AND source NOT IN {sql_list(exclude_sources)}" if exclude_sources else ""
    con.execute(
        f"""CREATE TEMP VIEW outcomes AS
        SELECT * EXCLUDE (filename, file_row_number) FROM out_files
        WHERE system = {sysq} AND ingest_ns <= {cut} {src}
        QUALIFY row_number() OVER (PARTITION BY outcome_id ORDER BY ingest_ns, writer, seq) = 1"""
    )
    return con


def arrow(con: Any, sql: str, params: Any = None) -> Any:
    """The result of ``sql`` as an Arrow table (DuckDB 1.x and 2.x spell it differently)."""
    rel = con.sql(sql, params=params)
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()

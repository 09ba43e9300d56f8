"""Reading telemetry for monitoring: DuckDB views over the store's decision and outcome files.

Monitoring reads what the dataset join reads (``TelemetryStore.decision_files()`` /
``outcome_files()``, compacted Parquet — the cycle compacts first), point in time: records
ingested after ``cutoff_ns`` do not exist. Outcomes are deduplicated by ``outcome_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..loop.dataset import _q, _register
from ..telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["connect", "sql_list"]


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

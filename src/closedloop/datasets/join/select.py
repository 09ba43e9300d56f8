"""Stage *select*: what the join reads.

The telemetry files are registered as the views ``dec_files`` and ``out_files``; a
:class:`Selection` holds the SQL that picks from them the records of the system ingested by the
cut-off (point in time) and, for outcomes, those of sources not left out and not in an excluded
ingest range. The later stages read the views through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.datasets.join.inputs import JoinInputs, ingest_ranges
from closedloop.datasets.join.sql import quote, register_files
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["Selection", "connect", "outcome_filter", "select"]


@dataclass(frozen=True)
class Selection:
    """The SQL of what is read: ``system`` (the system's name as a literal), ``outcome_ok`` (a
    predicate on an outcome row: its source and ingest time are not left out), the named
    parameters of every statement, and the excluded ingest ranges as checked."""

    system: str
    outcome_ok: str
    params: dict[str, int]
    ingested: list[tuple[str, int, int]]
    engine: str = "duckdb"

    def at_cutoff(self, alias: str = "") -> str:
        """The predicate of a record (decision or outcome; ``alias`` e.g. ``"d."``) of the system
        that exists at the cut-off."""
        return f"{alias}system = {self.system} AND {alias}ingest_ns <= $cutoff"

    @property
    def cutoff(self) -> dict[str, int]:
        """The parameters of a statement that names ``$cutoff`` alone."""
        return {"cutoff": self.params["cutoff"]}


def connect(memory_limit: str, spill: Path) -> Any:
    """A DuckDB connection for one build: ``memory_limit``, spilling to ``spill``, no order kept
    unless asked (the write stage asks)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit={quote(memory_limit)}")
    con.execute(f"SET temp_directory={quote(str(spill))}")
    con.execute("SET preserve_insertion_order=false")
    return con


def outcome_filter(excluded: Sequence[str], ranges: Sequence[tuple[str, int, int]]) -> str:
    """The predicate of an outcome that counts: its source is not in ``excluded`` and it was not
    ingested in one of ``ranges`` (``(kind, start_ns, end_ns)``, end excluded) for its kind."""
    src_ok = "TRUE"
    if excluded:
        src_ok = f"source NOT IN ({', '.join(quote(x) for x in excluded)})"
    for kind, start, end in ranges:
        src_ok += f" AND NOT (kind = {quote(kind)} AND ingest_ns >= {start} AND ingest_ns < {end})"
    return src_ok


def select(con: Any, inputs: JoinInputs, engine: str = "duckdb") -> Selection:
    """Register the files of ``inputs`` on ``con`` (``dec_files``, ``out_files``; on Spark
    ``con`` is a :class:`~closedloop.datasets.join.spark.SparkConnection`) → the Selection."""
    ranges = ingest_ranges(inputs.exclude_ingested)
    if engine == "spark":
        from closedloop.datasets.join.spark import register_spark_files

        register_spark_files(con.spark, "dec_files", inputs.decision_files, DECISION_SCHEMA)
        register_spark_files(con.spark, "out_files", inputs.outcome_files, OUTCOME_SCHEMA)
    else:
        register_files(con, "dec_files", inputs.decision_files, DECISION_SCHEMA)
        register_files(con, "out_files", inputs.outcome_files, OUTCOME_SCHEMA)
    return Selection(
        system=quote(inputs.system.name),
        outcome_ok=outcome_filter(inputs.excluded, ranges),
        params=inputs.params,
        ingested=ranges,
        engine=engine,
    )

"""The manifest's counts: every decision and outcome read, and what became of it.

Cheap: single columns of the decisions, the small tables of the earlier stages (``dup``, ``lo``,
``ent``) and the written file. The meaning of each count: docs/datasets.md ("Reported, never
silently dropped").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from closedloop.datasets.join.dedupe import not_a_copy
from closedloop.datasets.join.inputs import JoinInputs
from closedloop.datasets.join.link import OUTCOME_STATUSES
from closedloop.datasets.join.select import Selection
from closedloop.datasets.join.sql import quote
from closedloop.errors import DatasetError

__all__ = ["count"]


def count(con: Any, sel: Selection, inputs: JoinInputs, data: Path, written: list[str] | None) -> dict[str, Any]:
    """``{"decisions": {...}, "outcomes": {...}}`` for the dataset written to ``data``."""
    dec_counts = con.execute(
        f"""
        SELECT
          count(*) FILTER (WHERE timestamp_ns >= $since AND timestamp_ns < $until),
          count(*) FILTER (WHERE timestamp_ns >= $since AND timestamp_ns < $until
                           AND timestamp_ns + $window > $cutoff)
        FROM dec_files
        WHERE {sel.at_cutoff()}
          AND {not_a_copy("", sel.engine)}
        """,
        sel.params,
    ).fetchone()
    n_dup_dec = con.execute("SELECT count(*) FROM dup").fetchone()
    n_entity = None
    if inputs.policy.entity is not None:
        n_entity = con.execute("SELECT coalesce(sum(n_silent), 0) FROM ent").fetchone()
    early_sql = "0"
    if inputs.early_labels and (written is None or "timestamp_ns" in written):
        early_sql = f"count(*) FILTER (WHERE timestamp_ns + {inputs.window_ns} > {inputs.cutoff_ns})"
    row_counts = con.execute(
        f"SELECT count(*), count(label), {early_sql} FROM read_parquet({quote(str(data))})"
    ).fetchone()
    o_read = con.execute(
        f"SELECT count(*) FILTER (WHERE {sel.outcome_ok}), count(*) FILTER (WHERE NOT ({sel.outcome_ok})) "
        f"FROM out_files WHERE {sel.at_cutoff()}",
        sel.cutoff,
    ).fetchone()
    status = dict(con.execute("SELECT status, count(*) FROM lo GROUP BY status").fetchall())
    if not (dec_counts and n_dup_dec and row_counts and o_read):  # COUNT(*) always returns a row
        raise DatasetError("DuckDB returned no counts for the dataset's manifest.")
    n_lo = sum(status.values())
    counts: dict[str, Any] = {
        "decisions": {
            "in_range": int(dec_counts[0]),
            "rows": int(row_counts[0]),
            "labeled": int(row_counts[1]),
            "unlabeled": int(row_counts[0] - row_counts[1]),
            "open": int(dec_counts[1]) - int(row_counts[2]),
            "duplicates": int(n_dup_dec[0]),
        },
        "outcomes": {
            "read": int(o_read[0]),
            "duplicates": int(o_read[0]) - n_lo,
            **{k: int(status.get(k, 0)) for k in OUTCOME_STATUSES},
            "excluded_source": int(o_read[1]),
        },
    }
    if n_entity is not None:
        counts["decisions"]["entity_labeled"] = int(n_entity[0])
    if inputs.early_labels:
        counts["decisions"]["early"] = int(row_counts[2])
    return counts

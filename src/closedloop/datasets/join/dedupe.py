"""Stage *dedupe*: one decision per ``decision_id``, one outcome per ``outcome_id``.

Of several copies (a retried write) the first by ``(ingest_ns, writer, seq)`` is kept.
:func:`dedupe_decisions` finds the decision copies to drop (the temp table ``dup``, by file
position), which every later statement leaves out with :func:`not_a_copy`; :func:`first_outcome`
is the step of the link's statement that keeps the first copy of each outcome (and, for an outcome
linked by id, the first copy of its decision).
"""

from __future__ import annotations

from typing import Any

from closedloop.datasets.join.select import Selection

__all__ = ["dedupe_decisions", "first_outcome", "not_a_copy"]


def dedupe_decisions(con: Any, sel: Selection) -> None:
    """Create the temp table ``dup`` (``filename``, ``file_row_number``): the decision copies to drop.

    Copies are rare, so they are found from the ids alone — first the 64-bit hashes seen more
    than once (cheaper than grouping the id strings), then the ids among those rows that really
    repeat."""
    con.execute(
        f"""
        CREATE TEMP TABLE dup AS
        WITH h AS (
          SELECT hash(decision_id) AS h FROM dec_files
          WHERE {sel.at_cutoff()} GROUP BY 1 HAVING count(*) > 1
        ),
        c AS (
          SELECT decision_id, filename, file_row_number, ingest_ns, writer, seq FROM dec_files
          WHERE {sel.at_cutoff()} AND hash(decision_id) IN (SELECT h FROM h)
        )
        SELECT filename, file_row_number FROM (
          SELECT filename, file_row_number,
                 row_number() OVER (PARTITION BY decision_id
                                    ORDER BY ingest_ns, writer, seq) AS rn
          FROM c
          WHERE decision_id IN (SELECT decision_id FROM c GROUP BY decision_id HAVING count(*) > 1)
        ) WHERE rn > 1
        """,
        sel.cutoff,
    )


def not_a_copy(alias: str = "", engine: str = "duckdb") -> str:
    """The predicate of a decision row (``alias`` e.g. ``"d."``) that is not a copy to drop. On
    Spark the file and row are one key: a NOT IN over one column is a (broadcast) anti join there,
    over two a nested loop."""
    if engine == "spark":
        key = "{a}filename || '#' || CAST({a}file_row_number AS VARCHAR)"
        return f"{key.format(a=alias)} NOT IN (SELECT {key.format(a='')} FROM dup)"
    return f"({alias}filename, {alias}file_row_number) NOT IN (SELECT (filename, file_row_number) FROM dup)"


def first_outcome(linked: str) -> str:
    """The CTE ``linked``: of the rows of ``linked`` (outcomes with their linked decision, one row
    per copy of each), the first copy of each outcome, and of its decision."""
    return f"""linked AS (
          SELECT * FROM ({linked})
          QUALIFY row_number() OVER (
            PARTITION BY outcome_id
            ORDER BY ingest_ns, writer, seq, d_ingest NULLS LAST, d_writer, d_seq) = 1
        )"""

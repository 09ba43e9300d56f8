"""Stage *link*: each outcome linked to its decision and classified (the temp table ``lo``).

An outcome with a ``decision_id`` links to that decision; one without links by unit and time to
the latest decision of its unit at or before its event (docs/datasets.md, "Linking"). Each outcome
(deduplicated: :func:`~closedloop.datasets.join.dedupe.first_outcome`) gets one status: ``matched``
(it counts for its decision's label), or why not — :data:`OUTCOME_STATUSES`, counted in the
manifest. ``lo`` is small: one row per outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from closedloop.datasets.join.dedupe import first_outcome, not_a_copy
from closedloop.datasets.join.select import Selection
from closedloop.datasets.join.sql import quote

__all__ = ["OUTCOME_STATUSES", "by_unit", "classify", "link_ctes", "link_outcomes"]

#: The status of an outcome in ``lo``, in the manifest's order.
OUTCOME_STATUSES = (
    "matched", "unknown_id", "unlinked", "before_decision", "after_window", "out_of_range", "open", "other_kind",
)


def link_ctes(sel: Selection) -> str:
    """The CTEs ``o`` (the outcomes read), ``by_id`` (those with a decision id, with every copy of
    their decision), ``ou`` / ``du`` / ``by_unit`` (those without, linked by unit and time to the
    deduplicated decisions of their units)."""
    keep = "*" if sel.engine == "spark" else "* EXCLUDE (filename, file_row_number)"  # Spark: the key of by_unit
    return f"""o AS (
          SELECT {keep} FROM out_files
          WHERE {sel.at_cutoff()} AND {sel.outcome_ok}
        ),
        d_all AS (
          SELECT decision_id, unit, timestamp_ns, ingest_ns, writer, seq FROM dec_files
          WHERE {sel.at_cutoff()}
        ),
        by_id AS (  -- every copy of the decision; the first is chosen by the dedupe step
          SELECT o.*, d.timestamp_ns AS d_ts, d.decision_id AS d_id,
                 d.ingest_ns AS d_ingest, d.writer AS d_writer, d.seq AS d_seq
          FROM o LEFT JOIN d_all d ON o.decision_id = d.decision_id
          WHERE o.decision_id IS NOT NULL
        ),
        ou AS (SELECT * FROM o WHERE decision_id IS NULL),
        du AS (  -- deduplicated decisions of the units these outcomes name
          SELECT decision_id, unit, timestamp_ns FROM dec_files
          WHERE {sel.at_cutoff()} AND unit IN (SELECT unit FROM ou)
            AND {not_a_copy("", sel.engine)}
        ),
        {by_unit(sel.engine)}"""


def by_unit(engine: str) -> str:
    """The CTE ``by_unit``: each outcome of ``ou`` with the latest decision of ``du`` of its unit
    at or before its event (or none). DuckDB: an ASOF join. Spark has none: the outcomes and
    decisions of a unit in time order (a decision before an outcome at the same time), each
    outcome takes the last decision before it, and by_unit has by_id's columns in its order."""
    if engine != "spark":
        return """by_unit AS (
          SELECT ou.*, du.timestamp_ns AS d_ts, du.decision_id AS d_id
          FROM ou ASOF LEFT JOIN du ON ou.unit = du.unit AND ou.event_ns >= du.timestamp_ns
        )"""
    return """ev AS (
          SELECT unit, event_ns AS t, 1 AS side, filename AS f, file_row_number AS r, NULL AS k FROM ou
          UNION ALL
          SELECT unit, timestamp_ns, 0, NULL, NULL, struct_pack(ts := timestamp_ns, id := decision_id) FROM du
        ),
        ul AS (
          SELECT f, r, k FROM (
            SELECT side, f, r, last_value(k IGNORE NULLS) OVER (
              PARTITION BY unit ORDER BY t, side ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS k
            FROM ev
          ) WHERE side = 1
        ),
        by_unit AS (
          SELECT ou.*, ul.k.ts AS d_ts, ul.k.id AS d_id,
                 NULL::BIGINT AS d_ingest, NULL::VARCHAR AS d_writer, NULL::BIGINT AS d_seq
          FROM ou JOIN ul ON ou.filename = ul.f AND ou.file_row_number = ul.r
        )"""


def classify(kinds: Sequence[str], early_labels: bool) -> str:
    """The status of a linked outcome (one of :data:`OUTCOME_STATUSES`), the first that applies.
    With ``early_labels`` an outcome of a decision whose window is still open counts."""
    return f"""CASE
            WHEN d_id IS NULL AND decision_id IS NOT NULL THEN 'unknown_id'
            WHEN d_id IS NULL THEN 'unlinked'
            WHEN event_ns < d_ts THEN 'before_decision'
            WHEN event_ns > d_ts + $window THEN 'after_window'
            WHEN d_ts < $since OR d_ts >= $until THEN 'out_of_range'
            {"" if early_labels else "WHEN d_ts + $window > $cutoff THEN 'open'"}
            WHEN kind NOT IN ({", ".join(quote(k) for k in kinds)}) THEN 'other_kind'
            ELSE 'matched'
          END"""


def link_outcomes(con: Any, sel: Selection, kinds: Sequence[str], early_labels: bool) -> None:
    """Create the temp table ``lo``: one row per outcome (``outcome_id``, the linked
    ``decision_id`` or null, ``kind``, ``value``, ``event_ns``, ``ingest_ns``, the decision's time
    ``d_ts``, ``source``, ``status``). ``kinds``: the kinds the label policy has rules for."""
    union = "UNION ALL" if sel.engine == "spark" else "UNION ALL BY NAME"  # Spark: by_unit has by_id's columns in order
    con.execute(
        f"""
        CREATE TEMP TABLE lo AS
        WITH {link_ctes(sel)},
        {first_outcome(f"SELECT * FROM by_id {union} SELECT * FROM by_unit")}
        SELECT outcome_id, d_id AS decision_id, kind, value, event_ns, ingest_ns, d_ts, source,
          {classify(kinds, early_labels)} AS status
        FROM linked
        """,
        sel.params,
    )

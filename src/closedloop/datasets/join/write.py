"""Stage *write*: the dataset's rows to Parquet in one order, its manifest, published atomically.

:func:`write_rows` runs the one pass over the decisions that joins them with the labels' side and
writes ``data.parquet`` (all columns, :func:`row_select`, or those asked for:
:func:`written_columns`); :func:`manifest_content` is the manifest with its id (the sha256 of the
canonical content); :func:`publish` makes the directory appear whole or not at all.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from closedloop.base.files import fsync_dir, open_private_file, restrict_tree
from closedloop.datasets.join.columns import FIXED_COLUMNS
from closedloop.datasets.join.inputs import JoinInputs
from closedloop.datasets.join.label import Labeling
from closedloop.datasets.join.select import Selection
from closedloop.datasets.join.sql import ident, quote
from closedloop.errors import DatasetError
from closedloop.system.spec import LabelPolicy

__all__ = ["DATA_FILE", "MANIFEST_FILE", "RULES", "manifest_content", "publish", "row_select", "write_rows", "written_columns"]

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"

#: The join's rules in one sentence each, recorded in every manifest.
RULES = (
    "window: ts <= event <= ts + window; decisions: since <= ts < until, ts + window <= cutoff; "
    "records: ingest <= cutoff; dedupe first by (ingest_ns, writer, seq); unit link: latest "
    "decision of the unit at or before the event; label: first rule with a counted outcome, else "
    "the default of the decision's action; weight: 1 / (sample_prob * propensity)"
)


def row_select(labeling: Labeling, feats: Sequence[tuple[str, str]], policy: LabelPolicy, pos: str, neg: str) -> list[str]:
    """The columns of a dataset row, in order, as SQL over ``d`` (the decision) and ``l``."""
    label_expr = labeling.label_expr
    return [
        "d.decision_id", "d.unit", "d.timestamp_ns", "d.ingest_ns", "d.context_json",
        "d.features",
        *[f"{expr} AS {ident(col)}" for col, expr in feats],
        "d.score_names", "d.scores", "d.action", "d.propensity", "d.sample_prob",
        f"{labeling.weight_expr} AS weight", "d.bundle_version", "d.flight", "d.schema_version",
        "d.feature_fingerprint",
        f"{label_expr} AS label",
        f"CASE {label_expr} WHEN {quote(neg)} THEN 0 WHEN {quote(pos)} THEN 1 END::TINYINT AS label_value",
        *[f"l.a{i} AS {ident('outcome:' + r.kind)}" for i, r in enumerate(policy.rules)],
    ]


def written_columns(columns: Sequence[str] | None, feats: Sequence[tuple[str, str]], policy: LabelPolicy) -> list[str] | None:
    """The columns asked for (``build_dataset(columns=)``) plus ``label``, checked; None: all."""
    if columns is None:
        return None
    names = [*FIXED_COLUMNS, *[c for c, _ in feats], *["outcome:" + r.kind for r in policy.rules]]
    bad = [c for c in columns if c not in names] if not isinstance(columns, str) else [columns]
    if bad:
        raise DatasetError(f"The dataset 'columns' must be columns of the dataset {names}. Got {bad!r} instead.")
    return list(dict.fromkeys([*columns, "label"]))


def write_rows(con: Any, sel: Selection, labeling: Labeling, select: list[str], written: list[str] | None, data: Path) -> None:
    """Write the rows (``select`` of each decision in the dataset; only ``written`` if given) to
    the Parquet file ``data`` (zstd)."""
    order: list[str] = []
    if sel.engine == "spark":  # Spark writes the rows in DuckDB's order: by file, then by row in it
        from closedloop.datasets.join.spark import ORDER_COLUMNS

        order = list(ORDER_COLUMNS)
        select = [*select, f"d.filename AS {order[0]}", f"d.file_row_number AS {order[1]}"]
    body = f"""
          WITH {labeling.labels_cte}
          SELECT {", ".join(select)}
          FROM dec_files d LEFT JOIN l ON d.decision_id = l.decision_id {labeling.entity_join}
          WHERE {labeling.rows_where}"""
    if written is not None:  # a projection: DuckDB then reads only what these columns need
        body = f"SELECT {', '.join([*(ident(c) for c in written), *order])} FROM ({body})"
    # One thread for the pass that writes the rows: no race decides their order, so the same
    # files give the same row order (docs/datasets.md, "Row order"); what it costs:
    # docs/performance.md, "Datasets".
    con.execute("SET threads=1")
    con.execute(
        f"""
        COPY ({body}
        ) TO {quote(str(data))} (FORMAT parquet, COMPRESSION zstd)
        """,
        sel.params,
    )
    con.execute("RESET threads")


def manifest_content(
    inputs: JoinInputs, sel: Selection, feats: Sequence[tuple[str, str]], counts: dict[str, Any],
    audit: dict[str, Any] | None, written: list[str] | None,
) -> dict[str, Any]:
    """The manifest: what was joined, how, and the counts; ``id`` first, the sha256 of the rest
    (canonical JSON, keys sorted). A key that is not always there is written only when used, so
    that other datasets' ids stay what they were."""
    system, policy = inputs.system, inputs.policy
    content: dict[str, Any] = {
        "format": 1,
        "system": system.name,
        "schema_version": system.schema_version,
        "labels": list(system.labels),
        "policy": policy.describe(),
        "since_ns": inputs.since_ns,
        "until_ns": inputs.until_ns,
        "cutoff_ns": inputs.cutoff_ns,
        "feature_names": {k: list(v) for k, v in inputs.feature_names.items()},
        "columns": {
            "features": [c for c, _ in feats],
            "outcomes": {r.kind: "outcome:" + r.kind for r in policy.rules},
        },
        "rules": RULES,
        "counts": counts,
    }
    if inputs.excluded or inputs.weights:
        content["sources"] = {"excluded": inputs.excluded, "weights": dict(sorted(inputs.weights.items()))}
    if inputs.exclude_ingested:
        content["excluded_ingested"] = [list(r) for r in sel.ingested]
    if audit is not None:
        content["audit"] = audit
    if written is not None:
        content["written_columns"] = written
    if inputs.early_labels:
        content["early_labels"] = True
    canonical = msgspec.json.encode(content, order="sorted")
    return {"id": hashlib.sha256(canonical).hexdigest(), **content}


def publish(tmp: Path, out: Path, content: dict[str, Any]) -> None:
    """Write the manifest into ``tmp`` (which holds the data file), make both durable, and
    rename ``tmp`` to ``out`` — a reader sees a whole dataset or none. What ``tmp`` holds is made
    private first (files ``0600``, folders ``0700``: DuckDB and Arrow create theirs ``0644``)."""
    with open_private_file(tmp / MANIFEST_FILE, "wb") as fh:
        fh.write(msgspec.json.format(msgspec.json.encode(content, order="sorted"), indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    with open(tmp / DATA_FILE, "rb") as fh:
        os.fsync(fh.fileno())
    restrict_tree(tmp)
    os.rename(tmp, out)
    fsync_dir(out.parent)

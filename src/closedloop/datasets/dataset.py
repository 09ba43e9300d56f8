"""Decisions joined with outcomes under a label policy: the Dataset.

:func:`build_dataset` reads the telemetry Parquet files (``DECISION_SCHEMA`` / ``OUTCOME_SCHEMA``)
with DuckDB and writes one Parquet file and a ``manifest.json``; :func:`load_dataset` reads it
back. The join's rules — point in time, deduplication, linking, windows, row order, aggregation,
label, weight, sources, and the counts of every outcome not used — are in docs/datasets.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from closedloop.base.files import fsync_dir, make_private_dirs, open_private_file, restrict_tree
from closedloop.context.schema import Columns
from closedloop.errors import ContextError, DatasetError
from closedloop.system.spec import LabelPolicy, System
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["DatasetError", "DatasetManifest", "build_dataset", "load_dataset", "read_feature_sets"]

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
#: DuckDB's memory limit for the join (it spills to disk beyond it).
MEMORY_LIMIT = "900MB"

_FIXED_COLUMNS = (
    "decision_id", "unit", "timestamp_ns", "ingest_ns", "context_json", "features", "score_names",
    "scores", "action", "propensity", "sample_prob", "weight", "bundle_version", "flight",
    "schema_version", "feature_fingerprint", "label", "label_value",
)


@dataclass(frozen=True)
class DatasetManifest:
    """What a dataset is: its id (cited by training and evaluation), inputs, policy and counts."""

    id: str
    path: Path
    content: dict[str, Any] = field(repr=False)

    @property
    def counts(self) -> dict[str, Any]:
        return self.content["counts"]

    @property
    def data_path(self) -> Path:
        return self.path / DATA_FILE

    @classmethod
    def read(cls, path: Path | str) -> DatasetManifest:
        path = Path(path)
        content = json.loads((path / MANIFEST_FILE).read_text())
        return cls(id=content["id"], path=path, content=content)


def _q(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _register(con: Any, name: str, files: Sequence[Path | str], schema: pa.Schema) -> None:
    paths = [str(f) for f in files]
    if paths:
        lst = "[" + ", ".join(_q(f) for f in paths) + "]"
        con.execute(
            f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet({lst}, filename=true, "
            "file_row_number=true)"
        )
    else:
        empty = schema.append(pa.field("filename", pa.string())).append(
            pa.field("file_row_number", pa.int64())
        ).empty_table()
        con.register(f"{name}_empty", empty)
        con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {name}_empty")


def _ingest_ranges(ranges: Any) -> list[tuple[str, int, int]]:
    out = []
    for r in ranges or ():
        ok = isinstance(r, tuple | list) and len(r) == 3 and isinstance(r[0], str) and r[0]
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in r[1:]) and r[1] < r[2]
        if not ok:
            raise DatasetError(
                f"Each 'exclude_ingested' entry must be (kind, start_ns, end_ns) with start < end. Got {r!r} instead."
            )
        out.append((str(r[0]), int(r[1]), int(r[2])))
    return out


def _aggregate_sql(aggregate: str, kind: str) -> str:
    flt = f"FILTER (WHERE kind = {_q(kind)})"
    key = "struct_pack(e := event_ns, i := ingest_ns, o := outcome_id)"
    return {
        "earliest": f"arg_min(value, {key}) {flt}",
        "latest": f"arg_max(value, {key}) {flt}",
        "sum": f"sum(value) {flt}",
        "max": f"max(value) {flt}",
        "any": f"max(CASE WHEN value <> 0 THEN 1.0 ELSE 0.0 END) {flt}",
    }[aggregate]


def _feature_columns(
    names_by_fp: Mapping[str, Sequence[str]],
) -> list[tuple[str, str]]:
    """(column name, SQL expression) per feature name, across fingerprints."""
    order: list[str] = []
    for names in names_by_fp.values():
        for n in names:
            if n not in order:
                order.append(n)
    out = []
    for n in order:
        cases = [
            f"WHEN {_q(fp)} THEN d.features[{list(names).index(n) + 1}]"
            for fp, names in names_by_fp.items()
            if n in names
        ]
        col = n if n not in _FIXED_COLUMNS and not n.startswith("outcome:") else f"feature:{n}"
        out.append((col, f"CASE d.feature_fingerprint {' '.join(cases)} END"))
    return out


def build_dataset(
    system: System,
    *,
    decision_files: Sequence[Path | str],
    outcome_files: Sequence[Path | str],
    since_ns: int,
    until_ns: int,
    cutoff_ns: int,
    out: Path | str,
    policy: LabelPolicy | None = None,
    feature_names: Mapping[str, Sequence[str]] | None = None,
    memory_limit: str = MEMORY_LIMIT,
    exclude_sources: Sequence[str] = (),
    source_weights: Mapping[str, float] | None = None,
    exclude_ingested: Sequence[tuple[str, int, int]] = (),
    columns: Sequence[str] | None = None,
    early_labels: bool = False,
) -> DatasetManifest:
    """Join decisions with outcomes under ``policy`` (default ``system.label_policy``).

    Writes ``out/data.parquet`` and ``out/manifest.json`` atomically (``out`` must not exist)
    and returns the manifest. The rules are in docs/datasets.md. ``feature_names`` maps
    a feature fingerprint to its feature names (default: the system's own feature set); each
    name becomes a column next to the ``features`` list. ``exclude_sources`` and
    ``source_weights`` act on outcome sources (docs/datasets.md, "Weight" and "Sources").
    ``exclude_ingested``: ``(kind, start_ns, end_ns)`` — outcomes of that kind ingested in
    ``[start_ns, end_ns)`` are left out (a batch of labels found corrupted, e.g. by
    ``closedloop.orchestration.LabelCheck``).
    ``columns``: write only these columns of the data file (``label`` is always written), e.g.
    ``["decision_id", "timestamp_ns", "action", "label_value", "weight"]`` for a labels-only
    dataset that skips the contexts; the manifest records them (``written_columns``).
    ``early_labels``: also take open decisions that already have a counted outcome (module
    docstring, "Decisions in the dataset"); the manifest says so (``early_labels``).
    """
    import duckdb

    policy = policy if policy is not None else system.label_policy
    if policy is None:
        raise DatasetError(
            f"System '{system.name}' declares no label policy and none was given; pass policy=."
        )
    for name, v in (("since_ns", since_ns), ("until_ns", until_ns), ("cutoff_ns", cutoff_ns)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DatasetError(f"The dataset '{name}' must be an integer (ns). Got {v!r} instead.")
    if not isinstance(early_labels, bool):
        raise DatasetError(f"The dataset 'early_labels' must be True or False. Got {early_labels!r} instead.")
    if until_ns <= since_ns:
        raise DatasetError(
            f"The dataset time range must have until_ns > since_ns. Got [{since_ns}, {until_ns}) instead."
        )
    excluded = _sources(exclude_sources)
    weights = _source_weights(source_weights)
    decision_files = sorted(str(f) for f in decision_files)  # one order: "Row order" above
    outcome_files = sorted(str(f) for f in outcome_files)
    out = Path(out)
    if out.exists():
        raise DatasetError(f"The dataset directory '{out}' already exists; datasets are immutable.")
    if feature_names is None:
        feature_names = {system.feature_fingerprint: [f.name for f in system.features.features]}
    window_ns = int(policy.window.total_seconds() * 1_000_000_000)
    pos, neg = system.labels[1], system.labels[0]
    kinds = [r.kind for r in policy.rules]

    make_private_dirs(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    make_private_dirs(tmp)
    try:
        con = duckdb.connect()
        con.execute(f"SET memory_limit={_q(memory_limit)}")
        con.execute(f"SET temp_directory={_q(str(tmp / 'spill'))}")
        con.execute("SET preserve_insertion_order=false")
        _register(con, "dec_files", decision_files, DECISION_SCHEMA)
        _register(con, "out_files", outcome_files, OUTCOME_SCHEMA)
        sysq = _q(system.name)
        p = {"cutoff": cutoff_ns, "window": window_ns, "since": since_ns, "until": until_ns}
        src_ok = "TRUE"
        if excluded:
            src_ok = f"source NOT IN ({', '.join(_q(x) for x in excluded)})"
        for kind, start, end in _ingest_ranges(exclude_ingested):
            src_ok += f" AND NOT (kind = {_q(kind)} AND ingest_ns >= {start} AND ingest_ns < {end})"

        # 1. decision copies to drop (a retried write): rare, so found from the ids alone — first
        #    the 64-bit hashes seen more than once (cheaper than grouping the id strings), then
        #    the ids among those rows that really repeat.
        con.execute(
            f"""
            CREATE TEMP TABLE dup AS
            WITH h AS (
              SELECT hash(decision_id) AS h FROM dec_files
              WHERE system = {sysq} AND ingest_ns <= $cutoff GROUP BY 1 HAVING count(*) > 1
            ),
            c AS (
              SELECT decision_id, filename, file_row_number, ingest_ns, writer, seq FROM dec_files
              WHERE system = {sysq} AND ingest_ns <= $cutoff AND hash(decision_id) IN (SELECT h FROM h)
            )
            SELECT filename, file_row_number FROM (
              SELECT filename, file_row_number,
                     row_number() OVER (PARTITION BY decision_id
                                        ORDER BY ingest_ns, writer, seq) AS rn
              FROM c
              WHERE decision_id IN (SELECT decision_id FROM c GROUP BY decision_id HAVING count(*) > 1)
            ) WHERE rn > 1
            """,
            {"cutoff": cutoff_ns},
        )
        # 2. outcomes: deduplicated, linked, classified (small: one row per outcome).
        con.execute(
            f"""
            CREATE TEMP TABLE lo AS
            WITH o AS (
              SELECT * EXCLUDE (filename, file_row_number) FROM out_files
              WHERE system = {sysq} AND ingest_ns <= $cutoff AND {src_ok}
            ),
            d_all AS (
              SELECT decision_id, unit, timestamp_ns, ingest_ns, writer, seq FROM dec_files
              WHERE system = {sysq} AND ingest_ns <= $cutoff
            ),
            by_id AS (  -- every copy of the decision; the first is chosen below
              SELECT o.*, d.timestamp_ns AS d_ts, d.decision_id AS d_id,
                     d.ingest_ns AS d_ingest, d.writer AS d_writer, d.seq AS d_seq
              FROM o LEFT JOIN d_all d ON o.decision_id = d.decision_id
              WHERE o.decision_id IS NOT NULL
            ),
            ou AS (SELECT * FROM o WHERE decision_id IS NULL),
            du AS (  -- deduplicated decisions of the units these outcomes name
              SELECT decision_id, unit, timestamp_ns FROM dec_files
              WHERE system = {sysq} AND ingest_ns <= $cutoff AND unit IN (SELECT unit FROM ou)
                AND (filename, file_row_number) NOT IN (SELECT (filename, file_row_number) FROM dup)
            ),
            by_unit AS (
              SELECT ou.*, du.timestamp_ns AS d_ts, du.decision_id AS d_id
              FROM ou ASOF LEFT JOIN du ON ou.unit = du.unit AND ou.event_ns >= du.timestamp_ns
            ),
            linked AS (
              SELECT * FROM (SELECT * FROM by_id UNION ALL BY NAME SELECT * FROM by_unit)
              QUALIFY row_number() OVER (
                PARTITION BY outcome_id
                ORDER BY ingest_ns, writer, seq, d_ingest NULLS LAST, d_writer, d_seq) = 1
            )
            SELECT outcome_id, d_id AS decision_id, kind, value, event_ns, ingest_ns, d_ts, source,
              CASE
                WHEN d_id IS NULL AND decision_id IS NOT NULL THEN 'unknown_id'
                WHEN d_id IS NULL THEN 'unlinked'
                WHEN event_ns < d_ts THEN 'before_decision'
                WHEN event_ns > d_ts + $window THEN 'after_window'
                WHEN d_ts < $since OR d_ts >= $until THEN 'out_of_range'
                {"" if early_labels else "WHEN d_ts + $window > $cutoff THEN 'open'"}
                WHEN kind NOT IN ({", ".join(_q(k) for k in kinds)}) THEN 'other_kind'
                ELSE 'matched'
              END AS status
            FROM linked
            """,
            p,
        )
        # 3. the join: one pass over the decisions, the labels from the small side.
        agg_cols = []
        # the class a rule gives when it has a counted outcome (row i of the aggregates)
        rule_label = [_q(r.label) if r.label is not None else f"CASE WHEN l.a{i} <> 0 THEN {_q(pos)} ELSE {_q(neg)} END"
                      for i, r in enumerate(policy.rules)]
        label_cases = [f"WHEN l.n{i} > 0 THEN {rule_label[i]}" for i in range(len(policy.rules))]
        for i, r in enumerate(policy.rules):
            agg_cols.append(f"count(*) FILTER (WHERE kind = {_q(r.kind)}) AS n{i}")
            agg_cols.append(f"{_aggregate_sql(r.aggregate, r.kind)} AS a{i}")
        rows_where = f"""d.system = {sysq} AND d.ingest_ns <= $cutoff
                AND d.timestamp_ns >= $since AND d.timestamp_ns < $until
                AND {"(d.timestamp_ns + $window <= $cutoff OR l.decision_id IS NOT NULL)" if early_labels
                     else "d.timestamp_ns + $window <= $cutoff"}
                AND (d.filename, d.file_row_number) NOT IN
                    (SELECT (filename, file_row_number) FROM dup)"""

        def l_cte() -> str:  # the labels' side, with the aggregate columns declared so far
            return f"""l AS (
                SELECT decision_id, {", ".join(agg_cols)}
                FROM lo WHERE status = 'matched' GROUP BY decision_id
              )"""

        entity_join, entity_case = "", ""
        if policy.entity is not None:
            # LabelPolicy(entity=): the label most of the entity's decisions with an outcome got
            path = '$."' + policy.entity + '"'  # JSONPath to the field, quoted
            ent = f"json_extract_string(d.context_json, {_q(path)})"
            # one pass: each entity's votes (decisions with an outcome, by their rules) and how many
            # of its decisions have none (they take the entity's label: the manifest counts them)
            con.execute(
                f"""
                CREATE TEMP TABLE ent AS
                WITH {l_cte()}
                SELECT e, CASE WHEN p > q THEN {_q(pos)} WHEN q > p THEN {_q(neg)} END AS elabel, n_silent FROM (
                  SELECT {ent} AS e, count(*) FILTER (WHERE rl = {_q(pos)}) AS p,
                         count(*) FILTER (WHERE rl = {_q(neg)}) AS q, count(*) FILTER (WHERE no_outcome) AS n_silent
                  FROM (SELECT d.context_json, CASE {' '.join(label_cases)} END AS rl, l.decision_id IS NULL AS no_outcome
                        FROM dec_files d LEFT JOIN l ON d.decision_id = l.decision_id WHERE {rows_where}) AS d
                  GROUP BY e)
                WHERE e IS NOT NULL AND p <> q
                """,
                p,
            )
            entity_join = f"LEFT JOIN ent ON {ent} = ent.e"
            entity_case = "WHEN ent.elabel IS NOT NULL THEN ent.elabel"
        label_expr = f"CASE {' '.join(label_cases)} {entity_case} ELSE {_default_sql(policy)} END"
        feats = _feature_columns(feature_names)
        weight_expr = "1.0 / d.sample_prob"
        if policy.inverse_propensity:
            weight_expr = "1.0 / (d.sample_prob * d.propensity)"
        audit: dict[str, Any] | None = None
        hidden = [a for a in system.actions if policy.default_for(a) is None]
        if policy.audit is not None and hidden:
            # LabelPolicy(audit=): in the bands whose outcome is hidden, the audit alone labels,
            # each audited decision standing for (decisions / audited decisions) of its action
            ai = [r.kind for r in policy.rules].index(policy.audit)
            audit_label = rule_label[ai]
            in_hidden = f"d.action IN ({', '.join(_q(a) for a in hidden)})"
            audit = {"kind": policy.audit, "actions": {}}
            rows = con.execute(
                f"""
                WITH a AS (SELECT DISTINCT decision_id FROM lo WHERE status = 'matched' AND kind = {_q(policy.audit)})
                SELECT d.action, count(*), count(a.decision_id)
                FROM dec_files d LEFT JOIN a ON d.decision_id = a.decision_id
                WHERE d.system = {sysq} AND d.ingest_ns <= $cutoff
                  AND d.timestamp_ns >= $since AND d.timestamp_ns < $until
                  AND d.timestamp_ns + $window <= $cutoff AND {in_hidden}
                  AND (d.filename, d.file_row_number) NOT IN (SELECT (filename, file_row_number) FROM dup)
                GROUP BY d.action ORDER BY d.action
                """,
                p,
            ).fetchall()
            factor = []
            for action, n, n_audited in rows:
                w = float(n) / float(n_audited) if n_audited else None
                audit["actions"][str(action)] = {"decisions": int(n), "audited": int(n_audited), "weight": w}
                if w is not None:
                    factor.append(f"WHEN {_q(str(action))} THEN {w!r}")
            label_expr = (f"CASE WHEN {in_hidden} THEN (CASE WHEN l.n{ai} > 0 THEN {audit_label} END) "
                          f"ELSE {label_expr} END")
            if factor:
                weight_expr = f"{weight_expr} * (CASE WHEN {in_hidden} THEN (CASE d.action {' '.join(factor)} ELSE 1.0 END) ELSE 1.0 END)"
        if weights:
            cases = " ".join(f"WHEN {_q(k)} THEN {v!r}" for k, v in sorted(weights.items()))
            agg_cols.append(f"min(CASE source {cases} ELSE 1.0 END) AS sw")
            weight_expr = f"{weight_expr} * coalesce(l.sw, 1.0)"
        select = [
            "d.decision_id", "d.unit", "d.timestamp_ns", "d.ingest_ns", "d.context_json",
            "d.features",
            *[f"{expr} AS {_ident(col)}" for col, expr in feats],
            "d.score_names", "d.scores", "d.action", "d.propensity", "d.sample_prob",
            f"{weight_expr} AS weight", "d.bundle_version", "d.flight", "d.schema_version",
            "d.feature_fingerprint",
            f"{label_expr} AS label",
            f"CASE {label_expr} WHEN {_q(neg)} THEN 0 WHEN {_q(pos)} THEN 1 END::TINYINT AS label_value",
            *[f"l.a{i} AS {_ident('outcome:' + r.kind)}" for i, r in enumerate(policy.rules)],
        ]
        written = None
        if columns is not None:
            names = [*_FIXED_COLUMNS, *[c for c, _ in feats], *["outcome:" + r.kind for r in policy.rules]]
            bad = [c for c in columns if c not in names] if not isinstance(columns, str) else [columns]
            if bad:
                raise DatasetError(f"The dataset 'columns' must be columns of the dataset {names}. Got {bad!r} instead.")
            written = list(dict.fromkeys([*columns, "label"]))
        data = tmp / DATA_FILE
        body = f"""
              WITH {l_cte()}
              SELECT {", ".join(select)}
              FROM dec_files d LEFT JOIN l ON d.decision_id = l.decision_id {entity_join}
              WHERE {rows_where}"""
        if written is not None:  # a projection: DuckDB then reads only what these columns need
            body = f"SELECT {', '.join(_ident(c) for c in written)} FROM ({body})"
        # One thread for the pass that writes the rows: no race decides their order, so the same
        # files give the same row order (docs/datasets.md, "Row order"); what it costs:
        # docs/performance.md, "Datasets".
        con.execute("SET threads=1")
        con.execute(
            f"""
            COPY ({body}
            ) TO {_q(str(data))} (FORMAT parquet, COMPRESSION zstd)
            """,
            p,
        )
        con.execute("RESET threads")
        # 4. counts (cheap: single columns, the small tables, the written file).
        dec_counts = con.execute(
            f"""
            SELECT
              count(*) FILTER (WHERE timestamp_ns >= $since AND timestamp_ns < $until),
              count(*) FILTER (WHERE timestamp_ns >= $since AND timestamp_ns < $until
                               AND timestamp_ns + $window > $cutoff)
            FROM dec_files
            WHERE system = {sysq} AND ingest_ns <= $cutoff
              AND (filename, file_row_number) NOT IN (SELECT (filename, file_row_number) FROM dup)
            """,
            p,
        ).fetchone()
        n_dup_dec = con.execute("SELECT count(*) FROM dup").fetchone()
        n_entity = None
        if policy.entity is not None:
            n_entity = con.execute("SELECT coalesce(sum(n_silent), 0) FROM ent").fetchone()
        early_sql = "0"
        if early_labels and (written is None or "timestamp_ns" in written):
            early_sql = f"count(*) FILTER (WHERE timestamp_ns + {window_ns} > {cutoff_ns})"
        row_counts = con.execute(
            f"SELECT count(*), count(label), {early_sql} FROM read_parquet({_q(str(data))})"
        ).fetchone()
        o_read = con.execute(
            f"SELECT count(*) FILTER (WHERE {src_ok}), count(*) FILTER (WHERE NOT ({src_ok})) "
            f"FROM out_files WHERE system = {sysq} AND ingest_ns <= $cutoff",
            {"cutoff": cutoff_ns},
        ).fetchone()
        status = dict(con.execute("SELECT status, count(*) FROM lo GROUP BY status").fetchall())
        con.close()
        if not (dec_counts and n_dup_dec and row_counts and o_read):  # COUNT(*) always returns a row
            raise DatasetError("DuckDB returned no counts for the dataset's manifest.")
        n_lo = sum(status.values())
        counts = {
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
                **{
                    k: int(status.get(k, 0))
                    for k in (
                        "matched", "unknown_id", "unlinked", "before_decision", "after_window",
                        "out_of_range", "open", "other_kind",
                    )
                },
                "excluded_source": int(o_read[1]),
            },
        }
        shutil.rmtree(tmp / "spill", ignore_errors=True)
        content: dict[str, Any] = {
            "format": 1,
            "system": system.name,
            "schema_version": system.schema_version,
            "labels": list(system.labels),
            "policy": policy.describe(),
            "since_ns": since_ns,
            "until_ns": until_ns,
            "cutoff_ns": cutoff_ns,
            "feature_names": {k: list(v) for k, v in feature_names.items()},
            "columns": {
                "features": [c for c, _ in feats],
                "outcomes": {r.kind: "outcome:" + r.kind for r in policy.rules},
            },
            "rules": _RULES,
            "counts": counts,
        }
        if excluded or weights:
            content["sources"] = {"excluded": excluded, "weights": dict(sorted(weights.items()))}
        if exclude_ingested:
            content["excluded_ingested"] = [list(r) for r in _ingest_ranges(exclude_ingested)]
        if audit is not None:
            content["audit"] = audit
        if written is not None:
            content["written_columns"] = written
        if n_entity is not None:
            counts["decisions"]["entity_labeled"] = int(n_entity[0])
        if early_labels:  # written only when used: other datasets' ids stay what they were
            content["early_labels"] = True
            counts["decisions"]["early"] = int(row_counts[2])
        canonical = msgspec.json.encode(content, order="sorted")
        ds_id = hashlib.sha256(canonical).hexdigest()
        content = {"id": ds_id, **content}
        publish(tmp, out, content)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetManifest(id=ds_id, path=out, content=content)


_RULES = (
    "window: ts <= event <= ts + window; decisions: since <= ts < until, ts + window <= cutoff; "
    "records: ingest <= cutoff; dedupe first by (ingest_ns, writer, seq); unit link: latest "
    "decision of the unit at or before the event; label: first rule with a counted outcome, else "
    "the default of the decision's action; weight: 1 / (sample_prob * propensity)"
)


def _default_sql(policy: LabelPolicy) -> str:
    """The label of a row without a counted outcome: per action, else the policy default."""
    def lit(label: str | None) -> str:
        return _q(label) if label is not None else "NULL::VARCHAR"

    if not policy.action_defaults:
        return lit(policy.default)
    cases = " ".join(f"WHEN {_q(a)} THEN {lit(lab)}" for a, lab in sorted(policy.action_defaults.items()))
    return f"CASE d.action {cases} ELSE {lit(policy.default)} END"


def _sources(sources: Sequence[str]) -> list[str]:
    if isinstance(sources, str) or not all(isinstance(x, str) and x for x in sources):
        raise DatasetError(
            f"The dataset 'exclude_sources' must be a list of source names. Got {sources!r} instead."
        )
    return sorted(set(sources))


def _source_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    import math

    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise DatasetError(f"The dataset 'source_weights' must map a source to a weight. Got {weights!r} instead.")
    out = {}
    for k, v in weights.items():
        if not isinstance(k, str) or not k:
            raise DatasetError(f"The dataset 'source_weights' must be keyed by source names. Got {k!r} instead.")
        if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise DatasetError(
                f"The weight of source {k!r} in 'source_weights' must be a number in [0, 1]. Got {v!r} instead."
            )
        out[k] = float(v)
    return out


def read_feature_sets(home: Path | str) -> dict[str, list[str]]:
    """The feature names of each fingerprint the store has seen
    (``<home>/telemetry/feature_sets/<fingerprint>.json`` holding ``{"names": [...]}``)."""
    out: dict[str, list[str]] = {}
    d = Path(home) / "telemetry" / "feature_sets"
    for p in sorted(d.glob("*.json")) if d.is_dir() else ():
        out[p.stem] = list(json.loads(p.read_text())["names"])
    return out


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


def load_dataset(path: Path | str, system: System) -> tuple[pa.Table, Columns]:
    """Load a dataset → (the table, its contexts decoded into the *current* context schema).

    Rows logged under an older context schema are read through ``system.schema``: a field added
    since takes its default, a field removed is ignored. Rows without a context (not sampled in)
    are left out of both the table and the columns; the table returned is row-aligned with the
    columns. A context that cannot be read into the current schema (a required field added
    without a default) raises :class:`~closedloop.errors.ContextError` naming the row.
    """
    path = Path(path)
    data = path / DATA_FILE if path.is_dir() else path
    table = pq.read_table(data)
    import pyarrow.compute as pc

    table = table.filter(pc.is_valid(table["context_json"]))
    return table, decode_contexts(table["context_json"], system)


def decode_contexts(raws: pa.ChunkedArray | pa.Array, system: System) -> Columns:
    """The contexts ``raws`` (JSON text, no nulls) decoded into the *current* context schema and
    validated, as :func:`load_dataset` does (a context that cannot be read raises
    :class:`~closedloop.errors.ContextError` naming its position in ``raws``). Each row's result
    depends on its text only, so a caller may decode rows in parts and combine them."""
    schema = system.schema
    names = [f.name for f in schema.fields]
    contexts = _decode_all(schema, raws)
    if contexts is None:  # some row needs the explaining path: decode one by one, naming the row
        contexts = [_decode_one(schema, raw, row) for row, raw in enumerate(raws.to_pylist())]
    cols: dict[str, Any] = {n: [] for n in names}
    if contexts:
        rows = map(msgspec.structs.astuple, contexts)  # fields in schema order
        cols = {n: list(values) for n, values in zip(names, zip(*rows, strict=True), strict=True)}
    return schema.validate_batch(cols) if len(raws) else _empty_columns(schema)


def _decode_all(schema: Any, raws: pa.ChunkedArray) -> list[Any] | None:
    """Every context in one C call (a JSON array decoded straight into the schema's structs),
    or None when any row is refused — then :func:`_decode_one` explains it. Unknown fields
    (removed since) are ignored and missing ones (added since) take their defaults, as in the
    row-by-row path. The array's text is joined by Arrow (no Python string per row)."""
    import pyarrow.compute as pc

    if len(raws) == 0:
        return []
    arr = raws.combine_chunks() if isinstance(raws, pa.ChunkedArray) else raws
    one = pa.LargeListArray.from_arrays(pa.array([0, len(arr)], pa.int64()), arr.cast(pa.large_string()))
    text = pc.binary_join(one, pa.scalar(",", pa.large_string()))[0].as_buffer()
    try:
        return msgspec.json.decode(b"[" + memoryview(text).tobytes() + b"]", type=list[schema.struct])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _decode_one(schema: Any, raw: str, row: int) -> Any:
    obj = msgspec.json.decode(raw)
    if not isinstance(obj, dict):
        obj = {}
    known = {k: v for k, v in obj.items() if k in schema.by_name}
    try:
        return schema.validate(known)
    except ContextError as e:  # re-raise naming the row
        raise ContextError(e.field, e.rule, e.value, row) from None


def _empty_columns(schema: Any) -> Columns:
    import numpy as np

    return Columns({f.name: [] for f in schema.fields}, 0, np.zeros(0, dtype=np.int64), [])

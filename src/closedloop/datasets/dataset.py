"""Decisions joined with outcomes under a label policy: the Dataset.

:func:`build_dataset` reads the telemetry Parquet files (``DECISION_SCHEMA`` / ``OUTCOME_SCHEMA``)
with DuckDB (or Spark: ``engine="spark"``, the same join) and writes one Parquet file and a
``manifest.json``; :func:`load_dataset` reads it
back. The join's rules — point in time, deduplication, linking, windows, row order, aggregation,
label, weight, sources, and the counts of every outcome not used — are in docs/datasets.md.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from closedloop.base.files import make_private_dirs
from closedloop.context.schema import Columns
from closedloop.datasets.join.columns import FIXED_COLUMNS as _FIXED_COLUMNS  # noqa: F401  (re-exported)
from closedloop.datasets.join.columns import feature_columns
from closedloop.datasets.join.counts import count
from closedloop.datasets.join.dedupe import dedupe_decisions
from closedloop.datasets.join.inputs import JoinInputs, check_inputs
from closedloop.datasets.join.label import label
from closedloop.datasets.join.link import link_outcomes
from closedloop.datasets.join.select import connect, select
from closedloop.datasets.join.sql import quote as _q  # noqa: F401  (re-exported: closedloop.orchestration uses it)
from closedloop.datasets.join.sql import register_files as _register  # noqa: F401  (re-exported, as _q)
from closedloop.datasets.join.write import DATA_FILE, MANIFEST_FILE, manifest_content, publish, row_select, write_rows, written_columns
from closedloop.errors import ContextError, DatasetError
from closedloop.system.spec import LabelPolicy, System

__all__ = ["DatasetError", "DatasetManifest", "build_dataset", "load_dataset", "read_feature_sets"]

#: DuckDB's memory limit for the join (it spills to disk beyond it).
MEMORY_LIMIT = "900MB"
#: The engines that run the join: DuckDB on this machine, or Spark (docs/datasets.md, "Spark").
ENGINES = ("duckdb", "spark")


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
    engine: str = "duckdb",
    spark_master: str | None = None,
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
    ``early_labels``: also take open decisions that already have a counted outcome
    (docs/datasets.md, "Decisions in the dataset"); the manifest says so (``early_labels``).
    ``engine``: ``"duckdb"`` (this machine) or ``"spark"`` (PySpark: the same join, rows, labels,
    weights, row order and manifest — docs/datasets.md, "Spark"); ``spark_master``: the Spark
    master URL (default ``local[2]``; with a SparkSession already active, that one is used).
    """
    if engine not in ENGINES:
        raise DatasetError(f"The dataset 'engine' must be one of {', '.join(map(repr, ENGINES))}. Got {engine!r} instead.")
    if spark_master is not None and engine != "spark":
        raise DatasetError(f"The dataset 'spark_master' is for engine='spark' only. Got engine={engine!r} instead.")
    inputs = check_inputs(
        system, policy=policy, since_ns=since_ns, until_ns=until_ns, cutoff_ns=cutoff_ns, early_labels=early_labels,
        exclude_sources=exclude_sources, source_weights=source_weights, exclude_ingested=exclude_ingested,
        decision_files=decision_files, outcome_files=outcome_files, out=out, feature_names=feature_names,
    )
    out = inputs.out
    make_private_dirs(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    make_private_dirs(tmp)
    try:
        if engine == "spark":
            from closedloop.datasets.join.spark import SparkConnection, spark_session

            with spark_session(spark_master, tmp / "spill") as spark:
                content = join(inputs, tmp, memory_limit, columns, SparkConnection(spark, tmp))
        else:
            content = join(inputs, tmp, memory_limit, columns)
        publish(tmp, out, content)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetManifest(id=content["id"], path=out, content=content)


def join(inputs: JoinInputs, tmp: Path, memory_limit: str, columns: Sequence[str] | None, spark: Any = None) -> dict[str, Any]:
    """The join's stages in order (closedloop.datasets.join): select, dedupe, link, label, write
    the rows to ``tmp/data.parquet``, count → the manifest's content (with its id). On DuckDB, or
    on Spark when ``spark`` is a :class:`~closedloop.datasets.join.spark.SparkConnection`."""
    con = connect(memory_limit, tmp / "spill") if spark is None else spark
    sel = select(con, inputs, "duckdb" if spark is None else "spark")
    dedupe_decisions(con, sel)
    link_outcomes(con, sel, [r.kind for r in inputs.policy.rules], inputs.early_labels)
    labeling = label(con, sel, inputs)
    feats = feature_columns(inputs.feature_names)
    pos, neg = inputs.system.labels[1], inputs.system.labels[0]
    rows = row_select(labeling, feats, inputs.policy, pos, neg)
    written = written_columns(columns, feats, inputs.policy)
    data = tmp / DATA_FILE
    write_rows(con, sel, labeling, rows, written, data)
    counts = count(con, sel, inputs, data, written)
    con.close()
    shutil.rmtree(tmp / "spill", ignore_errors=True)
    return manifest_content(inputs, sel, feats, counts, labeling.audit, written)


def read_feature_sets(home: Path | str) -> dict[str, list[str]]:
    """The feature names of each fingerprint the store has seen
    (``<home>/telemetry/feature_sets/<fingerprint>.json`` holding ``{"names": [...]}``)."""
    out: dict[str, list[str]] = {}
    d = Path(home) / "telemetry" / "feature_sets"
    for p in sorted(d.glob("*.json")) if d.is_dir() else ():
        out[p.stem] = list(json.loads(p.read_text())["names"])
    return out


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

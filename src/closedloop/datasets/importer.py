"""A labeled file from outside the loop → a dataset.

:func:`import_dataset` reads a CSV or Parquet file and writes the same dataset format as
:func:`~closedloop.datasets.dataset.build_dataset` (``data.parquet`` + ``manifest.json``), so that
:func:`~closedloop.datasets.dataset.load_dataset`, training and evaluation read it unchanged. The
rules, exactly:

Column names
    A column whose name is not a field name because it holds characters other than letters,
    digits and '_' (``user-item_affinity_0``) fills the field named with each of them replaced by
    '_' (``user_item_affinity_0``), unless a column has that name already; the renames are listed in
    ``manifest["source"]["renamed"]`` (written only when there are some).

Contexts
    The file's columns named like context fields (and, for a ranking system, like candidate
    fields: its features read both) are validated with
    ``validate_batch(..., errors="skip")`` (other columns are ignored; a context
    field with no column takes its default on every row and is listed in
    ``manifest["source"]["absent_fields"]``, so that evaluation can refuse to slice on it). A row that
    fails is left out and counted in ``manifest["counts"]["rejected"]`` by reason
    (``"<field>: <rule>"``); the first few are listed with their file row in
    ``manifest["rejected_examples"]``.

Label
    The ``label`` column must exist and hold, on every row, either 0/1 (1 = ``system.labels[1]``;
    integers, booleans or floats equal to 0 or 1) or the class names ``system.labels``. A null
    or any other value is an error naming the values (a file is curated data: a wrong label is
    not skipped silently). The kept rows must hold both classes.

Unit and time
    ``unit`` names a column (values as text; a null rejects the row, counted as ``"<column>:
    null unit"``), or ``None``: the file row index (as text) stands in. ``time`` names a column
    of ns integers, Arrow timestamps, or ISO 8601 text (without a zone offset: UTC), or ``None``:
    the file row index stands in (as ns). Either stand-in is recorded in
    ``manifest["source"]`` (``unit_stand_in`` / ``time_stand_in``) so reports can say so.

Rows
    ``decision_id`` is the file row index (as text), ``context_json`` the validated context
    (msgspec JSON), ``features`` the system's feature vector (and one column per feature, as in
    ``build_dataset``), ``weight`` and ``sample_prob`` 1.0, ``label`` the class name and
    ``label_value`` 0/1. A ranking system's rows (one a request and candidate) also have
    ``candidate_json``, the candidate fields (``context_json`` holds the request fields).

Logged bandit data
    With ``action=`` (and ``reward=``, ``propensity=``, ``position=``) the file is logged bandit
    feedback and the dataset has one row per (decision, slot): :mod:`closedloop.datasets.bandit`.

The dataset id is the sha256 of the canonical manifest content (without the id); the directory
is written to a temporary sibling and renamed into place, and ``out`` must not exist.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop.base.files import make_private_dirs
from closedloop.datasets.dataset import DatasetManifest
from closedloop.datasets.join.columns import feature_column
from closedloop.datasets.join.write import DATA_FILE, publish
from closedloop.errors import DatasetError, SpecError
from closedloop.system.spec import System

__all__ = ["import_dataset"]

#: How many rejected rows the manifest lists (all are counted).
REJECTED_EXAMPLES = 20


def read_file(path: Path) -> tuple[pa.Table, dict[str, str]]:
    """The file's table with its columns renamed to field names (module docstring, "Column
    names"), and the renames ``{column: field}``."""
    table = _read(path)
    names = list(table.column_names)
    taken = set(names)
    renamed: dict[str, str] = {}
    for i, nm in enumerate(names):
        if nm.isidentifier():
            continue
        to = re.sub(r"[^A-Za-z0-9_]", "_", nm)
        if to.isidentifier() and not to.startswith("_") and to not in taken:
            renamed[nm] = names[i] = to
            taken.add(to)
    return (table.rename_columns(names) if renamed else table), renamed


def _read(path: Path) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"The file to import '{path}' must exist. Got no such file instead.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"The file to import '{path}' must be readable as {suffix[1:]}. Got: {e}") from None
    raise DatasetError(f"The file to import must be .csv or .parquet. Got '{path.name}' instead.")


def _labels(col: pa.ChunkedArray, name: str, system: System) -> np.ndarray:
    """0/1 per row from 0/1 values or class names; anything else is an error naming it."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    neg, pos = system.labels
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        v = np.asarray(arr.cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
        ok = (v == 0.0) | (v == 1.0)
        if not ok.all():
            bad = sorted({repr(x) if x == x else "null" for x in v[~ok].tolist()})
            raise DatasetError(
                f"The label column '{name}' must hold 0/1 or the classes {[neg, pos]}. "
                f"Got {', '.join(bad[:5])} instead ({int((~ok).sum())} rows)."
            )
        return v.astype(np.int8)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_dictionary(arr.type):
        vals = arr.cast(pa.string()) if not pa.types.is_dictionary(arr.type) else arr.dictionary_decode()
        is_pos = np.asarray(pc.equal(vals, pos).fill_null(False))
        is_neg = np.asarray(pc.equal(vals, neg).fill_null(False))
        ok = is_pos | is_neg
        if not ok.all():
            bad = sorted({"null" if x is None else repr(x) for x in vals.filter(pa.array(~ok)).to_pylist()})
            raise DatasetError(
                f"The label column '{name}' must hold 0/1 or the classes {[neg, pos]}. "
                f"Got {', '.join(bad[:5])} instead ({int((~ok).sum())} rows)."
            )
        return is_pos.astype(np.int8)
    raise DatasetError(
        f"The label column '{name}' must hold 0/1 or the classes {[neg, pos]}. Got type {arr.type} instead."
    )


def times(col: pa.ChunkedArray, name: str) -> np.ndarray:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if arr.null_count:
        row = int(np.flatnonzero(~np.asarray(pc.is_valid(arr)))[0])
        raise DatasetError(f"The time column '{name}' must have a time on every row. Got null instead (row {row}).")
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            arr = arr.cast(pa.timestamp("ns", tz="UTC"))
        except pa.ArrowInvalid:
            try:
                arr = arr.cast(pa.timestamp("ns"))
            except pa.ArrowInvalid as e:
                raise DatasetError(
                    f"The time column '{name}' must hold ns integers or ISO 8601 times. Got: {e}"
                ) from None
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        if pa.types.is_date(arr.type):
            arr = arr.cast(pa.timestamp("ns"))
        arr = arr.cast(pa.timestamp("ns", tz=arr.type.tz)).cast(pa.int64())
    if not pa.types.is_integer(arr.type):
        raise DatasetError(
            f"The time column '{name}' must hold ns integers or ISO 8601 times. Got type {arr.type} instead."
        )
    return np.asarray(arr.cast(pa.int64()), dtype=np.int64)


def check_column(table: pa.Table, name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise SpecError(f"The '{what}' parameter of import_dataset must be a column name. Got {name!r} instead.")
    if name not in table.column_names:
        raise DatasetError(
            f"The {what} column '{name}' must be in the file. Got columns {table.column_names} instead."
        )


def import_dataset(
    path: Path | str,
    system: System,
    *,
    label: str | None = None,
    unit: str | None = None,
    time: str | None = None,
    out: Path | str,
    action: str | None = None,
    position: str | None = None,
    reward: str | None = None,
    propensity: str | None = None,
    decision: str | None = None,
    candidates: Path | str | None = None,
) -> DatasetManifest:
    """Import the labeled CSV/Parquet file ``path`` as a dataset at ``out`` (rules: module docstring).

    With ``action`` (the logged action or candidate id column) the file is logged bandit feedback
    and ``position``, ``reward``, ``propensity``, ``decision`` and ``candidates`` name its other
    columns and the candidate table: :func:`closedloop.datasets.bandit.import_bandit` (``label``
    then stays None).

    Returns the manifest; ``load_dataset(out, system)`` reads the dataset back. The stages: read
    the file and check its columns, read the label / time / unit columns, validate the contexts
    (rows rejected and counted), check the kept rows, build the rows as ``build_dataset`` writes
    them, the manifest, the write.
    """
    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of import_dataset must be a closedloop.System. Got {system!r} instead.")
    bandit: dict[str, Any] = {"position": position, "reward": reward, "propensity": propensity,
                              "decision": decision, "candidates": candidates}
    if action is not None:
        if label is not None:
            raise SpecError(f"import_dataset takes a 'label' column or an 'action' column (logged bandit data), "
                            f"not both. Got label={label!r}, action={action!r}.")
        from closedloop.datasets.bandit import import_bandit

        return import_bandit(path, system, action=action, unit=unit, time=time, out=out, **bandit)
    extra = sorted(k for k, v in bandit.items() if v is not None)
    if extra:
        raise SpecError(f"The parameters {extra} of import_dataset describe logged bandit data and need 'action'. "
                        f"Got action=None.")
    path = Path(path)
    out = Path(out)
    if out.exists():
        raise DatasetError(f"The dataset directory '{out}' already exists; datasets are immutable.")
    table, renamed = read_file(path)
    label = _check_columns(table, label, unit, time)
    y_all = _labels(table.column(label), label, system)
    t_all = times(table.column(time), time) if time is not None else np.arange(table.num_rows, dtype=np.int64)
    units, unit_ok = file_units(table, unit)
    kept = validate_contexts(table, system, unit_ok, unit)
    y = y_all[kept.cols.rows]
    _check_kept(kept, y, table.num_rows, path, label, system)
    ts = t_all[kept.cols.rows]
    rows = _dataset_rows(kept.cols, system, y, ts, units)
    content = _manifest(path, system, table, kept, y, ts, label=label, unit=unit, time=time, renamed=renamed)
    write_dataset(rows, out, content)
    return DatasetManifest(id=content["id"], path=out, content=content)


def _check_columns(table: pa.Table, label: Any, unit: Any, time: Any) -> str:
    """The label column, and the unit and time columns if named, are in the file."""
    if label is None:
        raise SpecError("The 'label' parameter of import_dataset must be a column name (or give 'action' for "
                        "logged bandit data). Got None instead.")
    check_column(table, label, "label")
    for col, what in ((unit, "unit"), (time, "time")):
        if col is not None:
            check_column(table, col, what)
    return str(label)


def file_units(table: pa.Table, unit: str | None) -> tuple[pa.Array, np.ndarray]:
    """The unit of each file row as text, and whether it has one (``unit`` None: the row index)."""
    n_read = table.num_rows
    if unit is not None:
        u_arr = table.column(unit).cast(pa.string())
        u_arr = u_arr.combine_chunks() if u_arr.num_chunks != 1 else u_arr.chunk(0)
        return u_arr, np.asarray(pc.is_valid(u_arr), dtype=bool)
    return pa.array([str(i) for i in range(n_read)], type=pa.string()), np.ones(n_read, dtype=bool)


@dataclass
class Kept:
    """The rows kept (their validated contexts; ``cols.rows``: their file rows) and the rows
    rejected: how many by reason, and the first few."""

    cols: Any
    reasons: Counter[str]
    examples: list[dict[str, Any]]


def validate_contexts(table: pa.Table, system: System, unit_ok: np.ndarray, unit: str | None) -> Kept:
    """Validate the contexts (a row that fails is rejected) and reject the rows with a null unit
    (they cannot be placed by a unit split). A ranking system's rows hold the request and
    candidate fields its features read (``system.features.schema``: both)."""
    schema = system.features.schema
    ctx_table = table.select([c for c in table.column_names if c in schema.by_name])
    cols = schema.validate_batch(ctx_table, errors="skip")
    reasons: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for e in cols.errors:
        reasons[f"{e.field}: {e.rule}"] += 1
        if len(examples) < REJECTED_EXAMPLES:
            examples.append({"row": e.row, "field": e.field, "rule": e.rule, "message": str(e)})
    keep_unit = unit_ok[cols.rows]
    if not keep_unit.all():
        for r in cols.rows[~keep_unit].tolist():
            reasons[f"{unit}: null unit"] += 1
            if len(examples) < REJECTED_EXAMPLES:
                examples.append({"row": int(r), "field": unit, "rule": "null unit", "message": "the unit is null"})
        cols = cols.take(np.flatnonzero(keep_unit))
    return Kept(cols, reasons, examples)


def _check_kept(kept: Kept, y: np.ndarray, n_read: int, path: Path, label: str, system: System) -> None:
    """At least one row is kept, and the kept rows (labels ``y``) hold both classes."""
    n = int(kept.cols.rows.shape[0])
    if n == 0:
        top = ", ".join(f"{k} ({v} rows)" for k, v in kept.reasons.most_common(3))
        raise DatasetError(f"The file '{path.name}' must have at least one valid row. Got none of {n_read}: {top}.")
    if y.min() == y.max():
        present = sorted({system.labels[int(v)] for v in y.tolist()})
        raise DatasetError(
            f"The label column '{label}' must hold both classes {list(system.labels)} on the valid rows. "
            f"Got {present} instead ({n} valid of {n_read} rows)."
        )


def _dataset_rows(cols: Any, system: System, y: np.ndarray, ts: np.ndarray, units: pa.Array) -> pa.Table:
    """The kept rows as ``build_dataset`` writes them (module docstring, "Rows")."""
    rows = cols.rows
    n = int(rows.shape[0])
    data: dict[str, Any] = {
        "decision_id": pa.array([str(int(r)) for r in rows.tolist()], type=pa.string()),
        "unit": units.take(pa.array(rows)),
        "timestamp_ns": pa.array(ts, type=pa.int64()),
        **context_columns(cols, system),
        "sample_prob": pa.array(np.ones(n), type=pa.float64()),
        "weight": pa.array(np.ones(n), type=pa.float64()),
        "label": pa.array([system.labels[int(v)] for v in y.tolist()], type=pa.string()),
        "label_value": pa.array(y, type=pa.int8()),
    }
    return pa.table(data)


#: rows of ``_json_rows`` encoded at once: a column's lines stay far below Arrow's 2 GiB of one binary value
_JSON_CHUNK = 1 << 20


def _json_rows(cols: Any, names: list[str]) -> pa.Array | pa.ChunkedArray:
    """Each row's fields ``names`` as a JSON object, the bytes ``msgspec.json.encode(dict(zip(names,
    row)))`` gives — built column by column: each column's values encoded in one call as lines (a
    JSON value holds no raw newline), split by Arrow, and joined with the keys element-wise (a
    tenth of the per-row dicts' time on a feed day's 200,000 slots); a chunk per
    :data:`_JSON_CHUNK` rows."""
    enc = msgspec.json.Encoder()
    n = cols.n
    if not names or n == 0:
        return pa.array(["{}"] * n, type=pa.string())
    keys = [("{" if j == 0 else ",") + enc.encode(nm).decode() + ":" for j, nm in enumerate(names)]
    lists = [cols.pylist(nm) for nm in names]
    chunks = []
    for lo in range(0, n, _JSON_CHUNK):
        parts: list[Any] = []
        for key, values in zip(keys, lists, strict=True):
            lines = enc.encode_lines(values[lo:lo + _JSON_CHUNK])[:-1]  # one value a line, no newline after the last
            parts += [key, pc.split_pattern(pa.scalar(lines, pa.binary()), b"\n").values.cast(pa.string())]
        chunks.append(pc.binary_join_element_wise(*parts, "}", ""))
    return chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks)


def context_columns(cols: Any, system: System) -> dict[str, Any]:
    """The columns every imported row has from its validated fields: ``context_json`` (the
    request fields), ``candidate_json`` (a ranking system's candidate fields), ``features`` and
    one column per feature, ``schema_version`` and ``feature_fingerprint``."""
    n = cols.n
    X = system.features.batch(cols)
    feat_names = [f.name for f in system.features.features]
    fp = system.feature_fingerprint
    flat = np.ascontiguousarray(X).reshape(-1)
    features = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * len(feat_names) + 1, len(feat_names), dtype=np.int32)), pa.array(flat)
    ) if feat_names else pa.array([[] for _ in range(n)], type=pa.list_(pa.float64()))
    out: dict[str, Any] = {"context_json": _json_rows(cols, [f.name for f in system.schema.fields])}
    if system.candidate_schema is not None:
        out["candidate_json"] = _json_rows(cols, [f.name for f in system.candidate_schema.fields])
    out["features"] = features
    out.update({feature_column(nm): pa.array(X[:, j], type=pa.float64()) for j, nm in enumerate(feat_names)})
    out["schema_version"] = pa.array([system.schema_version] * n, type=pa.string())
    out["feature_fingerprint"] = pa.array([fp] * n, type=pa.string())
    return out


def _manifest(
    path: Path, system: System, table: pa.Table, kept: Kept, y: np.ndarray, ts: np.ndarray, *,
    label: str, unit: str | None, time: str | None, renamed: dict[str, str],
) -> dict[str, Any]:
    """The manifest: the file imported and how, and the counts; ``id`` first, the sha256 of the
    rest (canonical JSON, keys sorted)."""
    n_read, n = table.num_rows, int(kept.cols.rows.shape[0])
    feat_names = [f.name for f in system.features.features]
    content: dict[str, Any] = {
        "format": 1,
        "system": system.name,
        "schema_version": system.schema_version,
        "labels": list(system.labels),
        "policy": None,
        "source": {
            "kind": "import",
            "file": path.name,
            "sha256": sha256_of(path),
            "label_column": label,
            "unit_column": unit,
            "time_column": time,
            "unit_stand_in": unit is None,
            "time_stand_in": time is None,
            "absent_fields": absent_fields(system, table),
            **({"renamed": renamed} if renamed else {}),
        },
        "since_ns": int(ts.min()),
        "until_ns": int(ts.max()) + 1,
        "cutoff_ns": None,
        "feature_names": {system.feature_fingerprint: feat_names},
        "columns": {"features": [feature_column(nm) for nm in feat_names], "outcomes": {}},
        "counts": {
            "decisions": {"read": n_read, "rows": n, "labeled": n, "unlabeled": 0, "rejected": n_read - n},
            "labels": {system.labels[0]: int((y == 0).sum()), system.labels[1]: int((y == 1).sum())},
            "rejected": dict(sorted(kept.reasons.items())),
        },
        "rejected_examples": kept.examples,
    }
    return with_id(content)


def absent_fields(system: System, table: pa.Table) -> list[str]:
    """The fields (request, then candidate) that no column of ``table`` fills."""
    return [f.name for f in system.features.schema.fields if f.name not in table.column_names]


def with_id(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` with its ``id`` first: the sha256 of the rest (canonical JSON, keys sorted)."""
    canonical = msgspec.json.encode(content, order="sorted")
    return {"id": hashlib.sha256(canonical).hexdigest(), **content}


def write_dataset(rows: pa.Table, out: Path, content: dict[str, Any], extra: dict[str, pa.Table] | None = None) -> None:
    """Write the data file (and the ``extra`` Parquet files, name → rows) into a temporary sibling
    of ``out`` and publish it with the manifest. The files are written side by side (Arrow's
    Parquet writer encodes a file on one core and releases the GIL: a reward dataset's slot rows
    and candidate sets take the time of the larger, not of both)."""
    make_private_dirs(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    make_private_dirs(tmp)

    def write(name: str, table: pa.Table) -> None:
        pq.write_table(table, tmp / name, compression="zstd")
        if name != DATA_FILE:  # publish makes the data file durable with the manifest
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())

    try:
        files = [(DATA_FILE, rows), *(extra or {}).items()]
        if len(files) == 1:
            write(*files[0])
        else:
            with ThreadPoolExecutor(len(files), thread_name_prefix="closedloop-write") as pool:
                for f in [pool.submit(write, name, table) for name, table in files]:
                    f.result()
        publish(tmp, out, content)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

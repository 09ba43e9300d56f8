"""The decision records' compact form: what a writer appends, and the one conversion every reader applies.

:data:`~closedloop.telemetry.records.DECISION_SCHEMA` is the contract readers get. A writer may
append decision records in a *compact form* of it instead, which costs far less to build and
to write (docs/performance.md, "Telemetry"):

- the context is a ``context`` column, a struct of the (sanitized) context fields as typed
  columns — Str → string, Int → int64, Float → float64, Bool → bool; a hashed field is the
  string of its hash, a dropped field is absent — in the place of ``context_json``;
- any other column may be run-end encoded (a value repeated for the whole batch — the writer,
  the system, the bundle version, the ingest time — is stored once).

:func:`to_decision_schema` turns either form into ``DECISION_SCHEMA`` rows. ``context_json`` is
then exactly the JSON the writer would have written itself (``msgspec.json.encode`` of the
sanitized context: fields in schema order, the same values), so what a reader gets does not
depend on the form the writer chose. The segment log's readers (``read_segments``,
``TelemetryStore.read`` and ``compact``) and :class:`~closedloop.telemetry.MemorySink` convert
every frame; Parquet files hold ``DECISION_SCHEMA`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA, RANKING_COLUMNS

__all__ = ["CONTEXT", "compact_schema", "context_json", "is_decision_form", "run_end", "to_decision_schema"]

#: The name of the typed context column of the compact form.
CONTEXT = "context"
_JSON = "context_json"
_JSON_AT = DECISION_SCHEMA.get_field_index(_JSON)
#: How many columns a decision record had before the ranking columns (schema version 1): such a
#: record is read with them null.
_V1_LEN = len(DECISION_SCHEMA) - len(RANKING_COLUMNS)
_OUTCOME_V1 = pa.schema(list(OUTCOME_SCHEMA)[:-1])
#: The types a typed context field may have.
_SCALARS = (pa.string(), pa.int64(), pa.float64(), pa.bool_())


def compact_schema(context_type: pa.StructType) -> pa.Schema:
    """``DECISION_SCHEMA`` with ``context_json`` replaced by a typed ``context`` struct column."""
    return DECISION_SCHEMA.set(_JSON_AT, pa.field(CONTEXT, context_type))


def _plain(t: pa.DataType) -> pa.DataType:
    return t.value_type if isinstance(t, pa.RunEndEncodedType) else t


def is_decision_form(schema: pa.Schema) -> bool:
    """True for ``DECISION_SCHEMA`` and for its compact forms (see the module doc)."""
    if schema.equals(DECISION_SCHEMA):
        return True
    if len(schema) not in (len(DECISION_SCHEMA), _V1_LEN):  # a version-1 record lacks the ranking columns
        return False
    for i, (got, want) in enumerate(zip(schema, DECISION_SCHEMA, strict=False)):
        if i == _JSON_AT and got.name == CONTEXT:
            t = got.type
            if not isinstance(t, pa.StructType) or not all(t.field(j).type in _SCALARS for j in range(t.num_fields)):
                return False
            continue
        if got.name != want.name or _plain(got.type) != want.type:
            return False
    return True


def run_end(value: Any, n: int, type: pa.DataType) -> pa.Array:
    """``n`` times ``value``, run-end encoded (one value and one run end, whatever ``n``)."""
    if n == 0:
        return pa.array([], type)
    return pa.RunEndEncodedArray.from_arrays(pa.array([n], pa.int32()), pa.array([value], type))


def to_decision_schema(
    batch: pa.RecordBatch | pa.Table, columns: Sequence[str] | None = None
) -> pa.RecordBatch | pa.Table:
    """Decision records in either form → the same records in ``DECISION_SCHEMA`` (only
    ``columns`` of it, in that order, when given: the others are not converted); anything else
    (outcome records) is returned as it is (``columns`` of it). Records of schema version 1 (no
    ranking columns; an outcome without ``candidate_id``) get those columns as nulls."""
    schema = batch.schema
    if schema.equals(_OUTCOME_V1):
        batch = batch.append_column(OUTCOME_SCHEMA.field("candidate_id"), pa.nulls(batch.num_rows, pa.string()))
    if schema.equals(DECISION_SCHEMA) or not is_decision_form(schema):
        return batch if columns is None else batch.select(list(columns))
    if isinstance(batch, pa.Table):
        target = DECISION_SCHEMA if columns is None else pa.schema([DECISION_SCHEMA.field(c) for c in columns])
        return pa.Table.from_batches([_convert(b, columns) for b in batch.to_batches()], schema=target)
    return _convert(batch, columns)


def _convert(b: pa.RecordBatch, columns: Sequence[str] | None = None) -> pa.RecordBatch:
    names = DECISION_SCHEMA.names if columns is None else list(columns)
    cols = []
    for name in names:
        i = DECISION_SCHEMA.get_field_index(name)
        if i < 0:
            raise KeyError(f"The decision records have no column {name!r}.")
        if i >= b.num_columns:  # a version-1 record: no ranking columns
            cols.append(pa.nulls(b.num_rows, DECISION_SCHEMA.field(i).type))
            continue
        col = b.column(i)
        if i == _JSON_AT and b.schema.field(i).name == CONTEXT:
            col = context_json(col)
        elif isinstance(col.type, pa.RunEndEncodedType):
            col = pc.run_end_decode(col)
        cols.append(col)
    if columns is None:
        return pa.RecordBatch.from_arrays(cols, schema=DECISION_SCHEMA)
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema([DECISION_SCHEMA.field(c) for c in names]))


def context_json(contexts: pa.StructArray) -> pa.StringArray:
    """The JSON of each typed context (null for a null row), as ``msgspec.json.encode`` of the
    sanitized context writes it: fields in the struct's order, each value as the row held it."""
    n = len(contexts)
    names = [f.name for f in contexts.type]
    lists: list[list[Any]] = []
    for child in contexts.flatten():  # the rows of this (possibly sliced) array
        if child.null_count == 0:  # numpy's conversion (strings too) is far quicker than to_pylist's
            lists.append(child.to_numpy(zero_copy_only=False).tolist())
        else:
            lists.append(child.to_pylist())
    row = msgspec.defstruct("Context", names, gc=False)  # positional: one C call a row
    out = json_strings(list(map(row, *lists)) if names else [{}] * n)
    if contexts.null_count:
        out = pc.if_else(contexts.is_valid(), out, pa.nulls(n, pa.string()))
    return out


_ENCODER = msgspec.json.Encoder()


def json_strings(values: Sequence[Any]) -> pa.Array:
    """A string array of the JSON of each value (msgspec, as ``msgspec.json.encode(v).decode()``),
    encoded one after the other into one buffer."""
    n = len(values)
    buf = bytearray()
    ends = [0] * n
    into = _ENCODER.encode_into
    for i, v in enumerate(values):
        into(v, buf, -1)
        ends[i] = len(buf)
    if len(buf) >= 2**31:
        return pa.array([msgspec.json.encode(v).decode() for v in values], pa.string())
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = ends
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))

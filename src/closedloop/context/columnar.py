"""Validating a columnar batch column by column, with exactly the rules of one-context validation.

:func:`_as_column_mapping` takes an Arrow table / record batch or a mapping of arrays or lists to
one array per column; :func:`_validate_column` checks one column of one field (text through Arrow
compute, numbers and booleans through numpy, anything mixed element by element), marks its invalid
rows and records (up to a bound) the errors that name them. :meth:`Schema.validate_batch
<closedloop.context.schema.Schema.validate_batch>` runs them for every field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.fields import _INT64_MAX, MISSING, Bool, Field, Float, Int, Str
from closedloop.errors import ContextError

# A batch reports at most this many individual row errors (all invalid rows are still masked).
_MAX_REPORTED_ERRORS = 100


def _as_column_mapping(batch: Any) -> tuple[dict[str, Any], int]:
    if isinstance(batch, pa.Table | pa.RecordBatch):
        cols = {
            name: _one_array(c) for name, c in zip(batch.column_names, batch.columns, strict=True)
        }
        return cols, batch.num_rows
    if not isinstance(batch, Mapping):
        raise ContextError(
            "<batch>", "an Arrow table or a mapping of column names to arrays", type(batch).__name__
        )
    n: int | None = None
    cols = {}
    for name, col in batch.items():
        col = _one_array(col)
        if not isinstance(col, pa.Array | np.ndarray):
            if isinstance(col, str | bytes) or not isinstance(col, Sequence):
                raise ContextError(str(name), "a column (an array or a list)", col)
            col = list(col)
        length = len(col)
        if n is None:
            n = length
        elif length != n:
            raise ContextError(str(name), f"a column of {n} rows like the others", f"{length} rows")
        cols[name] = col
    if n is None:
        raise ContextError("<batch>", "a non-empty mapping of columns", batch)
    return cols, n


def _one_array(col: Any) -> Any:
    """A chunked column as one array (without copying when there is one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks()
    return col


def _record(
    f: Field, mask: np.ndarray, values: Any, bad: np.ndarray, found: list[ContextError]
) -> None:
    """Mark rows in ``mask`` as invalid for field ``f`` and record (some of) them."""
    idx = np.flatnonzero(mask & ~bad)
    bad |= mask
    for i in idx[: max(0, _MAX_REPORTED_ERRORS - len(found))]:
        v = values[int(i)] if values is not None else None
        if isinstance(v, np.generic):
            v = v.item()
        rule = f.rule_for(v) if v is not MISSING else "present"
        found.append(ContextError(f.name, rule, v, int(i)))


def _validate_column(
    f: Field, col: Any, n: int, bad: np.ndarray, found: list[ContextError]
) -> Any:
    if col is MISSING:
        if f.required:
            _record(f, np.ones(n, dtype=bool), [MISSING] * n, bad, found)
            return _filler(f, n)
        return _constant(f, f.default, n)
    if isinstance(f, Str):
        return _validate_str(f, col, n, bad, found)
    return _validate_number(f, col, n, bad, found)


def _filler(f: Field, n: int) -> Any:
    """A harmless placeholder column for a field whose rows are all invalid."""
    if isinstance(f, Str):
        return pa.array([f.choices[0] if f.choices else ""] * n, type=pa.string())
    if isinstance(f, Bool):
        return np.zeros(n, dtype=bool)
    if isinstance(f, Int):
        return np.full(n, f._lo if f._lo > 0 else 0, dtype=np.int64)
    lo = f.ge if isinstance(f, Float) and f.ge is not None else 0.0
    return np.full(n, lo, dtype=np.float64)


def _constant(f: Field, value: Any, n: int) -> Any:
    if isinstance(f, Str):  # built in C: a Python list of n references costs more than the column
        return pa.repeat(pa.scalar(value, type=pa.string()), n)
    if isinstance(f, Bool):
        return np.full(n, bool(value), dtype=bool)
    if isinstance(f, Int):
        return np.full(n, int(value), dtype=np.int64)
    return np.full(n, float(value), dtype=np.float64)


def _python_column(f: Field, values: list[Any], n: int, bad: np.ndarray, found: list[ContextError]) -> Any:
    """The exact, element-by-element path (object arrays, mixed lists)."""
    out: list[Any] = []
    mask = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            if f.required:
                mask[i] = True
                out.append(None)
            else:
                out.append(f.default)
            continue
        ok, cleaned = f.check(v)
        if not ok:
            mask[i] = True
            out.append(None)
        else:
            out.append(cleaned)
    if mask.any():
        _record(f, mask, values, bad, found)
    filler = _filler(f, 1)
    fill = filler[0].as_py() if isinstance(filler, pa.Array) else filler[0].item()
    out = [fill if m else v for v, m in zip(out, mask, strict=True)]
    if isinstance(f, Str):
        return pa.array(out, type=pa.string())
    if isinstance(f, Bool):
        return np.array(out, dtype=bool)
    if isinstance(f, Int):
        return np.array(out, dtype=np.int64)
    return np.array(out, dtype=np.float64)


def _validate_str(f: Str, col: Any, n: int, bad: np.ndarray, found: list[ContextError]) -> Any:
    if isinstance(col, np.ndarray):
        col = col.tolist()
    if isinstance(col, list):
        try:
            col = pa.array(col, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, UnicodeEncodeError):  # a lone surrogate: Str.check names it
            return _python_column(f, col, n, bad, found)
    if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        col = col.cast(pa.string())
    if not pa.types.is_string(col.type):
        if pa.types.is_null(col.type):
            return _python_column(f, [None] * n, n, bad, found)
        _record(f, np.ones(n, dtype=bool), col.to_pylist(), bad, found)
        return _filler(f, n)
    if col.null_count:
        if f.required:
            _record(f, col.is_null().to_numpy(zero_copy_only=False), col.to_pylist(), bad, found)
            col = pc.fill_null(col, _filler(f, 1)[0])
        else:
            col = pc.fill_null(col, f.default)
    mask = None
    if f.choices is not None:
        mask = ~pc.is_in(col, value_set=pa.array(f.choices, type=pa.string())).to_numpy(
            zero_copy_only=False
        )
    if f.choices is None:
        # Bytes ≥ characters, so only a column with a long byte string needs counting characters
        # (and a column of fewer bytes in all than the limit needs no look at all).
        limit = f.limit
        if col.nbytes > limit and (pc.max(pc.binary_length(col)).as_py() or 0) > limit:
            too_long = pc.greater(pc.utf8_length(col), limit).to_numpy(zero_copy_only=False)
            mask = too_long if mask is None else (mask | too_long)
    if mask is not None and mask.any():
        _record(f, mask, col.to_pylist(), bad, found)
    return col


def _validate_number(f: Field, col: Any, n: int, bad: np.ndarray, found: list[ContextError]) -> Any:
    """A number or boolean column as a numpy array, its invalid rows marked: a list or an Arrow
    array taken to numpy (or, when mixed, checked element by element), refused whole when of another
    type, checked against the field's rule, its nulls given the default (or marked when required)."""
    nulls = None
    if isinstance(col, list):
        values = col
        try:
            col = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            return _python_column(f, values, n, bad, found)
        # Arrow infers [1.0, True] as doubles; one-context validation refuses a bool for a number.
        if pa.types.is_floating(col.type) and any(v is True or v is False for v in values):
            return _python_column(f, values, n, bad, found)
    if isinstance(col, pa.Array):
        t = col.type
        if pa.types.is_null(t):
            return _python_column(f, [None] * n, n, bad, found)
        if col.null_count:
            nulls = col.is_null().to_numpy(zero_copy_only=False)
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            return _python_column(f, col.to_pylist(), n, bad, found)
        if col.null_count:
            col = pc.fill_null(col, pa.scalar(False if pa.types.is_boolean(t) else 0, type=t))
        col = col.to_numpy(zero_copy_only=False)
    if not isinstance(col, np.ndarray):  # pragma: no cover - guarded above
        return _python_column(f, list(col), n, bad, found)
    kind = col.dtype.kind
    if kind == "O":
        return _python_column(f, col.tolist(), n, bad, found)
    if kind not in ("b" if isinstance(f, Bool) else "iu" if isinstance(f, Int) else "iuf"):
        _record(f, np.ones(n, dtype=bool), col, bad, found)
        return _filler(f, n)
    if isinstance(f, Bool):
        out = col.astype(bool, copy=False)
    elif isinstance(f, Int):
        out = _checked_ints(f, col, n, bad, found)
    else:
        out = _checked_floats(cast(Float, f), col, n, bad, found)  # the numeric fields are Bool, Int and Float
    if nulls is not None and nulls.any():
        if f.required:
            _record(f, nulls, [None] * n, bad, found)
        else:
            out = out.copy()
            out[nulls] = f.default
    return out


def _checked_ints(f: Int, col: np.ndarray, n: int, bad: np.ndarray, found: list[ContextError]) -> np.ndarray:
    """An integer column (signed or unsigned) as int64, the rows beyond int64 or the field's bounds
    marked (an out-of-range unsigned value is replaced by 0)."""
    if col.dtype.kind == "u" and col.dtype.itemsize == 8:
        over = col > np.uint64(_INT64_MAX)
        if over.any():
            _record(f, over, col, bad, found)
            col = np.where(over, 0, col)
    out = col.astype(np.int64, copy=False)
    mask = np.zeros(n, dtype=bool)
    if f.ge is not None:
        mask |= out < f.ge
    if f.le is not None:
        mask |= out > f.le
    if mask.any():
        _record(f, mask, out, bad, found)
    return out


def _checked_floats(f: Float, col: np.ndarray, n: int, bad: np.ndarray, found: list[ContextError]) -> np.ndarray:
    """A numeric column as float64: NaN/inf rejected (marked), replaced by the default or kept as
    the field declares; finite rows beyond the field's bounds marked."""
    out = col.astype(np.float64, copy=False)
    finite = np.isfinite(out)
    if not finite.all():
        if f.nonfinite == "default":
            out = np.where(finite, out, float(f.default))
        elif f.nonfinite == "reject":
            _record(f, ~finite, out, bad, found)
    mask = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        if f.ge is not None:
            mask |= out < f.ge
        if f.le is not None:
            mask |= out > f.le
    mask &= np.isfinite(out)  # kept NaN/inf skip the bounds, as on the one-context path
    if mask.any():
        _record(f, mask, out, bad, found)
    return out

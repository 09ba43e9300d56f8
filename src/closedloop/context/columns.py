"""A validated columnar batch: :class:`Columns` (numpy arrays for numbers and booleans, Arrow string
arrays for text), built from a batch or, one column at a time, from contexts validated one by one;
and :func:`concat_columns`, several batches as one.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.context.columnar import _constant
from closedloop.context.fields import Bool, Field, Int, Str
from closedloop.errors import ContextError, SpecError

try:  # pragma: no cover - which branch runs depends on the build
    from closedloop import _kernels
except ImportError:  # pragma: no cover
    _kernels = None

__all__ = ["Columns", "concat_columns"]


class Columns:
    """A validated columnar batch: numpy arrays (float64 / int64 / bool) and Arrow string arrays.

    ``rows`` maps each row back to its index in the input (rows that failed validation are
    dropped when the batch was validated with ``errors="skip"``); ``errors`` lists those failures.

    Columns built by :meth:`Schema.columns` from contexts validated one by one keep them in
    ``contexts`` (one struct per row) and build each column the first time it is read, so a batch
    that only reads some fields (features, guardrails) converts only those.

    ``constants`` (name → (field, value)) are columns of one value on every row (a ranking
    request's fields beside its candidates), built the first time they are read as columns; as
    text lists (:meth:`text_list`) they are never built.
    """

    __slots__ = ("_constants", "_data", "_fields", "_held", "_lists", "contexts", "errors", "n", "rows")

    def __init__(
        self,
        data: dict[str, Any],
        n: int,
        rows: np.ndarray,
        errors: list[ContextError],
        *,
        contexts: list[Any] | None = None,
        fields: dict[str, Field] | None = None,
        constants: dict[str, tuple[Field, Any]] | None = None,
    ) -> None:
        self._data = data
        self._constants = constants
        self._lists: dict[str, list[Any]] = {}
        self.n = n
        self.rows = rows
        self.errors = errors
        #: the validated context structs, one per row, when the columns were built from them
        self.contexts = contexts
        self._fields = fields  # every field (name → Field) when columns are built from contexts
        self._held: set[str] = set()  # columns built from the contexts that hold exactly their values

    def __getitem__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            if self._constants is not None and name in self._constants:
                f, value = self._constants[name]
                col = self._data[name] = _constant(f, value, self.n)
                return col
            if self._fields is None or name not in self._fields:
                raise
        return self._build(name)

    def text_list(self, name: str) -> list[str] | None:
        """Column ``name`` as a list of str (cached) when it is text without nulls, else None."""
        c = self._constants
        if c is not None and name in c and name not in self._data:
            f, value = c[name]
            if not isinstance(f, Str):
                return None
            out = self._lists.get(name)
            if out is None:
                out = self._lists[name] = [value] * self.n
            return out
        col = self[name]
        if isinstance(col, pa.Array) and not col.null_count and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            return self.pylist(name)
        return None

    def _build(self, name: str) -> Any:
        """Column ``name`` from the contexts (each already validated: no check repeated)."""
        fields, contexts = self._fields, self.contexts
        if fields is None or contexts is None:  # only columns built from contexts have fields
            raise KeyError(name)
        f = fields[name]
        col: Any = _gather(f, contexts, self.n, exact=True)
        if col is not None:
            self._held.add(name)
        else:
            col = _gather(f, contexts, self.n)
        if col is not None:
            self._data[name] = col
            return col
        values = self.pylist(name)
        if isinstance(f, Str):
            col = pa.array(values, type=pa.string())
        elif isinstance(f, Bool):
            col = np.array(values, dtype=bool)
        elif isinstance(f, Int):
            col = np.array(values, dtype=np.int64)
        else:
            col = np.array(values, dtype=np.float64)
        self._data[name] = col
        return col

    def held(self, name: str) -> Any:
        """Column ``name`` if it was built already from the contexts and holds exactly their values
        (a Float field's ints are not turned into floats in it), else None. Telemetry's typed
        contexts reuse it rather than gather the field again."""
        return self._data.get(name) if name in self._held else None

    def __contains__(self, name: object) -> bool:
        return (
            name in self._data or (self._fields is not None and name in self._fields)
            or (self._constants is not None and name in self._constants)
        )

    def names(self) -> list[str]:
        out = list(self._fields) if self._fields is not None else list(self._data)
        return out + [k for k in self._constants if k not in out] if self._constants else out

    def pylist(self, name: str) -> list[Any]:
        """The column as a Python list (cached: several features may need it)."""
        out = self._lists.get(name)
        if out is None:
            col = self._data.get(name)
            contexts = self.contexts
            if col is None and self._fields is not None and name in self._fields and contexts is not None:
                out = list(map(operator.attrgetter(name), contexts))
            else:
                col = self[name]
                out = col.to_pylist() if isinstance(col, pa.Array) else col.tolist()
            self._lists[name] = out
        return out

    def concat(self, *others: Columns) -> Columns:
        """This batch's rows, then each of ``others``' (one schema): :func:`concat_columns` as a
        method, for packages that hold batches but do not import this one."""
        return concat_columns([self, *others])

    def take(self, indices: np.ndarray) -> Columns:
        """The rows at ``indices`` (positions in this batch), as a new :class:`Columns`."""
        idx = np.asarray(indices, dtype=np.int64)
        pa_idx = pa.array(idx)
        consts = self._constants
        data = {
            k: (v.take(pa_idx) if isinstance(v, pa.Array) else v[idx])
            for k, v in self._data.items() if consts is None or k not in consts
        }
        contexts = None
        if self.contexts is not None:
            ctx = self.contexts
            contexts = [ctx[i] for i in idx.tolist()]
        return Columns(
            data, int(idx.shape[0]), self.rows[idx], [], contexts=contexts, fields=self._fields, constants=consts
        )

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a plain dict (for error reports and tests, not for the hot path)."""
        return {k: self.pylist(k)[i] for k in self.names()}


def _gather(f: Field, contexts: list[Any], n: int, exact: bool = False) -> Any:
    """Field ``f`` of validated context structs as a column, in one compiled loop (None: the
    compiled module is missing or a value is not of the field's type; the caller takes the
    general path, which gives the same column). ``exact`` refuses (None) a Float field holding
    an int, which the column would turn into a float: telemetry's typed contexts must give back
    the very values the rows hold."""
    if _kernels is None or not n:
        return None
    member = type(contexts[0]).__dict__.get(f.name)
    try:
        if isinstance(f, Str):
            offsets, data = _kernels.gather_str(contexts, member)
            return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
        if isinstance(f, Bool):
            out = np.empty(n, dtype=bool)
            _kernels.gather_into(contexts, member, "b", out)
        elif isinstance(f, Int):
            out = np.empty(n, dtype=np.int64)
            _kernels.gather_into(contexts, member, "i", out)
        else:
            out = np.empty(n, dtype=np.float64)
            _kernels.gather_into(contexts, member, "F" if exact else "f", out)
        return out
    except (TypeError, ValueError, OverflowError):
        return None


def concat_columns(parts: Sequence[Columns]) -> Columns:
    """The rows of ``parts`` (validated batches of one schema, no rows dropped), one after
    another, as one :class:`Columns`."""
    if not parts:
        raise SpecError("concat_columns needs at least one Columns. Got none instead.")
    full = [p for p in parts if p.n]  # an empty batch may hold untyped empty lists
    if len(full) <= 1:
        return (full or list(parts))[0]
    parts = full
    names = parts[0].names()
    data: dict[str, Any] = {}
    for k in names:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], pa.Array):
            data[k] = pa.concat_arrays([v if v.type == vals[0].type else v.cast(vals[0].type) for v in vals])
        else:
            data[k] = np.concatenate(vals)
    n = sum(p.n for p in parts)
    return Columns(data, n, np.arange(n, dtype=np.int64), [])

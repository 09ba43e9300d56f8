"""A ranking's inputs, checked and shaped: candidate mappings typed into columns, request fields
broadcast over a request's candidates, and the batch path's ``request`` column, timestamps and
decision ids (used by :class:`~closedloop.experience.ranking.RankingPlan`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from closedloop.base.numeric import _string_buffers, compiled
from closedloop.context.schema import MISSING, Bool, Int, Schema, Str, _gather, _one_array
from closedloop.errors import ContextError


def _kind(f: Any) -> str:
    return "str" if isinstance(f, Str) else "bool" if isinstance(f, Bool) else "int" if isinstance(f, Int) else "float"


_NUMPY = {
    "float": ((frozenset({float}), frozenset({int}), frozenset({int, float})), np.float64),
    "int": ((frozenset({int}),), np.int64),
    "bool": ((frozenset({bool}),), np.bool_),
}


def _typed(values: list[Any], kind: str) -> Any:
    """A column of candidate values for validation: a numpy array of the field's type when every
    value already has an exact Python type the field accepts (validation then checks bounds on
    numbers that are the same floats ``float(v)`` gives); otherwise, for numbers and booleans,
    an object array, so that validation checks each value on its own and names exactly the bad
    ones (Arrow would infer one type for the whole list); text stays a list."""
    spec = _NUMPY.get(kind)
    if spec is None:
        return values
    if frozenset(map(type, values)) in spec[0]:
        try:
            return np.array(values, dtype=spec[1])
        except OverflowError:  # an integer beyond 64 bits: checked one by one below
            pass
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


class _CandidateValidator:
    """A request's candidates checked by the candidate schema's compiled validator (msgspec, built
    once per plan: one C pass over the list of mappings) and typed into columns.

    It only ever accepts: :meth:`columns` returns None as soon as msgspec refuses anything (a bad
    value, a missing field, a key the schema forbids, a null, NaN for a field with a default, a
    non-mapping), and the caller then runs the column-wise path (:func:`_typed` and
    ``Schema.validate_batch``), which names every error exactly as before. msgspec accepts exactly
    what one-context validation accepts (:class:`~closedloop.context.schema.Schema`); the columns
    it gives hold the values the column-wise path gives for the same candidates (ints of a Float
    field as floats, text as Arrow strings)."""

    __slots__ = ("_fields", "_id", "_id_int", "_member", "_type")

    def __init__(self, schema: Schema, candidate_id: str) -> None:
        self._type: Any = list[schema.struct]  # type: ignore[name-defined]
        self._member = getattr(schema.struct, candidate_id)  # the struct field's member descriptor
        self._fields = schema.fields
        self._id = candidate_id
        self._id_int = isinstance(schema.by_name[candidate_id], Int)

    def columns(self, raw: Any) -> tuple[dict[str, Any], list[str]] | None:
        """(the candidates' columns, their ids as strings), or None: validate them column-wise."""
        try:
            structs = msgspec.convert(raw, self._type)
        except (msgspec.ValidationError, TypeError, ValueError, OverflowError):
            return None
        n = len(structs)
        out: dict[str, Any] = {}
        for f in self._fields:
            col = _gather(f, structs, n)
            if col is None:  # no compiled gatherer, or text Arrow cannot hold (a lone surrogate)
                try:
                    col = _typed_values(f, [getattr(s, f.name) for s in structs])
                except (pa.ArrowException, ValueError, TypeError, OverflowError):
                    return None
            out[f.name] = col
        ids = _C_GATHER_LIST(structs, self._member) if _C_GATHER_LIST is not None else [getattr(s, self._id) for s in structs]
        return out, ([str(v) for v in ids] if self._id_int else ids)


def _typed_values(f: Any, values: list[Any]) -> Any:
    """Validated values of field ``f`` as its column."""
    if isinstance(f, Str):
        return pa.array(values, type=pa.string())
    if isinstance(f, Bool):
        return np.array(values, dtype=bool)
    if isinstance(f, Int):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _renamed(exc: ContextError, field: str, row: int | None) -> ContextError:
    return ContextError(field, exc.rule, exc.value, row)



def _duplicate(ids: list[Any]) -> int | None:
    """The position of the first id that repeats an earlier one, or None."""
    if len(set(ids)) == len(ids):
        return None
    seen: set[str] = set()
    for j, v in enumerate(ids):
        if v in seen:
            return j
        seen.add(v)
    return None  # pragma: no cover - the set said there is one


_C_REPEAT = compiled("first_repeat_str")
_C_GATHER_LIST = compiled("gather_list")
_MASK = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)
_K = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _id_keys(ids: Any) -> np.ndarray:
    """One int64 per id, equal wherever the ids are equal (distinct ids may share one: a key only
    points at requests to check exactly). Integers are their own keys; a text id's key mixes its
    byte length with its first and its last (up to) 8 bytes, read from the Arrow buffers."""
    if not isinstance(ids, pa.Array):
        return np.asarray(ids, dtype=np.int64)
    offsets, data = _string_buffers(ids)
    start, end = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)
    length = end - start
    raw = np.frombuffer(data, dtype=np.uint8)
    padded = np.zeros(raw.shape[0] + 8, dtype=np.uint8)
    padded[: raw.shape[0]] = raw
    words = np.ndarray((raw.shape[0] + 1,), dtype="<u8", buffer=padded.data, strides=(1,))
    mask = _MASK[np.minimum(length, 8)]
    first = words[start] & mask
    last = words[np.maximum(end - 8, start)] & mask
    return (length.astype(np.uint64) * _K[0] + first * _K[1] + last * _K[2]).view(np.int64)


def _first_repeat(ids: Any, offsets: np.ndarray) -> int | None:
    """The position (in the flat batch) of the first id that repeats an earlier one of the same
    request — in the first request that has one — or None. ``ids``: the candidate id column
    (Arrow text or numpy integers), grouped by request at ``offsets``.

    Text ids with the compiled extension: one pass over the requests with a hash table, compared
    byte for byte (``first_repeat_str``). Otherwise vectorized: one key per id (:func:`_id_keys`),
    laid out one request per row (padded with distinct negative numbers) and sorted along the
    rows; only a request where two keys are equal is searched, exactly, in Python."""
    counts = np.diff(offsets)
    nreq = counts.shape[0]
    width = int(counts.max()) if nreq else 0
    if width < 2:
        return None
    if _C_REPEAT is not None and isinstance(ids, pa.Array) and pa.types.is_string(ids.type) and not ids.null_count:
        at = _C_REPEAT(*_string_buffers(ids), np.ascontiguousarray(offsets, dtype=np.int64))
        return None if at < 0 else int(at)
    keys = _id_keys(ids)
    if bool((counts == width).all()):
        M = keys.reshape(nreq, width).copy()
    else:
        M = np.empty((nreq, width), dtype=np.int64)
        M[:] = -1 - np.arange(width, dtype=np.int64)
        M[np.repeat(np.arange(nreq), counts), np.arange(keys.shape[0]) - np.repeat(offsets[:-1], counts)] = keys
    M.sort(axis=1)
    for i in np.flatnonzero((M[:, 1:] == M[:, :-1]).any(axis=1)).tolist():
        a, b = int(offsets[i]), int(offsets[i + 1])
        j = _duplicate(ids[a:b].to_pylist() if isinstance(ids, pa.Array) else ids[a:b].tolist())
        if j is not None:
            return a + j
    return None


def _split_request_column(candidates: Any, nreq: int) -> tuple[dict[str, Any], np.ndarray]:
    """(the candidate columns without ``request``, the request index of each row)."""
    if isinstance(candidates, pa.Table | pa.RecordBatch):
        cols = dict(zip(candidates.column_names, candidates.columns, strict=True))
    elif isinstance(candidates, Mapping):
        cols = dict(candidates)
    else:
        raise ContextError(
            "<candidates>", "an Arrow table or a mapping of column names to arrays", type(candidates).__name__
        )
    raw = cols.pop("request", MISSING)
    if raw is MISSING:
        raise ContextError("candidates.request", "present", MISSING)
    raw = _one_array(raw)
    rule = f"an integer in [0, {nreq - 1}] (a row of the requests batch)" if nreq else "absent (there are no requests)"
    if isinstance(raw, pa.Array):
        if raw.null_count:
            row = int(np.flatnonzero(raw.is_null().to_numpy(zero_copy_only=False))[0])
            raise ContextError("candidates.request", rule, None, row)
        arr = raw.to_numpy(zero_copy_only=False)
    else:
        arr = np.asarray(raw)
    if arr.dtype.kind == "O":
        for row, v in enumerate(arr.tolist()):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ContextError("candidates.request", rule, v, row)
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or (arr.shape[0] and arr.dtype.kind not in "iu"):
        bad = arr.tolist()[0] if arr.ndim == 1 and arr.shape[0] else arr
        raise ContextError("candidates.request", rule, bad, 0 if arr.ndim == 1 else None)
    if arr.dtype.kind == "u" and arr.shape[0] and int(arr.max()) >= 2**63:
        row = int(np.argmax(arr))
        raise ContextError("candidates.request", rule, int(arr[row]), row)
    idx = arr.astype(np.int64, copy=False)
    out = (idx < 0) | (idx >= nreq)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise ContextError("candidates.request", rule, int(idx[row]), row)
    return cols, idx


def _timestamps(ts: Any, n: int) -> np.ndarray:
    if isinstance(ts, int | np.integer) and not isinstance(ts, bool):
        return np.full(n, int(ts), dtype=np.int64)
    arr = np.asarray(ts)
    if arr.shape != (n,) or (n and arr.dtype.kind not in "iu"):
        raise ContextError("timestamps_ns", f"one integer timestamp per request ({n}), or one for all", f"{arr.shape} of {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _decision_ids(ids: Any, ts: np.ndarray) -> list[str]:
    n = int(ts.shape[0])
    if hasattr(ids, "next_ids") and hasattr(ids, "next_id"):  # an IdSource
        if n == 0:
            return []
        got = ids.next_ids(n, int(ts[0])) if bool((ts == ts[0]).all()) else [ids.next_id(int(t)) for t in ts.tolist()]
        return got.to_pylist() if isinstance(got, pa.Array) else list(got)
    out = ids.to_pylist() if isinstance(ids, pa.Array | pa.ChunkedArray) else (
        None if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | np.ndarray) else list(ids)
    )
    if out is None or len(out) != n or not all(isinstance(d, str) and d for d in out):
        got = f"{len(out)} values" if out is not None else repr(ids)
        raise ContextError("decision_ids", f"one non-empty string per request ({n})", got)
    return out

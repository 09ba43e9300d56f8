"""The numeric kernel both decision paths share.

The single-decision path calls :func:`log1p` and :func:`sigmoid` (Python floats, ``math``); the
batch path calls :func:`log1p_array` and :func:`sigmoid_array`, which run the same C library
functions in a compiled loop (``closedloop._kernels``), so a score never differs in its last bit
between ``decide`` and ``decide_batch``. numpy's own ``log1p``/``exp`` are not used: their SIMD
implementations may differ from the C library's in the last bit.

Without the compiled module (no C compiler at install time) the array functions fall back to
mapping the scalar functions over the column: the same results, slower.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

try:  # pragma: no cover - which branch runs depends on the build
    from closedloop import _kernels
except ImportError:  # pragma: no cover
    _kernels = None

__all__ = [
    "COMPILED", "compiled", "contains_array", "count_array", "exp", "exp_array", "log1p", "log1p_array", "sigmoid",
    "list_in_array", "sigmoid_array", "text_in_array",
]

COMPILED = _kernels is not None


def compiled(name: str) -> Any:
    """The compiled loop ``name`` of ``closedloop._kernels`` (e.g. the ranking draw), or None
    without the extension (or with a build that predates it): the caller then runs its numpy or
    Python form, which computes the same numbers."""
    return getattr(_kernels, name, None)


def log1p(x: float) -> float:
    """log(1 + x); -inf at -1; NaN below -1 and for NaN."""
    if x > -1.0:
        return math.log1p(x)
    if x == -1.0:
        return -math.inf
    return math.nan


def sigmoid(z: float) -> float:
    """The logistic function, overflow-free."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def exp(x: float) -> float:
    """e**x; +inf on overflow (as the C library), instead of Python's OverflowError."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def exp_array(a: np.ndarray) -> np.ndarray:
    a = _as_f64(a)
    if _kernels is None:
        return np.fromiter(map(exp, a.tolist()), dtype=np.float64, count=a.shape[0])
    out = np.empty_like(a)
    _kernels.exp_into(a, out)
    return out


def _as_f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def log1p_array(a: np.ndarray) -> np.ndarray:
    a = _as_f64(a)
    if _kernels is None:
        return np.fromiter(map(log1p, a.tolist()), dtype=np.float64, count=a.shape[0])
    out = np.empty_like(a)
    _kernels.log1p_into(a, out)
    return out


def sigmoid_array(z: np.ndarray) -> np.ndarray:
    z = _as_f64(z)
    if _kernels is None:
        return np.fromiter(map(sigmoid, z.tolist()), dtype=np.float64, count=z.shape[0])
    out = np.empty_like(z)
    _kernels.sigmoid_into(z, out)
    return out


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, Any]:
    """(int32 offsets of the n+1 boundaries, data bytes) of an Arrow string array."""
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    bufs = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data = bufs[2] if bufs[2] is not None else b""
    return np.ascontiguousarray(offsets), data


def contains_array(haystack: pa.Array, needle: pa.Array) -> np.ndarray:
    """1.0 where row i's ``needle`` occurs in row i's ``haystack``, else 0.0 (a null reads as "",
    as its zero-length bytes in the compiled loop)."""
    n = len(haystack)
    if _kernels is None:
        return np.fromiter(
            (1.0 if (b or "") in (a or "") else 0.0 for a, b in zip(haystack.to_pylist(), needle.to_pylist(), strict=True)),
            dtype=np.float64,
            count=n,
        )
    out = np.empty(n, dtype=np.float64)
    ho, hd = _string_buffers(haystack)
    no, nd = _string_buffers(needle)
    _kernels.contains_into(ho, hd, no, nd, out)
    return out


def count_array(strings: pa.Array, needle: str) -> np.ndarray:
    """Non-overlapping occurrences of ``needle`` (non-empty) in each string, as ``str.count``."""
    n = len(strings)
    if _kernels is None:
        return np.fromiter((float((s or "").count(needle)) for s in strings.to_pylist()), dtype=np.float64, count=n)
    out = np.empty(n, dtype=np.float64)
    offsets, data = _string_buffers(strings)
    _kernels.count_into(offsets, data, needle.encode("utf-8", "surrogatepass"), out)
    return out


def text_in_array(strings: pa.Array, values: tuple[str, ...]) -> np.ndarray | None:
    """1.0 where a string equals one of ``values``, else 0.0 — a text ``==`` or ``isin`` in one
    compiled pass (UTF-8 byte equality is text equality); None without the extension, or for a
    column with nulls or of another type (the caller's Arrow path keeps its null semantics)."""
    if _kernels is None or not pa.types.is_string(strings.type) or strings.null_count:
        return None
    out = np.empty(len(strings), dtype=np.float64)
    offsets, data = _string_buffers(strings)
    _kernels.text_in_into(offsets, data, tuple(v.encode("utf-8", "surrogatepass") for v in values), out)
    return out


def list_in_array(items: list[str], values: tuple[str, ...]) -> np.ndarray:
    """1.0 where an item ``==`` one of ``values``, else 0.0 (a small batch's text ``==`` or
    ``isin``: Python's own comparison, in one compiled pass when the extension is there)."""
    if _kernels is None:
        return np.fromiter((1.0 if x in values else 0.0 for x in items), dtype=np.float64, count=len(items))
    out = np.empty(len(items), dtype=np.float64)
    _kernels.list_in_into(items, values, out)
    return out


"""The elementwise operations of feature expressions, for both forms: the scalar functions the
generated scalar form calls (under the names :class:`~closedloop.context.features.scalar._Gen`
gives them), the vectorized ones built to round identically (``_vsqrt``, ``_vminimum``,
``_vmaximum``), ASCII lower-casing as Arrow does it, and ``_bool_f64`` (a mask as 1.0 / 0.0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.base.numeric import list_in_array, text_in_array

__all__ = ["ascii_lower"]


def _sqrt(x: float) -> float:
    if x >= 0.0:
        return math.sqrt(x)
    return math.nan


def _div(a: float, b: float, z: float) -> float:
    return a / b if b != 0.0 else z


def _minimum(a: float, b: float) -> float:
    if a != a:
        return a
    if b != b:
        return b
    return a if a < b else b


def _maximum(a: float, b: float) -> float:
    if a != a:
        return a
    if b != b:
        return b
    return a if a > b else b


_ASCII_LOWER_BYTES = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))


def _ascii_lower_slow(s: str) -> str:
    # UTF-8 bytes of non-ASCII characters are all ≥ 0x80, so only A–Z change.
    return s.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER_BYTES).decode("utf-8", "surrogatepass")


def ascii_lower(s: str) -> str:
    """Lower-case A–Z only (what Arrow's ``ascii_lower`` does); other characters are kept."""
    return s.lower() if s.isascii() else _ascii_lower_slow(s)


def _vsqrt(a: np.ndarray) -> np.ndarray:
    # sqrt is correctly rounded in libm and in numpy alike; NaN below 0 as in _sqrt.
    ok = a >= 0.0
    return np.where(ok, np.sqrt(np.where(ok, a, 0.0)), np.nan)


def _vminimum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a < b, a, b)))


def _vmaximum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a > b, a, b)))


def _bool_f64(mask: Any) -> np.ndarray:
    if isinstance(mask, pa.Array | pa.ChunkedArray):
        mask = mask.to_numpy(zero_copy_only=False)
    return np.asarray(mask, dtype=bool).astype(np.float64)


def _f64(values: list[Any], n: int) -> np.ndarray:
    """A list of n booleans or integers (a text operation's results on a small batch) as float64."""
    return np.fromiter(values, dtype=np.float64, count=n)


def _text_eq(eq: bool, args: list[Any], n: int, const: Any = None) -> np.ndarray:
    """Text ``==`` (``eq``) or ``!=`` on a small batch (lists of str), as the scalar form compares;
    ``const``: the right side's value when it is a constant."""
    a, b = args
    if const is not None:
        hit = list_in_array(a, (const,))
        return hit if eq else 1.0 - hit
    return _f64([(x == y) is eq for x, y in zip(a, b, strict=True)], n)



def _text_cmp(eq: bool, a: Any, b: Any) -> np.ndarray | None:
    """Text ``==`` (``eq``) or ``!=`` on a large batch: against a constant in one compiled pass
    (:func:`~closedloop.base.numeric.text_in_array`), else through Arrow; None when neither side
    is an Arrow column (numbers: the caller's numpy form)."""
    if isinstance(a, pa.Array) and isinstance(b, str):
        hit = text_in_array(a, (b,))
        if hit is not None:
            return hit if eq else 1.0 - hit
    if isinstance(a, pa.Array) or isinstance(b, pa.Array):
        return _bool_f64((pc.equal if eq else pc.not_equal)(a, b))
    return None

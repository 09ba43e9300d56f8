"""A table of offsets keyed by pairs of texts, held as arrays: :class:`PairTable`.

The affinity model (:mod:`closedloop.intelligence.affinity`) keeps one learned offset per
``(a, b)`` pair — a user × a category. A feed's table holds hundreds of thousands of pairs, and
the model is loaded at every deployment and scores batches of hundreds of thousands of rows in an
evaluation, so the table is arrays, not a dict of tuples: the distinct ``a`` values and ``b``
values (each sorted), each pair's code ``index(a) · |B| + index(b)`` (sorted, so the pairs are in
``(a, b)`` order — the order the bundle's file keeps), and the offsets in code order. A batch
is looked up in C (Arrow's ``index_in`` hash lookup of each column, one ``searchsorted`` of the
codes); one row, or one request's rows that share their ``a``, read a small per-``a`` dict built
the first time that ``a`` is asked for. A pair the table does not hold reads 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import IntelligenceError

__all__ = ["PairTable"]


def _strings(x: Any) -> pa.Array | pa.ChunkedArray:
    return x if isinstance(x, pa.Array | pa.ChunkedArray) else pa.array(list(x), pa.string())


class PairTable:
    """``{(a, b): offset}`` as arrays (module doc). Build with :meth:`from_mapping` or :meth:`from_columns`."""

    __slots__ = ("_a", "_b", "_codes", "_offsets", "_a_set", "_b_set", "_a_index", "_rows", "_dict")

    def __init__(self, a_values: list[str], b_values: list[str], codes: np.ndarray, offsets: np.ndarray) -> None:
        self._a, self._b = a_values, b_values
        self._codes, self._offsets = codes, offsets
        self._a_set, self._b_set = pa.array(a_values, pa.string()), pa.array(b_values, pa.string())
        self._a_index: dict[str, int] | None = None
        self._rows: dict[str, dict[str, float] | None] = {}
        self._dict: dict[tuple[str, str], float] | None = None

    @classmethod
    def from_mapping(cls, table: Any, owner: str) -> PairTable:
        """From ``{(a, b): offset}``, each key checked (pairs of strings) and each offset (a finite number)."""
        if not isinstance(table, Mapping):
            raise IntelligenceError(f"The 'table' parameter of {owner} must be a mapping of (text, text) pairs to offsets. "
                                    f"Got {type(table).__name__} instead.")
        a, b, v = [], [], []
        for k, x in table.items():
            if not (isinstance(k, tuple) and len(k) == 2 and isinstance(k[0], str) and isinstance(k[1], str)):
                raise IntelligenceError(f"The keys of {owner}'s table must be pairs of strings. Got {k!r} instead.")
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise IntelligenceError(f"The 'table[{k!r}]' parameter of {owner} must be a finite number. Got {x!r} instead.")
            a.append(k[0])
            b.append(k[1])
            v.append(float(x))
        return cls._build(pa.array(a, pa.string()), pa.array(b, pa.string()), np.asarray(v, dtype=np.float64), owner, "table")

    @classmethod
    def from_columns(cls, a: pa.Array, b: pa.Array, offsets: np.ndarray, owner: str, what: str) -> PairTable:
        """From three equal-length columns (no nulls, finite offsets, each pair once); ``what`` names
        them in an error (e.g. the bundle file they came from)."""
        if a.null_count or b.null_count:
            raise IntelligenceError(f"The {what} of {owner} must hold no nulls.")
        v = np.asarray(offsets, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            i = int(bad[0])
            raise IntelligenceError(f"The {what} of {owner} must hold finite offsets. Got {v[i]!r} for the pair "
                                    f"{(a[i].as_py(), b[i].as_py())!r} instead.")
        return cls._build(a, b, v, owner, what)

    @classmethod
    def _build(cls, a: pa.Array, b: pa.Array, v: np.ndarray, owner: str, what: str) -> PairTable:
        a_values = sorted(pc.unique(a).to_pylist()) if len(a) else []
        b_values = sorted(pc.unique(b).to_pylist()) if len(b) else []
        t = cls(a_values, b_values, np.zeros(0, np.int64), np.zeros(0))
        codes = t._code_of(a, b)
        order = np.argsort(codes, kind="stable")
        codes, v = codes[order], v[order]
        dup = np.flatnonzero(np.diff(codes) == 0)
        if dup.size:
            c = int(codes[dup[0]])
            raise IntelligenceError(f"The {what} of {owner} must hold each pair once. Got "
                                    f"{(a_values[c // len(b_values)], b_values[c % len(b_values)])!r} twice.")
        t._codes, t._offsets = codes, v
        return t

    def _index(self, x: pa.Array | pa.ChunkedArray, values: pa.Array) -> np.ndarray:
        got = pc.fill_null(pc.index_in(x, value_set=values), -1)
        return np.asarray(got.to_numpy(zero_copy_only=False) if isinstance(got, pa.Array) else got.to_numpy(), dtype=np.int64)

    def _code_of(self, a: Any, b: Any) -> np.ndarray:
        """Each row's pair code (-1 where ``a`` or ``b`` is not in the table)."""
        ia, ib = self._index(_strings(a), self._a_set), self._index(_strings(b), self._b_set)
        return np.where((ia >= 0) & (ib >= 0), ia * len(self._b) + ib, -1)

    def __len__(self) -> int:
        return len(self._codes)

    def lookup(self, a: Any, b: Any) -> np.ndarray:
        """Each row's offset (0.0 for a pair not in the table), for columns ``a`` and ``b``."""
        if not len(self._codes):
            return np.zeros(len(a), dtype=np.float64)
        key = self._code_of(a, b)
        pos = np.minimum(np.searchsorted(self._codes, key), len(self._codes) - 1)
        return np.where((key >= 0) & (self._codes[pos] == key), self._offsets[pos], 0.0)

    def row(self, a: str) -> dict[str, float] | None:
        """``{b: offset}`` of one ``a`` (None when the table holds no pair of it); kept once built."""
        try:
            return self._rows[a]
        except KeyError:
            pass
        if self._a_index is None:
            self._a_index = {x: i for i, x in enumerate(self._a)}
        i = self._a_index.get(a)
        got: dict[str, float] | None = None
        if i is not None:
            nb = len(self._b)
            lo, hi = np.searchsorted(self._codes, [i * nb, (i + 1) * nb])
            got = {self._b[int(c) - i * nb]: float(o) for c, o in zip(self._codes[lo:hi], self._offsets[lo:hi], strict=True)}
        self._rows[a] = got
        return got

    def get(self, a: str, b: str) -> float:
        """The offset of ``(a, b)``; 0.0 when the table does not hold it."""
        r = self.row(a)
        return 0.0 if r is None else r.get(b, 0.0)

    def columns(self) -> tuple[pa.Array, pa.Array, np.ndarray]:
        """The pairs' ``a`` and ``b`` (string arrays) and their offsets, in ``(a, b)`` order."""
        nb = max(len(self._b), 1)
        return self._a_set.take(pa.array(self._codes // nb)), self._b_set.take(pa.array(self._codes % nb)), self._offsets

    def to_dict(self) -> dict[tuple[str, str], float]:
        """``{(a, b): offset}`` (built once)."""
        if self._dict is None:
            a, b, v = self.columns()
            self._dict = dict(zip(zip(a.to_pylist(), b.to_pylist(), strict=True), v.tolist(), strict=True))
        return self._dict

"""Decision ids: unique, time-ordered, reproducible from a seed.

An id is 32 lower-case hex characters: 12 for the millisecond timestamp, then 20 for an 80-bit
counter that starts at a random value (from ``seed`` when one is given) and increases by one for
every id. Ids from one source therefore sort in the order they were made, even within the same
millisecond or when the clock stands still; two sources collide only if their 80-bit counters
meet, which random starts make negligible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError

__all__ = ["DecisionIds", "IdSource"]

_MASK80 = (1 << 80) - 1
_MASK64 = (1 << 64) - 1
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# byte → its two hex digits as one little-endian uint16 (first digit in the low byte)
_HEX_PAIRS = (_HEX[np.arange(256) >> 4].astype("<u2") | (_HEX[np.arange(256) & 15].astype("<u2") << 8))


@runtime_checkable
class IdSource(Protocol):
    def next_id(self, now_ns: int) -> str: ...

    def next_ids(self, n: int, now_ns: int) -> Sequence[str] | pa.StringArray: ...


class DecisionIds:
    """The default id source (see the module doc). ``seed`` makes the sequence reproducible."""

    __slots__ = ("_last_ms", "_prefix", "_seq")

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SpecError(f"DecisionIds 'seed' must be an integer or None. Got {seed!r} instead.")
        rng = random.Random(seed) if seed is not None else random.SystemRandom()
        # Start in the lower half so that a long run never wraps the counter.
        self._seq = rng.getrandbits(79)
        self._last_ms = 0
        self._prefix = f"{0:012x}"

    def _advance(self, now_ns: int) -> str:
        ms = now_ns // 1_000_000
        if ms > self._last_ms:  # a clock that steps back keeps the last prefix: ids stay ordered
            self._last_ms = ms
            self._prefix = f"{ms:012x}"
        return self._prefix

    def next_id(self, now_ns: int) -> str:
        prefix = self._advance(now_ns)
        self._seq = seq = (self._seq + 1) & _MASK80
        return f"{prefix}{seq:020x}"

    def next_ids(self, n: int, now_ns: int) -> pa.StringArray:
        """``n`` consecutive ids, formatted column-wise (no Python string per id)."""
        prefix = self._advance(now_ns)
        start = self._seq
        self._seq = (start + n) & _MASK80
        if n <= 0:
            return pa.array([], type=pa.string())
        i = np.arange(1, n + 1, dtype=np.uint64)
        lo0 = np.uint64(start & _MASK64)
        lo = lo0 + i  # wraps modulo 2**64, as uint64 does
        hi = (np.uint64(start >> 64) + (lo < lo0).astype(np.uint64)) & np.uint64(0xFFFF)
        digits = np.empty((n, 32), dtype=np.uint8)
        digits[:, :12] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
        for first, word, dtype in ((12, hi, ">u2"), (16, lo, ">u8")):
            octets = word.astype(dtype).view(np.uint8).reshape(n, -1)  # big-endian bytes
            pairs = _HEX_PAIRS[octets].view(np.uint8)  # two hex digits per byte, in order
            digits[:, first : first + pairs.shape[1]] = pairs
        offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits))

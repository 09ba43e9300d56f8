"""Decision ids the world assigns to its visits, column-wise.

The format is :mod:`closedloop.runtime.ids`' (32 lower-case hex: 12 for the visit's millisecond, 20 for an
80-bit counter). The counter is ``base + day · 2³² + index`` — ``base`` drawn from the world's
seed, ``index`` the visit's place in its day (visits are in time order) — so ids increase with
time, are unique within a run, are the same for the same seed, and the world can find a visit
from its id without a lookup table. They say nothing about the page (the index is the time order).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["format_ids", "parse_counters"]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_PAIRS = (_HEX[np.arange(256) >> 4].astype("<u2") | (_HEX[np.arange(256) & 15].astype("<u2") << 8))
_VALUE = np.full(256, 255, dtype=np.uint8)
_VALUE[_HEX] = np.arange(16, dtype=np.uint8)


def format_ids(ms: np.ndarray, counters: np.ndarray) -> pa.StringArray:
    """``ms`` (int64 milliseconds, < 2⁴⁸) and ``counters`` (uint64) → 32-hex-digit ids."""
    n = int(ms.shape[0])
    digits = np.empty((n, 32), dtype=np.uint8)
    if n:
        ms_bytes = ms.astype(">u8").view(np.uint8).reshape(n, 8)[:, 2:]  # the low 6 bytes
        digits[:, :12] = _PAIRS[ms_bytes].view(np.uint8).reshape(n, 12)
        digits[:, 12:16] = ord("0")  # the counter's top 16 bits are zero
        c_bytes = counters.astype(">u8").view(np.uint8).reshape(n, 8)
        digits[:, 16:] = _PAIRS[c_bytes].view(np.uint8).reshape(n, 16)
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes()))


def parse_counters(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The low 64 bits of each id's counter (uint64) and a mask of ids in the world's format."""
    ids = ids.cast(pa.string()) if not pa.types.is_string(ids.type) else ids
    n = len(ids)
    out = np.zeros(n, dtype=np.uint64)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return out, ok
    import pyarrow.compute as pc

    lengths = pc.binary_length(ids).fill_null(0).to_numpy(zero_copy_only=False)
    good = np.flatnonzero(lengths == 32)
    if good.size == 0:
        return out, ok
    sub = ids.take(pa.array(good)).combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids.take(pa.array(good))
    data = np.frombuffer(sub.buffers()[2], dtype=np.uint8)
    offs = np.frombuffer(sub.buffers()[1], dtype=np.int32)[sub.offset : sub.offset + len(sub) + 1]
    rows = data[offs[:-1, None] + np.arange(32)]
    vals = _VALUE[rows]
    valid = (vals != 255).all(axis=1) & (rows[:, 12:16] == ord("0")).all(axis=1)
    low = vals[:, 16:].astype(np.uint64)
    acc = np.zeros(good.size, dtype=np.uint64)
    for j in range(16):
        acc = (acc << np.uint64(4)) | low[:, j]
    out[good] = acc
    ok[good] = valid
    return out, ok

"""Train/test splits that do not leak: by unit, by time, or both.

:func:`split` returns ``(train_idx, test_idx)``: int64 row positions, sorted, disjoint. The
rules, exactly:

``by="unit"``
    Each distinct unit goes wholly to one side: to test when
    ``uniform(str(unit), salt=seed) < test_fraction`` (:func:`closedloop.experience.exploration.uniform`, a
    stable hash), else to train. The side of a unit depends only on the unit, the seed and the
    fraction — not on the other rows — so it is the same across runs, machines and dataset growth
    (a unit seen in last month's test set is in this month's too).

``by="time"``
    Rows with ``time < cutoff`` train, rows with ``time >= cutoff`` test. The cut-off is
    ``time_cutoff_ns`` when given, else the time of the row at position ``floor(n * (1 -
    test_fraction))`` in time order (so about ``test_fraction`` of the rows test; ties at the
    cut-off all test). A unit may be on both sides: this is "train on the past, evaluate on the
    later", nothing more.

``by="both"``
    A row trains when its unit hashes to train (the ``"unit"`` rule) **and** its time is before
    the cut-off; it tests when its unit hashes to test **and** its time is at/after the cut-off.
    The other rows are in neither side: rows of test units before the cut-off are dropped from
    train (they would leak the test units into training), and rows of train units at/after the
    cut-off are dropped from test (they are the future of units the model was trained on).
    This rule was chosen over "units seen before the cut-off are kept out of test" because the
    side of a unit stays a pure function of (unit, seed, fraction): stable as the data grows,
    and no unit is shared by construction. The price: about ``test_fraction`` of the units and
    ``1 - test_fraction`` of the time on each side, so roughly ``f * f`` of the rows test and
    ``(1 - f)**2`` train when units are active all the time.

Rows with a null unit (or, for time splits, a null time) are refused with
:class:`~closedloop.errors.DatasetError`; a row the split cannot place must not be silently
placed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.schema import Columns
from closedloop.errors import DatasetError, SpecError
from closedloop.experience.exploration import uniform_batch

__all__ = ["Split", "split"]

_BY = ("unit", "time", "both")


@dataclass(frozen=True)
class Split:
    """How to split a dataset: ``by`` ``"unit"``, ``"time"`` or ``"both"`` (rules: module docstring).

    ``test_fraction`` in (0, 1) is the share of units (``"unit"``), of rows by time (``"time"``)
    or both (``"both"``) that test; ``seed`` salts the unit hash; ``time_cutoff_ns`` fixes the
    cut-off instead of the ``1 - test_fraction`` time quantile.
    """

    by: str = "unit"
    test_fraction: float = 0.2
    seed: int = 0
    time_cutoff_ns: int | None = None

    def __post_init__(self) -> None:
        if self.by not in _BY:
            raise SpecError(f"The Split parameter 'by' must be one of {list(_BY)}. Got {self.by!r} instead.")
        f = self.test_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not (0.0 < float(f) < 1.0):
            raise SpecError(
                f"The Split parameter 'test_fraction' must be a number in (0, 1). Got {f!r} instead."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise SpecError(f"The Split parameter 'seed' must be an integer ≥ 0. Got {self.seed!r} instead.")
        c = self.time_cutoff_ns
        if c is not None and (isinstance(c, bool) or not isinstance(c, int | np.integer)):
            raise SpecError(
                f"The Split parameter 'time_cutoff_ns' must be an integer (ns) or None. Got {c!r} instead."
            )
        if c is not None and self.by == "unit":
            raise SpecError(
                "The Split parameter 'time_cutoff_ns' only applies to by='time' or by='both'. "
                f"Got {c!r} with by='unit' instead."
            )

    def describe(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "test_fraction": float(self.test_fraction),
            "seed": int(self.seed),
            "time_cutoff_ns": None if self.time_cutoff_ns is None else int(self.time_cutoff_ns),
        }


def _column(data: Any, name: str, what: str) -> Any:
    if isinstance(data, pa.Table | pa.RecordBatch):
        if name not in data.column_names:
            raise DatasetError(
                f"The split's {what} column '{name}' must be in the data. Got columns {data.column_names} instead."
            )
        return data.column(name)
    if isinstance(data, Columns | Mapping):
        if name not in data:
            names = data.names() if isinstance(data, Columns) else list(data)
            raise DatasetError(f"The split's {what} column '{name}' must be in the data. Got columns {names} instead.")
        return data[name]
    raise SpecError(
        "The data to split must be an Arrow table, a closedloop Columns or a mapping of columns. "
        f"Got {type(data).__name__} instead."
    )


def _as_arrow(col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(col, pa.Array):
        return col
    arr = pa.array(col) if isinstance(col, np.ndarray) else pa.array(list(col))
    return arr.cast(pa.int64()) if pa.types.is_null(arr.type) and len(arr) == 0 else arr


def unit_is_test(units: Any, test_fraction: float, seed: int) -> np.ndarray:
    """Per row, whether its unit hashes to test (``uniform(str(unit), seed) < test_fraction``)."""
    arr = _as_arrow(units)
    if arr.null_count:
        row = int(np.flatnonzero(~np.asarray(pc.is_valid(arr)))[0])
        raise DatasetError(f"The split's unit column must have no nulls. Got null instead (row {row}).")
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    enc = arr.dictionary_encode()
    u = uniform_batch(enc.dictionary.cast(pa.string()), salt=int(seed))
    side = u < float(test_fraction)
    return side[np.asarray(enc.indices, dtype=np.int64)] if len(arr) else np.zeros(0, dtype=bool)


def _times(col: Any) -> np.ndarray:
    arr = _as_arrow(col)
    if arr.null_count:
        row = int(np.flatnonzero(~np.asarray(pc.is_valid(arr)))[0])
        raise DatasetError(f"The split's time column must have no nulls. Got null instead (row {row}).")
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.timestamp("ns")).cast(pa.int64())
    if not pa.types.is_integer(arr.type):
        raise DatasetError(
            f"The split's time column must hold integers (ns) or timestamps. Got type {arr.type} instead."
        )
    return np.asarray(arr.cast(pa.int64()), dtype=np.int64)


def time_cutoff(times: np.ndarray, test_fraction: float) -> int:
    """The default cut-off: the time at position ``floor(n * (1 - test_fraction))`` in time order."""
    n = times.shape[0]
    if n == 0:
        return 0
    k = min(n - 1, int(np.floor(n * (1.0 - float(test_fraction)))))
    return int(np.partition(times, k)[k])


def split(
    data: Any,
    split: Split,
    *,
    unit: str = "unit",
    time: str = "timestamp_ns",
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``data`` (Arrow table, :class:`~closedloop.context.schema.Columns` or mapping of columns).

    Returns ``(train_idx, test_idx)``: sorted int64 row positions, disjoint. The rules are in
    this module's docstring; with ``by="unit"`` or ``"both"`` no unit is on both sides.
    """
    if not isinstance(split, Split):
        raise SpecError(f"The 'split' parameter must be a closedloop Split. Got {split!r} instead.")
    if split.by == "unit":
        test = unit_is_test(_column(data, unit, "unit"), split.test_fraction, split.seed)
        train_mask, test_mask = ~test, test
    else:
        t = _times(_column(data, time, "time"))
        cutoff = split.time_cutoff_ns if split.time_cutoff_ns is not None else time_cutoff(t, split.test_fraction)
        late = t >= int(cutoff)
        if split.by == "time":
            train_mask, test_mask = ~late, late
        else:
            test = unit_is_test(_column(data, unit, "unit"), split.test_fraction, split.seed)
            train_mask, test_mask = ~test & ~late, test & late
    return (
        np.flatnonzero(train_mask).astype(np.int64, copy=False),
        np.flatnonzero(test_mask).astype(np.int64, copy=False),
    )

"""Slice fields coded once for every bundle of an evaluation: :class:`SliceField` (a field's values as
integer codes, a numeric field in quantile bins) and :func:`_slice_fields`, the system's declared
slice fields coded from a dataset's evaluation rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import DatasetError

__all__ = ["DEFAULT_SLICE_BINS", "NOT_RECORDED", "SliceField"]

#: The slice value of rows whose stored context lacks the slice field.
NOT_RECORDED = "(not recorded)"
#: Quantile bins of a numeric slice field (``evaluate(slice_bins=…)``).
DEFAULT_SLICE_BINS = 5


def _edge_text(edges: Sequence[float], integer: bool) -> list[str]:
    """Bin edges as text: integers as such; else the fewest significant digits (at least 3) that
    keep distinct edges distinct."""
    if integer and all(math.isfinite(e) and e == int(e) for e in edges):
        return [str(int(e)) for e in edges]
    for digits in range(3, 18):
        text = [f"{e:.{digits}g}" for e in edges]
        if len(set(text)) == len(set(edges)):
            return text
    return [repr(e) for e in edges]


@dataclass(frozen=True)
class SliceField:
    """A slice field's values coded once for every bundle: ``codes`` (one int per row) index
    ``values`` (the distinct values as text, sorted)."""

    name: str
    codes: np.ndarray
    values: tuple[str, ...]
    #: a binned numeric field's bin edges (lowest value, inner edges, highest value); None: one
    #: slice per value
    edges: tuple[float, ...] | None = None

    @classmethod
    def binned(cls, name: str, column: Any, missing: np.ndarray | None = None, bins: int = DEFAULT_SLICE_BINS,
               integer: bool = False) -> SliceField:
        """A numeric field in at most ``bins`` quantile bins, edges from the data: with the
        recorded values' ``k/bins`` quantiles (numpy's ``higher``: each edge is a value the
        data holds; repeated edges merged), bin ``j`` holds ``edge[j] ≤ value < edge[j+1]``, the
        last one up to and including the highest value. Labels are ranges: ``"[3.2, 7.9)"``, the
        last ``"[7.9, 12]"`` (numbers in the fewest significant digits that tell the edges apart;
        ``integer``: as integers). Bins are in value order, then ``"NaN"`` and
        :data:`NOT_RECORDED` when some rows are. A field with at most ``bins`` distinct values
        keeps one slice per value (:meth:`of`)."""
        x = np.asarray(column, dtype=np.float64).reshape(-1)
        rec = np.ones(x.size, dtype=bool) if missing is None else ~np.asarray(missing, dtype=bool)
        nan = np.isnan(x) & rec
        vals = x[rec & ~nan]
        distinct = np.unique(vals)
        if distinct.size <= bins:
            return cls.of(name, column, missing)
        q = np.quantile(vals, np.arange(1, bins) / bins, method="higher")
        inner = np.unique(q)
        inner = inner[inner > distinct[0]]  # an edge at the lowest value would leave its bin empty
        edges = (float(distinct[0]), *(float(e) for e in inner), float(distinct[-1]))
        text = _edge_text(edges, integer)
        k = len(edges) - 1
        labels = [f"[{text[j]}, {text[j + 1]})" for j in range(k - 1)] + [f"[{text[k - 1]}, {text[k]}]"]
        codes = np.searchsorted(inner, x, side="right").astype(np.int64)
        if nan.any():
            labels.append("NaN")
            codes[nan] = len(labels) - 1
        if missing is not None and np.any(missing):
            labels.append(NOT_RECORDED)
            codes[np.asarray(missing, dtype=bool)] = len(labels) - 1
        return cls(name, codes, tuple(labels), edges)

    @classmethod
    def of(cls, name: str, column: Any, missing: np.ndarray | None = None) -> SliceField:
        """From a column (Arrow array, numpy array or list); rows where ``missing`` is True take
        the value :data:`NOT_RECORDED`."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if isinstance(column, pa.Array):
            enc = column.dictionary_encode()
            idx = np.asarray(enc.indices.fill_null(-1), dtype=np.int64)
            labels = [str(v) for v in enc.dictionary.to_pylist()]
            if (idx < 0).any():
                labels.append("None")
                idx = np.where(idx < 0, len(labels) - 1, idx)
        else:
            arr = np.asarray(column)
            if arr.dtype == object:
                arr = np.asarray([str(v) for v in arr.tolist()])
            uniq, idx = np.unique(arr, return_inverse=True)
            labels = [str(v) for v in uniq.tolist()]
            idx = idx.astype(np.int64).reshape(-1)
        if missing is not None and missing.any():
            labels.append(NOT_RECORDED)
            idx = np.where(missing, len(labels) - 1, idx)
        # one code per distinct text, codes in sorted order of the text
        names = sorted(set(labels))
        where = {v: i for i, v in enumerate(names)}
        remap = np.asarray([where[v] for v in labels], dtype=np.int64)
        codes = remap[idx] if idx.size else idx
        present = np.bincount(codes, minlength=len(names)) > 0
        if not present.all():  # drop values no row holds (e.g. dictionary entries filtered out)
            keep = np.flatnonzero(present)
            new = np.full(len(names), -1, dtype=np.int64)
            new[keep] = np.arange(keep.size)
            codes, names = new[codes], [names[i] for i in keep]
        return cls(name, codes, tuple(names))


def _slice_fields(system: Any, table: Any, cols: Any, manifest: Any,
                  bins: int | None = DEFAULT_SLICE_BINS) -> list[SliceField]:
    """The declared slice fields, coded: a numeric field (``Float``, ``Int``) in ``bins``
    quantile bins (:meth:`SliceField.binned`; None: one slice per value), the others one slice
    per value. A field the imported file had no column for, or that no stored context records,
    is an error (its slices would all hold the default); one that some stored contexts lack
    gives those rows :data:`NOT_RECORDED`."""
    from closedloop.context.schema import Float, Int

    out = []
    manifest_id = manifest.id
    absent = (manifest.content.get("source") or {}).get("absent_fields") or []
    for name in system.slices:
        if name in absent:
            raise DatasetError(
                f"The slice field {name!r} declared by system '{system.name}' must be a column of the file "
                f"imported as dataset {manifest_id!r}. Got no such column instead: every row holds the "
                f"field's default, so its slices would say nothing."
            )
        has = np.asarray(pc.match_substring(table["context_json"], f'"{name}":').fill_null(False), dtype=bool)
        if not has.any():
            raise DatasetError(
                f"The slice field {name!r} declared by system '{system.name}' must be recorded in the contexts "
                f"of dataset {manifest_id!r}. Got no row that records it instead (the file or the telemetry "
                f"did not carry it, or it is dropped as sensitive): every slice would hold its default."
            )
        field = system.schema.by_name[name]
        if bins is not None and isinstance(field, Float | Int):
            out.append(SliceField.binned(name, cols[name], missing=~has, bins=bins, integer=isinstance(field, Int)))
        else:
            out.append(SliceField.of(name, cols[name], missing=~has))
    return out

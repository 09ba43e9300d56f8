"""The datasets a cycle reads, decoded once: :class:`DatasetReader`.

The train, cost-threshold and evaluate steps read the same dataset; consecutive cycles read
datasets whose training windows overlap by most of their days. The reader keeps the last
dataset read (per cycle) and the decoded contexts of the last dataset (per process), so a
context is decoded once however many steps and cycles read it (docs/performance.md,
"Orchestration").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop.context.schema import concat_columns
from closedloop.datasets.dataset import DATA_FILE, decode_contexts
from closedloop.errors import ContextError
from closedloop.system.spec import System

__all__ = ["READ_COLUMNS", "DatasetReader", "shared_rows"]

#: the dataset columns the cycle reads (train, cost thresholds, evaluate): not the logged features,
#: scores, per-feature and outcome columns — the cycle featurizes the contexts with the current code
READ_COLUMNS = ("decision_id", "unit", "timestamp_ns", "context_json", "label_value", "weight")


class _Ahead:
    """``make()`` running on a thread of its own (:meth:`DatasetReader.ahead`); :meth:`result` waits
    for it and returns its value or raises what it raised."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="closedloop-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._make()
        except BaseException as exc:  # handed to the step that asks for the value, where it would have been raised
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class DatasetReader:
    """Reads datasets of ``system`` as the cycle needs them: ``load(path)`` returns ``(table,
    columns)`` — the rows of ``load_dataset(path, system)`` with the columns the cycle reads
    (:data:`READ_COLUMNS`) and the decoded contexts."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._loaded: tuple[str, Any] | None = None  # the dataset read in this cycle (train, thresholds, evaluate)
        self._contexts: tuple[Any, Any, Any] | None = None  # the last dataset's ids, context text, decoded columns
        self._shared: dict[Any, Any] = {}  # what the cycle's steps share (shared()), forgotten at its end
        self._carried: dict[Any, Any] = {}  # what a step keeps for the next cycle's (carry()), per process

    def load(self, path: str) -> Any:
        """The dataset at ``path``, read once per cycle and process (a dataset never changes)."""
        if self._loaded is None or self._loaded[0] != str(path):
            self._loaded = (str(path), self.read(path))
        return self._loaded[1]

    def end_cycle(self) -> None:
        """Forget the cycle's dataset and what its steps shared (the decoded contexts stay, for the
        next cycle's); work started :meth:`ahead` that no step asked for is waited for and dropped."""
        for v in self._shared.values():
            if isinstance(v, _Ahead):
                v._thread.join()
        self._loaded = None
        self._shared = {}

    def carry(self, key: Any, value: Any) -> None:
        """Keep ``value`` for the next cycle of this process (:meth:`carried`), replacing the last."""
        self._carried[key] = value

    def carried(self, key: Any) -> Any:
        """What a cycle before kept under ``key`` (:meth:`carry`), or None."""
        return self._carried.get(key)

    def shared(self, key: Any, make: Callable[[], Any]) -> Any:
        """What ``make()`` returns, computed once per cycle for ``key`` — e.g. a reward dataset's
        decoded rows, fitted on by the train step and by the evaluate step's click model. A value
        started :meth:`ahead` is waited for (what it raised is raised here)."""
        if key not in self._shared:
            self._shared[key] = make()
        got = self._shared[key]
        if isinstance(got, _Ahead):
            try:
                got = got.result()
            finally:
                del self._shared[key]  # an error is raised once; asked again, the value is computed again
            self._shared[key] = got
        return got

    def ahead(self, key: Any, make: Callable[[], Any]) -> None:
        """Start ``make()`` on a thread of its own for ``key``, to be taken by :meth:`shared` — work
        a later step needs that does not depend on the steps between (the ranking report's logged
        side while the candidate trains: the compiled kernels release the GIL). Nothing happens when
        ``key`` is already there. Its result must not depend on when it runs."""
        if key not in self._shared:
            self._shared[key] = _Ahead(make)

    def read(self, path: str) -> Any:
        """What ``load_dataset(path, system)`` returns — the same rows, and of the columns those
        the cycle reads — with the contexts of rows the last dataset read in this process also
        held (same decision id, same context text: consecutive training windows overlap by most of
        their days) taken from it instead of decoded again. Decoding ~350,000 contexts was most of
        a demo cycle's training."""
        prev, self._contexts = self._contexts, None
        p = Path(path)
        data = p / DATA_FILE if p.is_dir() else p
        # only the columns the cycle reads (the features and scores as logged are not)
        keep = [c for c in pq.read_schema(data).names if c in READ_COLUMNS]
        table = pq.read_table(data, columns=keep)
        if table["context_json"].null_count:  # a filter copies every column: only when some row has no context
            table = table.filter(pc.is_valid(table["context_json"]))
        ids, raws = table["decision_id"].combine_chunks(), table["context_json"].combine_chunks()
        cols = decode_contexts(table["context_json"], self.system) if prev is None else \
            self._decode_new(table, ids, raws, prev)
        if table.num_rows:
            self._contexts = (ids, raws, cols)
        return table, cols

    def _decode_new(self, table: pa.Table, ids: Any, raws: Any, prev: tuple[Any, Any, Any]) -> Any:
        """The dataset's decoded contexts: those the last dataset held taken from it, the rest
        decoded; a context that fails to decode is named by its row in the whole dataset."""
        hit, old_hit = shared_rows(ids, raws, prev[0], prev[1])
        new = np.flatnonzero(~np.isin(np.arange(len(ids)), hit))
        try:
            fresh = decode_contexts(raws.take(new), self.system)
        except ContextError:  # named by its row in the whole dataset
            return decode_contexts(table["context_json"], self.system)
        both = concat_columns([prev[2].take(old_hit), fresh])  # rows: hit, then new
        order = np.empty(len(ids), dtype=np.int64)
        order[np.concatenate([hit, new])] = np.arange(len(ids))
        cols = both.take(order)
        cols.rows = np.arange(cols.n, dtype=np.int64)  # as validated in one batch
        return cols


def shared_rows(ids: Any, raws: Any, prev_ids: Any, prev_raws: Any) -> tuple[Any, Any]:
    """The rows of a dataset (``ids``, ``raws``: decision ids, context texts) that the last
    one held with the same id and text, and their rows there: ``(rows, rows in the last)``.
    Consecutive training windows list the days they share in the same order, so the shared
    rows are first looked for as one aligned run (compared in place); when that finds less
    than nine in ten of the rows it could, every id is looked up. A row not found is decoded
    again — the same values (decoding depends on the text only), just slower."""
    n = len(ids)
    if n and len(prev_ids):
        k = pc.index(prev_ids, ids[0]).as_py()
        if k >= 0:
            m = min(n, len(prev_ids) - k)
            same = pc.and_(pc.equal(ids.slice(0, m), prev_ids.slice(k, m)),
                           pc.equal(raws.slice(0, m), prev_raws.slice(k, m)))
            hit = np.flatnonzero(np.asarray(pc.fill_null(same, False), dtype=bool))
            if hit.size >= 0.9 * m:
                return hit, hit + k
    pos = pc.index_in(ids, value_set=prev_ids)
    found = np.asarray(pos.is_valid(), dtype=bool)
    old = np.asarray(pos.filter(pa.array(found)), dtype=np.int64)
    same = np.asarray(pc.fill_null(pc.equal(raws.filter(pa.array(found)), prev_raws.take(pa.array(old))), False),
                      dtype=bool)
    return np.flatnonzero(found)[same], old[same]

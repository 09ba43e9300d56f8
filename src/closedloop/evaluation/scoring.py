"""One bundle of an evaluation: its scores of the evaluation rows through the runtime's batch path
(:func:`_one`), measured (:func:`~closedloop.evaluation.measuring.measure`), with its worst
mistakes and golden rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.evaluation.measuring import Measured, measure
from closedloop.evaluation.slicing import SliceField
from closedloop.experience.experiences import Thresholds


def _mistake(i: int, ids: list[Any], s: np.ndarray, act: np.ndarray, y: np.ndarray, system: Any,
             at: dict[int, tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    context, unit = at[i]
    return {
        "decision_id": ids[i], "unit": unit, "score": float(s[i]), "action": str(act[i]),
        "label": system.labels[int(y[i])], "context": context,
    }


def _contexts(cols: Any, rows: np.ndarray) -> list[dict[str, Any]]:
    """The contexts of a few rows as plain dicts."""
    if rows.size == 0:
        return []
    sub = cols.take(rows)
    return [sub.row(j) for j in range(rows.size)]


def _one(system: Any, bundle: Any, y: np.ndarray, cols: Any, table: Any, ids: list[Any], ts: np.ndarray,
         slice_fields: Sequence[SliceField], *, worst: int, golden: int, seed: int,
         weights: np.ndarray | None = None) -> tuple[dict[str, Any], Measured]:
    from closedloop.runtime.runtime import Runtime

    bundle.check_compatible(system)
    th = bundle.experience(system)
    if not isinstance(th, Thresholds):
        raise SpecError(f"evaluate needs a Thresholds experience; the system '{system.name}' has {th!r}.")
    names = [f.name for f in system.schema.fields]
    batch = Runtime(system, bundle).decide_batch({n: cols[n] for n in names}, decision_ids=ids, timestamps_ns=ts)
    s = np.asarray(batch.scores(th.score), dtype=np.float64)
    act = batch.action
    op = float(th.levels[-1][1])
    body, measured = measure(y, s, th, labels=system.labels, costs=system.costs, slices=slice_fields, weights=weights)
    pred = s >= op
    fp = np.flatnonzero((y == 0) & pred)
    fp = fp[np.argsort(-s[fp], kind="stable")][:worst]
    fn = np.flatnonzero((y == 1) & ~pred)
    fn = fn[np.argsort(s[fn], kind="stable")][:worst]
    rng = np.random.default_rng(seed)
    g = np.sort(rng.choice(y.size, size=min(golden, y.size), replace=False))
    few = np.r_[fp, fn, g].astype(np.int64)
    ctx = _contexts(cols, few)
    units = table["unit"].take(pa.array(few)).to_pylist() if few.size else []
    at = {int(r): (ctx[j], units[j]) for j, r in enumerate(few.tolist())}
    out = {
        "version": bundle.version, "kind": bundle.intelligence.kind, "score": th.score, "n": int(y.size),
        "thresholds": th.as_dict(), "operating_point": op, **body,
        "worst": {"false_positives": [_mistake(int(i), ids, s, act, y, system, at) for i in fp],
                  "false_negatives": [_mistake(int(i), ids, s, act, y, system, at) for i in fn]},
        "golden": [
            {"decision_id": ids[i], "timestamp_ns": int(ts[i]), "context": at[i][0],
             "scores": {o: float(batch.score_matrix[i, j]) for j, o in enumerate(batch.outputs)},
             "action": str(act[i])}
            for i in g.tolist()
        ],
    }
    return out, measured

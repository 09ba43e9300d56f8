"""The rows an evaluation reads: a dataset's labeled rows for a system, on the test side of a split
(or all of them) — :func:`_rows`, checked to hold both classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from closedloop.errors import DatasetError, SpecError
from closedloop.system.splits import Split
from closedloop.system.splits import split as split_rows


def _rows(system: Any, dataset: Path, split: Split | str | None,
          loaded: tuple[Any, Any] | None = None) -> tuple[Any, Any, np.ndarray, Any, Any]:
    from closedloop.datasets.dataset import MANIFEST_FILE, DatasetManifest, load_dataset

    if not (dataset / MANIFEST_FILE).is_file():
        raise DatasetError(f"The dataset directory '{dataset}' must hold a {MANIFEST_FILE}. Got no such file instead.")
    manifest = DatasetManifest.read(dataset)
    built_for = manifest.content.get("system")
    if built_for is not None and built_for != system.name:
        raise DatasetError(
            f"The dataset {manifest.id!r} was built for system {built_for!r}; it cannot evaluate system "
            f"{system.name!r}."
        )
    table, cols = loaded if loaded is not None else load_dataset(dataset, system)
    if "label_value" not in table.column_names:
        raise DatasetError(f"The dataset {manifest.id!r} has no labels (no 'label_value' column) to evaluate on.")
    # only the columns the evaluation reads are carried through the takes below
    table = table.select([c for c in ("decision_id", "unit", "timestamp_ns", "context_json", "label_value", "weight")
                          if c in table.column_names])
    labeled = np.flatnonzero(np.asarray(pc.is_valid(table["label_value"]), dtype=bool))
    if labeled.size == 0:
        raise DatasetError(f"The dataset {manifest.id!r} must have labeled rows to evaluate on. Got none instead.")
    # the rows are chosen on the narrow columns; the wide ones (contexts) are taken once, at the end
    narrow = table.select([c for c in table.column_names if c != "context_json"])
    rows = labeled if labeled.size < table.num_rows else None
    if rows is not None:
        narrow = narrow.take(rows)
    sp = system.split if split is None else split
    if isinstance(sp, str) and sp == "all":
        idx = None
    elif isinstance(sp, Split):
        _, idx = split_rows(narrow, sp)
    else:
        raise SpecError(f"The 'split' parameter of evaluate must be a closedloop Split, 'all' or None. Got {sp!r} instead.")
    if idx is not None and idx.size == 0:
        raise DatasetError(f"The split {sp.describe() if isinstance(sp, Split) else sp} leaves no evaluation rows "
                           f"in dataset {manifest.id!r}.")
    if idx is not None and idx.size < narrow.num_rows:
        rows = idx if rows is None else rows[idx]
    if rows is not None:
        table, cols = table.take(rows), cols.take(rows)
    y = np.asarray(table["label_value"].to_numpy(zero_copy_only=False), dtype=np.int64)
    if np.unique(y).size < 2:
        raise DatasetError(
            f"The evaluation rows of dataset {manifest.id!r} must hold both classes. Got only "
            f"{system.labels[int(y[0])]!r} ({y.size} rows) instead."
        )
    return manifest, table, y, cols, sp

"""Generated page loads as a dataset: the columns and labels of ``examples.phishing.data.generate``
written to ``<root>/pages.parquet`` and imported (``closedloop.datasets.import_dataset``) — the
fixture many evaluation and training tests start from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def import_pages(system: Any, cols: Mapping[str, Any], labels: Any, root: Path, *, out: Path | None = None,
                 extra: Mapping[str, Any] | None = None) -> Any:
    """``cols`` (one array or list per context field) plus ``extra`` columns and a ``label``
    column from ``labels``, written to ``root/pages.parquet`` and imported for ``system`` into
    ``out`` (default ``root/ds``); returns the imported dataset."""
    from closedloop.datasets import import_dataset

    data = {k: (pa.array(v) if isinstance(v, np.ndarray) else pa.array(list(v))) for k, v in cols.items()}
    data.update({k: pa.array(list(v)) for k, v in (extra or {}).items()})
    data["label"] = pa.array(np.asarray(labels).tolist())
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), root / "pages.parquet")
    return import_dataset(root / "pages.parquet", system, label="label", out=out if out is not None else root / "ds")

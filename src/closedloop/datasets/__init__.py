"""Datasets: decisions joined with outcomes under a label policy.

:func:`build_dataset` writes a dataset (Parquet + manifest) from telemetry Parquet files;
:func:`load_dataset` reads one back with contexts in the current schema; :func:`read_outcomes`
validates an outcome file (JSON lines or Parquet) line by line.
"""

from __future__ import annotations

from closedloop.datasets.dataset import (
    DatasetError,
    DatasetManifest,
    build_dataset,
    load_dataset,
    read_feature_sets,
)
from closedloop.datasets.importer import import_dataset
from closedloop.datasets.ingest import OutcomeLine, read_outcomes
from closedloop.datasets.slots import build_reward_dataset

__all__ = [
    "DatasetError",
    "DatasetManifest",
    "OutcomeLine",
    "build_dataset",
    "build_reward_dataset",
    "import_dataset",
    "load_dataset",
    "read_feature_sets",
    "read_outcomes",
]

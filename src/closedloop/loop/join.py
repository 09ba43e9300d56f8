"""The join of decisions with outcomes: the rules live with :func:`build_dataset`.

This module is the stable import path for the join (``closedloop.loop.join``); the rules are
documented in :mod:`closedloop.loop.dataset`, which implements them as one DuckDB pass.
"""

from __future__ import annotations

from .dataset import DatasetManifest, build_dataset

__all__ = ["DatasetManifest", "build_dataset"]

"""Evaluation: running intelligence on held-out data and reporting how it does.

:mod:`closedloop.evaluation.metrics` holds the pure-numpy metrics every report is made of
(quality, calibration, mistakes and their costs, cost-minimizing thresholds, bootstrap intervals,
slice tests with a Benjamini–Hochberg correction); :mod:`closedloop.evaluation.splits` the
leak-free splits (by unit, by time, or both) that set evaluation data aside.
"""

from __future__ import annotations

from .metrics import EvaluationError
from .splits import Split, split

__all__ = ["EvaluationError", "Split", "split"]

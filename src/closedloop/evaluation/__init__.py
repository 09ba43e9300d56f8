"""Evaluation: running intelligence on held-out data and reporting how it does.

:mod:`closedloop.evaluation.metrics` holds the pure-numpy metrics every report is made of
(quality, calibration, mistakes and their costs, cost-minimizing thresholds, bootstrap intervals,
slice tests with a Benjamini–Hochberg correction).
"""

from __future__ import annotations

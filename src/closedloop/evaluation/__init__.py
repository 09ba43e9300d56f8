"""Evaluation: running intelligence on held-out data and reporting how it does.

:mod:`closedloop.evaluation.metrics` holds the pure-numpy metrics every report is made of
(quality, calibration, mistakes and their costs, cost-minimizing thresholds, bootstrap intervals,
slice tests with a Benjamini–Hochberg correction); :mod:`closedloop.evaluation.splits` the
leak-free splits (by unit, by time, or both) that set evaluation data aside;
:mod:`closedloop.evaluation.html` renders a report as one self-contained HTML page.
"""

from __future__ import annotations

from .html import render_html, write_html
from .metrics import EvaluationError
from .splits import Split, split

__all__ = ["EvaluationError", "Split", "render_html", "split", "write_html"]

"""Evaluation: running intelligence on held-out data and reporting how it does.

:mod:`closedloop.evaluation.metrics` holds the pure-numpy metrics every report is made of
(quality, calibration, mistakes and their costs, cost-minimizing thresholds, bootstrap intervals,
slice tests with a Benjamini–Hochberg correction); :mod:`closedloop.system.splits` the
leak-free splits (by unit, by time, or both) that set evaluation data aside;
:mod:`closedloop.evaluation.html` renders a report as one self-contained HTML page.
"""

from __future__ import annotations

from closedloop.errors import EvaluationError
from closedloop.evaluation.html import render_html, write_html
from closedloop.system.splits import Split, split

__all__ = ["EvaluationError", "Split", "render_html", "split", "write_html"]

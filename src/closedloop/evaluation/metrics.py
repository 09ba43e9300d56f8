"""Pure-numpy metrics for binary evaluation: quality, calibration, mistakes and their costs.

Conventions shared by every function here:

- ``y`` are the true labels as 0/1 (bool, int or float 0.0/1.0): 1 is the system's positive class
  (``System.labels[1]``), 0 its negative class (``System.labels[0]``).
- ``s`` are scores (any ranking score); ``p`` are probabilities in [0, 1].
- ``weights`` are optional sample weights ≥ 0 (datasets carry ``weight = 1 / sample_prob``); every
  metric is the weighted one, and equals scikit-learn's with ``sample_weight``.
- Bad input raises :class:`EvaluationError` naming the parameter, the rule and the value: empty
  input, NaN scores, labels other than 0/1, a single class where the metric needs both, negative
  weights, mismatched lengths.

Everything is vectorized (one sort at most); docs/performance.md, "Evaluation", has the figures.

The metrics live by family — :mod:`~closedloop.evaluation.quality` (quality and calibration),
:mod:`~closedloop.evaluation.costs` (mistakes and their costs), :mod:`~closedloop.evaluation.significance`
(bootstrap intervals, slice tests, Benjamini–Hochberg), :mod:`~closedloop.evaluation.ordering` (scores
sorted once: :class:`Ranked`), :mod:`~closedloop.evaluation.partition` (slices of a ranking:
:class:`Partition`) and :mod:`~closedloop.evaluation.inputs` (the input checks); this module
gathers them under one name.
"""

from __future__ import annotations

from closedloop.errors import EvaluationError
from closedloop.evaluation.costs import _best_from_groups as _best_from_groups  # the report's exact search
from closedloop.evaluation.costs import best_thresholds, confusion_at_thresholds, expected_cost, explain_thresholds
from closedloop.evaluation.inputs import _dot as _dot  # the BLAS-free sum the report's bootstrap uses
from closedloop.evaluation.ordering import Curve, Ranked
from closedloop.evaluation.partition import Partition
from closedloop.evaluation.quality import (
    Reliability,
    auc,
    brier,
    ece,
    log_loss,
    pr_curve,
    precision_recall_f1,
    reliability,
    roc_curve,
)
from closedloop.evaluation.significance import (
    benjamini_hochberg,
    p_auc_worse,
    p_error_worse,
    poisson_bootstrap,
    slice_vs_rest,
)

__all__ = [
    "Curve",
    "EvaluationError",
    "Partition",
    "Ranked",
    "Reliability",
    "auc",
    "benjamini_hochberg",
    "best_thresholds",
    "brier",
    "confusion_at_thresholds",
    "ece",
    "expected_cost",
    "explain_thresholds",
    "log_loss",
    "p_auc_worse",
    "p_error_worse",
    "poisson_bootstrap",
    "pr_curve",
    "precision_recall_f1",
    "reliability",
    "roc_curve",
    "slice_vs_rest",
]

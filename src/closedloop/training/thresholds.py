"""The thresholds a trained candidate is built with (``train(thresholds=…)``, the loop's
``LoopPlan(thresholds=…)``): one code path for both.

``"system"``
    The system's own thresholds (``System.experience``), unchanged.
``"cost"``
    The thresholds that minimize the system's mistake costs (``System.costs``,
    :func:`closedloop.evaluation.metrics.best_thresholds`: exact, weighted by the dataset's row
    weights when it has them) on the rows of the train side the model was *not* fitted on — the
    calibration rows — when the model is calibrated; else on the rows it was fitted on. The
    test side is never used: it stays untouched for the held-out metrics and the gate.

Why not the fitted rows when there is a choice: scores of the rows a model was fitted on are
more extreme than on new rows (a booster memorizes part of its training data), so thresholds
chosen on them are too low for the rows the model will meet — a block threshold that looks
optimal in-sample blocks too much out of sample.

A level that no threshold makes cheaper gets a value above every score (it is never taken);
:func:`closedloop.evaluation.metrics.explain_thresholds` says so in words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.experience.experiences import Thresholds

__all__ = ["THRESHOLD_RULES", "check_threshold_rule", "cost_thresholds", "threshold_rows"]

#: What ``train(thresholds=…)`` and ``LoopPlan(thresholds=…)`` accept.
THRESHOLD_RULES = ("system", "cost")


def check_threshold_rule(system: Any, rule: Any, where: str = "train") -> str:
    """``rule`` if it is one of :data:`THRESHOLD_RULES` and ``system`` can use it ("cost" needs a
    Thresholds experience and mistake costs); else a :class:`~closedloop.errors.SpecError`."""
    if not isinstance(rule, str) or rule not in THRESHOLD_RULES:
        raise SpecError(f"The 'thresholds' parameter of {where} must be one of {list(THRESHOLD_RULES)}. "
                        f"Got {rule!r} instead.")
    if rule == "cost":
        if not isinstance(system.experience, Thresholds):
            raise SpecError(f"The 'thresholds' parameter of {where} can be 'cost' only for a system with a "
                            f"Thresholds experience; '{system.name}' has {system.experience!r}.")
        if not system.costs:
            raise SpecError(f"The 'thresholds' parameter of {where} can be 'cost' only for a system with mistake "
                            f"costs; '{system.name}' declares none (System(costs=...)).")
    return rule


def threshold_rows(fit_idx: np.ndarray, cal_idx: np.ndarray) -> tuple[np.ndarray, str]:
    """The rows cost thresholds are chosen on: ``(rows, "calibration" | "fit")`` — the
    calibration rows when there are any, else the fitted rows."""
    return (cal_idx, "calibration") if cal_idx.size else (fit_idx, "fit")


def cost_thresholds(system: Any, y: np.ndarray, S: np.ndarray, outputs: Any,
                    weights: np.ndarray | None = None) -> dict[str, float]:
    """The cost-minimizing thresholds of ``system``'s experience for labels ``y`` (0/1) and the
    bound scorer's matrix ``S`` (one column per name in ``outputs``; the experience's score is
    read), rows weighted by ``weights`` (None: all 1)."""
    from closedloop.evaluation.metrics import best_thresholds

    exp = system.experience
    check_threshold_rule(system, "cost")
    s = np.asarray(S, dtype=np.float64)[:, list(outputs).index(exp.score)]
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    return best_thresholds(np.asarray(y, dtype=np.int64), s, exp, system.costs, weights=w, labels=system.labels)

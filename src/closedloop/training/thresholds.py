"""The thresholds a trained candidate is built with (``train(thresholds=…)``, the loop's
``LoopPlan(thresholds=…)``): one code path for both.

``"system"``
    The system's own thresholds (``System.experience``), unchanged.
``"cost"``
    The thresholds that minimize the system's mistake costs (``System.costs``,
    :func:`closedloop.evaluation.metrics.best_thresholds`: exact, weighted by the dataset's row
    weights when it has them) **subject to the system's goals** that bound a rate the thresholds
    control (``false_positive_rate@block ≤ 0.001``, ``recall@warn ≥ 0.9``:
    :mod:`closedloop.evaluation.bounds`), on the rows of the train side the model was *not*
    fitted on — the calibration rows — when the model is calibrated; else on the rows it was
    fitted on. The test side is never used: it stays untouched for the held-out metrics and the
    gate. When no thresholds keep every such goal on those rows, the thresholds are the cost
    optimum and the bundle's lineage says which goal is out of reach (``thresholds.goals``): the
    goals are never traded against the costs silently — the loop raises a goal-health alert.

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
                    weights: np.ndarray | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The cost-minimizing thresholds of ``system``'s experience for labels ``y`` (0/1) and the
    bound scorer's matrix ``S`` (one column per name in ``outputs``; the experience's score is
    read), rows weighted by ``weights`` (None: all 1), subject to the goals that bound a rate the
    thresholds control (:func:`closedloop.evaluation.bounds.goal_bounds`) → ``(values, goals)``:
    ``goals`` reports each bound (feasible on these rows, kept, the rate at the values:
    :func:`closedloop.evaluation.costs.constrained_thresholds`)."""
    from closedloop.evaluation.bounds import goal_bounds
    from closedloop.evaluation.costs import constrained_thresholds

    exp = system.experience
    check_threshold_rule(system, "cost")
    s = np.asarray(S, dtype=np.float64)[:, list(outputs).index(exp.score)]
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    return constrained_thresholds(np.asarray(y, dtype=np.int64), s, exp, system.costs, goal_bounds(system), weights=w,
                                  labels=system.labels)

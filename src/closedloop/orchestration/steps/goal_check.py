"""``goal_check``: the goals the candidate's thresholds could not keep are alerted.

``train --thresholds cost`` chooses the thresholds that minimize the declared costs subject to the
goals that bound a rate they control (:mod:`closedloop.evaluation.bounds`); when no thresholds
keep them all on the training rows, the candidate keeps the cost optimum and its lineage says so
(``thresholds.goals``). This step raises a ``goal_health`` alert for each such goal
(:func:`closedloop.orchestration.goal_health.bound_alerts`) — the costs and the goal disagree, and
the system's owner must change one. It never stops the cycle: the gate judges the candidate.
"""

from __future__ import annotations

from typing import Any

from closedloop.orchestration.goal_health import bound_alerts
from closedloop.orchestration.steps.base import Step, StepContext, StepResult
from closedloop.orchestration.steps.train import TrainResult
from closedloop.runtime.bundle import Bundle

__all__ = ["GoalCheck", "GoalCheckResult"]


class GoalCheckResult(StepResult):
    """Each goal bound as the candidate's thresholds met it (feasible, kept, the rate), and the
    ids of the alerts raised."""

    goals: list[dict[str, Any]]
    alerts: list[str]


class GoalCheck(Step[GoalCheckResult]):
    """Alert the goals the candidate's thresholds could not keep."""

    name = "goal_check"
    Result = GoalCheckResult

    def run(self, ctx: StepContext) -> GoalCheckResult:
        tr = ctx.result("train", TrainResult)
        b = Bundle.load(tr.path, ctx.system)
        goals = list((((b.metrics or {}).get("lineage") or {}).get("thresholds") or {}).get("goals") or [])
        new = ctx.alert(bound_alerts(ctx.system, goals, tr.version, ctx.now_ns, ctx.plan.metrics))
        return GoalCheckResult(goals=goals, alerts=[a.id for a in new])

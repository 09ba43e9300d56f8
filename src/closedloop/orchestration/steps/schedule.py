"""``plan``: whether this cycle trains a candidate.

It does when an alert asked for it (``retrain``; ``tighten`` also tightens the candidate's
thresholds), or when the last candidate is ``LoopPlan.retrain_every`` old; otherwise the cycle
ends (``nothing_to_do``).
"""

from __future__ import annotations

from msgspec import UNSET, UnsetType

from closedloop.orchestration.steps.base import Step, StepContext, StepResult

__all__ = ["Schedule", "ScheduleResult"]


class ScheduleResult(StepResult):
    """Whether to train, whether to tighten the thresholds, why — and the alerts that asked."""

    train: bool
    tighten: bool
    why: str
    alerts: list[str] | UnsetType = UNSET


class Schedule(Step[ScheduleResult]):
    """The training schedule and the alerts' requests (step ``plan``)."""

    name = "plan"
    Result = ScheduleResult

    def run(self, ctx: StepContext) -> ScheduleResult:
        now, last = ctx.now_ns, ctx.record.get("last_trained_ns")
        pending = ctx.record.get("pending", [])
        actions = sorted({p["action"] for p in pending})
        if actions:
            return ScheduleResult(train=True, tighten="tighten" in actions, alerts=[p["id"] for p in pending],
                                  why=f"alert(s) say {', '.join(actions)}: " + "; ".join(p["message"] for p in pending))
        every = int(ctx.plan.retrain_every.total_seconds() * 1e9)
        if last is None or now - last >= every:
            return ScheduleResult(train=True, tighten=False,
                                  why="no candidate was trained yet" if last is None else "the retraining schedule is due")
        return ScheduleResult(train=False, tighten=False,
                              why=f"the last candidate was trained {(now - last) / 3.6e12:.1f} h ago; retraining every "
                                  f"{every / 3.6e12:.1f} h, and no alert asks for it")

    def ends(self, ctx: StepContext, result: ScheduleResult) -> tuple[str, str] | None:
        return None if result.train else ("nothing_to_do", result.why)

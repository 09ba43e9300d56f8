"""``register``: the candidate and its evaluation report enter the registry's catalog.

Registering the same bundle or report again changes nothing (a resumed cycle may redo this).
"""

from __future__ import annotations

from closedloop.orchestration.steps.base import Step, StepContext, StepResult
from closedloop.orchestration.steps.evaluate import EvaluateResult
from closedloop.orchestration.steps.train import TrainResult

__all__ = ["Register", "RegisterResult"]


class RegisterResult(StepResult):
    """The registered bundle's version and the report's id."""

    version: str
    report: int


class Register(Step[RegisterResult]):
    """Bundle and report into the registry."""

    name = "register"
    Result = RegisterResult

    def run(self, ctx: StepContext) -> RegisterResult:
        b = ctx.registry.add_bundle(ctx.result("train", TrainResult).path, actor=ctx.actor)
        r = ctx.registry.add_report(ctx.result("evaluate", EvaluateResult).path, actor=ctx.actor)
        return RegisterResult(version=b["version"], report=r["id"])

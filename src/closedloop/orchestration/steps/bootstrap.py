"""``bootstrap``: nothing is deployed — the plan's heuristic becomes the first production.

The heuristic is signed with the home's key and deployed with a forced reason (there is no data
to evaluate it on yet). The cycle ends (``bootstrapped``).
"""

from __future__ import annotations

from closedloop.orchestration.steps.base import StepContext, StepResult, Stop
from closedloop.orchestration.steps.route import Branch

__all__ = ["Bootstrap", "BootstrapResult"]


class BootstrapResult(StepResult):
    """The heuristic's version and what the registry said."""

    bundle: str
    message: str


class Bootstrap(Branch[BootstrapResult]):
    """The heuristic becomes production (route ``bootstrap``); the cycle ends."""

    name = "bootstrap"
    Result = BootstrapResult
    branch = "bootstrap"

    def run(self, ctx: StepContext) -> BootstrapResult:
        h = ctx.plan.heuristic_bundle()
        if h is None:
            raise Stop("nothing_deployed", f"nothing is deployed for '{ctx.system.name}' and the plan has no heuristic "
                       "to start with: deploy a production bundle first")
        state = ctx.registry.state(ctx.system.name)
        if state.production is None:
            ch = ctx.registry.deploy(
                ctx.system, h.signed(ctx.signer()), actor=ctx.actor,
                reason="bootstrap: the heuristic is the first production",
                force="the declared heuristic starts the loop: there is no data to evaluate it on yet",
            )
            ctx.change(ch)
            msg = ch.message
        else:
            msg = f"{state.production} is production already"
        return BootstrapResult(bundle=h.version, message=msg)

    def ends(self, ctx: StepContext, result: BootstrapResult) -> tuple[str, str]:
        return "bootstrapped", result.message

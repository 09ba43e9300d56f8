"""``shadow``: the candidate's rollout begins — as a shadow, or (``Rollout.shadow_for=None``)
straight into its flight. The rollout's state is carried in the cycle record; the cycle ends
(``shadow``) and later cycles advance it. A registry refusal stops the cycle (``sanity_failed``).
"""

from __future__ import annotations

from closedloop.errors import SanityCheckError
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.register import RegisterResult

__all__ = ["Shadow", "ShadowResult"]


class ShadowResult(StepResult):
    """What the registry said (or that the candidate was deployed so already)."""

    message: str


class Shadow(Step[ShadowResult]):
    """Start the candidate's rollout; the cycle ends."""

    name = "shadow"
    Result = ShadowResult

    def run(self, ctx: StepContext) -> ShadowResult:
        v = ctx.result("register", RegisterResult).version
        state = ctx.registry.state(ctx.system.name)
        r = ctx.plan.rollout
        reason = f"loop: a new candidate, cycle {ctx.id}"
        if r.shadow_for is None:
            f = state.flight(r.flight_name)
            if f is not None and f.bundle == v:
                msg = f"{v} is in flight {r.flight_name!r} already"
            else:
                msg = _deploy(ctx, v, flight=r.flight_name, share=r.flight_share, reason=reason)
            stage = "flight"
        elif v in state.shadows:
            msg, stage = f"{v} is a shadow already", "shadow"
        else:
            msg, stage = _deploy(ctx, v, shadow=True, reason=reason), "shadow"
        ctx.record["rollout"] = {"candidate": v, "stage": stage, "since_ns": ctx.now_ns, "cycle": ctx.id}
        return ShadowResult(message=msg)

    def ends(self, ctx: StepContext, result: ShadowResult) -> tuple[str, str]:
        return "shadow", result.message


def _deploy(ctx: StepContext, version: str, **how: object) -> str:
    """Deploy ``version`` as ``how`` says; a refusal of the registry's checks (e.g. latency
    measured on a busy machine) stops the cycle."""
    try:
        ch = ctx.registry.deploy(ctx.system, version, actor=ctx.actor, **how)
    except SanityCheckError as exc:
        raise Stop("sanity_failed", f"the registry refused {version}: {exc}") from None
    ctx.change(ch)
    msg: str = ch.message
    return msg

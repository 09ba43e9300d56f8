"""``sanity``: the registry's sanity checks on the registered candidate (it loads, decides on
generated contexts, within latency, with a passed gate in its report…:
:mod:`closedloop.registry.sanity`). A failed check stops the cycle (``sanity_failed``).
"""

from __future__ import annotations

from typing import Any

from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.register import RegisterResult
from closedloop.registry.sanity import run_checks

__all__ = ["Sanity", "SanityResult"]


class SanityResult(StepResult):
    """Every check, with its verdict and detail."""

    checks: list[dict[str, Any]]


class Sanity(Step[SanityResult]):
    """The sanity checks."""

    name = "sanity"
    Result = SanityResult

    def run(self, ctx: StepContext) -> SanityResult:
        v = ctx.result("register", RegisterResult).version
        state = ctx.registry.state(ctx.system.name)
        _, checks = run_checks(ctx.system, lambda: ctx.registry.load_bundle(v, ctx.system), ctx.registry.reports(v),
                               production=state.production, need_gate=True)
        out = [c.to_dict() for c in checks]
        failed = [c for c in out if not c["passed"]]
        if failed:
            raise Stop("sanity_failed", "failed sanity check(s) " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))
        return SanityResult(checks=out)

"""``past``: never worse than its own past — an older production bundle that now does better
than both the candidate and production is rolled out again.

The ``evaluate`` step scores the last ``LoopPlan.past_bundles`` production bundles (other than
production and the candidate: :func:`past_productions`) on the newest held-out rows beside the
candidate. When the best of them costs less per 1,000 decisions than both — cheaper than
production beyond the noise (the paired bootstrap's 95% interval of the cost difference entirely
below zero, where the report has one) — and breaks no goal production meets, this step starts its
rollout (a shadow, or straight into the flight with ``Rollout.shadow_for=None``) and ends the cycle
(``restore``): later cycles advance it as any candidate, the guard watching its flight. Otherwise
the cycle goes on to the gate with the candidate. A model that ages well can so never beat the
loop that once had it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msgspec import UNSET, UnsetType

from closedloop.errors import SanityCheckError
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.evaluate import EvaluateResult

__all__ = ["Past", "PastResult"]


class PastResult(StepResult):
    """The past bundles weighed, the one restored (if any) and why."""

    weighed: list[str]
    why: str
    restored: str | UnsetType = UNSET
    message: str | UnsetType = UNSET


class Past(Step[PastResult]):
    """Restore an older production bundle that beats the candidate and production."""

    name = "past"
    Result = PastResult

    def run(self, ctx: StepContext) -> PastResult:
        ev = ctx.result("evaluate", EvaluateResult)
        weighed = list(ev.past)
        if not weighed:
            return PastResult(weighed=[], why="no past production bundle to weigh")
        report = json.loads(Path(ev.path).read_text())
        best, why = _best_past(report, weighed)
        if best is None:
            return PastResult(weighed=weighed, why=why)
        msg = _roll_out(ctx, best)
        ctx.record["rollout"] = {"candidate": best, "stage": "flight" if ctx.plan.rollout.shadow_for is None else "shadow",
                                 "since_ns": ctx.now_ns, "cycle": ctx.id, "restored": True}
        return PastResult(weighed=weighed, why=why, restored=best, message=msg)

    def ends(self, ctx: StepContext, result: PastResult) -> tuple[str, str] | None:
        return None if not result.restored else ("restore", f"{result.why}: {result.message}")


def _best_past(report: dict[str, Any], weighed: list[str]) -> tuple[str | None, str]:
    """The past bundle to restore (or None) and why, from the evaluation report (its first bundle
    is production, its last the candidate)."""
    bundles = report["bundles"]
    prod, cand = bundles[0], bundles[-1]
    costs = {b["version"]: b["mistakes"]["cost_per_1000"] for b in bundles}
    past = [b for b in bundles if b["version"] in weighed and costs[b["version"]] is not None]
    if not past or costs[prod["version"]] is None or costs[cand["version"]] is None:
        return None, "no cost to weigh the past bundles by"
    best = min(past, key=lambda b: costs[b["version"]])
    v, c = best["version"], costs[best["version"]]
    if not c < min(costs[prod["version"]], costs[cand["version"]]):
        return None, (f"the best past bundle, {v}, costs {c:.4g} per 1,000 decisions: not less than the candidate's "
                      f"{costs[cand['version']]:.4g} and production's {costs[prod['version']]:.4g}")
    diff: dict[str, Any] = next((d for d in report.get("comparison") or [] if d["candidate"] == v), {})
    ci = diff.get("cost_diff_ci")
    if ci is not None and not ci[1] < 0:
        return None, (f"the past bundle {v} costs {c:.4g} per 1,000 decisions, less than production's "
                      f"{costs[prod['version']]:.4g}, but within the noise (95% interval of the difference {ci})")
    kept = {g["goal"] for g in prod.get("goals") or [] if g.get("met")}
    broken = [g["goal"] for g in best.get("goals") or [] if g["goal"] in kept and g.get("met") is False]
    if broken:
        return None, f"the past bundle {v} is cheaper but breaks goal(s) production meets: {', '.join(broken)}"
    return v, (f"the past bundle {v} costs {c:.4g} per 1,000 decisions on the newest held-out rows, less than the "
               f"candidate's {costs[cand['version']]:.4g} and production's {costs[prod['version']]:.4g}")


def _roll_out(ctx: StepContext, version: str) -> str:
    """Start the rollout of the restored bundle as the plan's rollout starts a candidate's."""
    r = ctx.plan.rollout
    state = ctx.registry.state(ctx.system.name)
    how: dict[str, Any] = ({"flight": r.flight_name, "share": r.flight_share} if r.shadow_for is None
                           else {"shadow": True})
    if (r.shadow_for is None and state.flight(r.flight_name) is not None
            and state.flight(r.flight_name).bundle == version) or (r.shadow_for is not None and version in state.shadows):
        return f"{version} is deployed so already"
    try:
        ch = ctx.registry.deploy(ctx.system, version, actor=ctx.actor,
                                 reason=f"loop: restore {version}, cheaper than the candidate and production, cycle "
                                        f"{ctx.id}", **how)
    except SanityCheckError as exc:
        raise Stop("sanity_failed", f"the registry refused to restore {version}: {exc}") from None
    ctx.change(ch)
    msg: str = ch.message
    return msg

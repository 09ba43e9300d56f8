"""``route``: which way this cycle goes, decided once (a resumed cycle follows it).

``bootstrap`` when nothing is deployed, ``advance`` when a rollout is under way, else ``train``.
"""

from __future__ import annotations

from typing import Any

from closedloop.orchestration.steps.base import R, Step, StepContext, StepResult

__all__ = ["Branch", "Route", "RouteResult", "in_progress"]


class RouteResult(StepResult):
    """The branch (``bootstrap``, ``advance`` or ``train``) and why."""

    branch: str
    why: str


def in_progress(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout the cycle record carries, when one is under way (shadow, flight, or a shadow
    to retire)."""
    r = rec.get("rollout")
    return r if r is not None and r.get("stage") in ("shadow", "flight", "retire_shadow") else None


class Route(Step[RouteResult]):
    """Bootstrap, advance the rollout, or the training path."""

    name = "route"
    Result = RouteResult

    def run(self, ctx: StepContext) -> RouteResult:
        state = ctx.registry.state(ctx.system.name)
        rec = ctx.record
        if in_progress(rec) is not None:
            return RouteResult(branch="advance", why=f"the rollout of {rec['rollout']['candidate']} is at stage "
                                                     f"{rec['rollout']['stage']}")
        if state.production is None:
            return RouteResult(branch="bootstrap", why="nothing is deployed")
        return RouteResult(branch="train", why=f"{state.production} is production; no rollout under way")


class Branch(Step[R]):
    """Base of the steps that run on one branch of :class:`Route` only (``branch``)."""

    branch = ""

    def applies(self, ctx: StepContext) -> bool:
        return ctx.result("route", RouteResult).branch == self.branch

"""``train``: a candidate bundle from the cycle's dataset, in the cycle's directory.

The plan's model, parameters, calibration and thresholds (the system's, or the cost-minimizing
ones: ``LoopPlan.thresholds``); on a ``tighten`` alert the thresholds are tightened
(``LoopPlan.tighten``). The candidate is signed with the home's key. A training error stops the
cycle (``training_failed``). The alerts that asked for the training are answered (the carried
``pending`` list empties).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.dataset import DatasetResult
from closedloop.orchestration.steps.schedule import ScheduleResult
from closedloop.runtime.bundle import Bundle
from closedloop.training.train import train

__all__ = ["Train", "TrainResult"]


class TrainResult(StepResult):
    """The candidate's version and directory, whether its thresholds were tightened, its
    thresholds and its held-out metrics."""

    version: str
    path: str
    tightened: bool
    thresholds: Any
    heldout: Any


class Train(Step[TrainResult]):
    """Train (or find) the candidate."""

    name = "train"
    Result = TrainResult

    def run(self, ctx: StepContext) -> TrainResult:
        path = ctx.dir / "candidate"
        tighten = ctx.result("plan", ScheduleResult).tighten
        b = Bundle.load(path, ctx.system) if (path / "manifest.json").is_file() else _train(ctx, path, tighten)
        ctx.record["last_trained_ns"] = ctx.now_ns
        ctx.record["pending"] = []  # the alerts that asked for it are answered
        return TrainResult(version=b.version, path=str(path), tightened=tighten, thresholds=b.thresholds,
                           heldout=(b.metrics or {}).get("heldout"))


def _train(ctx: StepContext, path: Path, tighten: bool) -> Bundle:
    """Train the candidate on the cycle's dataset, tighten its thresholds if asked, save it signed."""
    prod = ctx.production()
    plan = ctx.plan
    try:
        ds = ctx.result("dataset", DatasetResult).path
        run = train(ctx.system, ds, model=plan.model, params=dict(plan.params), calibrate=plan.calibrate,
                    parent=None if prod is None else prod.version, weights=plan.train_weights,
                    loaded=ctx.load(ds), thresholds=plan.thresholds)
    except ClosedLoopError as exc:
        raise Stop("training_failed", str(exc)) from None
    b = run.bundle  # built with the plan's thresholds: the system's, or the cost-minimizing ones
    if tighten:
        levels = b.experience(ctx.system).levels
        tightened = tuple(plan.tighten.apply(levels).items())
        if tightened != levels:
            b = Bundle.build(ctx.system, run.model, thresholds=dict(tightened), parent=b.parent, metrics=run.metrics)
    shutil.rmtree(path, ignore_errors=True)
    return Bundle.load(b.save(path, key=ctx.signer()), ctx.system)

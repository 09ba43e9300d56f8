"""``evaluate``: the candidate's report against production and the heuristic, with the plan's gate.

The report (:func:`closedloop.evaluation.report.evaluate`) is written to the cycle's directory
(``report.json``); a report that exists was finished and is read, not made again. With neither a
production bundle nor a heuristic to compare with, the cycle stops (``no_baseline``); an
evaluation error stops it too (``evaluation_failed``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError
from closedloop.evaluation.report import evaluate
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop, atomic_json
from closedloop.orchestration.steps.dataset import DatasetResult
from closedloop.orchestration.steps.train import TrainResult
from closedloop.runtime.bundle import Bundle


def past_productions(registry: Any, system: Any, n: int, exclude: set[str]) -> list[str]:
    """The last ``n`` bundles that were production of ``system`` (newest first), not in ``exclude``."""
    out: list[str] = []
    for e in reversed(registry.history(system, attempts=False)):
        v = (e.get("after") or {}).get("production")
        if v and v not in exclude and v not in out:
            out.append(v)
            if len(out) >= n:
                break
    return out

__all__ = ["Evaluate", "EvaluateResult", "baselines", "candidate_report"]


class EvaluateResult(StepResult):
    """The report's path, the gate's verdict, each bundle's AUC and cost per 1,000 decisions,
    the note on the heuristic (if any), and the past production bundles weighed beside them."""

    path: str
    gate: Any
    bundles: list[dict[str, Any]]
    heuristic_note: Any
    past: list[str] = []


class Evaluate(Step[EvaluateResult]):
    """Evaluate (or find the report of) the candidate."""

    name = "evaluate"
    Result = EvaluateResult

    def run(self, ctx: StepContext) -> EvaluateResult:
        path, report = candidate_report(ctx, _report)
        return EvaluateResult(path=str(path), gate=report["gate"],
                              bundles=[{"version": b["version"], "kind": b["kind"], "auc": b["quality"]["auc"],
                                        "cost_per_1000": b["mistakes"]["cost_per_1000"]} for b in report["bundles"]],
                              heuristic_note=report.get("heuristic_note"), past=list(report.get("past") or []))


def candidate_report(ctx: StepContext, make: Callable[[StepContext, Bundle], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """The cycle's report of its candidate (``report.json`` in the cycle's directory): read when it
    was written before (a resumed cycle), else ``make(ctx, candidate)`` written atomically."""
    path = ctx.dir / "report.json"
    if path.is_file():
        return path, json.loads(path.read_text())
    report = make(ctx, Bundle.load(ctx.result("train", TrainResult).path, ctx.system))
    atomic_json(path, report)
    return path, report


def baselines(ctx: StepContext, cand: Bundle) -> list[Bundle]:
    """What a candidate is compared with: production (the gate's baseline) and the plan's heuristic
    when it is neither production nor the candidate (and ``LoopPlan.compare_heuristic``)."""
    bundles = []
    prod = ctx.production()
    if prod is not None:
        bundles.append(prod)
    h = ctx.plan.heuristic_bundle() if ctx.plan.compare_heuristic or prod is None else None  # else no baseline at all
    if h is not None and all(h.version != b.version for b in bundles) and h.version != cand.version:
        bundles.append(h)
    return bundles


def _report(ctx: StepContext, cand: Bundle) -> dict[str, Any]:
    """The evaluation report of production, the heuristic (if it is neither), the last
    ``LoopPlan.past_bundles`` production bundles (the ``past`` step weighs them) and the
    candidate — production first (the gate's baseline), the candidate last."""
    bundles = baselines(ctx, cand)
    past = past_productions(ctx.registry, ctx.system, ctx.plan.past_bundles,
                            {b.version for b in bundles} | {cand.version}) if ctx.plan.past_bundles else []
    bundles += [ctx.registry.load_bundle(v, ctx.system) for v in past]
    bundles.append(cand)
    if len(bundles) < 2:
        raise Stop("no_baseline", "there is neither a production bundle nor a heuristic to compare the candidate with")
    try:
        ds = ctx.result("dataset", DatasetResult).path
        report: dict[str, Any] = evaluate(ctx.system, bundles, ds, gate=ctx.plan.gate, bootstrap=ctx.plan.evaluate_bootstrap,
                                          seed=ctx.id, loaded=ctx.load(ds), weights=ctx.plan.evaluate_weights)
    except ClosedLoopError as exc:
        raise Stop("evaluation_failed", str(exc)) from None
    report["past"] = past
    return report

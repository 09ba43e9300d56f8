"""``gate``: the candidate passes the evaluation's gate, and was not trained on corrupted labels.

With a label check (``LoopPlan.label_check``), a day of labels unlike the others among those the
candidate's dataset could hold stops the cycle (``gate_failed``): the day is quarantined (later
datasets leave those labels out — the carried ``label_quarantine`` list) and alerted. A failed
gate verdict stops the cycle too, with its reasons.
"""

from __future__ import annotations

from typing import Any

from closedloop.base.times import iso_seconds
from closedloop.orchestration.alerts import Alert
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.evaluate import EvaluateResult
from closedloop.orchestration.steps.train import TrainResult

__all__ = ["Gate", "GateResult"]


class GateResult(StepResult):
    """The gate passed; the baseline and the candidate it compared."""

    passed: bool
    baseline: Any
    candidate: Any


class Gate(Step[GateResult]):
    """The label check, then the gate's verdict."""

    name = "gate"
    Result = GateResult

    def run(self, ctx: StepContext) -> GateResult:
        gate = ctx.result("evaluate", EvaluateResult).gate
        labels = _label_check(ctx)
        if labels:
            _quarantine(ctx, labels)
            cand = ctx.result("train", TrainResult).version
            raise Stop("gate_failed", f"the candidate {cand} was trained on corrupted labels: "
                       + "; ".join(a["reason"] for a in labels)
                       + ". Later datasets leave those labels out.")
        if gate is None or not gate["passed"]:
            reasons = "; ".join(gate["reasons"]) if gate else "no gate verdict"
            raise Stop("gate_failed", f"the candidate failed the gate: {reasons}")
        return GateResult(passed=True, baseline=gate["baseline"], candidate=gate["candidate"])


def _label_check(ctx: StepContext) -> list[dict[str, Any]]:
    """Anomalous label days among the labels the candidate's dataset could hold."""
    chk = ctx.plan.label_check
    if chk is None:
        return []
    now = ctx.now_ns
    since = now - int(ctx.plan.train_window.total_seconds() * 1e9)
    _, out = ctx.files()
    q = [(x["kind"], x["start_ns"], x["end_ns"]) for x in ctx.record.get("label_quarantine", [])]
    report = chk.check(ctx.system, outcome_files=out, since_ns=since, until_ns=now, cutoff_ns=now, day0_ns=now, exclude=q)
    return list(report["anomalies"])


def _quarantine(ctx: StepContext, labels: list[dict[str, Any]]) -> None:
    """The anomalous label days join the carried quarantine (each once) and are alerted."""
    rec = ctx.record
    have = {(q["kind"], q["start_ns"]) for q in rec.get("label_quarantine", [])}
    rec["label_quarantine"] = rec.get("label_quarantine", []) + [
        {k: a[k] for k in ("kind", "start_ns", "end_ns", "reason")} for a in labels
        if (a["kind"], a["start_ns"]) not in have]
    ctx.alert([Alert("label_anomaly", f"{a['kind']}@{iso_seconds(a['start_ns'])}", a["share"], a["others_share"],
                     a["reason"], "none", iso_seconds(a["start_ns"]), ctx.now_ns) for a in labels])

"""Apprentice mode in the cycle of a system that learns from rewards (``LoopPlan(apprentice=
Apprentice(agreement=…))``): the first candidates imitate the policy that logged the data — the
heuristic production — and one is promoted only when it agrees with it; after that, candidates
learn from rewards and the off-policy gate decides every promotion.

While the apprentice has not graduated (the carried ``apprentice`` state of the cycle record):

- ``train`` fits an imitation of the logger (:func:`closedloop.training.apprentice.train_apprentice`)
  instead of the plan's objective;
- ``evaluate`` writes the ranking report as for any candidate, and the gate's verdict is the
  **held-out agreement** (:func:`closedloop.evaluation.agreement.log_agreement`, ``against=
  "greedy"``): the share of the dataset's held-out decisions whose logger's greedy first choice
  (recomputed from the scores it logged: its policy, not its exploring draws) the candidate's greedy
  ranking puts first must reach ``Apprentice.agreement``;
- the candidate then serves as a shadow; each cycle measures its **shadow agreement** on the
  decisions since the shadow began (:func:`closedloop.evaluation.agreement.shadow_agreement`: its
  greedy first choice against production's). With ``Apprentice.min_decisions`` decisions and the
  agreement at the declared share it is promoted straight from the shadow and the apprentice
  graduates; a shadow that has served ``Rollout.shadow_for`` with enough decisions and still
  disagrees retires, and the next cycle trains another.

Every measurement is a point of the carried ``apprentice.history`` (cycle, time, candidate, where
— ``held_out`` or ``shadow`` —, agreement, its interval, n): ``loop status`` and the report show
agreement over time.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError, SanityCheckError, SpecError
from closedloop.orchestration.steps.base import StepContext, Stop
from closedloop.runtime.bundle import Bundle

__all__ = ["advance_shadow", "imitating", "judge", "state", "train_apprentice_candidate"]


def state(ctx: StepContext) -> dict[str, Any]:
    """The carried apprentice state (created the first time)."""
    got = ctx.record.get("apprentice")
    if got is None:
        got = ctx.record["apprentice"] = {"graduated": False, "candidate": None, "history": []}
    return got


def _spec(ctx: StepContext) -> Any:
    """The plan's :class:`~closedloop.orchestration.plan.Apprentice` (the callers check there is one)."""
    spec = ctx.plan.apprentice
    if spec is None:
        raise SpecError(f"The plan of system '{ctx.system.name}' declares no apprentice.")
    return spec


def imitating(ctx: StepContext) -> bool:
    """Whether the plan declares an apprentice that has not graduated yet."""
    return ctx.plan.apprentice is not None and not state(ctx)["graduated"]


def _point(ctx: StepContext, candidate: str, where: str, got: dict[str, Any]) -> dict[str, Any]:
    low, high = got.get("interval") or (None, None)
    p = {"cycle": ctx.id, "now_ns": ctx.now_ns, "candidate": candidate, "where": where,
         "agreement": got.get("agreement"), "low": low, "high": high, "n": got.get("n")}
    hist = state(ctx)["history"]
    if not any(h["cycle"] == p["cycle"] and h["where"] == where and h["candidate"] == candidate for h in hist):
        hist.append(p)  # once per cycle: a resumed step measures again, the same
    return p


def train_apprentice_candidate(ctx: StepContext, path: Path, dataset: str) -> Bundle:
    """The imitation of the logger, fitted on the cycle's reward dataset and saved signed."""
    from closedloop.training.apprentice import train_apprentice

    prod = ctx.production()
    try:
        run = train_apprentice(ctx.system, dataset, model=_spec(ctx).model,
                               parent=None if prod is None else prod.version)
    except ClosedLoopError as exc:
        raise Stop("training_failed", str(exc)) from None
    shutil.rmtree(path, ignore_errors=True)
    return Bundle.load(run.bundle.save(path, key=ctx.signer()), ctx.system)


def judge(ctx: StepContext, cand: Bundle, report: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The report with the apprentice's verdict as its gate: held-out agreement ≥ the declared share."""
    from closedloop.evaluation.agreement import log_agreement

    share = _spec(ctx).agreement
    got = log_agreement(ctx.system, cand, dataset, against="greedy")  # the logger's policy, not its draws
    point = _point(ctx, cand.version, "held_out", got)
    state(ctx)["candidate"] = cand.version
    a = point["agreement"]
    passed = a is not None and a >= share
    base = report["bundles"][0]["version"]
    reasons = [] if passed else [f"the apprentice agrees with the logger's greedy first choice on {a if a is None else f'{a:.1%}'} of "
                                 f"{point['n']} held-out decisions; the plan needs {share:.0%}"]
    report["gate"] = {"rule": {"apprentice_agreement": share}, "baseline": base, "candidate": cand.version, "passed": passed,
                      "reasons": reasons, "estimator": "agreement", "agreement": point}
    report["apprentice"] = {"agreement": share, "held_out": point, "history": list(state(ctx)["history"])}
    return report


def advance_shadow(ctx: StepContext, ro: dict[str, Any], done: Any) -> Any:
    """One cycle of an apprentice's shadow: measured; promoted, kept waiting, or retired."""
    from closedloop.evaluation.agreement import shadow_agreement

    cand, now, spec = ro["candidate"], ctx.now_ns, _spec(ctx)
    decisions = _decisions(ctx, ro["since_ns"])
    point = _point(ctx, cand, "shadow", shadow_agreement(ctx.system, decisions, cand, since_ns=ro["since_ns"]))
    a, n = point["agreement"], int(point["n"] or 0)
    said = f"{cand} agrees with production on {'—' if a is None else f'{a:.1%}'} of {n} decisions in shadow"
    if n >= spec.min_decisions and a is not None and a >= spec.agreement:
        try:
            ch = ctx.registry.promote(ctx.system, cand, actor=ctx.actor,
                                      reason=f"loop: the apprentice {said} (≥ {spec.agreement:.0%})")
        except SanityCheckError as exc:
            return done(ctx, ro, "waiting", f"{said}; the registry refused the promotion: {exc}")
        ctx.change(ch)
        state(ctx)["graduated"] = True
        ro.update(stage="promoted", since_ns=now)
        return done(ctx, ro, "promoted", f"{said} (≥ {spec.agreement:.0%}): promoted; later candidates learn from rewards")
    waited = now - ro["since_ns"]
    need = int((ctx.plan.rollout.shadow_for.total_seconds() if ctx.plan.rollout.shadow_for else 0) * 1e9)
    if n >= spec.min_decisions and waited >= need:
        ch = ctx.registry.stop(ctx.system, cand, actor=ctx.actor, reason=f"loop: the apprentice {said}, below "
                               f"{spec.agreement:.0%}: it retires")
        ctx.change(ch)
        ro.update(stage="rolled_back", since_ns=now, ended="the apprentice disagrees")
        return done(ctx, ro, "apprentice_disagrees", f"{said}, below {spec.agreement:.0%}: the shadow retires")
    return done(ctx, ro, "waiting", f"{said}; it needs {spec.min_decisions} decisions and {spec.agreement:.0%}")


def _decisions(ctx: StepContext, since: int) -> Any:
    """The decision records since the shadow began, ingested by the cycle's time."""
    from closedloop.orchestration import _data

    dec, _ = ctx.files()
    con = _data.connect(ctx.system.name, _data.files_since(dec, "timestamp_ns", since), [], ctx.now_ns)
    try:
        return _data.arrow(con, "SELECT system, unit, timestamp_ns, flight, killswitch, action, candidate_ids, candidate_scores, "
                                "shadows_json FROM decisions WHERE timestamp_ns >= $s", {"s": since})
    finally:
        con.close()

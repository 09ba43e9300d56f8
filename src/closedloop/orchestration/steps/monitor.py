"""``monitor``: abusive sources, click farms, the goals, drift and mistake spikes — and the alerts they raise.

Abusive outcome sources (:class:`~closedloop.orchestration.abuse.AbusePolicy`: quarantined or
down-weighted), click farms among the units of a system that learns from rewards
(:class:`~closedloop.orchestration.click_farm.ClickFarmPolicy`: quarantined units, kept in the
carried ``unit_quarantine`` for a ``LoopPlan.train_window`` after they were last flagged, whose
decisions the reward ``dataset`` step leaves out), the goals measured per cadence window (:class:`~closedloop.orchestration.goals.
GoalTracker`, ``<home>/goals/series.jsonl``), drift (:class:`~closedloop.orchestration.drift.
DriftMonitor`) and mistake spikes (:class:`~closedloop.orchestration.drift.MistakeSpikes`). New
alerts — and a ``goal_health`` alert for each goal missed in each of its last
``LoopPlan.goal_patience`` windows (:mod:`closedloop.orchestration.goal_health`) — go to the
plan's sinks and the home's log; those that ask for a retraining or a tightening
wait in the cycle's carried ``pending`` list for the next training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgspec import UNSET, UnsetType

from closedloop.base.files import make_private_dirs
from closedloop.orchestration import _data
from closedloop.orchestration.alerts import Alert, deliver
from closedloop.orchestration.goal_health import streak_alerts
from closedloop.orchestration.steps.base import Step, StepContext, StepResult

__all__ = ["Monitor", "MonitorResult"]


class MonitorResult(StepResult):
    """The abuse verdicts (with an abuse policy), the goal points newly measured, the drift and
    spike reports (when watched), the new alerts and the sinks that failed them, the sources
    quarantined and down-weighted, and the alert actions pending; for a system that learns from
    rewards with a click-farm policy, its report and the units quarantined (this cycle's and those
    flagged within the train window)."""

    goal_points: int
    alerts: list[dict[str, Any]]
    delivery_failures: Any
    quarantined: list[str]
    source_weights: dict[str, Any]
    pending: list[dict[str, Any]]
    abuse: dict[str, Any] | UnsetType = UNSET
    drift: dict[str, Any] | UnsetType = UNSET
    spikes: dict[str, Any] | UnsetType = UNSET
    click_farm: dict[str, Any] | UnsetType = UNSET
    quarantined_units: list[str] | UnsetType = UNSET


class Monitor(Step[MonitorResult]):
    """Abuse, goals, drift and spikes; new alerts delivered; retrain/tighten requests kept."""

    name = "monitor"
    Result = MonitorResult

    def run(self, ctx: StepContext) -> MonitorResult:
        dec, out = ctx.files()
        make_private_dirs(ctx.scratch)
        alerts: list[Alert] = []
        abuse, excluded, weights = _abuse(ctx, out, alerts)
        farm, units = _click_farm(ctx, dec, out, alerts)
        # one reading for goals, drift and spikes, of the decision files that can hold what they
        # look at: the goals' and spikes' windows still to measure and drift's two windows
        first = _data.first_ns(ctx.system.name, dec, ctx.now_ns)
        since = _since(ctx, first)
        read = _data.files_since(dec, "timestamp_ns", min(since)) if since else []
        con = _data.connect(ctx.system.name, read, out, ctx.now_ns, excluded)
        try:
            points = _goals(ctx, con, dec, out, excluded, first, alerts)
            alerts += streak_alerts(ctx.system, ctx.goals.points(), ctx.plan.goal_patience, ctx.now_ns, ctx.plan.metrics)
            drift = _drift(ctx, con, dec, alerts)
            spikes = _spikes(ctx, con, dec, out, excluded, first, alerts)
        finally:
            con.close()
        new, failures = _deliver(ctx, alerts)
        return MonitorResult(goal_points=points, alerts=new, delivery_failures=failures, quarantined=excluded,
                             source_weights=weights, pending=_pend(ctx, new), abuse=abuse, drift=drift, spikes=spikes,
                             click_farm=farm, quarantined_units=units)


def _abuse(ctx: StepContext, out: list[Path], alerts: list[Alert]) -> tuple[Any, list[str], dict[str, float]]:
    """The abuse verdicts (UNSET without an abuse policy, or for a system without a label policy:
    the check compares each source's labels with the analysts'), the quarantined sources and the
    down-weighted sources' weights; an alert per source not trusted."""
    policy, now = ctx.plan.abuse, ctx.now_ns
    if policy is None or ctx.system.label_policy is None:  # sources are judged against analysts' labels
        return UNSET, [], {}
    report = policy.check(ctx.system, outcome_files=out, now_ns=now)
    for s in report.sources:
        if s["verdict"] != "trusted":
            alerts.append(Alert("abuse", s["source"], s["share"], policy.quarantine_above
                                if s["verdict"] == "quarantined" else policy.downweight_above,
                                f"source {s['source']!r} {s['verdict']}: {s['reason']}",
                                "quarantine", s["verdict"], now))
    return report.to_dict(), report.quarantined, report.weights


def _click_farm(ctx: StepContext, dec: list[Path], out: list[Path], alerts: list[Alert]) -> tuple[Any, Any]:
    """The click-farm report and the units to leave out of the reward datasets (both UNSET for a
    system that does not learn from rewards, or a plan without a click-farm policy); an ``abuse``
    alert per unit quarantined (once per unit). The carried ``unit_quarantine`` (unit → when last
    flagged, why) keeps a unit for a train window after it was last flagged: the datasets of that
    window still hold its decisions."""
    policy, now, plan = ctx.plan.click_farm, ctx.now_ns, ctx.plan
    if policy is None or not plan.learns_from_rewards:
        return UNSET, UNSET
    report = policy.check(ctx.system, dec, out, now)
    kept = ctx.record.get("unit_quarantine") or {}
    horizon = now - int(plan.train_window.total_seconds() * 1e9)
    kept = {u: v for u, v in kept.items() if v["last_ns"] > horizon}
    for u in report.units:
        if u["verdict"] == "quarantined":
            kept[u["unit"]] = {"last_ns": now, "since_ns": kept.get(u["unit"], {}).get("since_ns", now), "reason": u["reason"]}
            ring = bool(u.get("ring_partners"))  # a ring member: its ring share against the bar, not its click-through
            value, bar = (u["ring_share"], policy.concentration) if ring else (u["ratio"], policy.ctr_ratio)
            alerts.append(Alert("abuse", u["unit"], value, bar, f"unit {u['unit']!r} quarantined: {u['reason']}",
                                "quarantine", "click_farm", now, {"top_items": u["top_items"], "top_share": u["top_share"],
                                                                  "ring_share": u.get("ring_share")}))
    ctx.record["unit_quarantine"] = dict(sorted(kept.items()))
    return report.to_dict(), sorted(kept)


def _since(ctx: StepContext, first: int | None) -> list[int]:
    """The starts of what the monitor reads: the goals' and spikes' windows still to measure and
    drift's two windows."""
    plan, now = ctx.plan, ctx.now_ns
    since = [w.start_ns for _, _, w in ctx.tracker.pending(ctx.goals, first_ns=first, now_ns=now)]
    if plan.spikes is not None:
        since += [w.start_ns for _, _, w in ctx.tracker.pending(
            ctx.mistakes, first_ns=first, now_ns=now, measures=plan.spikes.measures(ctx.system))]
    if plan.drift is not None:
        since.append(now - int((plan.drift.current + plan.drift.reference).total_seconds() * 1e9))
    return since


def _goals(ctx: StepContext, con: Any, dec: list[Path], out: list[Path], excluded: list[str], first: int | None,
           alerts: list[Alert]) -> int:
    """Measure the goals' new windows; one ``goal_missed`` alert per goal and cycle (its latest
    newly measured window). Returns how many points were measured."""
    now = ctx.now_ns
    new_points = ctx.tracker.measure(ctx.goals, decision_files=dec, outcome_files=out, now_ns=now,
                                     exclude_sources=excluded, scratch=ctx.scratch, con=con, first_ns=first)
    latest: dict[str, dict[str, Any]] = {}
    for p in new_points:
        if p["met"] is not None and p["start_ns"] >= latest.get(p["name"], {}).get("start_ns", -1):
            latest[p["name"]] = p
    for p in latest.values():
        if p["met"] is False:
            alerts.append(Alert("goal_missed", p["name"], p["value"], p["target"],
                                f"goal {p['name']} ({p['metric']}) was {p['value']:.4g} in {p['window']}, "
                                f"target {p['direction'].replace('_', ' ')} {p['target']:g}",
                                "none", p["window"], now))
    return len(new_points)


def _drift(ctx: StepContext, con: Any, dec: list[Path], alerts: list[Alert]) -> Any:
    """The drift report (UNSET when the plan watches no drift)."""
    if ctx.plan.drift is None:
        return UNSET
    a, report = ctx.plan.drift.check(ctx.system, decision_files=dec, now_ns=ctx.now_ns, con=con)
    alerts += a
    return report


def _spikes(ctx: StepContext, con: Any, dec: list[Path], out: list[Path], excluded: list[str], first: int | None,
            alerts: list[Alert]) -> Any:
    """The mistake-spike report (UNSET when the plan watches no spikes)."""
    if ctx.plan.spikes is None:
        return UNSET
    a, report = ctx.plan.spikes.check(ctx.system, ctx.tracker, ctx.mistakes, decision_files=dec, outcome_files=out,
                                      now_ns=ctx.now_ns, exclude_sources=excluded, scratch=ctx.scratch, con=con,
                                      first_ns=first)
    alerts += a
    return report


def _deliver(ctx: StepContext, alerts: list[Alert]) -> tuple[list[dict[str, Any]], Any]:
    """The alerts not sent before, delivered at least once (the sinks first, then the log) and
    listed in the cycle record; returns them and the sinks' failures."""
    seen = {a.get("id") for a in ctx.alert_log.read()}
    new = [a for a in alerts if a.id not in seen]
    failures = deliver(new, ctx.plan.sinks)
    ctx.alert_log.send(new)
    ctx.record["alerts"] = [a.to_dict() for a in new]
    return ctx.record["alerts"], failures


def _pend(ctx: StepContext, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What new alerts ask the cycle to do (retrain, tighten) waits for the next training (a
    rollout may be under way): kept in the carried ``pending`` list, each alert once."""
    rec = ctx.record
    asked = {p["id"] for p in rec.get("pending", [])}
    rec["pending"] = rec.get("pending", []) + [
        {"id": a["id"], "action": a["action"], "message": a["message"]} for a in new
        if a["action"] in ("retrain", "tighten") and a["id"] not in asked
    ]
    return list(rec["pending"])

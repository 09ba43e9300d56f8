"""``advance``: a rollout is under way — move it one stage.

shadow (for ``Rollout.shadow_for``; an apprentice's until it agrees with production:
:mod:`.apprentice`) → flight (``Rollout.flight_share`` of units, for
``Rollout.flight_for``, the registry's guard checking it every cycle, without the decisions of units
quarantined as a click farm) → promote; a guard breach
stops the flight (the automatic rollback) and the next cycle retires the shadow. The cycle ends
with the stage's outcome (``waiting``, ``flight``, ``promoted``, ``rolled_back``,
``shadow_retired``, ``rollout_ended``). The rollout's state is carried in the cycle record
(``rollout``: candidate, stage, since when).
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET, UnsetType

from closedloop.base.times import iso_seconds
from closedloop.errors import SanityCheckError, SpecError
from closedloop.orchestration import _data
from closedloop.orchestration.alerts import Alert
from closedloop.orchestration.steps import apprentice
from closedloop.orchestration.steps.base import StepContext, StepResult
from closedloop.orchestration.steps.route import Branch
from closedloop.registry import GuardPolicy, guard_check

__all__ = ["Advance", "AdvanceResult"]


class AdvanceResult(StepResult):
    """The stage's outcome and message, the rollout after it, and (in flight) the guard's verdict."""

    outcome: str
    message: str
    rollout: dict[str, Any]
    guard: dict[str, Any] | UnsetType = UNSET


class Advance(Branch[AdvanceResult]):
    """One rollout stage (route ``advance``); the cycle ends with its outcome."""

    name = "advance"
    Result = AdvanceResult
    branch = "advance"

    def run(self, ctx: StepContext) -> AdvanceResult:
        ro = dict(ctx.record["rollout"])
        stage = ro["stage"]
        if stage == "shadow":
            return _shadow(ctx, ro)
        if stage == "flight":
            return _flight(ctx, ro)
        if stage == "retire_shadow":
            return _retire(ctx, ro)
        raise SpecError(f"Unknown rollout stage {stage!r} in cycle {ctx.id} of system {ctx.system.name!r}.")

    def ends(self, ctx: StepContext, result: AdvanceResult) -> tuple[str, str]:
        return result.outcome, result.message


def _done(ctx: StepContext, ro: dict[str, Any], outcome: str, message: str, guard: Any = UNSET) -> AdvanceResult:
    """The stage's result; the rollout's new state carried in the cycle record."""
    ctx.record["rollout"] = ro
    return AdvanceResult(outcome=outcome, message=message, rollout=ro, guard=guard)


def _shadow(ctx: StepContext, ro: dict[str, Any]) -> AdvanceResult:
    """A shadow becomes a flight once it has been a shadow for ``Rollout.shadow_for``."""
    cand, now, r = ro["candidate"], ctx.now_ns, ctx.plan.rollout
    state = ctx.registry.state(ctx.system.name)
    flight = r.flight_name
    if state.flight(flight) is not None and state.flight(flight).bundle == cand:
        ro.update(stage="flight", since_ns=now)
        return _done(ctx, ro, "flight", f"{cand} is in flight {flight!r} already")
    if cand not in state.shadows:
        ro.update(stage="ended", ended="the shadow was removed outside the loop", since_ns=now)
        return _done(ctx, ro, "rollout_ended", f"{cand} is no longer a shadow: the rollout ends")
    if apprentice.imitating(ctx) and apprentice.state(ctx)["candidate"] == cand:  # judged by its agreement
        return apprentice.advance_shadow(ctx, ro, _done)
    waited = now - ro["since_ns"]
    need = int((r.shadow_for.total_seconds() if r.shadow_for else 0) * 1e9)
    if waited < need:
        return _done(ctx, ro, "waiting", f"{cand} stays a shadow ({waited / 3.6e12:.1f} h of {need / 3.6e12:.1f} h)")
    try:
        ch = ctx.registry.deploy(ctx.system, cand, actor=ctx.actor, flight=flight, share=r.flight_share,
                                 reason=f"loop: {cand} was a shadow for {waited / 3.6e12:.1f} h")
    except SanityCheckError as exc:  # the registry's own checks refused it: stays a shadow, retried
        return _done(ctx, ro, "waiting", f"{cand} stays a shadow: the registry refused the flight: {exc}")
    ctx.change(ch)
    ro.update(stage="flight", since_ns=now)
    return _done(ctx, ro, "flight", ch.message)


def _flight(ctx: StepContext, ro: dict[str, Any]) -> AdvanceResult:
    """A flight runs on, is stopped by the guard (the automatic rollback), or — after
    ``Rollout.flight_for`` with enough decisions and no breach — is promoted."""
    cand, now, r = ro["candidate"], ctx.now_ns, ctx.plan.rollout
    state = ctx.registry.state(ctx.system.name)
    flight = r.flight_name
    f = state.flight(flight)
    if state.production == cand:
        ro.update(stage="promoted", since_ns=now)
        return _done(ctx, ro, "promoted", f"{cand} is production already")
    if f is None or f.bundle != cand:
        # the guard (this loop's or the service's) stopped it, or someone else did
        ro.update(stage="retire_shadow" if cand in state.shadows else "rolled_back", since_ns=now,
                  ended="the flight was stopped")
        return _done(ctx, ro, "rolled_back", f"flight {flight!r} of {cand} is no longer running: rolled back")
    report = _guard(ctx, ro)
    mine = [e for e in report["flights"] if e["name"] == flight]
    entry = mine[0] if mine else {}
    if entry.get("breach"):
        return _breach(ctx, ro, report, entry, in_shadows=cand in state.shadows)
    waited = now - ro["since_ns"]
    need = int(r.flight_for.total_seconds() * 1e9)
    if waited < need:
        return _done(ctx, ro, "waiting", f"flight {flight!r} of {cand} runs on ({waited / 3.6e12:.1f} h of "
                     f"{need / 3.6e12:.1f} h); guard: no breach", guard=_brief_guard(entry))
    dec = entry.get("decisions", {}).get("flight", 0)
    min_dec = (r.guard or GuardPolicy()).min_decisions
    if dec < min_dec:
        return _done(ctx, ro, "waiting", f"flight {flight!r} has {dec} decisions, fewer than the guard's {min_dec}",
                     guard=_brief_guard(entry))
    return _promote(ctx, ro, entry, waited)


def _guard(ctx: StepContext, ro: dict[str, Any]) -> dict[str, Any]:
    """The registry's guard over the flight's records so far (reports of the sources this
    cycle's monitoring quarantined do not count against the flight)."""
    r, now = ctx.plan.rollout, ctx.now_ns
    started = ctx.registry.flight_started(ctx.system.name, r.flight_name) or ro["since_ns"]
    quarantined = ((ctx.record["steps"].get("monitor") or {}).get("result") or {}).get("quarantined") or []
    report: dict[str, Any] = guard_check(ctx.registry, ctx.system, _guard_tables(ctx, min(started, ro["since_ns"])),
                                         policy=r.guard or GuardPolicy(), now_ns=now, actor=ctx.actor,
                                         exclude_sources=quarantined)
    return report


def _breach(ctx: StepContext, ro: dict[str, Any], report: dict[str, Any], entry: dict[str, Any], *,
            in_shadows: bool) -> AdvanceResult:
    """The guard stopped the flight: the rollout ends (its shadow retires next cycle), alerted."""
    cand, now, flight = ro["candidate"], ctx.now_ns, ctx.plan.rollout.flight_name
    if "change" in entry:
        ctx.record["changes"].append(entry["change"])
    ro.update(stage="retire_shadow" if in_shadows else "rolled_back", since_ns=now, ended="guard breach")
    reason = next((b["reason"] for b in report["breaches"] if b["flight"] == flight), "guard breach")
    ctx.alert([Alert("rollback", cand, None, None, f"the guard stopped flight {flight!r} of {cand}: {reason}",
                     "none", iso_seconds(now), now)])
    return _done(ctx, ro, "rolled_back", reason, guard=_brief_guard(entry))


def _promote(ctx: StepContext, ro: dict[str, Any], entry: dict[str, Any], waited: int) -> AdvanceResult:
    """The flight ran its time with no breach: promoted (or, refused by the registry, it runs on)."""
    cand, flight = ro["candidate"], ctx.plan.rollout.flight_name
    try:
        ch = ctx.registry.promote(ctx.system, flight, actor=ctx.actor,
                                  reason=f"loop: flight {flight!r} ran {waited / 3.6e12:.1f} h with no guard breach")
    except SanityCheckError as exc:  # the flight runs on; the next cycle tries again
        return _done(ctx, ro, "waiting", f"flight {flight!r} of {cand} runs on: the registry refused the promotion: {exc}",
                     guard=_brief_guard(entry))
    ctx.change(ch)
    ro.update(stage="promoted", since_ns=ctx.now_ns)
    return _done(ctx, ro, "promoted", ch.message, guard=_brief_guard(entry))


def _retire(ctx: StepContext, ro: dict[str, Any]) -> AdvanceResult:
    """A rolled-back candidate's shadow is stopped."""
    cand = ro["candidate"]
    if cand in ctx.registry.state(ctx.system.name).shadows:
        ch = ctx.registry.stop(ctx.system, cand, actor=ctx.actor, reason=f"loop: {cand} was rolled back; its shadow retires")
        ctx.change(ch)
        msg = ch.message
    else:
        msg = f"{cand} is no longer a shadow"
    ro.update(stage="rolled_back", since_ns=ctx.now_ns)
    return _done(ctx, ro, "shadow_retired", msg)


def _guard_tables(ctx: StepContext, since: int) -> tuple[Any, Any]:
    """The columns the guard reads, of records ingested by the cycle's time (decisions since ``since``),
    without the decisions of the units the monitor holds quarantined as a click farm (the record's
    ``unit_quarantine``): their clicks would count for whichever arm their unit hashes into."""
    dec, out = ctx.files()
    quarantined = sorted(ctx.record.get("unit_quarantine") or {})
    not_farm = f" AND (unit IS NULL OR unit NOT IN {_data.sql_list(quarantined)})" if quarantined else ""
    # the files that can hold decisions / outcomes since the flight began (the same records)
    con = _data.connect(ctx.system.name, _data.files_since(dec, "timestamp_ns", since),
                        _data.files_since(out, "event_ns", since), ctx.now_ns)
    rewards = ctx.system.rewards
    per_slot = rewards is not None and rewards.per == "slot"  # the reward guard pays a slot by its candidate
    try:
        d = _data.arrow(con, "SELECT writer, seq, decision_id, system, unit, timestamp_ns, bundle_version, flight, "
                             f"action, shadows_json, killswitch{', slate' if per_slot else ''} FROM decisions "
                             f"WHERE timestamp_ns >= $s{not_farm}", {"s": since})
        o = _data.arrow(con, "SELECT outcome_id, decision_id, system, kind, value, event_ns, source"
                             f"{', candidate_id' if per_slot else ''} FROM outcomes WHERE event_ns >= $s", {"s": since})
    finally:
        con.close()
    return d, o


def _brief_guard(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("decisions", "units", "breach", "action")} | {
        "metrics": [{k: m.get(k) for k in ("metric", "flight", "production", "p_value", "breach", "note")}
                    for m in entry.get("metrics", [])]}

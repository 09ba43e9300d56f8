"""The registry's commands: ``deploy``, ``promote``, ``rollback``, ``killswitch on|off``,
``status``, ``history [--at]`` and ``guard check`` (see ``docs/registry.md``).

Commands that change what serves need a credential with the ``admin`` role (``--token`` or
``CLOSEDLOOP_TOKEN``); its name is recorded as the actor. The registry is the project home's
(``<home>/registry.sqlite``) unless ``CLOSEDLOOP_REGISTRY_URL`` names another database.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from closedloop.cli.options import (
    BundleArgument,
    JsonOption,
    ReasonOption,
    SystemNameOption,
    SystemOption,
    admin,
    parse_time,
    system_from,
)
from closedloop.errors import BundleError
from closedloop.settings import Settings

__all__ = ["guard_app", "register"]

guard_app = typer.Typer(help="Guard metrics per flight against production; stop a flight that breaches.",
                        no_args_is_help=True)

def _registry(settings: Settings) -> Any:
    from closedloop.registry import Registry

    return Registry.from_settings(settings).open()


def _admin(settings: Settings) -> str:
    return admin(settings).name


def _name(reg: Any, spec: str | None) -> str:
    if spec is not None:
        return system_from(spec).name if ":" in spec else spec
    systems = reg.systems()
    if len(systems) == 1:
        return str(systems[0])
    raise typer.BadParameter(
        f"the registry holds {len(systems)} systems ({', '.join(systems) or 'none'}): name one.", param_hint="'--system'"
    )


def _share(value: str) -> float:
    v = value.strip()
    try:
        share = float(v[:-1]) / 100.0 if v.endswith("%") else float(v)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a share: give a percentage ('5%') or a fraction ('0.05').",
                                 param_hint="'--share'") from None
    if not 0.0 < share <= 1.0:
        raise typer.BadParameter(f"the share must be in (0%, 100%]. Got {value!r} instead.", param_hint="'--share'")
    return share


def _print_change(change: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(change.to_dict(), indent=1, default=str))
        return
    if not change.changed:
        typer.echo(f"no change: {change.message} (revision {change.revision})")
        return
    typer.echo(f"{change.message}")
    typer.echo(f"revision {change.before.revision} → {change.after.revision} (change #{change.event_id})")
    for c in change.detail.get("checks", []):
        mark = "ok    " if c["passed"] else "FORCED" if c["forced"] else "FAILED"
        typer.echo(f"  {mark} {c['name']:<9} {c['detail']}")
    switch = change.detail.get("killswitch") if change.operation == "rollback" else None
    if isinstance(switch, dict) and switch.get("after") is True:
        typer.echo("warning: the kill switch is ON again (this rollback undid turning it off): every decision gets "
                   "the system's default action; 'closedloop killswitch off --reason …' serves the intelligence again")
    elif isinstance(switch, dict) and switch.get("after") is False:
        typer.echo("note: the kill switch is off again (this rollback undid turning it on): the intelligence decides")


# -- deploy / promote / rollback / killswitch ---------------------------------------------------------
def deploy(
    ctx: typer.Context,
    bundle: BundleArgument,
    system: SystemOption,
    reason: ReasonOption,
    shadow: Annotated[bool, typer.Option("--shadow", help="Score it beside production; never act on it.")] = False,
    flight: Annotated[str | None, typer.Option("--flight", metavar="NAME", help="Send a share of units to it.")] = None,
    share: Annotated[str | None, typer.Option("--share", metavar="PCT", help="The flight's share: '5%' or 0.05.")] = None,
    force: Annotated[str | None, typer.Option("--force", metavar="REASON",
                                              help="Deploy despite failed forceable checks (gate, latency); recorded.")] = None,
    report: Annotated[list[str] | None, typer.Option("--report", metavar="FILE.json",
                                                     help="Attach an evaluation report first (repeatable).")] = None,
    allow_unsigned: Annotated[str | None, typer.Option(
        "--allow-unsigned", metavar="REASON",
        help="Deploy a bundle not signed by a trusted key (local experiments); recorded.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a bundle to production (default), as a shadow, or in a flight — after its signature and sanity checks."""
    settings: Settings = ctx.obj
    actor = _admin(settings)
    sys_obj = system_from(system)
    if flight is None and share is not None:
        raise typer.BadParameter("--share needs --flight NAME.", param_hint="'--share'")
    if flight is not None and share is None:
        raise typer.BadParameter("a flight needs --share (e.g. 5%).", param_hint="'--share'")
    with _registry(settings) as reg:
        if report:  # reports attach to registered bundles; a refused signature is recorded by deploy below
            try:
                reg.add_bundle(bundle, actor=actor, allow_unsigned=allow_unsigned)
            except BundleError as exc:
                if exc.check != "signature":
                    raise
            else:
                for r in report:
                    reg.add_report(r, actor=actor)
        change = reg.deploy(sys_obj, bundle, actor=actor, reason=reason, shadow=shadow, flight=flight,
                            share=None if share is None else _share(share), force=force,
                            allow_unsigned=allow_unsigned)
    _print_change(change, as_json)


def promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="A flight name (or a shadow's bundle version).")],
    system: SystemOption,
    reason: ReasonOption,
    force: Annotated[str | None, typer.Option("--force", metavar="REASON",
                                              help="Promote despite failed forceable checks; recorded.")] = None,
    report: Annotated[list[str] | None, typer.Option("--report", metavar="FILE.json",
                                                     help="Attach an evaluation report first.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a flight's (or a shadow's) bundle production, after its sanity checks (the gate included)."""
    settings: Settings = ctx.obj
    actor = _admin(settings)
    sys_obj = system_from(system)
    with _registry(settings) as reg:
        for r in report or []:
            reg.add_report(r, actor=actor)
        change = reg.promote(sys_obj, name, actor=actor, reason=reason, force=force)
    _print_change(change, as_json)


def rollback(ctx: typer.Context, reason: ReasonOption, system: SystemNameOption = None, as_json: JsonOption = False) -> None:
    """Restore the state before the last change (again: one step further back), and say which."""
    settings: Settings = ctx.obj
    actor = _admin(settings)
    with _registry(settings) as reg:
        change = reg.rollback(_name(reg, system), actor=actor, reason=reason)
    _print_change(change, as_json)


def killswitch(
    ctx: typer.Context,
    state: Annotated[str, typer.Argument(metavar="on|off", help="on: the default action for everyone; off: intelligence again.")],
    reason: ReasonOption,
    system: SystemNameOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn the kill switch on (skip the intelligence: the system's default action) or off."""
    if state not in ("on", "off"):
        raise typer.BadParameter(f"expected 'on' or 'off'. Got {state!r} instead.", param_hint="'on|off'")
    settings: Settings = ctx.obj
    actor = _admin(settings)
    with _registry(settings) as reg:
        change = reg.killswitch(_name(reg, system), state == "on", actor=actor, reason=reason)
    _print_change(change, as_json)


# -- status / history ----------------------------------------------------------------------------
def status(ctx: typer.Context, system: SystemNameOption = None, as_json: JsonOption = False,
           telemetry: Annotated[bool, typer.Option("--telemetry/--no-telemetry",
                                                   help="Add the flights' SRM check and shadow disagreement.")] = True) -> None:
    """What serves: production, shadows, flights (with since when), the kill switch, the last change."""
    settings: Settings = ctx.obj
    store = None
    if telemetry and settings.telemetry.is_dir():
        from closedloop.telemetry import TelemetryStore

        store = TelemetryStore(settings.home)
    with _registry(settings) as reg:
        out = reg.status(_name(reg, system), telemetry=store)
    if as_json:
        typer.echo(json.dumps(out, indent=1, default=str))
        return
    typer.echo(f"{out['system']}  revision {out['revision']}")
    typer.echo(f"  {out['summary']}")
    if out["production"]:
        since = out["production"]["since"] or {}
        typer.echo(f"  production {out['production']['bundle']} since {since.get('at')} ({since.get('operation')} by "
                   f"{since.get('actor')})")
    for f in out["flights"]:
        st = f["started"] or {}
        typer.echo(f"  flight {f['name']}: {f['bundle']} {f['share'] * 100:.6g}% of units "
                   f"(expected {100 * (f['expected_share_of_units'] or 0):.4g}% overall) since {st.get('at')}")
    for s in out["shadows"]:
        typer.echo(f"  shadow {s['bundle']} since {(s['started'] or {}).get('at')}")
    last = out["last_change"]
    if last:
        typer.echo(f"  last change #{last['id']} {last['at']} {last['operation']} by {last['actor']}: {last['reason']}")
    for a in out["attempts_since_last_change"]:
        typer.echo(f"  attempt #{a['id']} {a['at']} {a['operation']} by {a['actor']}: {a['status']} — "
                   f"{a['detail'].get('error', '')}")
    tv = out.get("telemetry")
    if tv:
        s = tv.get("srm")
        if s:
            arms = ", ".join(f"{a['arm']} {a['units']} units (expected {a['expected_share'] * 100:.3g}%)" for a in s["arms"])
            if s.get("p_value") is None:  # nothing to test yet: said in words
                verdict = s.get("note") or s.get("verdict") or "not tested"
            else:
                verdict = (f"{'MISMATCH' if s['mismatch'] else 'ok'} (chi2 {s['chi2']:.3g}, p {s['p_value']:.3g}; "
                           f"mismatch below p {s.get('alpha', 0.001):g})")
            since = (s.get("since") or {}).get("at")
            typer.echo(f"  sample ratio: {verdict}: {arms}" + (f"; since {since}" if since else ""))
            if s.get("counted"):
                typer.echo(f"    units counted {s['counted']}")
        for v, d in tv.get("shadow_disagreement", {}).items():
            typer.echo(f"  shadow {v} disagrees on {d['rate'] * 100:.3g}% of {d['n']} decisions: "
                       + ", ".join(f"{a} {x['rate'] * 100:.3g}% of {x['n']}" for a, x in d["by_action"].items()))


def history(
    ctx: typer.Context,
    system: SystemNameOption = None,
    at: Annotated[str | None, typer.Option("--at", metavar="TIME",
                                           help="What served at TIME (ISO-8601, naive = UTC; or ns).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", help="Only the last N events.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every change and attempt (when, who, what, why); with --at, what served then and why flights stopped."""
    settings: Settings = ctx.obj
    with _registry(settings) as reg:
        name = _name(reg, system)
        if at is not None:
            out: Any = reg.at(name, parse_time(at, "--at"))
        else:
            out = reg.history(name, limit=limit)
    if as_json:
        typer.echo(json.dumps(out, indent=1, default=str))
        return
    if at is not None:
        _print_at(out)
        return
    for e in out:
        revs = f"rev {e['revision_before']}→{e['revision_after']}" if e["status"] == "applied" else e["status"].upper()
        undone = f" (rolled back by #{e['undone_by']})" if e["undone_by"] else ""
        typer.echo(f"#{e['id']:<4} {e['at']}  {e['actor']:<12} {e['operation']:<17} {revs:<12} {e['reason']}{undone}")
        msg = e["detail"].get("message") or e["detail"].get("error")
        if msg:
            typer.echo(f"      {msg}")


def _print_at(out: dict[str, Any]) -> None:
    typer.echo(f"{out['system']} at {out['at']}: revision {out['revision']}")
    typer.echo(f"  {out['summary']}")
    if out["production"]:
        since = out["production"]["since"] or {}
        typer.echo(f"  production {out['production']['bundle']} since {since.get('at')}")

    def stopped(s: dict[str, Any] | None) -> str:
        if not s:
            return "still running"
        d = s.get("detail", {})
        metrics = d.get("metrics")
        extra = ""
        if metrics:
            extra = "; " + "; ".join(f"{m['metric']}: flight {m['flight']:.6g} vs production {m['production']:.6g} "
                                     f"(p={m['p_value']:.3g})" for m in metrics)
        return f"stopped {s['at']} by {s['actor']} ({s['operation']}): {s['reason']}{extra}"

    for f in out["flights"]:
        typer.echo(f"  flight {f['name']}: {f['bundle']} {f['share'] * 100:.6g}% since "
                   f"{(f['started'] or {}).get('at')} — {stopped(f['stopped'])}")
    for s in out["shadows"]:
        typer.echo(f"  shadow {s['bundle']} since {(s['started'] or {}).get('at')} — {stopped(s['stopped'])}")


# -- guard check ----------------------------------------------------------------------------------
@guard_app.command("check")
def guard_check(
    ctx: typer.Context,
    system: SystemOption,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance of each one-sided test.")] = 0.01,
    mistake_tolerance: Annotated[float, typer.Option("--mistake-tolerance", help="Absolute mistake-rate increase tolerated.")] = 0.0,
    reward_tolerance: Annotated[float, typer.Option(
        "--reward-tolerance", help="Relative shortfall of reward per decision tolerated (0.05: 5% below production).")] = 0.0,
    min_decisions: Annotated[int, typer.Option("--min-decisions", help="Decisions per arm before judging.")] = 200,
    window_hours: Annotated[float | None, typer.Option("--window-hours", help="Only the last N hours.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; stop nothing.")] = False,
) -> None:
    """Compare each flight with production over the same window (telemetry); stop a flight that breaches.

    Prints the report as JSON. Stopping a flight needs an admin credential (not with --dry-run).
    """
    from closedloop.registry import GuardPolicy
    from closedloop.registry import guard_check as check
    from closedloop.telemetry import TelemetryStore

    settings: Settings = ctx.obj
    actor = "guard" if dry_run else _admin(settings)
    sys_obj = system_from(system)
    policy = GuardPolicy(alpha=alpha, mistake_tolerance=mistake_tolerance, reward_tolerance=reward_tolerance,
                         min_decisions=min_decisions,
                         window_s=None if window_hours is None else window_hours * 3600.0)
    with _registry(settings) as reg:
        out = check(reg, sys_obj, TelemetryStore(settings.home), policy=policy, actor=actor, apply=not dry_run)
    typer.echo(json.dumps(out, indent=1, default=str))


def register(app: typer.Typer) -> None:
    """Add the registry's commands to the ``closedloop`` app."""
    for fn in (deploy, promote, rollback, killswitch, status, history):
        app.command()(fn)
    app.add_typer(guard_app, name="guard")

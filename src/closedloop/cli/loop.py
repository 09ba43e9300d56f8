"""``closedloop loop run`` and ``closedloop loop status``: the loop over time from the command line.

::

    closedloop loop run  (--plan MOD:ATTR | --system MOD:ATTR) [--once] [--every 1h] [--cycles N]
                         [--now TIME [--allow-future]] [--webhook URL] [--wait SECONDS]
    closedloop loop status (--plan MOD:ATTR | --system MOD:ATTR) [--json]

``--plan`` names a :class:`~closedloop.orchestration.LoopPlan` (``module:attr``); ``--system`` a
System, run with the default plan (no heuristic: something must be deployed already). ``run``
changes what serves, so it needs a credential with the ``admin`` role (``--token`` /
``CLOSEDLOOP_TOKEN``); its name is recorded as the actor of every change. ``--once`` runs one
cycle (or finishes an interrupted one) and exits; otherwise a cycle starts every ``--every``
(default 1h) until ``--cycles`` have run or the process is stopped. ``--now`` runs the cycle at
that time instead of the clock's (a replay, a simulated home); a ``--now`` more than 5 minutes
ahead of the wall clock is refused unless ``--allow-future`` confirms it — the cycle's registry
changes take effect on the serving workers at once whatever time they carry, and every later
cycle must run at or after it (the cycle clock never goes back; its refusal says how to go on). Each step prints one line to
stderr (``step <name> started`` / ``done``); the cycle's record is printed as one JSON line.

One cycle at a time per home: a run that finds another one's cycle running (the lock
``<home>/.cycle.lock``; with a PostgreSQL registry, the system's advisory lock, shared by every
host) says who holds it (pid, host, since) and exits 1 — or, with ``--wait``,
waits up to that many seconds for it to finish. A cycle whose ingest failed (``ingest_failed``:
e.g. a full disk; the files stay in the inbox) prints why on stderr and, as the last cycle of the
run, makes it exit 1; so does an error writing the home (e.g. the cycle record on a full disk).
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Annotated, Any

import typer

from closedloop.cli.options import (
    JsonOption,
    OptionalSystemOption,
    admin,
    load_reference,
    parse_time,
    system_from,
)
from closedloop.settings import Settings

__all__ = ["loop_app"]

loop_app = typer.Typer(help="Run the loop over time: ingest, monitor, retrain, evaluate, roll out.",
                       no_args_is_help=True)

PlanOption = Annotated[
    str | None,
    typer.Option("--plan", metavar="MODULE:ATTR", help="A closedloop.orchestration.LoopPlan ('module:attr' or 'file.py:attr')."),
]


#: cycle outcomes that mean the loop could not do its work (the run exits 1 when its last cycle ends so)
FAILED = frozenset({"ingest_failed"})


def _plan(plan: str | None, system: str | None) -> Any:
    from closedloop.orchestration import LoopPlan

    if system is not None and plan is None:
        return LoopPlan(system_from(system))
    if plan is None or system is not None:
        raise typer.BadParameter("give exactly one of --plan and --system.", param_hint="'--plan'")
    obj = load_reference(plan, "plan")
    if not isinstance(obj, LoopPlan):
        attr = plan.rpartition(":")[2]
        raise typer.BadParameter(f"{plan!r}: {attr!r} is a {type(obj).__name__}, not a LoopPlan.", param_hint="'--plan'")
    return obj


def _duration(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", value)
    if not m:
        raise typer.BadParameter(f"{value!r} is not a duration like 30s, 15m, 1h or 1d.", param_hint="'--every'")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


#: How far ahead of the wall clock a --now may be without --allow-future (another host's clock).
FUTURE_SLACK_NS = 300 * 1_000_000_000


def _now(value: str, allow_future: bool) -> int:
    """--now as ns; refused when far ahead of the wall clock unless --allow-future: the cycle's
    registry changes reach the serving workers at once, whatever time they are stamped with, and
    every later cycle would have to run after that time (the cycle clock never goes back)."""
    t = parse_time(value, "--now")
    wall = time.time_ns()
    if t - wall > FUTURE_SLACK_NS and not allow_future:
        ahead = (t - wall) / 86_400e9
        span = f"{ahead:.1f} days" if ahead >= 1 else f"{ahead * 24:.1f} hours"
        raise typer.BadParameter(
            f"--now {_iso_s(t)} is {span} ahead of the wall clock ({_iso_s(wall)}). A cycle's registry changes "
            "(deploy, flight, promote) take effect at once on every serving worker, whatever --now says, and each "
            f"later cycle must run at or after {_iso_s(t)} (a run at the real time would be refused: the cycle "
            "clock went back). Pass --allow-future to run it anyway (a simulated home), or a --now in the past "
            "(a replay).",
            param_hint="'--now'",
        )
    return t


def _iso_s(ns: int) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in ("id", "system", "now_ns", "outcome", "reason", "resumed", "rollout")} | {
        "steps": {k: v["status"] for k, v in rec.get("steps", {}).items()},
        "changes": [c.get("message") for c in rec.get("changes", [])],
        "alerts": [a["message"] for a in rec.get("alerts", [])],
    }


@loop_app.command("run")
def loop_run(
    ctx: typer.Context,
    plan: PlanOption = None,
    system: OptionalSystemOption = None,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle (or finish an interrupted one) and exit.")] = False,
    every: Annotated[str, typer.Option("--every", metavar="DURATION", help="Time between cycles (30s, 15m, 1h, 1d).")] = "1h",
    cycles: Annotated[int | None, typer.Option("--cycles", metavar="N", help="Stop after N cycles.")] = None,
    now: Annotated[str | None, typer.Option("--now", metavar="TIME", help="Run the cycle at this time (ISO-8601 or ns).")] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", metavar="URL", help="Also POST alerts to this URL.")] = None,
    wait: Annotated[float, typer.Option("--wait", metavar="SECONDS", min=0,
                                        help="If another run's cycle of this home (PostgreSQL registry: of this system, on any host) is "
                                             "running, wait up to this long "
                                             "for it (default: exit 1 at once, naming it).")] = 0.0,
    allow_future: Annotated[bool, typer.Option(
        "--allow-future", help="Accept a --now more than 5 minutes ahead of the wall clock (a simulated home): its "
                               "registry changes take effect at once, and later cycles must run after it.")] = False,
) -> None:
    """Run the loop: each cycle ingests outcomes, measures goals, drift and abuse, and moves one
    step toward a better production bundle (see docs/orchestration.md). --plan names the LoopPlan;
    --system instead runs a System with the default LoopPlan."""
    from dataclasses import replace

    from closedloop.orchestration import Cycle, WebhookAlertSink
    from closedloop.registry import Registry
    from closedloop.runtime.clock import ManualClock, SystemClock

    settings: Settings = ctx.obj
    actor = admin(settings).name
    lp = _plan(plan, system)
    if webhook is not None:
        lp = replace(lp, sinks=(*lp.sinks, WebhookAlertSink(webhook)))
    pause = _duration(every)
    clock: Any = SystemClock() if now is None else ManualClock(_now(now, allow_future))

    def progress(step: str, phase: str) -> None:
        typer.echo(f"step {step} {'started' if phase == 'start' else 'done'}", err=True)
        sys.stderr.flush()

    n = 0
    with Registry.from_settings(settings, clock=clock) as reg:
        cycle = Cycle(lp, settings.home, reg, actor=actor, clock=clock, on_event=progress)
        while True:
            try:
                rec = cycle.run_once(wait=wait)
            except OSError as exc:  # e.g. the cycle record on a full disk: the next run resumes the cycle
                typer.echo(f"Error: the cycle could not write to the home ({exc}); the next run resumes it.",
                           err=True)
                raise typer.Exit(1) from None
            typer.echo(json.dumps(_line(rec), default=str))
            sys.stdout.flush()
            if rec.get("outcome") in FAILED:
                typer.echo(f"Error: cycle {rec['id']}: {rec['outcome']}: {rec['reason']}", err=True)
            n += 1
            if once or (cycles is not None and n >= cycles) or now is not None:
                break
            time.sleep(pause)
    if rec.get("outcome") in FAILED:
        raise typer.Exit(1)


@loop_app.command("status")
def loop_status(
    ctx: typer.Context,
    plan: PlanOption = None,
    system: OptionalSystemOption = None,
    as_json: JsonOption = False,
) -> None:
    """The last cycle, each goal against its target, open alerts, quarantined sources (and units,
    for a system that learns from rewards) and the deployment."""
    from closedloop.orchestration import Cycle
    from closedloop.registry import Registry

    settings: Settings = ctx.obj
    lp = _plan(plan, system)
    with Registry.from_settings(settings) as reg:
        st = Cycle(lp, settings.home, reg).status()
    if as_json:
        typer.echo(json.dumps(st, indent=1, default=str))
        return
    _print_status(st)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_status(st: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    last = st["last_cycle"]
    con.print(f"[bold]system[/bold] {st['system']}   cycles {st['cycles']}")
    if last is None:
        con.print("no cycle has run yet")
    else:
        state = "finished" if last["finished"] else "[red]interrupted (the next run resumes it)[/red]"
        con.print(f"[bold]last cycle[/bold] #{last['id']} at {_iso(last['now_ns'])}: {state}; "
                  f"{last['outcome'] or '—'}: {last['reason'] or ''}")
        for c in last.get("changes") or []:
            con.print(f"  change: {c.get('message')}")
    d = st["deployment"]
    flights = ", ".join(f"{f['name']} {f['bundle']} {f['share']:.0%}" for f in d.get("flights", [])) or "none"
    con.print(f"[bold]deployment[/bold] production {d.get('production')}; shadows {', '.join(d.get('shadows', [])) or 'none'}; "
              f"flights {flights}; kill switch {'ON' if d.get('killswitch') else 'off'}")
    if st.get("rollout"):
        r = st["rollout"]
        con.print(f"[bold]rollout[/bold] {r.get('candidate')} at stage {r.get('stage')} since {_iso(r.get('since_ns'))}")
    t = Table(title="goals")
    for col in ("goal", "level", "metric", "cadence", "latest", "window", "target", "met"):
        t.add_column(col)
    for g in st["goals"]:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "—"}[g["met"]]
        t.add_row(g["name"], g["level"], g["metric"], g["cadence"], _fmt(g["value"]), _fmt(g["window"]),
                  f"{'≥' if g['direction'] == 'at_least' else '≤'} {g['target']:g}", met)
    con.print(t)
    con.print(f"[bold]open alerts[/bold] {len(st['open_alerts'])} (of {st['alerts_total']} ever)")
    for a in st["open_alerts"]:
        con.print(f"  {a['kind']} {a['subject']}: {a['message']} → {a['action']}")
    q = st["quarantined"] + st["downweighted"]
    con.print(f"[bold]sources[/bold] {len(st['quarantined'])} quarantined, {len(st['downweighted'])} down-weighted")
    for s in q:
        con.print(f"  {s['source']} {s['verdict']}: {s['reason']}")
    if "apprentice" in st:  # a plan whose first candidates imitate the logger: its agreement over time
        _print_apprentice(con, st["apprentice"])
    if "quarantined_units" in st:  # a system that learns from rewards, watched for click farms
        con.print(f"[bold]units[/bold] {len(st['quarantined_units'])} quarantined as a click farm")
        for u in st["quarantined_units"]:
            con.print(f"  {u['unit']} since {_iso(u['since_ns'])}, last flagged {_iso(u['last_ns'])}: {u['reason']}")


def _iso(ns: Any) -> str:
    import datetime as _dt

    if ns is None:
        return "—"
    return _dt.datetime.fromtimestamp(int(ns) / 1e9, _dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_apprentice(con: Any, a: dict[str, Any]) -> None:
    """The apprentice's state and every agreement it was measured at (held out, in shadow)."""
    from rich.table import Table

    state = "graduated: later candidates learn from rewards" if a.get("graduated") else "imitating the logger"
    con.print(f"[bold]apprentice[/bold] {state}; candidate {a.get('candidate') or '—'}; needs ≥ {a['agreement']:.0%} "
              f"agreement over ≥ {a['min_decisions']} decisions")
    if a.get("history"):
        t = Table(title="apprentice agreement over time")
        for col in ("cycle", "time", "candidate", "where", "agreement", "95% interval", "n"):
            t.add_column(col)
        for p in a["history"]:
            ci = "—" if p.get("low") is None else f"{p['low']:.3f}–{p['high']:.3f}"
            t.add_row(str(p["cycle"]), _iso(p["now_ns"]), p["candidate"], p["where"], _fmt(p.get("agreement")), ci, str(p.get("n")))
        con.print(t)

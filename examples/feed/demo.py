"""The feed demo: a ranking loop that learns from clicks, against a frozen model and Vowpal Wabbit.

Run it from the repository root::

    python -m examples.feed.demo [--seeds 3] [--seed 1] [--days 30] [--sessions 20000] [--shared-days 5]
                                 [--measure-from 15] [--fault-day 20] [--home .closedloop/feed-demo] [--report feed-demo-report.html]

The feed world (:mod:`closedloop.world.feed`) runs ``--days`` simulated days; the first
``--shared-days`` are shared, then the same session stream is decided by four policies
(:mod:`examples.feed.demo_run`): a popularity heuristic, a model trained on the shared days and
frozen, the closed loop (a cycle a day: reward dataset, training, off-policy gate, flight under the
guard, click-farm quarantine) and Vowpal Wabbit's contextual bandit. It shows progress, prints a
table, writes one self-contained HTML report (:mod:`examples.feed.demo_report`); the last line printed
is one JSON object with the figures. A small run: ``--days 8 --sessions 2000 --shared-days 3
--measure-from 5 --fault-day 6``. See docs/demo.md, "The feed demo".
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .demo_report import write_report
from .demo_run import ARMS, FeedDemoRun, FeedDemoSettings, run_feed_demo

__all__ = ["main", "pooled"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m examples.feed.demo", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds, one after another (default: 3)")
    ap.add_argument("--seed", type=int, default=1, help="the first seed (default: 1)")
    ap.add_argument("--days", type=int, default=30, help="simulated days (default: 30)")
    ap.add_argument("--sessions", type=int, default=20_000, help="genuine sessions per simulated day (default: 20000)")
    ap.add_argument("--shared-days", type=int, default=5, help="days all policies share (default: 5)")
    ap.add_argument("--measure-from", type=int, default=15, help="first day of the table's period (default: 15)")
    ap.add_argument("--fault-day", type=int, default=20, help="the day the loop's rewards are shifted by one slot (default: 20; -1: none)")
    ap.add_argument("--gamma", type=float, default=FeedDemoSettings.gamma,
                    help="the loop's SquareCB exploration: larger explores less (default: %(default)s)")
    ap.add_argument("--estimator", choices=("dr", "dr-candidate", "snips"), default="dr-candidate",
                    help="the gate's policy-value estimator: dr (a click model fitted each cycle), dr-candidate (DR with the "
                         "candidate's own click model) or snips (default: dr-candidate)")
    ap.add_argument("--tolerance", type=float, default=FeedDemoSettings.tolerance,
                    help="the gate's policy tolerance: a candidate passes while the lower bound of (candidate − production) per "
                         "logged slot is ≥ −tolerance (default: %(default)s)")
    ap.add_argument("--model", choices=("affinity", "logistic"), default="affinity",
                    help="what the loop trains: affinity (logistic + a learned user × category offset) or logistic (default: affinity)")
    ap.add_argument("--one-process", action="store_true",
                    help="run the heuristic, frozen and VW arms in this process after the loop's days instead of in a second "
                         "process beside it (the same figures; one core)")
    ap.add_argument("--home", type=Path, default=Path(".closedloop/feed-demo"),
                    help="each seed's loop home goes to <home>/seed-<S> (replaced) (default: .closedloop/feed-demo)")
    ap.add_argument("--report", type=Path, default=Path("feed-demo-report.html"), help="the HTML report (default: feed-demo-report.html)")
    return ap.parse_args(argv)


def _fresh(home: Path) -> Path:
    """The seed's home, emptied: only a directory an earlier demo run made is removed."""
    if home.exists():
        if not (home / "registry.sqlite").is_file() and any(home.iterdir()):
            raise SystemExit(f"{home} holds files that are not an earlier feed demo run's; choose another --home.")
        shutil.rmtree(home)
    return home


def pooled(runs: Sequence[FeedDemoRun]) -> dict[str, Any]:
    """Every seed's measured days together: each arm's clicks per session (sessions weighted) and the
    loop's lifts paired by seed and day."""
    from .demo_measure import _lift, _pooled

    s = [r.settings for r in runs]
    period = {a: [dict(x, day=(i, x["day"])) for i, r in enumerate(runs) for x in r.arms[a] if x["day"] >= s[i].measure_from]
              for a in ARMS}
    cov = [e["covered"] for r in runs for e in r.evaluations]
    vs_frozen, vs_vw = _lift(period["loop"], period["frozen"]), _lift(period["loop"], period["vw"])
    share = sum(cov) / len(cov) if cov else None
    return {"arms": {a: _pooled(rows) for a, rows in period.items()}, "loop_vs_frozen": vs_frozen, "loop_vs_vw": vs_vw,
            "dr_coverage": {"n": len(cov), "covered": sum(cov), "share": share},
            "targets": {"loop_15pct_over_frozen": (vs_frozen["relative"] or 0.0) >= 0.15,
                        "loop_not_below_vw": not math.isnan(vs_vw["ci"][1]) and vs_vw["ci"][1] >= 0,
                        "dr_coverage_90pct": share is not None and share >= 0.9,
                        "every_seed": {k: all(r.summary()["targets"][k] for r in runs)
                                       for k in ("farm_quarantined", "bad_candidate_stopped", "under_5_minutes")}}}


def _ci(x: dict[str, Any], digits: int = 3) -> str:
    lo, hi = x["ci"]
    return "—" if math.isnan(lo) else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _table(runs: Sequence[FeedDemoRun]) -> Table:
    s0 = runs[0].settings
    t = Table(title=f"Days {s0.measure_from}–{s0.days - 1}: expected genuine clicks per session (the world's truth), 95 % interval")
    for col in ("seed", "policy", "clicks / session", "95 % interval", "vs frozen", "seconds"):
        t.add_column(col, justify="left" if col in ("seed", "policy") else "right")
    rows = [(str(r.settings.seed), r.summary()["arms"], r.timings) for r in runs]
    if len(runs) > 1:
        rows.append(("all", pooled(runs)["arms"], {}))
    for seed, arms, tm in rows:
        for a in ARMS:
            x, f = arms[a], arms["frozen"]["clicks_per_session"]
            t.add_row(seed, a, f"{x['clicks_per_session']:.4f}", _ci(x), f"{100 * (x['clicks_per_session'] / f - 1):+.1f} %",
                      f"{tm[a]:.1f}" if a in tm else "")
    return t


def _targets(runs: Sequence[FeedDemoRun]) -> Table:
    t = Table(title="The closed loop: lifts (paired by day), the safety net, time")
    for col in ("seed", "loop vs frozen", "loop − vw [95 %]", "promotions", "gate stops", "rollbacks", "farm quarantined",
                "shifted rewards", "DR covered", "seconds (vw share)"):
        t.add_column(col, justify="left" if col == "seed" else "right")
    for r in runs:
        s = r.summary()
        cov = s["dr_coverage"]
        t.add_row(str(s["seed"]), f"{100 * (s['loop_vs_frozen']['relative'] or 0):+.1f} %",
                  f"{s['loop_vs_vw']['difference']:+.4f} {_ci(s['loop_vs_vw'], 4)}", str(s["promotions"]), str(s["gate_stops"]),
                  str(s["rollbacks"]), f"{s['farm']['caught']}/{s['farm']['farm_units']} ({s['farm']['quarantined']} units)",
                  (s["fault"] or {}).get("fate", "no fault"), f"{cov['covered']}/{cov['n']}",
                  f"{s['seconds']:.0f} ({100 * (s['vw_share_of_time'] or 0):.0f} %)")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(width=140) if not Console().is_terminal else Console()
    if args.seeds < 1:
        raise SystemExit("--seeds must be ≥ 1")
    t_start = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    console.print(f"[bold]closedloop feed demo[/]: {args.days} simulated days × {args.sessions:,} sessions, 4 policies "
                  f"(heuristic, frozen model, closed loop, Vowpal Wabbit), seed(s) {', '.join(map(str, seeds))}")
    runs: list[FeedDemoRun] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=console, transient=False) as progress:
        for seed in seeds:
            settings = FeedDemoSettings(seed=seed, days=args.days, sessions=args.sessions, shared_days=args.shared_days,
                                        measure_from=args.measure_from, fault_day=None if args.fault_day < 0 else args.fault_day,
                                        reward_model={"dr": "fitted", "dr-candidate": "candidate"}.get(args.estimator),
                                        tolerance=args.tolerance, gamma=args.gamma,
                                        model=args.model)
            task = progress.add_task(f"seed {seed}", total=args.days, status="")
            last = {"day": "", "cycle": ""}

            def on_progress(what: str, info: dict[str, Any], task: Any = task, last: dict[str, str] = last) -> None:
                if what == "day" and info["arm"] in ("loop", "shared"):
                    last["day"] = f"day {info['day']}: loop {info['row']['true_value']:.3f} clicks/session"
                elif what == "step":
                    progress.update(task, status=f"{last['day']} · cycle step {info['step']}")
                    return
                elif what == "cycle":
                    r = info["record"]
                    last["cycle"] = f"cycle {r.get('id')}: {r.get('outcome')}"
                    progress.update(task, advance=1)
                progress.update(task, status=f"{last['day']} · {last['cycle']}")

            runs.append(run_feed_demo(settings, _fresh(args.home / f"seed-{seed}"), on_progress=on_progress,
                                      arms_process=not args.one_process))
    console.print(_table(runs))
    console.print(_targets(runs))
    console.print(f"Vowpal Wabbit: {runs[0].vw_settings.get('arguments')} (vowpalwabbit {runs[0].vw_settings.get('vowpalwabbit')}); "
                  "decides a day with what it knew at the day's start, learns each session's first-slot click at the day's end")
    path = write_report(runs, args.report)
    console.print(f"Report: {path.resolve()} · loop homes under {args.home.resolve()} · {time.perf_counter() - t_start:.0f} s")
    out: dict[str, Any] = {"seeds": [r.summary() for r in runs], "vw_settings": runs[0].vw_settings}
    if len(runs) > 1:
        out["pooled"] = pooled(runs)
    print(json.dumps(out, default=str, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

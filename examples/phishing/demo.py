"""``make demo``: a phishing blocker that gets better because it is used.

Run it from the repository root (``make demo`` does)::

    python -m examples.phishing.demo [--seeds N] [--seed S] [--days 60] [--report demo-report.html]

The phishing world (:mod:`closedloop.world`, its committed configuration: 50,000 page loads a
simulated day) runs 60 days under three policies on the same visit stream — the heuristic only,
a model trained once on day 7 and frozen, and the closed loop (:mod:`examples.phishing.loop_demo`:
one orchestration cycle a day through the real runtime, telemetry, dataset build, training,
evaluation, gate and registry). It shows progress while it runs, prints a table, and writes one
self-contained HTML report (:mod:`examples.phishing.loop_report`). The last line printed is one
JSON object with the figures. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .loop_demo import ARMS, DemoRun, DemoSettings, rates, run_demo
from .loop_report import write_report

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m examples.phishing.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1, help="how many seeds to run, one after another (default: 1)")
    ap.add_argument("--seed", type=int, default=1, help="the first seed (default: 1)")
    ap.add_argument("--days", type=int, default=60, help="simulated days (default: 60)")
    ap.add_argument("--shared-days", type=int, default=7, help="days all policies share (default: 7)")
    ap.add_argument("--visits", type=int, default=None, help="page loads per day (default: the world's, 50000)")
    ap.add_argument("--users", type=int, default=None, help="browser profiles (default: the world's)")
    ap.add_argument("--fault-day", type=int, default=20, help="day of the label-pipeline fault (default: 20; -1: none)")
    ap.add_argument("--cycles-per-day", type=int, default=DemoSettings.cycles_per_day,
                    help="loop cycles per simulated day (default: %(default)s)")
    ap.add_argument("--measure-from", type=int, default=30, help="first day of the table's period (default: 30)")
    ap.add_argument("--home", type=Path, default=Path(".closedloop/demo"),
                    help="where each seed's loop home goes, as <home>/seed-<S> (replaced) (default: .closedloop/demo)")
    ap.add_argument("--report", type=Path, default=Path("demo-report.html"), help="the HTML report (default: demo-report.html)")
    return ap.parse_args(argv)


def _fresh(home: Path) -> Path:
    """The seed's home, emptied: only a directory an earlier demo run made is removed."""
    if home.exists():
        if not (home / "demo-run.json").is_file() and not (home / "registry.sqlite").is_file():
            if any(home.iterdir()):
                raise SystemExit(f"{home} holds files that are not an earlier demo run's; choose another --home.")
        shutil.rmtree(home)
    return home


def _table(runs: Sequence[DemoRun]) -> Table:
    s0 = runs[0].settings
    t = Table(title=f"Days {s0.measure_from}–{s0.days - 1}, pooled (ground truth, measured by the world)")
    for col in ("seed", "policy", "phishing allowed / 1k", "caught", "false blocks / 1k legit",
                "false warnings / 1k legit", "victims", "declared cost / 1k"):
        t.add_column(col, justify="left" if col in ("seed", "policy") else "right")
    rows = [(str(run.settings.seed), run.summary()["arms"]) for run in runs]
    if len(runs) > 1:
        rows.append(("all", pooled(runs)))
    for seed, arms in rows:
        for arm in ARMS:
            a = arms[arm]
            t.add_row(seed, arm, f"{a['phish_allowed_per_1k']:.3f}",
                      f"{100 * a['phish_caught_share']:.1f} %", f"{a['false_blocks_per_1k_legit']:.3f}",
                      f"{a['false_warnings_per_1k_legit']:.3f}", f"{a['victims']:,.0f}",
                      f"{a['declared_cost_per_1k']:.2f}")
    return t


def pooled(runs: Sequence[DemoRun]) -> dict[str, dict[str, float]]:
    """Each arm's figures over every seed's period: the seeds' ground-truth counts summed."""
    out = {}
    for arm in ARMS:
        tots = [run.totals(arm) for run in runs]
        out[arm] = rates({k: sum(t[k] for t in tots) for k in tots[0]})
    return out


def _targets(runs: Sequence[DemoRun]) -> Table:
    t = Table(title="Targets: the closed loop against the frozen model")
    for col in ("seed", "phishing allowed", "false blocks", "bad candidate", "abusers", "promotions", "rollbacks",
                "gate stops", "seconds"):
        t.add_column(col, justify="left" if col == "seed" else "right")
    for run in runs:
        s = run.summary()
        m = s["targets_met"]
        fault = run.fault or {}
        first = (fault.get("candidates") or [{}])[0]
        t.add_row(
            str(s["seed"]),
            f"{-100 * s['phish_allowed_reduction_vs_frozen']:+.1f} % ({'met' if m['phish_allowed_halved'] else 'NOT met'})",
            (f"{100 * s['false_blocks_relative_to_frozen']:+.1f} %" if s["false_blocks_relative_to_frozen"] is not None
             else "frozen: none") + f" ({'met' if m['false_blocks_within_5pct'] else 'NOT met'})",
            first.get("fate", "no fault") if fault else "no fault",
            f"{len(s['quarantined'])} quarantined",
            str(s["promotions"]), str(s["rollbacks"]), str(s["gate_stops"]), f"{s['seconds']:.0f}",
        )
    return t


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(width=120) if not Console().is_terminal else Console()
    if args.seeds < 1:
        raise SystemExit("--seeds must be ≥ 1")
    t_start = time.perf_counter()
    runs: list[DemoRun] = []
    seeds = list(range(args.seed, args.seed + args.seeds))
    console.print(f"[bold]closedloop demo[/]: the phishing world, {args.days} simulated days × 3 policies "
                  f"(heuristic, frozen model, closed loop), seed(s) {', '.join(map(str, seeds))}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=console, transient=False) as progress:
        for seed in seeds:
            settings = DemoSettings(seed=seed, days=args.days, shared_days=args.shared_days, visits_per_day=args.visits,
                                    users=args.users, fault_day=None if args.fault_day < 0 else args.fault_day,
                                    measure_from=args.measure_from, cycles_per_day=args.cycles_per_day)
            task = progress.add_task(f"seed {seed}", total=args.days, status="")
            last: dict[str, Any] = {"cycle": ""}

            def on_progress(what: str, info: dict[str, Any], task: Any = task, last: dict[str, Any] = last) -> None:
                if what == "cycle":
                    r = info["record"]
                    last["cycle"] = f"cycle {r['id']}: {r.get('outcome')}"
                    progress.update(task, status=last["cycle"])
                elif what == "step":
                    progress.update(task, status=f"{last.get('day', '')} · cycle step {info['step']} done")
                elif what == "day" and info["arm"] in ("loop", "shared"):
                    m = info["measure"]
                    pa = 1000.0 * m["phish_allowed"] / max(m["decided"], 1)
                    last["day"] = f"day {info['day']}: the loop allowed {pa:.2f} phishing/1k"
                    progress.update(task, advance=1, status=f"{last['day']} · {last['cycle']}")

            run = run_demo(settings, _fresh(args.home / f"seed-{seed}"), on_progress=on_progress)
            runs.append(run)
    console.print(_table(runs))
    console.print(_targets(runs))
    for run in runs:
        f = run.fault
        if f:
            for c in f["candidates"][:1]:
                console.print(f"seed {run.settings.seed}: the label fault of day {f['day']} "
                              f"({(f.get('event') or {}).get('labels_corrupted', 0):,} labels wrong) → candidate "
                              f"{c['candidate']} trained on day {c['day']}: [bold]{c['fate']}[/] — {c['why'][:160]}")
        q = run.abuse.get("quarantined", [])
        console.print(f"seed {run.settings.seed}: quarantined source(s) {', '.join(q) if q else 'none'}")
    path = write_report(runs, args.report)
    console.print(f"Report: {path.resolve()} · loop homes under {args.home.resolve()} · "
                  f"{time.perf_counter() - t_start:.0f} s")
    out: dict[str, Any] = {"seeds": [r.summary() for r in runs]}
    if len(runs) > 1:
        out["pooled"] = pooled(runs)
    print(json.dumps(out, default=str, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the seeded project home the console's page benchmark runs on (``bench/console.py``):
10,000 registry history events, 90 days of goal series, 50 evaluation reports, a cycle record a
day and its alerts, 20,000 decisions of the last two hours in the telemetry, a viewer (``vera``) and
an admin (``ada``) credential for the console — a real home, made
through the registry's, the runtime's and the loop's own APIs (``tests/support/console_home.py``
is the one implementation; see its docstring).

Run it as ``.venv/bin/python bench/console_home.py --out DIR`` (``--quick`` for a small home:
1,000 events, 30 days, 10 reports, 2,000 decisions). It refuses a DIR that holds a registry already. It prints
what it built, the size on disk and the build time, then what the console's data sources cost on
it (best of 5 reads: the registry's state, status, history — the last 50 and all of it —, what
served at a time, reports, the goal series, cycles, alerts; ``--reads-only`` times them on a home
built before). The last line is one JSON object with every figure (``home``: the folder to pass to
``closedloop console --home``; ``tokens``: the viewer's and the admin's tokens, to log in with — a
local test home's, printed once as ``closedloop token add`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):  # examples/ and tests/support/ are importable from the repo root
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from support.console_home import SYSTEM, best_ms, home_summary, seed_console_home  # noqa: E402


def reads(home: Path) -> dict[str, float]:
    """What each source of the console's pages costs to read on ``home`` (ms, best of 5)."""
    from examples.phishing.system import phishing

    from closedloop.orchestration.alerts import JsonLinesAlertSink
    from closedloop.orchestration.goals import SeriesStore, goal_status
    from closedloop.orchestration.records import CycleRecords
    from closedloop.registry import Registry
    from closedloop.settings import Settings

    settings = Settings(home=home)
    series = SeriesStore(home / "goals" / "series.jsonl")
    cycles = CycleRecords(home / "orchestration" / "cycles")
    alerts = JsonLinesAlertSink(home / "orchestration" / "alerts.jsonl")
    with Registry.from_settings(settings).open(upgrade=False) as reg:
        hist = reg.history(SYSTEM)
        mid = hist[len(hist) // 2]["at_ns"]
        prod = reg.state(SYSTEM).production
        return {
            "state": best_ms(lambda: reg.state(SYSTEM)), "status": best_ms(lambda: reg.status(SYSTEM)),
            "history_last_50": best_ms(lambda: reg.history(SYSTEM, limit=50)),
            "history_all": best_ms(lambda: reg.history(SYSTEM), 2), "at_mid": best_ms(lambda: reg.at(SYSTEM, mid)),
            "bundles": best_ms(lambda: reg.bundles(SYSTEM)), "reports_of_production": best_ms(lambda: reg.reports(str(prod))),
            "goal_points": best_ms(series.points), "goal_status": best_ms(lambda: goal_status(phishing, series)),
            "cycles_all": best_ms(cycles.all), "cycles_last": best_ms(cycles.last), "alerts": best_ms(alerts.read),
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the new home's folder (must not hold a registry)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--events", type=int, default=None, help="registry history rows (default 10,000; --quick 1,000)")
    ap.add_argument("--days", type=int, default=None, help="days of goal series and cycles (default 90; --quick 30)")
    ap.add_argument("--reports", type=int, default=None, help="evaluation reports (default 50; --quick 10)")
    ap.add_argument("--decisions", type=int, default=None, help="page loads logged (default 20,000; --quick 2,000)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reads-only", action="store_true", help="time the reads on the home at --out, built before")
    args = ap.parse_args(argv)
    if args.reads_only:
        timed = {"home": str(args.out), "reads_ms": reads(args.out), "read_back": home_summary(args.out)}
        print(json.dumps(timed, sort_keys=True))
        return timed
    events = args.events or (1_000 if args.quick else 10_000)
    days = args.days or (30 if args.quick else 90)
    reports = args.reports or (10 if args.quick else 50)
    decisions = args.decisions if args.decisions is not None else (2_000 if args.quick else 20_000)
    info = seed_console_home(args.out, seed=args.seed, history_events=events, goal_days=days, reports=reports,
                             decisions=decisions)
    summary = home_summary(args.out)
    if summary["history_events"] != events or summary["reports"] != reports:
        raise SystemExit(f"the home does not hold what was asked: {summary}")
    out = {**info.to_dict(), "megabytes": round(info.bytes / 2**20, 1), "read_back": summary, "reads_ms": reads(args.out)}
    print(f"seeded {args.out}: {info.history_events:,} history events ({info.statuses}), {len(info.reports)} reports, "
          f"{len(info.bundles)} bundles, {info.goal_points:,} goal points, {info.cycles} cycles, {info.alerts} alerts, "
          f"{info.decisions:,} decisions and {info.outcomes:,} outcomes logged")
    print(f"console logins: viewer {info.tokens['viewer']} (vera), admin {info.tokens['admin']} (ada)")
    print(f"size {out['megabytes']} MB; built in {info.seconds['total']:.1f} s ({info.seconds})")
    print("reads (ms, best of 5): " + ", ".join(f"{k} {v:g}" for k, v in out["reads_ms"].items()))
    print(json.dumps(out, sort_keys=True))
    return out


if __name__ == "__main__":
    main()

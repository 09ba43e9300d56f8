"""Build the seeded project home the console's page benchmark runs on (``bench/console.py``):
10,000 registry history events, 90 days of goal series, 50 evaluation reports, a cycle record a
day and its alerts — a real home, made through the registry's and the loop's own APIs
(``tests/support/console_home.py`` is the one implementation; see its docstring).

Run it as ``.venv/bin/python bench/console_home.py --out DIR`` (``--quick`` for a small home:
1,000 events, 30 days, 10 reports). It refuses a DIR that holds a registry already. It prints
what it built, the size on disk and the build time; the last line is one JSON object with every
figure (``home``: the folder to pass to ``closedloop console --home``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):  # examples/ and tests/support/ are importable from the repo root
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from support.console_home import home_summary, seed_console_home  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the new home's folder (must not hold a registry)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--events", type=int, default=None, help="registry history rows (default 10,000; --quick 1,000)")
    ap.add_argument("--days", type=int, default=None, help="days of goal series and cycles (default 90; --quick 30)")
    ap.add_argument("--reports", type=int, default=None, help="evaluation reports (default 50; --quick 10)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    events = args.events or (1_000 if args.quick else 10_000)
    days = args.days or (30 if args.quick else 90)
    reports = args.reports or (10 if args.quick else 50)
    info = seed_console_home(args.out, seed=args.seed, history_events=events, goal_days=days, reports=reports)
    summary = home_summary(args.out)
    if summary["history_events"] != events or summary["reports"] != reports:
        raise SystemExit(f"the home does not hold what was asked: {summary}")
    out = {**info.to_dict(), "megabytes": round(info.bytes / 2**20, 1), "read_back": summary}
    print(f"seeded {args.out}: {info.history_events:,} history events ({info.statuses}), {len(info.reports)} reports, "
          f"{len(info.bundles)} bundles, {info.goal_points:,} goal points, {info.cycles} cycles, {info.alerts} alerts")
    print(f"size {out['megabytes']} MB; built in {info.seconds['total']:.1f} s ({info.seconds})")
    print(json.dumps(out, sort_keys=True))
    return out


if __name__ == "__main__":
    main()

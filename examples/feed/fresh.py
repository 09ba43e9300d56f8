"""What the loop's own learner could give with no safety net: ``python -m examples.feed.fresh``.

The feed demo's run (:func:`~examples.feed.demo_run.run_feed_demo`, the same settings and figures),
with two more measurements each day on the loop's own sessions, decided greedily and never shown
(no feedback is drawn for them, so the run is the demo's, bit for bit):

* ``production_greedy`` — the loop's production bundle without exploration: what exploring costs;
* ``newest_greedy`` — the newest model the loop trained, whatever the gate said of it, deployed the
  next morning to everyone: what a loop with no gate, no flight and no exploration could give with
  the same learner — the ceiling of tuning the safety net.

Each is printed against the frozen model over the measured days; ``<home>/fresh.json`` has the days.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from closedloop import Bundle, Runtime

from .demo_arms import _decide
from .demo_run import FeedDemoSettings, run_feed_demo

__all__ = ["fresh_values", "main"]


def fresh_values(settings: FeedDemoSettings, home: Path) -> list[dict[str, Any]]:
    """The demo's run at ``settings`` in ``home`` with, per loop day, the true value of what the loop
    showed, of its production greedy and of its newest model greedy (module doc), and the frozen
    model's."""
    days: list[dict[str, Any]] = []

    def measure(loop: Any, world: Any, d: int, seed: int, sessions: Any) -> None:
        greedy = world.system(k=settings.k, explore=None)

        def value(bundle: Bundle) -> float:
            return float(world.expected_clicks(sessions, _decide(Runtime(greedy, bundle), world, sessions, seed)[0]).mean())

        out = {"day": d, "production_greedy": value(loop.reg.load_bundle(loop.reg.state(loop.system.name).production, greedy))}
        for rec in reversed(loop.cycle.records()):
            tr = rec.get("steps", {}).get("train", {})
            if tr.get("status") == "done":
                out["newest_greedy"] = value(Bundle.load(tr["result"]["path"], greedy))
                break
        days.append(out)

    run = run_feed_demo(settings, home, on_loop_day=measure)
    loop = {r["day"]: r["true_value"] for r in run.arms["loop"]}
    frozen = {r["day"]: r["true_value"] for r in run.arms["frozen"]}
    return [d | {"loop": loop[d["day"]], "frozen": frozen[d["day"]]} for d in days if d["day"] >= settings.measure_from]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.feed.fresh", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--shared-days", type=int, default=5)
    ap.add_argument("--measure-from", type=int, default=15)
    ap.add_argument("--fault-day", type=int, default=20, help="-1: none")
    ap.add_argument("--home", type=Path, required=True, help="a new or empty directory: the loop's home")
    a = ap.parse_args(argv)
    s = FeedDemoSettings(seed=a.seed, days=a.days, sessions=a.sessions, shared_days=a.shared_days, measure_from=a.measure_from,
                         fault_day=None if a.fault_day < 0 else a.fault_day)
    rows = fresh_values(s, a.home)
    (a.home / "fresh.json").write_text(json.dumps(rows, indent=1))
    frozen = sum(r["frozen"] for r in rows) / len(rows)
    for k in ("loop", "production_greedy", "newest_greedy"):
        got = [r[k] for r in rows if k in r]
        v = sum(got) / len(got)
        print(f"{k:18s} {v:.4f} clicks/session, {100 * (v / frozen - 1):+.1f} % vs the frozen model ({len(got)} days)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

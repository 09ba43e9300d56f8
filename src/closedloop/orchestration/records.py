"""The cycle records: ``<home>/orchestration/cycles/<NNNNNN>.json``, one per cycle.

A record holds the cycle's id, system and time, each step's status and result (rewritten
atomically after every step), the outcome and reason, the registry changes and alerts the cycle
made, and the state carried from cycle to cycle (``rollout``, ``pending`` alert actions,
``last_trained_ns``, ``label_quarantine``; an apprentice's state and the units quarantined as a
click farm, when the plan has them). :class:`CycleRecords` reads and writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from closedloop.base.times import iso_short
from closedloop.errors import SpecError
from closedloop.orchestration.steps.base import atomic_json

__all__ = ["CARRIED", "OPTIONAL", "CycleRecords"]

#: the state a new cycle's record takes over from the last one's, with its default
CARRIED: tuple[tuple[str, Any], ...] = (("rollout", None), ("pending", []), ("last_trained_ns", None),
                                         ("label_quarantine", []))
#: carried state that only some plans have (no key in a record of a plan without it): an apprentice's;
#: the units a click-farm policy quarantined (unit → when first and last flagged, why)
OPTIONAL: tuple[str, ...] = ("apprentice", "unit_quarantine")


class CycleRecords:
    """The records in the directory ``cycles``."""

    def __init__(self, cycles: Path) -> None:
        self.cycles = cycles

    def all(self) -> list[dict[str, Any]]:
        """Every cycle record, oldest first (a record that cannot be read is skipped)."""
        out = []
        if self.cycles.is_dir():
            for p in sorted(self.cycles.glob("[0-9]*.json")):
                try:
                    out.append(json.loads(p.read_text()))
                except (OSError, ValueError):
                    continue
        return out

    def last(self) -> dict[str, Any] | None:
        """The newest cycle record that can be read (what :meth:`all` would end with)."""
        if self.cycles.is_dir():
            for p in sorted(self.cycles.glob("[0-9]*.json"), reverse=True):
                try:
                    return json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
        return None

    def save(self, rec: dict[str, Any]) -> None:
        atomic_json(self.cycles / f"{rec['id']:06d}.json", rec)

    def new(self, system: str, now: int, last: dict[str, Any] | None) -> dict[str, Any]:
        """The record of a new cycle at ``now``, carrying the last one's state; refused (the
        clock went back) when ``now`` is before the last cycle's time."""
        if last is not None and now < last["now_ns"]:
            raise clock_went_back(self.cycles, last, self.all(), now)
        carried = {k: (last or {}).get(k, list(d) if isinstance(d, list) else d) for k, d in CARRIED}
        carried |= {k: last[k] for k in OPTIONAL if last is not None and k in last}
        return {"id": (last["id"] + 1) if last else 1, "system": system, "now_ns": now,
                "steps": {}, "finished": False, "outcome": None, "reason": None, "resumed": 0,
                "alerts": [], "changes": [], **carried}


def _span(ns: int) -> str:
    s = ns / 1e9
    return (f"{s / 86400:.1f} days" if s >= 86400 else f"{s / 3600:.1f} hours" if s >= 3600
            else f"{s / 60:.1f} minutes" if s >= 60 else f"{s:.3g} seconds")


def clock_went_back(cycles: Path, last: dict[str, Any], records: list[dict[str, Any]], now: int) -> SpecError:
    """The refusal of a cycle whose time is before the last cycle's: in dates, the cycles ahead of
    it named, and the two ways on (run at or after the last one's time, or move the records of the
    cycles ahead aside)."""
    ahead = [r for r in records if isinstance(r.get("id"), int) and int(r.get("now_ns") or 0) > now] or [last]
    ids = [int(r["id"]) for r in ahead]
    later = (f"cycle #{ids[0]} ran" if len(ids) == 1 else f"cycles {', '.join(f'#{i}' for i in ids)} ran")
    resume = -(-int(last["now_ns"]) // 1_000_000_000) * 1_000_000_000  # --now to the second, not before it
    aside = cycles.parent / "cycles-ahead"
    files = " ".join(f"{cycles}/{i:06d}.json" + (f" {cycles}/{i:06d}" if (cycles / f"{i:06d}").exists() else "")
                     for i in ids)
    return SpecError(
        f"The cycle clock went back: this cycle's time, {iso_short(now)}, is before the time of the last cycle "
        f"(cycle #{last['id']}), {iso_short(int(last['now_ns']))} — {_span(int(last['now_ns']) - now)} later. Cycles "
        f"run in time order; {later} later than this one (e.g. 'closedloop loop run --now' with a time ahead of the "
        f"clock). To go on, run at or after {iso_short(int(last['now_ns']))}: wait until then, or pass "
        f"'--now {iso_short(resume)}' (with '--allow-future' while that is ahead of the wall clock; a Cycle's clock "
        f"in Python). Or, to go back to this time, move the records of the cycles ahead aside: "
        f"'mkdir -p {aside} && mv {files} {aside}/'. The registry changes those cycles made stay applied "
        "('closedloop history' lists them, 'closedloop rollback' undoes them one at a time), and so do their goal "
        "points and alerts."
    )

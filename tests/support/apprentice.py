"""A heuristic's logs in the bandit world, for the apprentice tests: requests decided through a real
Runtime with Telemetry, clicks reported, and the per-slot reward dataset built from the records.

The world's item ids are unique per request; :func:`contexts` names each request's items by their
place in it (``c0`` … ``c5``) instead, as a catalogue's slots. The ids are not features: nothing
else changes (the ranking report values each decision's whole candidate set and judges support
against the logger's own distribution, so unique ids would do as well; these keep the figures the
tests were measured with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from closedloop import Bundle, Runtime
from closedloop.datasets.slots import build_reward_dataset
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.ids import DecisionIds
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9


def contexts(world: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``world.contexts(n, seed)`` with each request's items named by their place in it."""
    ctxs = world.contexts(n, seed=seed)
    for c in ctxs:
        for j, x in enumerate(c["candidates"]):
            x["item_id"] = f"c{j}"
    return ctxs


def log_dataset(world: Any, system: Any, bundle: Bundle, ctxs: list[dict[str, Any]], home: Path, seed: int) -> Any:
    """``ctxs`` decided by ``bundle`` through a Runtime logging to telemetry under ``home``, the world's
    clicks reported, and the reward dataset built → its manifest (the dataset at ``home / "ds"``). The
    decision ids come from ``seed``, and with them the logger's draws (an exploring policy draws from its decision id)."""
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, bundle, telemetry=tel, clock=clock, ids=DecisionIds(seed=seed))  # seeded ids: seeded draws
    world.log(rt, ctxs, tel, t0_ns=T0, seed=seed)
    tel.close()
    store = TelemetryStore(home)
    store.compact()
    return build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                since_ns=T0, until_ns=T0 + 10**7 * S, cutoff_ns=T0 + 10**8 * S, out=home / "ds")

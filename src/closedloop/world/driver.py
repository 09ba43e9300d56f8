"""Driving a world through the real loop: world → ``Runtime.decide_batch`` (logged by telemetry)
→ decisions back to the world → outcomes delivered, when due, through ``Telemetry.log_outcome``.

::

    clock = ManualClock(world.day_start_ns(0))
    with Telemetry(SegmentLog(home), system=phishing, clock=clock.now_ns) as tel:
        rt = Runtime(phishing, bundle, clock=clock, ids=DecisionIds(seed), telemetry=tel)
        for run in run_days(world, rt, tel, clock, days=3):
            print(run.day, run.visits, run.outcomes_delivered, run.visits_per_second)

A day is cut into ``slices`` equal time windows (hour by hour by default). For each window the
clock is set to the window's end, the window's visits are decided in one batch (with the
world's decision ids and visit times), handed back, the outcomes due by the window's end are
logged, and telemetry is flushed — so every record of the window is stamped ``ingest_ns`` = the
window's end, in simulated time, and a dataset cut off at any window's end sees exactly what had
arrived by then. Between days the caller (the orchestrator) may do anything — build datasets,
train, change the runtime's deployment — and then call :func:`run_day` again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from closedloop.errors import OutcomeError, SpecError
from closedloop.runtime.clock import ManualClock
from closedloop.world.phishing import PhishingWorld

__all__ = ["DayRun", "deliver", "deliver_until", "run_day", "run_days"]


@dataclass(frozen=True)
class DayRun:
    """What one simulated day did. ``measure`` is the world's ground truth (measurement only)."""

    day: int
    visits: int  # page loads handed to the runtime
    decisions: int  # decisions it returned (and telemetry was given)
    outcomes_delivered: int  # outcomes logged to telemetry
    outcomes_rejected: list[tuple[str, str]]  # (outcome_id, reason) refused by telemetry
    world_seconds: float  # time spent in the world (drawing visits, outcomes)
    decide_seconds: float  # time spent in Runtime.decide_batch
    telemetry_seconds: float  # time spent logging outcomes and flushing
    measure: dict[str, Any] = field(repr=False)

    @property
    def visits_per_second(self) -> float:
        """Simulated page loads per second of world time."""
        return self.visits / self.world_seconds if self.world_seconds > 0 else float("inf")


def deliver(telemetry: Any, outcomes: pa.Table) -> tuple[int, list[tuple[str, str]]]:
    """Log each outcome (a table from :meth:`PhishingWorld.due`) with ``telemetry.log_outcome``,
    the same validation as ``closedloop outcomes ingest``; a refused one is listed, never fatal.
    Returns (logged, [(outcome_id, reason), …])."""
    if outcomes.num_rows == 0:
        return 0, []
    cols = [outcomes[c].to_pylist() for c in ("outcome_id", "decision_id", "unit", "kind", "value", "event_ns", "source")]
    logged = 0
    rejected: list[tuple[str, str]] = []
    log = telemetry.log_outcome
    for oid, did, unit, kind, value, event_ns, source in zip(*cols, strict=True):
        try:
            log(did, unit, kind=kind, value=value, event_ns=event_ns, source=source, outcome_id=oid)
        except OutcomeError as e:
            rejected.append((str(oid), str(e)))
            continue
        logged += 1
    return logged, rejected


def _check(world: Any, runtime: Any, telemetry: Any, clock: Any) -> None:
    if not isinstance(world, PhishingWorld):
        raise SpecError(f"run_day 'world' must be a PhishingWorld. Got {world!r} instead.")
    if not isinstance(clock, ManualClock):
        raise SpecError(f"run_day 'clock' must be a ManualClock (simulated time). Got {clock!r} instead.")
    now_ns = clock.now_ns
    if getattr(runtime, "clock", None) is not clock:
        raise SpecError("run_day 'runtime' must run on the same ManualClock: Runtime(..., clock=clock).")
    if telemetry is None or getattr(telemetry, "clock", None) != now_ns:
        raise SpecError(
            "run_day 'telemetry' must stamp records in simulated time: Telemetry(..., clock=clock.now_ns)."
        )
    if getattr(runtime, "telemetry", None) is not telemetry:
        raise SpecError("run_day 'runtime' must log its decisions to 'telemetry': Runtime(..., telemetry=telemetry).")


def _advance(clock: ManualClock, t: int) -> None:
    if t > clock.now_ns():
        clock.set_ns(t)


def run_day(world: PhishingWorld, runtime: Any, telemetry: Any, clock: ManualClock, *, slices: int = 24,
            after_slice: Callable[[int, int], None] | None = None) -> DayRun:
    """Run the world's next day through ``runtime`` (module docstring). ``after_slice(i, end_ns)``
    is called after slice ``i`` (0-based) is decided and its due outcomes are logged, with the
    clock at the slice's end — e.g. to run a loop cycle at noon."""
    _check(world, runtime, telemetry, clock)
    w0 = sum(world.timings.values())
    visits = world.visits()
    n_dec = 0
    delivered = 0
    rejected: list[tuple[str, str]] = []
    t_decide = 0.0
    t_tel = 0.0
    for i, (end_ns, part) in enumerate(visits.split(slices)):
        _advance(clock, end_ns)
        if len(part):
            t0 = time.perf_counter()
            batch = runtime.decide_batch(part.contexts, decision_ids=part.decision_ids, timestamps_ns=part.timestamps_ns)
            t_decide += time.perf_counter() - t0
            n_dec += len(batch)
            world.observe(part, batch)
        t0 = time.perf_counter()
        k, bad = deliver(telemetry, world.due(end_ns))
        delivered += k
        rejected.extend(bad)
        telemetry.flush()
        t_tel += time.perf_counter() - t0
        if after_slice is not None:
            after_slice(i, end_ns)
    return DayRun(
        day=visits.day, visits=len(visits), decisions=n_dec, outcomes_delivered=delivered, outcomes_rejected=rejected,
        world_seconds=sum(world.timings.values()) - w0, decide_seconds=t_decide, telemetry_seconds=t_tel,
        measure=world.measure(visits.day),
    )


def run_days(
    world: PhishingWorld, runtime: Any, telemetry: Any, clock: ManualClock, days: int, *, slices: int = 24,
    on_day: Callable[[DayRun], None] | None = None,
) -> list[DayRun]:
    """Run ``days`` days in a row (:func:`run_day`); ``on_day`` is called after each."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise SpecError(f"run_days 'days' must be an integer ≥ 0. Got {days!r} instead.")
    out = []
    for _ in range(days):
        run = run_day(world, runtime, telemetry, clock, slices=slices)
        out.append(run)
        if on_day is not None:
            on_day(run)
    return out


def deliver_until(world: PhishingWorld, telemetry: Any, clock: ManualClock, until_ns: int, *,
                  step_ns: int = 3600 * 10**9) -> int:
    """Let simulated time pass without page loads up to ``until_ns``, delivering outcomes as they
    come due (window by window of ``step_ns``) — e.g. to let label windows close. Returns how many
    were logged."""
    if isinstance(until_ns, bool) or not isinstance(until_ns, int):
        raise SpecError(f"deliver_until 'until_ns' must be an integer (ns). Got {until_ns!r} instead.")
    if getattr(telemetry, "clock", None) != clock.now_ns:
        raise SpecError("deliver_until 'telemetry' must stamp records in simulated time: Telemetry(..., clock=clock.now_ns).")
    n = 0
    t = clock.now_ns()
    while t < until_ns:
        t = min(until_ns, t + step_ns)
        _advance(clock, t)
        k, _ = deliver(telemetry, world.due(t))
        n += k
        telemetry.flush()
    return n

"""Drive the feed world through a real runtime: one day decided in one batch, its clicks logged.

:func:`run_feed_day` draws day ``d``'s sessions, decides them through ``runtime.decide_batch``
(the runtime's telemetry logs the slates) with decision ids from ``DecisionIds(seed)`` and the
sessions' own times, draws the clicks of what was shown, logs each as a ``click`` outcome of its
decision and slot's item (``telemetry.log_outcome(..., candidate=item_id)``), flushes, and returns
a :class:`FeedDay`: the counts to reconcile with telemetry and datasets, and the true value of
what was shown. Telemetry stamps records with its own clock: set it (a ``ManualClock``) where the
day's records should be ingested before calling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from closedloop.world.feed import FeedWorld
from closedloop.world.feed_sessions import Sessions

__all__ = ["FeedDay", "run_feed_day"]


@dataclass(frozen=True)
class FeedDay:
    """One day through :func:`run_feed_day`. ``true_value``: expected genuine clicks per session of
    the slates shown; ``farm_clicks`` (truth) the farm's share of ``clicks``."""

    day: int
    sessions: int
    decisions: int
    shown: int
    clicks: int
    farm_clicks: int
    genuine_clicks: int
    true_value: float
    world_seconds: float
    decide_seconds: float
    log_seconds: float
    sessions_record: Sessions


def run_feed_day(world: FeedWorld, runtime: Any, telemetry: Any, d: int, seed: int) -> FeedDay:
    """Decide day ``d`` of ``world`` through ``runtime`` and log its clicks to ``telemetry`` (module doc)."""
    from closedloop.runtime.ids import DecisionIds

    t0 = time.perf_counter()
    sessions = world.day(d)
    requests, candidates = sessions.requests(), sessions.candidates()
    t1 = time.perf_counter()
    ids = DecisionIds(seed).next_ids(sessions.n, world.day_start_ns(d)).to_pylist()
    batch = runtime.decide_batch(requests, candidates=candidates, decision_ids=ids, timestamps_ns=sessions.timestamps_ns)
    t2 = time.perf_counter()
    value = world.true_value(sessions, batch)
    clicks = world.feedback(sessions, batch, seed)
    t3 = time.perf_counter()
    for s, item, ev in zip(clicks.session.tolist(), clicks.item_ids(), clicks.event_ns.tolist(), strict=True):
        telemetry.log_outcome(ids[s], kind="click", event_ns=ev, source="app", candidate=item)
    telemetry.flush()
    t4 = time.perf_counter()
    farm = int(clicks.farm.sum())
    return FeedDay(
        day=d, sessions=sessions.n, decisions=len(batch), shown=int(batch.rank_offsets[-1]) if len(batch) else 0,
        clicks=len(clicks), farm_clicks=farm, genuine_clicks=len(clicks) - farm, true_value=value,
        world_seconds=(t1 - t0) + (t3 - t2), decide_seconds=t2 - t1, log_seconds=t4 - t3, sessions_record=sessions,
    )

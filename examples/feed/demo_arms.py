"""The feed demo's arms, one simulated day at a time: what each policy shows and what the world makes of it.

Every arm owns a :class:`~closedloop.world.feed.FeedWorld` of the same seed (forked after the shared
days), so the arms draw the same users, times and click noise (common random numbers: the day's
feedback is drawn with the same seed in every arm) while each world's item counters (``item_ctr``,
the popular pool) follow what that arm showed. A day's row is the world's ground truth of what the
arm showed: ``true_value`` (expected genuine clicks per session of the slates shown — the figure the
demo compares), the clicks drawn, and per-session sums for a pooled interval.

* :func:`static_day` — a bundle that never changes (the heuristic, the frozen model) decided through a
  greedy :class:`~closedloop.Runtime` without telemetry: they learn nothing, so they log nothing.
* :func:`loop_day` — the closed loop's runtime with its telemetry: the slates are logged by the
  runtime, each click as a ``click`` outcome of its decision and item. ``shift=True`` is the
  bad-candidate episode: that day every click is logged on the item one slot further down (the last
  slot's click is lost) — a broken reward join the safety net must stop.
* :class:`VWArm` — Vowpal Wabbit's contextual bandit (:class:`examples.feed.vw.VWPolicy`) decides a
  day's sessions with what it knew at the day's start, then learns each session's first-slot reward
  from the day's feedback, in session order: the same daily cadence as the loop's cycle.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from closedloop.runtime.ids import DecisionIds
from closedloop.world.feed import Clicks, FeedWorld
from closedloop.world.feed_sessions import Sessions

from .vw import VWPolicy

__all__ = ["VWArm", "day_row", "loop_day", "static_day"]


def day_row(world: FeedWorld, sessions: Sessions, slates: Any, clicks: Clicks, seconds: float) -> dict[str, Any]:
    """The world's measurements of one arm's day (module doc)."""
    per = world.expected_clicks(sessions, slates)
    farm = int(clicks.farm.sum())
    return {"day": sessions.day, "sessions": int(sessions.n), "genuine_sessions": int((~sessions.farm).sum()),
            "true_value": float(per.mean()) if sessions.n else 0.0, "value_sum": float(per.sum()),
            "value_sq_sum": float((per * per).sum()), "clicks": len(clicks), "farm_clicks": farm,
            "genuine_clicks": len(clicks) - farm, "seconds": seconds}


def _decide(runtime: Any, world: FeedWorld, sessions: Sessions, seed: int) -> tuple[Any, list[str]]:
    ids = DecisionIds(seed).next_ids(sessions.n, world.day_start_ns(sessions.day)).to_pylist()
    batch = runtime.decide_batch(sessions.requests(), candidates=sessions.candidates(), decision_ids=ids,
                                 timestamps_ns=sessions.timestamps_ns)
    return batch, ids


def static_day(world: FeedWorld, runtime: Any, d: int, seed: int) -> dict[str, Any]:
    """Day ``d`` of ``world`` decided by ``runtime`` (no telemetry), its feedback drawn with ``seed``."""
    t0 = time.perf_counter()
    sessions = world.day(d)
    batch, _ = _decide(runtime, world, sessions, seed)
    clicks = world.feedback(sessions, batch, seed)
    return day_row(world, sessions, batch, clicks, time.perf_counter() - t0)


def loop_day(world: FeedWorld, runtime: Any, telemetry: Any, d: int, seed: int, *, shift: bool = False) -> tuple[dict[str, Any], Sessions]:
    """Day ``d`` decided by the loop's ``runtime``, its clicks logged to ``telemetry`` (module doc);
    returns the day's row and its sessions (kept for measuring the loop's evaluations)."""
    t0 = time.perf_counter()
    sessions = world.day(d)
    batch, ids = _decide(runtime, world, sessions, seed)
    clicks = world.feedback(sessions, batch, seed)
    items: list[str | None] = list(clicks.item_ids())
    if shift:  # the logged item is the one shown a slot further down; the last slot's click is lost
        offsets = np.asarray(batch.rank_offsets, dtype=np.int64)
        ranked = np.asarray(batch.ranked, dtype=np.int64)
        start = offsets[clicks.session]
        below = start + clicks.slot  # slot is 1-based: the next slot's index in `ranked`
        ok = below < offsets[clicks.session + 1]
        pos = np.where(ok, ranked[np.minimum(below, len(ranked) - 1)], 0)
        shifted = sessions.item_ids(sessions.cand[clicks.session, pos])
        items = [x if keep else None for x, keep in zip(shifted, ok.tolist(), strict=True)]
    for s, item, ev in zip(clicks.session.tolist(), items, clicks.event_ns.tolist(), strict=True):
        if item is not None:
            telemetry.log_outcome(ids[s], kind="click", event_ns=ev, source="app", candidate=item)
    telemetry.flush()
    return day_row(world, sessions, batch, clicks, time.perf_counter() - t0), sessions


def _contexts(sessions: Sessions) -> list[dict[str, Any]]:
    """Each session as a request mapping with its ``candidates`` (what VW's featurizer reads)."""
    contexts: list[dict[str, Any]] = sessions.requests().to_pylist()
    for c in contexts:
        c["candidates"] = []
    for row in sessions.candidates().to_pylist():
        contexts[row.pop("request")]["candidates"].append(row)
    return contexts


class VWArm:
    """Vowpal Wabbit deciding a day at a time and learning from the day's first-slot clicks (module doc)."""

    def __init__(self, system: Any, k: int, seed: int) -> None:
        self.policy = VWPolicy(system, k=k, seed=seed)
        self.k = k
        self.seconds = {"featurize": 0.0, "decide": 0.0, "learn": 0.0}

    def day(self, world: FeedWorld, d: int, seed: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        sessions = world.day(d)
        t1 = time.perf_counter()
        vw_sessions = self.policy.sessions_of(sessions.requests(), sessions.candidates())
        t2 = time.perf_counter()
        pos = np.full((sessions.n, min(self.k, int(sessions.counts.max()) if sessions.n else self.k)), -1, dtype=np.int64)
        decisions = []
        for i, s in enumerate(vw_sessions):
            dec = self.policy.decide(s)
            index = {x: j for j, x in enumerate(s.ids)}
            row = [index[x] for x in dec.ranking][: pos.shape[1]]
            pos[i, : len(row)] = row
            decisions.append(dec)
        t3 = time.perf_counter()
        clicks = world.feedback(sessions, pos, seed)
        first = np.zeros(sessions.n)
        first[clicks.session[clicks.slot == 1]] = 1.0
        for dec, r in zip(decisions, first.tolist(), strict=True):
            self.policy.learn(dec, r)
        t4 = time.perf_counter()
        self.seconds["featurize"] += t2 - t1
        self.seconds["decide"] += t3 - t2
        self.seconds["learn"] += t4 - t3
        return day_row(world, sessions, pos, clicks, t4 - t0)

    def close(self) -> None:
        self.policy.close()

"""The feed demo's truth of an evaluation (examples/feed/demo_measure.py) decides only the days that
hold held-out sessions: a day without any adds exactly nothing, so the sums are the same bits as
deciding every day of the window."""

from __future__ import annotations

import numpy as np
from examples.feed.demo_measure import held_out_sums

from closedloop import Runtime
from closedloop.experience.exploration import SquareCB
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig


def test_days_without_held_out_sessions_are_not_decided_and_change_nothing():
    w = FeedWorld(FeedConfig.load(overrides={"world": {"sessions_per_day": 400}, "users": {"count": 300}}), seed=3)
    system = w.system(k=5, explore=SquareCB(50.0))
    cand, prod = Runtime(system, w.heuristic_bundle(system)), Runtime(w.system(k=5), w.heuristic_bundle(w.system(k=5)))
    window = [w.day(d) for d in range(3)]
    last = window[-1].timestamps_ns
    held = [np.zeros(window[0].n, dtype=bool), np.zeros(window[1].n, dtype=bool), last >= np.median(last)]
    skipped, decided = held_out_sums(w, window, held, cand, prod)
    every, all_days = held_out_sums(w, window, held, cand, prod, every_day=True)
    assert (decided, all_days) == (1, 3)
    assert skipped == every  # the same floats, bit for bit (== on floats), and the same counts
    a, sa, b, sb, n = skipped
    assert n == int(held[-1].sum()) > 100 and sa > 0 and sb > 0 and a > 0 and b > 0 and a != b  # exploring vs greedy
    held[0][:10] = True  # a day with held-out sessions is decided
    assert held_out_sums(w, window, held, cand, prod)[1] == 2

"""The bandit world: seeded, its clicks follow its declared truth, and its truth never reaches telemetry."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, Runtime
from closedloop.errors import SpecError
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.bandit import BanditWorld

T0 = 1_700_000_000 * 10**9


def test_the_same_seed_gives_the_same_world_and_requests():
    a, b = BanditWorld(seed=4), BanditWorld(seed=4)
    assert np.array_equal(a.affinity, b.affinity) and a.contexts(20, seed=2) == b.contexts(20, seed=2)
    assert a.contexts(20, seed=2) != a.contexts(20, seed=3) and not np.array_equal(a.affinity, BanditWorld(seed=5).affinity)


def test_clicks_follow_the_truth_and_the_truth_stays_in_the_world(tmp_path):
    world = BanditWorld(seed=1, n_candidates=6)
    system = world.system(k=2, explore=Softmax(0.2))
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(tmp_path), system=system, clock=clock.now_ns)
    ctxs = world.contexts(3000, seed=1)
    decided = world.log(Runtime(system, Bundle.build(system, world.heuristic()), telemetry=tel, clock=clock), ctxs, tel,
                        t0_ns=T0, seed=1)
    tel.close()
    store = TelemetryStore(tmp_path)
    store.compact()
    clicks = sum(pq.read_metadata(f).num_rows for f in store.outcome_files())
    expected = world.expected_clicks(ctxs, [d.ranking for d in decided]).sum()
    assert abs(clicks - expected) < 4 * np.sqrt(expected)  # the clicks drawn are the truth's
    text = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"affinity" not in text and b"click_probability" not in text


def test_a_greedy_policy_on_the_truth_beats_the_heuristic():
    world = BanditWorld(seed=2)
    greedy = world.system(k=1)
    ctxs = world.contexts(500, seed=3)
    best = np.mean([world.click_probability(c).max() for c in ctxs])
    heuristic = world.true_value(greedy, Bundle.build(greedy, world.heuristic()), ctxs)
    assert heuristic < best - 0.05


def test_bad_parameters_are_refused_naming_them():
    with pytest.raises(SpecError, match=r"'n_candidates' parameter of BanditWorld must be an int ≥ 2. Got 1"):
        BanditWorld(n_candidates=1)
    with pytest.raises(SpecError, match=r"'features' parameter of BanditWorld.system must be 'full' or 'misspecified'"):
        BanditWorld().system(features="all")
    with pytest.raises(SpecError, match=r"'k' parameter of BanditWorld.system must be an int in \[1, 8\]. Got 9"):
        BanditWorld().system(k=9)

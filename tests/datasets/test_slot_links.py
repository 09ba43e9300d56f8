"""The column-by-column link and reward (closedloop.datasets.slot_links) against the outcome-by-outcome
loop it replaces for link="decision": the same rewards for the same keys, the same counts by why —
on seeded random telemetry with every rule hit (unknown ids, decisions out of range, no candidate,
not in the slate, before the decision, after the window, other kinds, ties in event time)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from closedloop.datasets.slot_links import can_link_columns, linked_rewards
from closedloop.datasets.slots import link_outcomes
from closedloop.system.rewards import Reward, RewardPolicy

WINDOW = timedelta(seconds=100)
W_NS = 100 * 10**9


def _telemetry(seed: int, n_dec: int = 300, n_out: int = 3000) -> tuple[pa.Table, pa.Table, pa.Array]:
    rng = np.random.default_rng(seed)
    ids = [f"d{i}" for i in range(n_dec)]
    ts = rng.integers(0, 10**12, n_dec)
    slates = [[f"c{j}" for j in rng.choice(12, size=int(rng.integers(0, 6)), replace=False)] or None for _ in range(n_dec)]
    every = pa.table({"decision_id": ids, "timestamp_ns": pa.array(ts, pa.int64()), "slate": pa.array(slates, pa.list_(pa.string()))})
    dec = every.take(pa.array(np.flatnonzero(rng.random(n_dec) < 0.8)))  # some decisions known but not selected
    pick = rng.integers(0, n_dec + 20, n_out)  # some ids unknown
    did = [None if rng.random() < 0.03 else (ids[p] if p < n_dec else f"x{p}") for p in pick]
    base = np.array([ts[p] if p < n_dec else 0 for p in pick])
    event = base + rng.integers(-10, 120, n_out) * 10**9 // 10 * 10  # before, inside, after the window; many ties
    cid = [None if rng.random() < 0.03 else f"c{int(rng.integers(0, 12))}" for _ in range(n_out)]
    kinds = rng.choice(["click", "purchase", "dwell", "share"], n_out, p=[0.6, 0.1, 0.2, 0.1])
    value = np.where(rng.random(n_out) < 0.2, 0.0, np.round(rng.normal(3, 2, n_out), 2))
    outs = pa.table({"decision_id": pa.array(did, pa.string()), "unit": pa.array(["u"] * n_out), "candidate_id": pa.array(cid, pa.string()),
                     "kind": pa.array(kinds.tolist()), "value": pa.array(value), "event_ns": pa.array(event, pa.int64())})
    return dec, outs, every["decision_id"]


def _by_loop(outs: pa.Table, dec: pa.Table, policy: RewardPolicy, known: pa.Array) -> tuple[dict, Counter]:
    counts: Counter[str] = Counter()
    got = link_outcomes(outs, dec, policy, W_NS, set(known.to_pylist()), None, counts)
    at = {d: i for i, d in enumerate(dec["decision_id"].to_pylist())}
    ts = dec["timestamp_ns"].to_pylist()
    return {(at[d], c): policy.reward(v, ts[at[d]]) for (d, c), v in got.items()}, counts


@pytest.mark.parametrize("per", ["slot", "decision"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_columns_give_what_the_loop_gives(per, seed):
    policy = RewardPolicy([Reward("purchase", "first"), Reward("click"), Reward("dwell", "max", scale=0.5)],
                          window=WINDOW, per=per)
    dec, outs, known = _telemetry(seed)
    want, want_counts = _by_loop(outs, dec, policy, known)
    counts: Counter[str] = Counter()
    got = linked_rewards(outs, dec, policy, W_NS, known, counts)
    cands = got.candidate.to_pylist()
    have = {(int(r), c): float(x) for r, c, x in zip(got.row, cands, got.reward, strict=True)}
    assert counts == want_counts and sum(counts.values()) == outs.num_rows
    assert list(have) == list(want)  # the same keys, in the order of their first outcome
    assert all(np.float64(have[k]).tobytes() == np.float64(want[k]).tobytes() for k in want)  # bit for bit
    assert {"outcomes_unknown_id", "outcomes_not_selected", "outcomes_before_decision", "outcomes_after_window",
            "outcomes_other_kind", "outcomes_matched"} <= set(counts)
    if per == "slot":
        assert {"outcomes_no_candidate", "outcomes_not_in_slate"} <= set(counts)


def test_no_decision_counts_every_outcome_and_rewards_nothing():
    policy = RewardPolicy([Reward("click")], window=WINDOW)
    dec, outs, known = _telemetry(3)
    counts: Counter[str] = Counter()
    got = linked_rewards(outs, dec.slice(0, 0), policy, W_NS, known, counts)
    assert got.row.size == 0 and sum(counts.values()) == outs.num_rows and "outcomes_matched" not in counts


def test_what_the_columns_leave_to_the_loop():
    assert can_link_columns(RewardPolicy([Reward("click"), Reward("dwell", "max")], window=WINDOW), choice=False)
    assert not can_link_columns(RewardPolicy([Reward("purchase", "sum")], window=WINDOW), choice=False)  # a float sum's order
    assert not can_link_columns(RewardPolicy([Reward("click")], window=WINDOW, link="unit_time"), choice=False)
    assert not can_link_columns(RewardPolicy([Reward("click")], window=WINDOW), choice=True)

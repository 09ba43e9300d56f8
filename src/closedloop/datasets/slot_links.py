"""Outcomes linked to their slots and turned into rewards, column by column: :func:`linked_rewards`.

:func:`closedloop.datasets.slots.link_outcomes` links outcome by outcome and the reward policy
then combines each slot's outcomes (``RewardPolicy.reward``) — general, and a Python loop over
every outcome and every rewarded slot (a week of a 20,000-session feed: ~120,000 of each, seconds
per cycle). The common case — outcomes that carry their decision id (``link="decision"``), rewards
that ``any`` / ``first`` / ``max`` combine — is computed here with Arrow and numpy, with the same
result: each outcome classified by the same rules in the same order (the first that applies
counts it), each slot's reward from its matched outcomes (the first :class:`~closedloop.system.
rewards.Reward` in order with an outcome decides; ``first`` by event time, ties in outcome order).
``sum`` is left to the loop: a float sum's last bit depends on the order of the additions, and
Python's ``sum`` is what the dataset's reward has always been.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["LinkedRewards", "can_link_columns", "linked_rewards"]


@dataclass(frozen=True)
class LinkedRewards:
    """The rewarded keys: each one's decision row (of the decisions linked against), candidate id
    (None per decision) and reward."""

    row: np.ndarray
    candidate: pa.Array
    reward: np.ndarray


def can_link_columns(policy: Any, choice: bool) -> bool:
    """Whether :func:`linked_rewards` computes what the loop would (module doc)."""
    return policy.link == "decision" and not choice and all(r.aggregate in ("any", "first", "max") for r in policy.rewards)


def _one(col: Any) -> Any:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _classify(outs: pa.Table, dec: pa.Table, policy: Any, window: int, known: pa.Array,
              counts: Counter[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each outcome's decision row and whether it is matched; the others counted by why (the rules
    of :func:`~closedloop.datasets.slots.link_outcomes`, in its order)."""
    per_slot = policy.per == "slot"
    did, cid = _one(outs["decision_id"]), _one(outs["candidate_id"])
    n = len(did)
    row = np.asarray(pc.fill_null(pc.index_in(did, value_set=_one(dec["decision_id"])), -1).to_numpy(zero_copy_only=False),
                     dtype=np.int64)
    known_mask = np.asarray(pc.fill_null(pc.is_in(did, value_set=known), False).to_numpy(zero_copy_only=False), dtype=bool)
    open_ = np.ones(n, dtype=bool)
    why: list[tuple[str, np.ndarray]] = []

    def take(name: str, mask: np.ndarray) -> None:
        nonlocal open_
        got = open_ & mask
        why.append((name, got))
        open_ = open_ & ~got

    take("unknown_id", ~known_mask)
    take("not_selected", row < 0)
    if per_slot:
        take("no_candidate", np.asarray(cid.is_null().to_numpy(zero_copy_only=False), dtype=bool))
        take("not_in_slate", ~_in_slate(dec, row, cid, open_))
    dts = np.asarray(dec["timestamp_ns"].to_numpy(zero_copy_only=False), dtype=np.int64)
    ts = dts[np.maximum(row, 0)] if dts.size else np.zeros(n, dtype=np.int64)  # (no decision: every outcome counted above)
    ev = np.asarray(outs["event_ns"].to_numpy(zero_copy_only=False), dtype=np.int64)
    take("before_decision", ev < ts)
    take("after_window", ev > ts + window)
    take("other_kind", ~np.asarray(pc.is_in(_one(outs["kind"]), value_set=pa.array(list(policy.kinds), pa.string()))
                                   .fill_null(False).to_numpy(zero_copy_only=False), dtype=bool))
    for name, mask in why:
        if mask.any():
            counts[f"outcomes_{name}"] += int(mask.sum())
    if open_.any():
        counts["outcomes_matched"] += int(open_.sum())
    return row, open_


def _in_slate(dec: pa.Table, row: np.ndarray, cid: pa.Array, todo: np.ndarray) -> np.ndarray:
    """Whether each outcome's candidate is in its decision's slate (checked where ``todo``; True elsewhere)."""
    out = np.ones(row.size, dtype=bool)
    idx = np.flatnonzero(todo)
    if not idx.size:
        return out
    slate = _one(dec["slate"])
    lens = np.asarray(pc.list_value_length(slate).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    shown = pa.table({"d": pa.array(np.repeat(np.arange(len(slate), dtype=np.int64), lens)),
                      "c": pc.list_flatten(slate).cast(pa.string())})
    asked = pa.table({"d": pa.array(row[idx]), "c": cid.take(pa.array(idx)).cast(pa.string()), "i": pa.array(idx)})
    hit = asked.join(shown, ["d", "c"], join_type="left semi", use_threads=False)
    out[idx] = False
    out[np.asarray(hit["i"].to_numpy(), dtype=np.int64)] = True
    return out


def linked_rewards(outs: pa.Table, dec: pa.Table, policy: Any, window: int, known: pa.Array,
                   counts: Counter[str]) -> LinkedRewards:
    """The rewards of the slots (per decision: the decisions) that outcomes were linked to, and the
    outcomes counted by why (module doc). ``known``: every decision id ingested by the cut-off."""
    row, matched = _classify(outs, dec, policy, window, known, counts)
    idx = np.flatnonzero(matched)
    per_slot = policy.per == "slot"
    cand = _one(outs["candidate_id"]).take(pa.array(idx)).cast(pa.string()) if per_slot else pa.nulls(idx.size, pa.string())
    if not idx.size:
        return LinkedRewards(np.zeros(0, np.int64), cand, np.zeros(0))
    # the keys (decision row, candidate) in order of their first outcome, as the loop's dict keeps them
    code = np.asarray(pc.fill_null(pc.dictionary_encode(cand).indices, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    key = row[idx] * (int(code.max()) + 1) + code
    uniq, first, group = np.unique(key, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    kinds = _one(outs["kind"]).take(pa.array(idx)).to_numpy(zero_copy_only=False)
    value = np.asarray(_one(outs["value"]).take(pa.array(idx)).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    event = np.asarray(outs["event_ns"].to_numpy(zero_copy_only=False), dtype=np.int64)[idx]
    reward = np.full(uniq.size, np.nan)
    done = np.zeros(uniq.size, dtype=bool)
    for r in policy.rewards:
        mine = np.flatnonzero((kinds == r.kind) & ~done[group])
        if not mine.size:
            continue
        g = group[mine]
        got = _combine(r.aggregate, g, value[mine], event[mine], mine, uniq.size)
        has = np.zeros(uniq.size, dtype=bool)
        has[g] = True
        reward[has] = r.scale * got[has]
        done |= has
    order = np.argsort(first, kind="stable")
    return LinkedRewards(row[idx][first][order], cand.take(pa.array(first[order])), reward[order])


def _combine(aggregate: str, g: np.ndarray, v: np.ndarray, ev: np.ndarray, pos: np.ndarray, m: int) -> np.ndarray:
    """Each group's combined value of its outcomes (``any``: 1.0 when one is nonzero; ``max``;
    ``first``: the earliest event's, ties by outcome order ``pos``)."""
    if aggregate == "any":
        out = np.zeros(m)
        out[g[v != 0]] = 1.0
        return out
    if aggregate == "max":
        out = np.full(m, -np.inf)
        np.maximum.at(out, g, v)
        return out
    o = np.lexsort((pos, ev, g))  # by group, then event time, then the order given
    out = np.zeros(m)
    gs = g[o]
    lead = np.ones(gs.size, dtype=bool)
    lead[1:] = gs[1:] != gs[:-1]
    out[gs[lead]] = v[o][lead]
    return out

"""How well a bundle's scores rank what was rewarded, decision by decision, with intervals by unit.

The rows are the logged slots, flat and grouped by decision (``offsets``). A bundle's order of a
decision's candidates is the runtime's greedy order — descending score, NaN last — with ties
broken by a seeded random key drawn once per evaluation (the same for every bundle), not by the
logged slot: a bundle that cannot tell two candidates apart does not inherit the logging policy's
order. A candidate is *rewarded* when its reward is > 0; its gain is its reward (negative rewards
count 0).

Per decision (:func:`per_decision`), NaN where the figure is undefined:

- ``ndcg_at_k``: DCG@k / ideal DCG@k with gain / log2(rank + 1); ``mrr``: 1 / rank of the first
  rewarded candidate; ``hit_rate_at_1``: is it ranked first — decisions whose order matters
  (:func:`ranked_decisions`: ≥ 2 candidates, one rewarded, not every gain equal);
- ``hit_rate_at_k``: a rewarded candidate in the top k — decisions with more than k candidates
  and one rewarded (with ≤ k candidates it is always 1);
- ``auc``: the probability that a rewarded candidate outscores an unrewarded one (ties one half)
  — decisions with both;
- ``logged_reward``: the decision's total reward under the logging policy (always defined).

Which decisions define a figure depends on the rewards only, so two bundles are always measured
on the same decisions. A figure is the mean over the decisions that define it; its interval is
the 95 % percentile interval of a Poisson bootstrap by unit (:func:`unit_bootstrap`; every
resample gives each unit a Poisson(1) weight — the same draws for every bundle and difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.evaluation.intervals import _percentile, _poisson1

__all__ = ["DECISION_METRICS", "per_decision", "ranked_decisions", "tie_keys", "unit_bootstrap", "unit_sums"]

#: The per-decision figures, in the report's order.
DECISION_METRICS = ("ndcg_at_k", "mrr", "hit_rate_at_1", "hit_rate_at_k", "auc", "logged_reward")

#: Resample × unit cells drawn at once (memory bound of the bootstrap).
_CHUNK_CELLS = 4_000_000


def tie_keys(n: int, seed: int) -> np.ndarray:
    """One uniform key per row from ``numpy.random.default_rng(seed)``: the tie-break of every bundle's order."""
    return np.random.default_rng(seed).random(n)


def _groups(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))


def _ranks(keys: tuple[np.ndarray, ...], group: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each row's 0-based rank within its decision under ``np.lexsort(keys + (group,))``."""
    perm = np.lexsort((*keys, group))
    rank = np.empty(group.size, dtype=np.int64)
    rank[perm] = np.arange(group.size, dtype=np.int64) - offsets[group[perm]]
    return rank


def _dcg(gain: np.ndarray, rank: np.ndarray, group: np.ndarray, n_dec: int, k: int) -> np.ndarray:
    disc = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return np.bincount(group, weights=gain * disc, minlength=n_dec)


def _decision_auc(scores: np.ndarray, rewarded: np.ndarray, group: np.ndarray, offsets: np.ndarray,
                  n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """Each decision's AUC (rewarded vs not; ties one half) from the mid-ranks of its scores (NaN lowest)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    perm = np.lexsort((s, group))
    gs, ss = group[perm], s[perm]
    new = np.r_[True, (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])]
    run = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], gs.size]
    mid = (starts + ends - 1) / 2.0 - offsets[gs[starts]]  # 0-based mid-rank of each run within its decision
    midrank = np.empty(group.size)
    midrank[perm] = mid[run] + 1.0
    rank_sum = np.bincount(group, weights=np.where(rewarded, midrank, 0.0), minlength=n_pos.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def ranked_decisions(reward: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each decision: does its order matter — ≥ 2 candidates, one rewarded, and not every gain
    equal (when every candidate got the same reward, as with ``per="decision"`` rewards, any order
    scores 1)?"""
    gain = np.maximum(reward, 0.0)
    starts = offsets[:-1]
    if starts.size == 0:
        return np.zeros(0, dtype=bool)
    hi, lo = np.maximum.reduceat(gain, starts), np.minimum.reduceat(gain, starts)
    return (np.diff(offsets) >= 2) & (hi > 0) & (hi > lo)


def per_decision(scores: np.ndarray, reward: np.ndarray, offsets: np.ndarray, k: int, tie: np.ndarray) -> np.ndarray:
    """The figures of :data:`DECISION_METRICS` for every decision → an array (decisions × figures),
    NaN where a figure is undefined (module doc)."""
    group = _groups(offsets)
    n_dec = offsets.size - 1
    nan = np.isnan(scores)
    rank = _ranks((tie, np.where(nan, 0.0, -scores), nan), group, offsets)
    gain = np.maximum(reward, 0.0)
    rewarded = reward > 0
    size = np.diff(offsets)
    n_pos = np.bincount(group, weights=rewarded, minlength=n_dec)
    n_neg = size - n_pos
    ideal = _dcg(gain, _ranks((-gain,), group, offsets), group, n_dec, k)
    ranked = ranked_decisions(reward, offsets)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(ranked, _dcg(gain, rank, group, n_dec, k) / np.where(ranked, ideal, 1.0), np.nan)
    first = np.full(n_dec, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, group[rewarded], rank[rewarded])
    mrr = np.where(ranked, 1.0 / (np.minimum(first, 2**62) + 1.0), np.nan)
    hit1 = np.where(ranked, (first == 0).astype(np.float64), np.nan)
    hitk = np.where((size > k) & (n_pos > 0), (first < k).astype(np.float64), np.nan)
    auc = _decision_auc(scores, rewarded, group, offsets, n_pos, n_neg)
    logged = np.bincount(group, weights=reward, minlength=n_dec)
    return np.column_stack([ndcg, mrr, hit1, hitk, auc, logged])


def unit_sums(values: np.ndarray, units: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit and figure: the sum of the defined values and how many there are → (sums, counts),
    each (units × figures)."""
    ok = ~np.isnan(values)
    v = np.where(ok, values, 0.0)
    sums = np.stack([np.bincount(units, weights=v[:, j], minlength=n_units) for j in range(values.shape[1])], axis=1)
    counts = np.stack([np.bincount(units, weights=ok[:, j], minlength=n_units) for j in range(values.shape[1])], axis=1)
    return sums, counts


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def unit_bootstrap(parts: Sequence[tuple[np.ndarray, np.ndarray]], n_units: int, resamples: int,
                   seed: int) -> list[list[list[float] | None]]:
    """For each ``(sums, counts)`` of :func:`unit_sums` (or of differences), each figure's 95 %
    percentile interval of the mean over defined values under a Poisson bootstrap by unit: the same
    draws (from ``default_rng(seed)``) for every part. None where fewer than half the resamples
    define it, or with ``resamples`` 0."""
    if resamples <= 0:
        return [[None] * p[0].shape[1] for p in parts]
    rng = np.random.default_rng(seed)
    stats = [np.empty((resamples, p[0].shape[1])) for p in parts]
    step = max(1, _CHUNK_CELLS // max(1, n_units))
    for r0 in range(0, resamples, step):
        r1 = min(resamples, r0 + step)
        W = _poisson1(rng, (r1 - r0) * n_units).reshape(r1 - r0, n_units)
        for st, (sums, counts) in zip(stats, parts, strict=True):
            st[r0:r1] = _ratio(W @ sums, W @ counts)
    return [[_percentile(st[:, j]) for j in range(st.shape[1])] for st in stats]


def means(sums: np.ndarray, counts: np.ndarray) -> list[float | None]:
    """Each figure's mean over its defined values (None when none is)."""
    s, c = sums.sum(axis=0), counts.sum(axis=0)
    return [float(a / b) if b > 0 and math.isfinite(a / b) else None for a, b in zip(s.tolist(), c.tolist(), strict=True)]


def figures(sums: np.ndarray, counts: np.ndarray, cis: Sequence[Any], names: Sequence[str],
            count_name: str = "n_decisions") -> dict[str, dict[str, Any]]:
    """``{name: {"value", "ci", count_name}}`` of each figure."""
    vals = means(sums, counts)
    n = counts.sum(axis=0)
    return {nm: {"value": v, "ci": ci if v is not None else None, count_name: int(c)}
            for nm, v, ci, c in zip(names, vals, cis, n.tolist(), strict=True)}

"""The catalogue's logger distributions (the support check's reference), computed slot by slot over
all decisions at once, are the per-decision loop over slot_distributions they replaced: every
exploration, decisions that logged no scores (the kill switch), a non-finite score, slots with a
gap, decisions without a set or without a shown slot."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from examples.feed import system as feed_module

from closedloop import System
from closedloop.evaluation.ranking_sets import _logged, _logger
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB
from closedloop.experience.ranking_policy import slot_distributions


class Rows(NamedTuple):  # the two fields of SlotRows the logger reads
    offsets: np.ndarray
    position: np.ndarray


def reference(system: Any, rows: Any, offsets: np.ndarray, column: np.ndarray, logged: np.ndarray) -> np.ndarray:
    """The per-decision loop (the reference)."""
    counts, k = np.diff(offsets), int(system.experience.k)
    L = np.zeros((counts.size, max(1, int(counts.max())), k))
    pos = np.asarray(rows.position, dtype=np.int64) - 1
    for d in range(counts.size):
        lo, hi, n = int(offsets[d]), int(offsets[d + 1]), int(counts[d])
        r = range(int(rows.offsets[d]), int(rows.offsets[d + 1]))
        shown = sorted((int(pos[i]), int(column[i])) for i in r if column[i] >= 0 and 0 <= pos[i] < k)
        scores = logged[lo:hi]
        if n == 0 or not shown:
            continue
        if np.isnan(scores).all():
            for j, c in shown:
                L[d, c, j] = 1.0
            continue
        picks = [c for _, c in shown]
        for i, ((j, _), dist) in enumerate(zip(shown, slot_distributions(scores.tolist(), picks, system.experience.explore),
                                               strict=True)):
            L[d, :n, j] = dist
            L[d, picks[:i], j] = 1.0
    return L


def _system(explore: Any, k: int = 3) -> System:
    f = feed_module
    return System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                  features=f.features, experience=Ranking("score", k=k, explore=explore))


def _case(seed: int, k: int = 3, D: int = 300) -> tuple[Rows, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 9, size=D)
    counts[:3] = (0, 1, 2)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    logged = np.round(rng.normal(size=int(counts.sum())), 1)  # ties
    kill = rng.random(D) < 0.1
    logged[np.repeat(kill, counts)] = np.nan
    row_pos, row_col, n_rows = [], [], []
    for d in range(D):
        m = min(k, int(counts[d]))
        cols = rng.permutation(int(counts[d]))[:m]
        slots = np.arange(1, m + 1)
        if m and rng.random() < 0.2:  # a slot without a row (its reward was None), or a row not in the set
            keep = rng.random(m) < 0.6
            cols, slots = cols[keep], slots[keep]
        col = cols.astype(np.int64)
        if col.size and rng.random() < 0.1:
            col[0] = -1
        order = rng.permutation(col.size)  # rows in any order
        row_col += col[order].tolist()
        row_pos += slots[order].tolist()
        n_rows.append(col.size)
    rows = Rows(np.concatenate([[0], np.cumsum(n_rows)]).astype(np.int64), np.asarray(row_pos, dtype=np.int64))
    return rows, offsets, np.asarray(row_col, dtype=np.int64), logged


@pytest.mark.parametrize("explore", [Softmax(0.5), SquareCB(30.0), EpsilonGreedy(0.2, low=-0.5, high=2.0), None],
                         ids=["softmax", "squarecb", "epsilon", "greedy"])
def test_logger_is_the_per_decision_loop(explore):
    system = _system(explore)
    for seed in range(3):
        rows, offsets, column, logged = _case(seed)
        if seed == 2:  # non-finite scores: one +inf, one −inf, one NaN among finite ones
            logged[offsets[10]], logged[offsets[20]], logged[offsets[30]] = np.inf, -np.inf, np.nan
        got = _logger(system, _logged(system, rows, offsets, column, logged))
        want = reference(system, rows, offsets, column, logged)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert got.any()


def test_a_decision_showing_a_candidate_twice_is_refused_as_the_loop_refuses_it():
    from closedloop.errors import SpecError

    system = _system(Softmax(0.5))
    rows = Rows(np.array([0, 2, 4]), np.array([1, 2, 1, 2]))
    offsets, logged = np.array([0, 3, 6]), np.array([0.1, 0.5, 0.2, 0.3, 0.1, 0.9])
    column = np.array([0, 1, 2, 2])  # the second decision shows its candidate 2 at both slots
    with pytest.raises(SpecError, match="distinct candidate indices"):
        reference(system, rows, offsets, column, logged)
    with pytest.raises(SpecError, match="distinct candidate indices"):
        _logger(system, _logged(system, rows, offsets, column, logged))

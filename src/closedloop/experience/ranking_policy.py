"""How a ranking is chosen: the one function both ranking decision paths call (:func:`rank`),
its greedy, softmax (Plackett–Luce), ε-greedy and SquareCB (inverse-gap weighting) forms, and :func:`slot_probabilities`, which
recomputes any policy's slot probabilities for a logged ranking (the rules are in
:mod:`closedloop.experience.ranking`'s docstring)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate

import numpy as np

from closedloop.errors import SpecError
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB, choose, uniform_salts
from closedloop.experience.ranking_kernel import Policy, rank_one

__all__ = ["rank", "slot_distributions", "slot_probabilities"]

_INF = math.inf


def _greedy_order(scores: Sequence[float], m: int, plain: bool) -> list[int]:
    """The ``m`` best indices by score, highest first; ties keep input order; NaN last.
    ``plain``: the scores hold no NaN (a plain stable descending sort is then right)."""
    n = len(scores)
    if plain:  # reverse=True keeps equal scores in input order (the sort stays stable)
        return sorted(range(n), key=scores.__getitem__, reverse=True)[:m]
    keys = [(1, 0.0) if s != s else (0, -s) for s in scores]
    return sorted(range(n), key=keys.__getitem__)[:m]


def _plain(scores: Sequence[float]) -> bool:
    """True when no score is NaN (their sum is a number; NaN, or inf − inf, says look closer)."""
    total = sum(scores)
    return total == total


def _pick(probs: list[float], u: float) -> int:
    """:func:`~closedloop.experience.exploration.choose` (the same index), with the cumulative sum in C:
    adding a zero leaves a sum unchanged, so the first cumulative sum above ``u`` is choose's."""
    cum = list(accumulate(probs))
    i = bisect_right(cum, u)
    return i if i < len(cum) else choose(probs, u)


def _softmax(policy: Softmax, scores: list[float]) -> list[float]:
    """``policy.probs`` over the remaining scores, with the softmax's limits at ±inf."""
    if _INF in scores:  # +inf dominates every number: the +inf candidates share the slot
        c = scores.count(_INF)
        return [1.0 / c if s == _INF else 0.0 for s in scores]
    if -_INF in scores and not any(s == s and s != -_INF for s in scores):
        c = scores.count(-_INF)  # only -inf and NaN remain: the -inf ones share the slot
        return [1.0 / c if s == -_INF else 0.0 for s in scores]
    return policy.probs(scores)


def _slot_probs(
    policy: Softmax | EpsilonGreedy | SquareCB, scores: Sequence[float], remaining: list[int], best: int
) -> list[float]:
    """The probability of each remaining candidate (in ``remaining`` order) for the next slot."""
    if isinstance(policy, Softmax):
        return _softmax(policy, [scores[i] for i in remaining])
    if isinstance(policy, SquareCB):
        return policy.probs([scores[i] for i in remaining], remaining.index(best))
    return policy.probs(remaining.index(best), len(remaining), scores[best])


def rank(
    scores: Sequence[float] | np.ndarray,
    k: int,
    explore: Policy,
    decision_id: str,
    draws: Sequence[float] | None = None,
) -> tuple[list[int], list[float], float, list[int]]:
    """Choose ``min(k, N)`` of the ``N`` candidates: (input indices in slot order, slot
    propensities, their product, the slots whose item is not the best remaining one).

    Slot j draws with ``uniform(decision_id, salt=j)``; ``draws`` may hold those numbers
    already (``draws[j]``). The draw is :func:`~closedloop.experience.ranking_kernel.rank_rows` on one
    row — the kernel the batch path runs on all its requests at once — so both paths give the same
    rankings and propensities bit for bit; :func:`slot_probabilities` recomputes the same
    propensities from a ranking, candidate by candidate."""
    s = np.asarray(scores, dtype=np.float64)
    m = min(k, s.shape[0])
    u = [] if explore is None else uniform_salts(decision_id, m) if draws is None else [draws[j] for j in range(m)]
    return rank_one(s, k, explore, u)


def _walk(scores: Sequence[float], ranking: Sequence[int]) -> Iterator[tuple[int, int, list[int]]]:
    """For each slot of ``ranking`` (input indices): (its pick, the best remaining candidate, the
    remaining candidates before the pick) — the walk both replays take; a repeated or out-of-range
    index is refused."""
    n = len(scores)
    order = _greedy_order(scores, min(len(ranking), n), _plain(scores))
    remaining = list(range(n))
    taken = [False] * n
    g = 0
    for pick in ranking:
        if not 0 <= pick < n or taken[pick]:
            raise SpecError(f"A ranking must list distinct candidate indices in [0, {n}). Got {list(ranking)!r} instead.")
        while taken[order[g]]:
            g += 1
        yield pick, order[g], remaining
        remaining.remove(pick)
        taken[pick] = True


def _greedy_slot(explore: Policy, scores: Sequence[float], best: int) -> bool:
    """Whether the slot goes to the best remaining candidate with probability 1."""
    return explore is None or (isinstance(explore, EpsilonGreedy) and not explore.in_band(scores[best]))


def slot_distributions(scores: Sequence[float], ranking: Sequence[int], explore: Policy) -> list[list[float]]:
    """Under ``explore``, each slot's whole distribution over the ``N`` candidates given the earlier
    slots of ``ranking`` (input indices; 0 for the candidates they took) — what
    :func:`slot_probabilities` reads at each slot's pick."""
    out: list[list[float]] = []
    for _, best, remaining in _walk(scores, ranking):
        dist = [0.0] * len(scores)
        if _greedy_slot(explore, scores, best):
            dist[best] = 1.0
        else:
            for i, p in zip(remaining, _slot_probs(explore, scores, remaining, best), strict=True):  # type: ignore[arg-type]
                dist[i] = p
        out.append(dist)
    return out


def slot_probabilities(
    scores: Sequence[float], ranking: Sequence[int], explore: Policy
) -> list[float]:
    """The probability, under ``explore``, that each slot gets the candidate ``ranking`` put
    there (input indices), given the earlier slots — for replaying a logged decision or
    evaluating another policy on it. Greedy (``None``): 1 for the greedy choice, else 0."""
    out: list[float] = []
    for pick, best, remaining in _walk(scores, ranking):
        if _greedy_slot(explore, scores, best):
            out.append(1.0 if pick == best else 0.0)
        else:
            out.append(_slot_probs(explore, scores, remaining, best)[remaining.index(pick)])  # type: ignore[arg-type]
    return out


"""How a ranking is chosen: the one function both ranking decision paths call (:func:`rank`),
its greedy, softmax (Plackett–Luce) and ε-greedy forms, and :func:`slot_probabilities`, which
recomputes any policy's slot probabilities for a logged ranking (the rules are in
:mod:`closedloop.experience.ranking`'s docstring)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from functools import reduce
from itertools import accumulate, repeat
from math import exp as mexp
from operator import add, truediv

from closedloop.errors import SpecError
from closedloop.experience.exploration import EpsilonGreedy, Softmax, choose, uniform

__all__ = ["rank", "slot_probabilities"]

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
    policy: Softmax | EpsilonGreedy, scores: Sequence[float], remaining: list[int], best: int
) -> list[float]:
    """The probability of each remaining candidate (in ``remaining`` order) for the next slot."""
    if isinstance(policy, Softmax):
        return _softmax(policy, [scores[i] for i in remaining])
    return policy.probs(remaining.index(best), len(remaining), scores[best])


def rank(
    scores: Sequence[float],
    k: int,
    explore: Softmax | EpsilonGreedy | None,
    decision_id: str,
    draws: Sequence[float] | None = None,
) -> tuple[list[int], list[float], float, list[int]]:
    """Choose ``min(k, N)`` of the ``N`` candidates: (input indices in slot order, slot
    propensities, their product, the slots whose item is not the best remaining one).

    Slot j draws with ``uniform(decision_id, salt=j)``; ``draws`` may hold those numbers
    already (``draws[j]``, e.g. a row of :func:`~closedloop.experience.exploration.uniform_batch` columns,
    which equal them bitwise). Both decision paths call this function on a request's scores
    (see the module doc); :func:`slot_probabilities` recomputes the same propensities from a
    ranking, the plain way."""
    n = len(scores)
    m = k if k < n else n
    plain = _plain(scores)
    # Slot j's best remaining candidate is among the first j + 1 of the greedy order.
    order = _greedy_order(scores, m, plain)
    if explore is None or m == 0:
        return order[:m], [1.0] * m, 1.0, []
    if isinstance(explore, Softmax):
        return _rank_softmax(scores, m, order, plain, explore, decision_id, draws)
    return _rank_epsilon(scores, m, order, explore, decision_id, draws)


def _rank_softmax(
    scores: Sequence[float], m: int, order: list[int], plain: bool, explore: Softmax, decision_id: str,
    draws: Sequence[float] | None,
) -> tuple[list[int], list[float], float, list[int]]:
    """:func:`rank` under :class:`~closedloop.experience.exploration.Softmax`: Plackett–Luce
    without replacement, slot by slot, from the softmax over the remaining candidates' scores
    (``order`` is the greedy order of the first ``m``; ``plain``: no score is NaN)."""
    n = len(scores)
    remaining = list(range(n))
    taken = [False] * n
    g = 0
    ranking: list[int] = []
    slots: list[float] = []
    explored: list[int] = []
    p = 1.0
    # policy.probs over the remaining scores, without recomputing what did not change: the
    # max of the remaining scores is the best remaining one's, and while it stays the same
    # value every remaining exp((s - max) / t) stays the same float.
    t = explore.temperature
    top = math.nan  # the max the cached weights were computed with
    w: list[float] = []  # weights of the remaining candidates, in ``remaining`` order
    for j in range(m):
        while taken[order[g]]:
            g += 1
        best = order[g]
        sb = scores[best]
        if sb != sb or sb == _INF or sb == -_INF:  # only NaN left, or a limit: the plain way
            probs = _softmax(explore, [scores[i] for i in remaining])
            top = math.nan
        else:
            if sb != top:
                top = sb
                # (s - max) / t ≤ 0 for every remaining s: math.exp cannot overflow here
                w = (
                    [mexp((scores[i] - sb) / t) for i in remaining]
                    if plain
                    else [mexp((scores[i] - sb) / t) if scores[i] == scores[i] else 0.0 for i in remaining]
                )
            total = reduce(add, w, 0.0)  # left to right, as policy.probs adds
            probs = list(map(truediv, w, repeat(total, len(w))))
        pos = _pick(probs, uniform(decision_id, j) if draws is None else draws[j])
        q = probs[pos]
        pick = remaining.pop(pos)
        if top == top:
            w.pop(pos)
        taken[pick] = True
        ranking.append(pick)
        slots.append(q)
        p = p * q
        if pick != best:
            explored.append(j)
    return ranking, slots, p, explored


def _rank_epsilon(
    scores: Sequence[float], m: int, order: list[int], explore: EpsilonGreedy, decision_id: str,
    draws: Sequence[float] | None,
) -> tuple[list[int], list[float], float, list[int]]:
    """:func:`rank` under :class:`~closedloop.experience.exploration.EpsilonGreedy`: per slot, when
    the best remaining score is in the band, ε-greedy among the remaining candidates; outside
    it the best remaining one, with propensity 1 (``order`` is the greedy order of the first ``m``)."""
    n = len(scores)
    remaining = list(range(n))
    taken = [False] * n
    g = 0
    ranking: list[int] = []
    slots: list[float] = []
    explored: list[int] = []
    p = 1.0
    for j in range(m):
        while taken[order[g]]:
            g += 1
        best = order[g]
        bpos = remaining.index(best)
        if not explore.in_band(scores[best]):
            pos, q = bpos, 1.0  # what choose() returns from the one-hot vector policy.probs gives
        else:
            probs = explore.probs(bpos, len(remaining), scores[best])
            pos = choose(probs, uniform(decision_id, j) if draws is None else draws[j])
            q = probs[pos]
        pick = remaining.pop(pos)
        taken[pick] = True
        ranking.append(pick)
        slots.append(q)
        p = p * q
        if pick != best:
            explored.append(j)
    return ranking, slots, p, explored


def slot_probabilities(
    scores: Sequence[float], ranking: Sequence[int], explore: Softmax | EpsilonGreedy | None
) -> list[float]:
    """The probability, under ``explore``, that each slot gets the candidate ``ranking`` put
    there (input indices), given the earlier slots — for replaying a logged decision or
    evaluating another policy on it. Greedy (``None``): 1 for the greedy choice, else 0."""
    n = len(scores)
    order = _greedy_order(scores, min(len(ranking), n), _plain(scores))
    remaining = list(range(n))
    taken = [False] * n
    g = 0
    out: list[float] = []
    for pick in ranking:
        if not 0 <= pick < n or taken[pick]:
            raise SpecError(f"A ranking must list distinct candidate indices in [0, {n}). Got {list(ranking)!r} instead.")
        while taken[order[g]]:
            g += 1
        best = order[g]
        if explore is None:
            out.append(1.0 if pick == best else 0.0)
        elif not isinstance(explore, Softmax) and not explore.in_band(scores[best]):
            out.append(1.0 if pick == best else 0.0)
        else:
            probs = _slot_probs(explore, scores, remaining, best)
            out.append(probs[remaining.index(pick)])
        remaining.remove(pick)
        taken[pick] = True
    return out


"""Exploration: choosing an action at random, reproducibly, with its exact propensity.

Every random choice is a function of the decision id: :func:`uniform` maps an id to a number in
[0, 1), the same in the single-decision and the batch path, so any decision can be replayed and
its propensity recomputed. The probabilities come from a policy:

* :class:`Softmax` — p(a) ∝ exp(score(a) / temperature) over the candidate actions;
* :class:`EpsilonGreedy` — inside a declared score band, with probability ``epsilon`` a uniform
  choice among the actions, else the greedy action; outside the band, the greedy action;
* :class:`SquareCB` — inverse-gap weighting: each action's probability falls with how far its
  score is below the best one's (scores read as predicted rewards).

:func:`choose` draws one action from a probability vector with a uniform number (cumulative sum,
left to right — ``np.cumsum`` adds in the same order), so the batch and the single path pick the
same action. Probabilities are always in (0, 1] for the actions that can be shown and sum to 1.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.base.numeric import _string_buffers, compiled, exp, exp_array
from closedloop.errors import SpecError

__all__ = ["EpsilonGreedy", "Softmax", "SquareCB", "choose", "choose_batch", "uniform", "uniform_batch", "uniform_salts"]

_M64 = (1 << 64) - 1
_TWO53 = float(1 << 53)
_C_UNIFORM = compiled("uniform_hex")
_SALTS: dict[int, np.ndarray] = {}  # slot count → the salts' 64-bit mixes, for uniform_salts


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _is_hex32(s: str) -> bool:
    return len(s) == 32 and s.isascii() and all(c in "0123456789abcdef" for c in s)


def uniform(decision_id: str, salt: int = 0) -> float:
    """A number in [0, 1) determined by ``decision_id`` (and ``salt`` for a second draw).

    Ids made by :class:`~closedloop.runtime.ids.DecisionIds` (32 hex digits) are mixed with splitmix64;
    any other id through BLAKE2b. 53 bits of the result make the float.
    """
    if _is_hex32(decision_id):
        v = int(decision_id, 16)
        x = _splitmix64(((v >> 64) ^ v ^ (salt * 0xD1B54A32D192ED03)) & _M64)
    else:
        h = hashlib.blake2b(f"{salt}:{decision_id}".encode("utf-8", "surrogatepass"), digest_size=8)
        x = int.from_bytes(h.digest(), "little")
    return (x >> 11) / _TWO53


def uniform_salts(decision_id: str, m: int) -> list[float]:
    """``[uniform(decision_id, j) for j in range(m)]``, the id read once (a ranking's slot draws)."""
    if _C_UNIFORM is not None and m > 0:
        salts = _SALTS.get(m)
        if salts is None:
            salts = _SALTS[m] = np.array([(j * 0xD1B54A32D192ED03) & _M64 for j in range(m)], dtype=np.uint64)
        out = np.empty(m, dtype=np.float64)
        if _C_UNIFORM([decision_id], salts, out):
            return out.tolist()
    if not _is_hex32(decision_id):
        return [uniform(decision_id, j) for j in range(m)]
    v = int(decision_id, 16)
    v = (v >> 64) ^ v
    return [(_splitmix64((v ^ (j * 0xD1B54A32D192ED03)) & _M64) >> 11) / _TWO53 for j in range(m)]


def _uniform_compiled(decision_ids: Any, salt: int) -> np.ndarray | None:
    """:func:`uniform_batch` in the compiled loop (the same splitmix64 of the same 64-bit words);
    None when an id is not 32 hex digits (the caller's general path then runs)."""
    if isinstance(decision_ids, pa.Array):
        if not pa.types.is_string(decision_ids.type) and not pa.types.is_large_string(decision_ids.type):
            return None
        ids: Any = _string_buffers(decision_ids)
        n = len(decision_ids)
    else:
        ids = decision_ids if isinstance(decision_ids, list) else list(decision_ids)
        n = len(ids)
    out = np.empty(n, dtype=np.float64)
    salts = np.array([(salt * 0xD1B54A32D192ED03) & _M64], dtype=np.uint64)
    return out if n == 0 or _C_UNIFORM(ids, salts, out) else None


def uniform_batch(decision_ids: Any, salt: int = 0) -> np.ndarray:
    """:func:`uniform` for many ids (an Arrow string array or a sequence of str)."""
    if _C_UNIFORM is not None:
        got = _uniform_compiled(decision_ids, salt)
        if got is not None:
            return got
    return _uniform_numpy(decision_ids, salt)


def _uniform_numpy(decision_ids: Any, salt: int) -> np.ndarray:
    """:func:`uniform_batch` without the compiled extension (or for ids other than 32 hex digits)."""
    arr = decision_ids if isinstance(decision_ids, pa.Array) else pa.array(list(decision_ids), type=pa.string())
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    bufs = arr.cast(pa.string()).buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    hexlike = arr.null_count == 0 and bool(np.all(np.diff(offsets) == 32))
    if hexlike:
        raw = np.frombuffer(bufs[2], dtype=np.uint8, count=32 * n, offset=int(offsets[0])).reshape(n, 32)
        digit = np.full(256, 255, dtype=np.uint8)
        digit[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
        digit[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
        nib = digit[raw]
        hexlike = bool((nib != 255).all())
    if not hexlike:
        return np.fromiter((uniform(s, salt) for s in arr.to_pylist()), dtype=np.float64, count=n)
    nib64 = nib.astype(np.uint64)
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    hi = np.bitwise_or.reduce(nib64[:, :16] << shifts, axis=1)
    lo = np.bitwise_or.reduce(nib64[:, 16:] << shifts, axis=1)
    x = hi ^ lo ^ np.uint64((salt * 0xD1B54A32D192ED03) & _M64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / _TWO53


def choose(probs: Sequence[float], u: float) -> int:
    """The index drawn by ``u`` from ``probs`` (cumulative, left to right)."""
    c = 0.0
    last = 0
    for i, p in enumerate(probs):
        if p > 0.0:
            last = i
            c = c + p
            if u < c:
                return i
    return last  # u beyond the rounded total: the last action that can be shown


def choose_batch(P: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`choose` for each row of ``P`` (n × k) with its ``u``."""
    C = np.cumsum(np.where(P > 0.0, P, 0.0), axis=1)
    hit = (u[:, None] < C) & (P > 0.0)
    first = np.argmax(hit, axis=1)
    none = ~hit.any(axis=1)
    if none.any():
        k = P.shape[1]
        last = k - 1 - np.argmax((P[:, ::-1] > 0.0), axis=1)
        first = np.where(none, last, first)
    return first.astype(np.int64)


class Softmax:
    """p(a) ∝ exp(score(a) / temperature); ``temperature`` > 0 (small: greedy, large: uniform)."""

    def __init__(self, temperature: float = 1.0) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise SpecError(f"The 'temperature' of Softmax must be a number > 0. Got {temperature!r} instead.")
        self.temperature = float(temperature)

    def describe(self) -> dict[str, Any]:
        return {"kind": "softmax", "temperature": self.temperature}

    def probs(self, scores: Sequence[float]) -> list[float]:
        """Probabilities for one row of scores (NaN scores get probability 0)."""
        finite = [s for s in scores if s == s]
        if not finite:
            k = len(scores)
            return [1.0 / k] * k
        m = max(finite)
        t = self.temperature
        e = [exp((s - m) / t) if s == s else 0.0 for s in scores]
        total = 0.0
        for v in e:
            total = total + v
        return [v / total for v in e]

    def probs_batch(self, S: np.ndarray) -> np.ndarray:
        nan = np.isnan(S)
        all_nan = nan.all(axis=1)
        m = np.max(np.where(nan, -np.inf, S), axis=1)
        m = np.where(all_nan, 0.0, m)
        with np.errstate(invalid="ignore"):
            z = (S - m[:, None]) / self.temperature
        e = exp_array(z.reshape(-1)).reshape(S.shape)
        e = np.where(nan, 0.0, e)
        total = np.zeros(S.shape[0], dtype=np.float64)
        for j in range(S.shape[1]):  # left to right, as the single path adds
            total = total + e[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            P = e / total[:, None]
        k = S.shape[1]
        return np.where(all_nan[:, None], 1.0 / k, P)


class EpsilonGreedy:
    """Inside the score band [``low``, ``high``], explore with probability ``epsilon``: a uniform
    choice among all actions (the greedy one included), or among the actions named in ``to``.
    Outside it, always the greedy action.

    ``to`` narrows what exploration may show: e.g. ``EpsilonGreedy(0.05, low=0.9, to=("warn",))``
    shows a warning instead of a block on 5% of block-band decisions, so the loop sees outcomes
    for pages it would otherwise block (a block hides the outcome) without ever allowing them.
    """

    def __init__(
        self, epsilon: float, low: float = -math.inf, high: float = math.inf, *, to: Sequence[str] | None = None
    ) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0.0 < epsilon <= 1.0:
            raise SpecError(f"The 'epsilon' of EpsilonGreedy must be a number in (0, 1]. Got {epsilon!r} instead.")
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
                raise SpecError(f"The '{name}' bound of EpsilonGreedy must be a number. Got {v!r} instead.")
        if not low <= high:
            raise SpecError(f"EpsilonGreedy needs low ≤ high. Got low={low!r}, high={high!r} instead.")
        if to is not None:
            if isinstance(to, str) or not all(isinstance(a, str) and a for a in to) or not to or len(set(to)) != len(to):
                raise SpecError(
                    f"The 'to' of EpsilonGreedy must be a non-empty sequence of distinct action names. Got {to!r} instead."
                )
            to = tuple(to)
        self.epsilon = float(epsilon)
        self.low = float(low)
        self.high = float(high)
        self.to: tuple[str, ...] | None = to

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "epsilon", "epsilon": self.epsilon, "low": self.low, "high": self.high}
        if self.to is not None:
            out["to"] = list(self.to)
        return out

    def mask(self, actions: Sequence[str]) -> tuple[bool, ...] | None:
        """Which of ``actions`` exploration may show (None: all of them); checks ``to``."""
        if self.to is None:
            return None
        unknown = [a for a in self.to if a not in actions]
        if unknown:
            raise SpecError(f"The 'to' of EpsilonGreedy must name declared actions {list(actions)}. Got {unknown!r} instead.")
        return tuple(a in self.to for a in actions)

    def in_band(self, score: float) -> bool:
        return self.low <= score <= self.high

    def probs(self, greedy: int, k: int, score: float, mask: Sequence[bool] | None = None) -> list[float]:
        if not self.in_band(score):
            out = [0.0] * k
            out[greedy] = 1.0
            return out
        if mask is None:
            share = self.epsilon / k
            out = [share] * k
            out[greedy] = (1.0 - self.epsilon) + share
            return out
        share = self.epsilon / sum(mask)
        out = [share if m else 0.0 for m in mask]
        out[greedy] += 1.0 - self.epsilon
        return out

    def probs_batch(self, greedy: np.ndarray, k: int, score: np.ndarray, mask: Sequence[bool] | None = None) -> np.ndarray:
        n = greedy.shape[0]
        band = (score >= self.low) & (score <= self.high)
        rows = np.arange(n)
        if mask is None:
            share = self.epsilon / k
            P = np.where(band[:, None], share, 0.0) * np.ones((n, k))
            top = np.where(band, (1.0 - self.epsilon) + share, 1.0)
            P[rows, greedy] = top
            return P
        m = np.asarray(mask, dtype=bool)
        share = self.epsilon / int(m.sum())
        P = np.where(band[:, None] & m[None, :], share, 0.0)
        # The same additions as the single path, in the same order: share (if allowed) + (1 - ε).
        P[rows, greedy] = np.where(band, P[rows, greedy] + (1.0 - self.epsilon), 1.0)
        return P


class SquareCB:
    """Inverse-gap weighting (SquareCB: Foster & Rakhlin 2020, the policy of Vowpal Wabbit's
    ``--squarecb``). Over ``r`` actions whose scores ŝ are predicted rewards (higher = better), with
    ``b`` the greedy action, every other action ``a`` gets ``p(a) = 1 / (r + gamma · (ŝ_b − ŝ_a))``
    and the greedy one the rest, ``p(b) = 1 − Σ_{a≠b} p(a)`` (≥ 1/r). ``gamma`` > 0: larger is
    greedier (an action ``Δ`` below the best is shown about ``1 / (gamma · Δ)`` of the time).

    The rules: a NaN score is read as −inf, and the gap between two equal scores is 0 (so at ±inf
    too). Hence an action scored NaN or −inf gets probability 0 while any action scores above −inf;
    when the best is +inf, only the +inf actions can be shown (each tied one 1/r, the greedy one the
    rest); when nothing scores above −inf, every action gets 1/r (the greedy one the rest).
    ``r`` counts every action offered (a ranking's slot: the remaining candidates), NaN ones included.
    Ties: the greedy action is the caller's (the first of the highest scores); a tied one gets 1/r.
    The sum for ``p(b)`` adds left to right in both forms, so :meth:`probs` and
    :meth:`probs_batch` give the same numbers bit for bit.
    """

    def __init__(self, gamma: float) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not (math.isfinite(gamma) and gamma > 0):
            raise SpecError(f"The 'gamma' parameter of SquareCB must be a finite number > 0. Got {gamma!r} instead.")
        self.gamma = float(gamma)

    def describe(self) -> dict[str, Any]:
        return {"kind": "squarecb", "gamma": self.gamma}

    def __repr__(self) -> str:
        return f"SquareCB(gamma={self.gamma!r})"

    def probs(self, scores: Sequence[float], best: int) -> list[float]:
        """Probabilities for one row of scores; ``best``: the index of the highest one (the greedy action)."""
        r = len(scores)
        g = self.gamma
        sb = scores[best]
        if sb != sb:
            sb = -math.inf
        out: list[float] = []
        total = 0.0
        for i, s in enumerate(scores):
            if i == best:
                out.append(0.0)
                continue
            if s != s:
                s = -math.inf
            p = 1.0 / (r + g * (0.0 if s == sb else sb - s))
            total = total + p
            out.append(p)
        out[best] = 1.0 - total
        return out

    def probs_batch(self, S: np.ndarray, best: np.ndarray) -> np.ndarray:
        """:meth:`probs` for each row of ``S`` (n × r) with its greedy index ``best``."""
        n, r = S.shape
        rows = np.arange(n)
        key = np.where(np.isnan(S), -np.inf, S)
        kb = key[rows, best][:, None]
        with np.errstate(invalid="ignore"):
            gap = np.where(key == kb, 0.0, kb - key)
        P = 1.0 / (r + self.gamma * gap)
        P[rows, best] = 0.0
        total = np.zeros(n, dtype=np.float64)
        for j in range(r):  # left to right, as the single path adds
            total = total + P[:, j]
        P[rows, best] = 1.0 - total
        return P

"""The estimators' inputs, checked once at the edge: shapes, types, ranges, distributions.

Every refusal is an :class:`~closedloop.errors.EvaluationError` naming the parameter, the rule and
the value (with the round and position where it was found). The arrays come back as float64 /
int64 views of what was passed (a copy only when the dtype differs), so the estimators that follow
are a few array passes each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from closedloop.errors import EvaluationError

# ``numpy.allclose``'s defaults, which obp 0.5.7 uses to accept ``action_dist``: a distribution at
# one round and position may sum to 1 ± (1e-8 + 1e-5).
SUM_RTOL = 1e-5
SUM_ATOL = 1e-8

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


class At(float):
    """A refused number that says where it was found (``0.93 at round 17, position 0``); it
    equals the number, so ``error.value`` still compares as one."""

    where: str

    def __new__(cls, value: float, where: str) -> At:
        obj = super().__new__(cls, value)
        obj.where = where
        return obj

    def __repr__(self) -> str:
        return f"{float(self):.6g} {self.where}"


def _first(bad: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(bad)[0])


def as_1d(value: Any, name: str, where: str, n: int | None = None) -> NDArray[Any]:
    """``value`` as a 1-d array, as long as ``n`` rows when given."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise EvaluationError(name, "a 1-d array (one entry per round)", f"an array of shape {arr.shape}", where)
    if n is not None and arr.shape[0] != n:
        raise EvaluationError(name, f"as long as the other arrays ({n} rounds)", f"{arr.shape[0]} rounds", where)
    if arr.shape[0] == 0:
        raise EvaluationError(name, "non-empty (at least one round)", "0 rounds", where)
    return arr


def floats_1d(value: Any, name: str, where: str, n: int | None = None) -> Floats:
    """A finite float64 1-d array."""
    arr = as_1d(value, name, where, n)
    if arr.dtype.kind not in "fiub":
        raise EvaluationError(name, "an array of numbers", f"an array of dtype {arr.dtype}", where)
    out = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(out)
    if not finite.all():
        i = _first(~finite)
        raise EvaluationError(name, "finite at every round", At(out[i], f"at round {i}"), where)
    return out


def ints_1d(value: Any, name: str, where: str, n: int | None, high: int, what: str) -> Ints:
    """An int64 1-d array with every entry in [0, high)."""
    arr = as_1d(value, name, where, n)
    if arr.dtype.kind not in "iu":
        raise EvaluationError(name, f"an array of integers ({what})", f"an array of dtype {arr.dtype}", where)
    out = np.asarray(arr, dtype=np.int64)
    bad = (out < 0) | (out >= high)
    if bad.any():
        i = _first(bad)
        raise EvaluationError(name, f"an integer in [0, {high}) ({what}) at every round", At(out[i], f"at round {i}"), where)
    return out


def pscore_1d(value: Any, name: str, where: str, n: int | None) -> Floats:
    """A logging probability per round: finite, in (0, 1]."""
    out = floats_1d(value, name, where, n)
    bad = (out <= 0.0) | (out > 1.0)
    if bad.any():
        i = _first(bad)
        raise EvaluationError(name, "a probability in (0, 1] at every round", At(out[i], f"at round {i}"), where)
    return out


def action_dist_3d(value: Any, where: str, name: str = "action_dist") -> Floats:
    """The target's (n, n_actions, len_list) probabilities as float64: the shape and type. The
    distributions themselves are checked where the estimators read them — every round's
    distribution at its position — by :func:`closedloop.evaluation.ope.blocks.read_at_positions`."""
    arr = np.asarray(value)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise EvaluationError(name, "a non-empty 3-d array (rounds, actions, positions)", f"an array of shape {arr.shape}", where)
    if arr.dtype.kind not in "fiub":
        raise EvaluationError(name, "an array of probabilities", f"an array of dtype {arr.dtype}", where)
    return np.asarray(arr, dtype=np.float64)


def reward_model_3d(value: Any, shape: tuple[int, ...], where: str) -> Floats:
    """A reward model's (n, n_actions, len_list) predictions, of ``action_dist``'s shape. That they
    are finite is checked where they are read — every action at each round's position — by
    :func:`closedloop.evaluation.ope.blocks.read_at_positions`, without another pass over the array."""
    name = "estimated_rewards_by_reg_model"
    arr = np.asarray(value)
    if arr.shape != shape:
        raise EvaluationError(name, f"an array of action_dist's shape {shape}", f"an array of shape {arr.shape}", where)
    if arr.dtype.kind not in "fiub":
        raise EvaluationError(name, "an array of numbers", f"an array of dtype {arr.dtype}", where)
    return np.asarray(arr, dtype=np.float64)


def positions(position: Any, n: int, len_list: int, where: str) -> Ints | None:
    """``position`` checked against ``action_dist``'s positions; None (every round at position 0)
    only when there is one position, as obp requires."""
    if position is None:
        if len_list > 1:
            raise EvaluationError("position", f"given when action_dist has more than one position ({len_list})", None, where)
        return None
    return ints_1d(position, "position", where, n, len_list, "a position of action_dist, 0-based")


def at_position(array: Floats, position: Ints | None) -> Floats:
    """``array[i, :, position[i]]`` for every round: a view when there is one position."""
    if position is None:
        return array[:, :, 0]
    return array[np.arange(array.shape[0]), :, position]

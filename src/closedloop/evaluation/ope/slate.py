"""The slate estimators: one row per (slate, position), a slate's value the sum of its slots' rewards.

Each equals obp 0.5.7's ``estimate_policy_value`` (``obp.ope.estimators_slate``): the sum over rows
of ``r_{i,k} · π_e / π_b`` divided by the number of distinct slates, with the weight the caller
passes per row —

- ``slate_standard_ips`` (``SlateStandardIPS``): the whole slate's probability under each policy,
  the same on every row of a slate;
- ``slate_independent_ips`` (``SlateIndependentIPS``): the probability of the item at its position
  (the marginal), per row;
- ``slate_rips`` (``SlateRewardInteractionIPS``): the probability of the slate's items at positions
  0..k (the cascade), non-increasing along a slate's positions.

The structure obp checks is checked here too, in one sort of the rows by (slate, position): a
position at most once per slate, a slate-level pscore constant within a slate, cascade
probabilities non-increasing. (obp's ``len_list`` is a constructor argument its value does not
use; a slate's positions are read from ``position``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.inputs import At, Floats, Ints, as_1d, floats_1d, pscore_1d


def slate_standard_ips(slate_id: Any, reward: Any, position: Any, pscore: Any, evaluation_policy_pscore: Any) -> float:
    """Standard IPS over slates: Σ r π_e(slate) / π_b(slate) / #slates (obp ``SlateStandardIPS``)."""
    rows = _slate_rows("slate_standard_ips", slate_id, reward, position, pscore, evaluation_policy_pscore, "pscore")
    rows.require_constant(rows.pscore, "pscore")
    rows.require_constant(rows.target, "evaluation_policy_pscore")
    return rows.value()


def slate_independent_ips(slate_id: Any, reward: Any, position: Any, pscore_item_position: Any,
                          evaluation_policy_pscore_item_position: Any) -> float:
    """Independent IPS: Σ r π_e(item at k) / π_b(item at k) / #slates (obp ``SlateIndependentIPS``)."""
    rows = _slate_rows("slate_independent_ips", slate_id, reward, position, pscore_item_position,
                       evaluation_policy_pscore_item_position, "pscore_item_position")
    return rows.value()


def slate_rips(slate_id: Any, reward: Any, position: Any, pscore_cascade: Any, evaluation_policy_pscore_cascade: Any) -> float:
    """Reward-interaction IPS: Σ r π_e(items at 0..k) / π_b(items at 0..k) / #slates (obp ``SlateRewardInteractionIPS``)."""
    rows = _slate_rows("slate_rips", slate_id, reward, position, pscore_cascade, evaluation_policy_pscore_cascade, "pscore_cascade")
    rows.require_non_increasing(rows.pscore, "pscore_cascade")
    rows.require_non_increasing(rows.target, "evaluation_policy_pscore_cascade")
    return rows.value()


@dataclass(frozen=True, slots=True)
class SlateRows:
    """Checked slate rows and their order by (slate, position)."""

    where: str
    slate_id: Ints
    reward: Floats
    position: Ints
    pscore: Floats
    target: Floats
    order: Ints
    same_slate: np.ndarray  # same_slate[j]: sorted rows j and j + 1 belong to one slate

    @property
    def n_slates(self) -> int:
        return int(self.same_slate.size - np.count_nonzero(self.same_slate) + 1)

    def value(self) -> float:
        return float((self.reward * (self.target / self.pscore)).sum() / self.n_slates)

    def require_constant(self, values: Floats, name: str) -> None:
        v = values[self.order]
        bad = self.same_slate & (v[1:] != v[:-1])
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            sid = int(self.slate_id[self.order[j]])
            raise EvaluationError(name, "the same on every row of a slate (the whole slate's probability)",
                                  At(v[j + 1], f"at slate {sid} after {v[j]:.6g}"), self.where)

    def require_non_increasing(self, values: Floats, name: str) -> None:
        v = values[self.order]
        bad = self.same_slate & (v[1:] > v[:-1])
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            sid, k = int(self.slate_id[self.order[j + 1]]), int(self.position[self.order[j + 1]])
            raise EvaluationError(name, "non-increasing along a slate's positions (a cascade probability)",
                                  At(v[j + 1], f"at slate {sid}, position {k}, after {v[j]:.6g}"), self.where)


def _ids(value: Any, name: str, where: str, n: int | None) -> Ints:
    arr = as_1d(value, name, where, n)
    if arr.dtype.kind not in "iu":
        raise EvaluationError(name, "an array of integers", f"an array of dtype {arr.dtype}", where)
    out = np.asarray(arr, dtype=np.int64)
    if out.min() < 0:
        i = int(np.argmin(out))
        raise EvaluationError(name, "a non-negative integer at every row", At(out[i], f"at row {i}"), where)
    return out


def _slate_rows(where: str, slate_id: Any, reward: Any, position: Any, pscore: Any, target: Any, pscore_name: str) -> SlateRows:
    sid = _ids(slate_id, "slate_id", where, None)
    n = int(sid.shape[0])
    r = floats_1d(reward, "reward", where, n)
    pos = _ids(position, "position", where, n)
    p = pscore_1d(pscore, pscore_name, where, n)
    e_name = f"evaluation_policy_{pscore_name}"
    e = floats_1d(target, e_name, where, n)
    bad = (e < 0.0) | (e > 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EvaluationError(e_name, "a probability in [0, 1] at every row", At(e[i], f"at row {i}"), where)
    order = np.lexsort((pos, sid))
    s_sorted, k_sorted = sid[order], pos[order]
    same = s_sorted[1:] == s_sorted[:-1]
    dup = same & (k_sorted[1:] == k_sorted[:-1])
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        raise EvaluationError("position", "at most once per slate", At(k_sorted[j], f"twice in slate {s_sorted[j]}"), where)
    return SlateRows(where, sid, r, pos, p, e, order, same)

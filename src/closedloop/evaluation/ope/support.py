"""The support check: how much of the target's mass falls where the log says nothing.

A log only shows the logging probability of the actions it took. An (action, position) pair is
**supported** when the log holds at least one round where the logger took that action at that
position with ``pscore ≥ support_threshold`` (default 1e-3: one chance in a thousand); a pair never
taken, or only taken with smaller probabilities, has — as far as the log can tell — a logging
probability below the threshold or zero, and no importance weight can recover the target's
value there. ``share`` is the target's mass on unsupported pairs at each round's position,
averaged over rounds; the check passes when ``share ≤ support_tolerance`` (default 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.blocks import Logged
from closedloop.evaluation.ope.inputs import at_position

SUPPORT_THRESHOLD = 1e-3
SUPPORT_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class SupportCheck:
    """``passed`` when at most ``tolerance`` of the target's mass (averaged over rounds) is on
    (action, position) pairs the log does not support; ``detail`` says which, in words."""

    passed: bool
    share: float
    threshold: float
    tolerance: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "share": self.share, "threshold": self.threshold,
                "tolerance": self.tolerance, "detail": self.detail}


def check_share_parameter(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) or not 0.0 <= value <= 1.0:
        raise EvaluationError(name, "a number in [0, 1]", value, where)
    return float(value)


def support_check(data: Logged, threshold: float = SUPPORT_THRESHOLD, tolerance: float = SUPPORT_TOLERANCE) -> SupportCheck:
    """The share of the target's mass on (action, position) pairs the log does not support."""
    _, n_actions, len_list = data.action_dist.shape
    supported = np.zeros((n_actions, len_list), dtype=bool)
    taken = data.pscore >= threshold
    supported[data.action[taken], data.position_or_zeros()[taken]] = True
    unsupported = ~supported
    if not unsupported.any():
        return SupportCheck(True, 0.0, threshold, tolerance,
                            f"every (action, position) pair was taken by the logger with a probability ≥ {threshold:g}")
    pos = data.position_or_zeros()
    pi = at_position(data.action_dist, data.position)
    # the target's mass per (action, position), summed over the rounds at that position
    per_pair = np.stack([pi[pos == k].sum(axis=0) for k in range(len_list)], axis=1) if len_list > 1 else pi.sum(axis=0)[:, None]
    off = per_pair * unsupported
    share = float(off.sum() / data.n)
    passed = share <= tolerance
    a, k = np.unravel_index(int(np.argmax(off)), off.shape)
    detail = (f"{share:.2%} of the target's mass (averaged over rounds) is on the {int(unsupported.sum())} (action, position) "
              f"pairs the logger never took with a probability ≥ {threshold:g}; the most: action {a} at position {k} "
              f"({off[a, k] / data.n:.2%}); tolerance {tolerance:.2%}")
    return SupportCheck(passed, share, threshold, tolerance, detail)

"""The six point estimators of a target policy's value from logged bandit rounds.

Each equals obp 0.5.7's ``estimate_policy_value`` of the estimator it is named after (the same
formula, the same order of operations), computed in a few array passes: the importance weight
``w_i = π_e(a_i | x_i, k_i) / pscore_i`` by fancy indexing of the logged entries, the direct
method's ``Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i)`` at each round's position in one product.

============  ====================================================================  ===================================
function      the value                                                             obp 0.5.7
============  ====================================================================  ===================================
``ips``       mean(w r)                                                              ``InverseProbabilityWeighting``
``snips``     mean(w r / mean(w))                                                    ``SelfNormalizedInverseProbabilityWeighting``
``dm``        mean(q̂(x, π_e))                                                        ``DirectMethod``
``dr``        mean(q̂(x, π_e) + w (r − q̂(x, a)))                                      ``DoublyRobust``
``sndr``      mean(q̂(x, π_e) + w (r − q̂(x, a)) / mean(w))                            ``SelfNormalizedDoublyRobust``
``switch_dr`` mean(q̂(x, π_e) + 1{w ≤ λ} w (r − q̂(x, a)))                             ``SwitchDoublyRobust(lambda_=λ)``
============  ====================================================================  ===================================

None of them needs rewards bounded or non-negative (each is linear in the rewards), so any finite
reward is accepted. SNIPS and SNDR are NaN when every importance weight is 0 (the target puts no
mass on any logged action), as obp's are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.ope.inputs import (
    Floats,
    Logged,
    action_dist_3d,
    at_position,
    at_position_checked,
    logged,
    positions,
    reward_model_3d,
)


def ips(reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None) -> float:
    """Inverse probability weighting: mean(w r) (obp ``InverseProbabilityWeighting()``)."""
    return float(ips_terms(logged("ips", reward, action, pscore, action_dist, position)).mean())


def snips(reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None) -> float:
    """Self-normalized IPW: mean(w r / mean(w)) (obp ``SelfNormalizedInverseProbabilityWeighting()``)."""
    return snips_value(logged("snips", reward, action, pscore, action_dist, position))


def dm(action_dist: Any, estimated_rewards_by_reg_model: Any, position: Any = None) -> float:
    """The direct method: mean over rounds of Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i) (obp ``DirectMethod()``)."""
    dist = action_dist_3d(action_dist, "dm")
    q = reward_model_3d(estimated_rewards_by_reg_model, dist.shape, "dm")
    pos = positions(position, dist.shape[0], dist.shape[2], "dm")
    return float(dm_terms(dist, q, pos, "dm").mean())


def dr(reward: Any, action: Any, pscore: Any, action_dist: Any, estimated_rewards_by_reg_model: Any, position: Any = None) -> float:
    """Doubly robust: mean(q̂(x, π_e) + w (r − q̂(x, a))) (obp ``DoublyRobust()``)."""
    data, q = _with_model("dr", reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position)
    return float(dr_terms(data, q, "dr").mean())


def sndr(reward: Any, action: Any, pscore: Any, action_dist: Any, estimated_rewards_by_reg_model: Any, position: Any = None) -> float:
    """Self-normalized doubly robust: mean(q̂(x, π_e) + w (r − q̂(x, a)) / mean(w)) (obp ``SelfNormalizedDoublyRobust()``)."""
    data, q = _with_model("sndr", reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position)
    return sndr_value(data, q, "sndr")


def switch_dr(reward: Any, action: Any, pscore: Any, action_dist: Any, estimated_rewards_by_reg_model: Any,
              position: Any = None, lambda_: float = np.inf) -> float:
    """Switch-DR: mean(q̂(x, π_e) + 1{w ≤ λ} w (r − q̂(x, a))) (obp ``SwitchDoublyRobust(lambda_=λ)``):
    a round whose importance weight exceeds ``lambda_`` keeps only the model's estimate."""
    lam = check_lambda(lambda_, "switch_dr")
    data, q = _with_model("switch_dr", reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position)
    return float(switch_dr_terms(data, q, lam, "switch_dr").mean())


def check_lambda(lambda_: Any, where: str) -> float:
    """Switch-DR's threshold on the importance weight: a number ≥ 0 (inf keeps every round: DR)."""
    if isinstance(lambda_, bool) or not isinstance(lambda_, int | float | np.integer | np.floating) or math.isnan(lambda_) or lambda_ < 0:
        raise EvaluationError("lambda_", "a number ≥ 0 (np.inf: never switch)", lambda_, where)
    return float(lambda_)


def _with_model(where: str, reward: Any, action: Any, pscore: Any, action_dist: Any, model: Any, position: Any) -> tuple[Logged, Floats]:
    data = logged(where, reward, action, pscore, action_dist, position)
    return data, reward_model_3d(model, data.action_dist.shape, where)


# Per-round terms: the estimators above are their means; ``estimate`` reuses them for intervals.

def ips_terms(data: Logged) -> Floats:
    """w_i r_i per round."""
    return data.reward * data.weights


def snips_value(data: Logged) -> float:
    iw = data.weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((data.reward * iw / iw.mean()).mean())


def dm_terms(action_dist: Floats, q: Floats, position: Any, where: str) -> Floats:
    """Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i) / Σ_a π_e(a | x_i, k_i) per round: obp's
    ``np.average(q̂, weights=π_e, axis=1)`` at each round's position (the sums in einsum's order:
    equal to obp's to ~1e-15 relative)."""
    pi = at_position_checked(action_dist, position, where)
    return np.einsum("ia,ia->i", at_position(q, position), pi) / np.einsum("ia->i", pi)


def factual_model(data: Logged, q: Floats) -> Floats:
    """q̂(x_i, a_i, k_i): the model's prediction for the logged action at the logged position."""
    rows = np.arange(data.n)
    return q[rows, data.action, 0] if data.position is None else q[rows, data.action, data.position]


def dr_terms(data: Logged, q: Floats, where: str) -> Floats:
    out = dm_terms(data.action_dist, q, data.position, where)
    out += data.weights * (data.reward - factual_model(data, q))
    return out


def sndr_value(data: Logged, q: Floats, where: str) -> float:
    iw = data.weights
    out = dm_terms(data.action_dist, q, data.position, where)
    with np.errstate(invalid="ignore", divide="ignore"):
        out += iw * (data.reward - factual_model(data, q)) / iw.mean()
    return float(out.mean())


def switch_dr_terms(data: Logged, q: Floats, lambda_: float, where: str) -> Floats:
    iw = data.weights
    out = dm_terms(data.action_dist, q, data.position, where)
    out += np.where(iw <= lambda_, iw, 0.0) * (data.reward - factual_model(data, q))
    return out

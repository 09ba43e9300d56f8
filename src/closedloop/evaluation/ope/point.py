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
from closedloop.evaluation.ope.blocks import Logged, direct_terms, logged
from closedloop.evaluation.ope.inputs import Floats, action_dist_3d, positions, reward_model_3d


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
    return float(direct_terms(dist, pos, "dm", q)[0].mean())


def dr(reward: Any, action: Any, pscore: Any, action_dist: Any, estimated_rewards_by_reg_model: Any, position: Any = None) -> float:
    """Doubly robust: mean(q̂(x, π_e) + w (r − q̂(x, a))) (obp ``DoublyRobust()``)."""
    data = logged("dr", reward, action, pscore, action_dist, position, estimated_rewards_by_reg_model)
    return float(dr_terms(data).mean())


def sndr(reward: Any, action: Any, pscore: Any, action_dist: Any, estimated_rewards_by_reg_model: Any, position: Any = None) -> float:
    """Self-normalized doubly robust: mean(q̂(x, π_e) + w (r − q̂(x, a)) / mean(w)) (obp ``SelfNormalizedDoublyRobust()``)."""
    data = logged("sndr", reward, action, pscore, action_dist, position, estimated_rewards_by_reg_model)
    return sndr_value(data)


def switch_dr(reward: Any, action: Any, pscore: Any, action_dist: Any, estimated_rewards_by_reg_model: Any,
              position: Any = None, lambda_: float = np.inf) -> float:
    """Switch-DR: mean(q̂(x, π_e) + 1{w ≤ λ} w (r − q̂(x, a))) (obp ``SwitchDoublyRobust(lambda_=λ)``):
    a round whose importance weight exceeds ``lambda_`` keeps only the model's estimate."""
    lam = check_lambda(lambda_, "switch_dr")
    data = logged("switch_dr", reward, action, pscore, action_dist, position, estimated_rewards_by_reg_model)
    return float(switch_dr_terms(data, lam).mean())


def check_lambda(lambda_: Any, where: str) -> float:
    """Switch-DR's threshold on the importance weight: a number ≥ 0 (inf keeps every round: DR)."""
    if isinstance(lambda_, bool) or not isinstance(lambda_, int | float | np.integer | np.floating) or math.isnan(lambda_) or lambda_ < 0:
        raise EvaluationError("lambda_", "a number ≥ 0 (np.inf: never switch)", lambda_, where)
    return float(lambda_)


# Per-round terms: the estimators above are their means; ``estimate`` reuses them for intervals.

def ips_terms(data: Logged) -> Floats:
    """w_i r_i per round."""
    return data.reward * data.weights


def snips_value(data: Logged) -> float:
    iw = data.weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((data.reward * iw / iw.mean()).mean())


def model_parts(data: Logged) -> tuple[Floats, Floats]:
    """q̂(x_i, π_e) (a fresh array: callers add to it) and the residual r_i − q̂(x_i, a_i, k_i) per round."""
    if data.direct is None or data.residual is None:
        raise EvaluationError("estimated_rewards_by_reg_model", "given (this estimator needs a reward model)", None, "ope")
    return data.direct.copy(), data.residual


def dr_terms(data: Logged) -> Floats:
    out, residual = model_parts(data)
    out += data.weights * residual
    return out


def sndr_value(data: Logged) -> float:
    iw = data.weights
    out, residual = model_parts(data)
    with np.errstate(invalid="ignore", divide="ignore"):
        out += iw * residual / iw.mean()
    return float(out.mean())


def switch_dr_terms(data: Logged, lambda_: float) -> Floats:
    iw = data.weights
    out, residual = model_parts(data)
    out += np.where(iw <= lambda_, iw, 0.0) * residual
    return out

"""The client form of a ranking system's bundle (:mod:`closedloop.runtime.export_js` calls
:func:`ranking_form`): the request and candidate schemas, the features over both, the
intelligence, and the :class:`~closedloop.experience.experiences.Ranking` experience — how many
slots, the exploration over slates (softmax, ε-greedy or SquareCB, drawn slot by slot from the
decision id as :class:`~closedloop.experience.ranking.RankingPlan` draws them) and the reasons a
ranked decision gives (templates with ``{m}`` and ``{n}``, Python's strings).

Guardrails do not apply to rankings (Python refuses them on a ranking system), so a ranking's
client form has none; the kill switch's ranking is the first ``min(k, N)`` candidates in input order.
"""

from __future__ import annotations

from typing import Any

from closedloop.experience.experiences import EXPLORED_SLOTS_WHY, Ranking
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB
from closedloop.experience.ranking import KILLSWITCH_WHY, RankingPlan
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.export_parts import ClientRefusal, expr_tree, field_tree, intelligence_tree, number

__all__ = ["ranking_form"]


def _explore(policy: Any) -> dict[str, Any] | None:
    if policy is None:
        return None
    if isinstance(policy, Softmax):
        return {"kind": "softmax", "temperature": policy.temperature}
    if isinstance(policy, SquareCB):
        return {"kind": "squarecb", "gamma": policy.gamma}
    if isinstance(policy, EpsilonGreedy):
        return {"kind": "epsilon", "epsilon": policy.epsilon, "low": number(policy.low), "high": number(policy.high)}
    raise ClientRefusal("experience", f"the exploration policy {policy!r} cannot rank in a client")


def ranking_form(system: Any, bundle: Bundle) -> dict[str, Any]:
    """The parts of a ranking system's client form after its ``bundle`` header (see the module doc)."""
    exp = system.experience
    if not isinstance(exp, Ranking):  # pragma: no cover - the caller dispatched on it
        raise ClientRefusal("experience", f"the experience {exp!r} is not a ranking")
    rails = [*system.guardrails, *bundle.guardrails]
    if rails:
        raise ClientRefusal("guardrails", f"guardrails do not apply to ranking systems (Python refuses them too): "
                            f"{[g.name for g in rails]}")
    plan = RankingPlan(system, bundle)  # checks the bundle against the system and its score
    cschema = system.candidate_schema
    features = system.features
    return {
        "schema": {"extra": system.schema.extra, "fields": [field_tree(f) for f in system.schema.fields]},
        "unit": system.unit,
        "candidates": {"extra": cschema.extra, "fields": [field_tree(f) for f in cschema.fields], "id": system.candidate_id},
        "features": [{"name": f.name, "expr": expr_tree(f.expr.describe(), f"feature {f.name!r}")} for f in features.features],
        "intelligence": intelligence_tree(bundle.intelligence, features),
        "outputs": list(plan.outputs),
        "experience": {
            "kind": "ranking", "column": plan.outputs.index(plan.score), "k": plan.k, "explore": _explore(plan.explore),
            "why": plan._why_base, "explored_why": EXPLORED_SLOTS_WHY, "killswitch_why": KILLSWITCH_WHY,
        },
        "mode": "organize",
    }

"""What serves, bound: a bundle bound once into the :class:`_Plan` every decision reads (with its
shadows), the deployment's arms bound together into one :class:`_Serving` that the runtime swaps
with a single assignment (:func:`bind_serving`), and one plan run over a validated batch
(:func:`_score_plan`) and over its shadows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.context.schema import Int
from closedloop.errors import SpecError
from closedloop.experience.exploration import choose_batch, uniform_batch
from closedloop.experience.guardrails import CapStore, GuardLayer
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.decision import DecisionBatch, ShadowResult
from closedloop.runtime.deployment import Deployment, Flight
from closedloop.system.spec import System


class _Shadow:
    """A shadow bundle, bound: scored beside production, its greedy action recorded."""

    __slots__ = ("batch", "chooser", "one", "outputs", "version")

    def __init__(self, system: System, bundle: Bundle) -> None:
        bundle.check_compatible(system)
        scorer = bundle.intelligence.bind(system.features)
        self.version = bundle.version
        self.one = scorer.one
        self.batch = scorer.batch
        self.outputs = tuple(scorer.outputs)
        self.chooser = bundle.experience(system).bind(self.outputs, system.actions)


class _Plan:
    """Everything one decision reads, bound once per (bundle, shadows)."""

    __slots__ = (
        "actions", "bundle", "chooser", "features_one", "guard", "kill_reason", "outputs",
        "presentations", "reasons", "score_batch", "score_one", "shadows", "single", "system",
        "unit", "unit_is_int", "validate", "version", "default",
    )

    def __init__(self, system: System, bundle: Bundle, shadows: Sequence[Bundle], store: CapStore) -> None:
        bundle.check_compatible(system)
        scorer = bundle.intelligence.bind(system.features)
        self.system = system
        self.bundle = bundle
        self.version = bundle.version
        self.validate = system.schema.validate
        self.features_one = system.features.one
        self.score_one = scorer.one
        self.score_batch = scorer.batch
        self.outputs = tuple(scorer.outputs)
        self.single = self.outputs[0] if len(self.outputs) == 1 else None
        self.actions = system.actions
        self.chooser = bundle.experience(system).bind(self.outputs, system.actions)
        self.presentations = tuple(system.action_specs[a].presentation for a in system.actions)
        rules = [*system.guardrails, *bundle.guardrails]  # outermost first: the system wraps the bundle
        self.guard = GuardLayer(system, rules, store) if rules else None
        self.default = system.actions.index(system.default_action)
        self.kill_reason = f"kill switch on → {system.default_action}"
        # Every reason a decision may give, in one table: the experience's, then the guardrails'.
        self.reasons = (
            self.chooser.reasons + (self.guard.reasons if self.guard else ()) + (self.kill_reason,)
        )
        self.shadows = tuple(_Shadow(system, b) for b in shadows)
        self.unit = system.unit
        self.unit_is_int = isinstance(system.schema.by_name[system.unit], Int)


class _Serving:
    """What serves, bound: production's plan, each flight's plan, and the deployment they came from.
    Swapped as one object, so every decision reads one consistent deployment."""

    __slots__ = ("arms", "deployment", "flights", "plan")

    def __init__(self, plan: Any, flights: tuple[Flight, ...], arms: tuple[_Plan, ...], deployment: Deployment) -> None:
        self.plan = plan
        self.flights = flights
        self.arms = arms
        self.deployment = deployment



def bind_serving(
    system: System, deployment: Deployment, old: _Serving | None, caps: CapStore, ranking: bool
) -> _Serving:
    """Bind every arm of ``deployment`` (reusing plans ``old`` already bound for the same
    bundle and shadows) and check them; nothing is swapped in here. A ranking system binds
    one :class:`~closedloop.experience.ranking.RankingPlan` (no shadows, no flights yet)."""
    shadows = deployment.shadows
    if ranking:
        from closedloop.experience.ranking import RankingPlan

        if shadows:
            raise SpecError("Shadow bundles are not supported for ranking systems yet.")
        if deployment.flights:
            raise SpecError("Flights are not supported for ranking systems yet.")
        return _Serving(RankingPlan(system, deployment.production), (), (), deployment)
    reuse: dict[tuple[str, ...], _Plan] = {}
    if old is not None:
        for pl in (old.plan, *old.arms):
            reuse[(pl.version, *(sh.version for sh in pl.shadows))] = pl
    skey = tuple(b.version for b in shadows)

    def plan(b: Bundle) -> _Plan:
        got = reuse.get((b.version, *skey))
        return got if got is not None else _Plan(system, b, shadows, caps)

    prod = plan(deployment.production)
    arms = tuple(plan(f.bundle) for f in deployment.flights)
    for f, arm in zip(deployment.flights, arms, strict=True):
        if arm.outputs != prod.outputs:
            raise SpecError(
                f"Flight '{f.name}' bundle {arm.version} outputs {list(arm.outputs)}; a flight's bundle must "
                f"output what production's does ({list(prod.outputs)})."
            )
    return _Serving(prod, deployment.flights, arms, deployment)


def _score_plan(p: _Plan, X: np.ndarray, cols: Any, units: Any, ts: np.ndarray, ids: Any, common: dict[str, Any]) -> DecisionBatch:
    """Score, choose and guard a validated batch with one plan."""
    n = cols.n
    S = np.asarray(p.score_batch(X, cols), dtype=np.float64)
    if S.shape != (n, len(p.outputs)):
        raise SpecError(f"The intelligence returned scores of shape {S.shape}; expected {(n, len(p.outputs))}.")
    ch = p.chooser
    a, w = ch.batch(S)
    P = None
    if ch.explores:
        P = ch.probs_batch(S, a)
        e = choose_batch(P, uniform_batch(ids))
        w = np.where(e != a, ch.explored + e, w)
        a = e
    guard_codes = None
    if p.guard is not None:
        a, fired, prop = p.guard.batch(cols, a, P, units if p.guard.has_caps else None, ts)
        w = np.where(fired >= 0, len(ch.reasons) + fired, w)
        guard_codes = fired
    else:
        prop = np.ones(n) if P is None else P[np.arange(n), a]
    shadows = tuple(_shadow_batch(sh, X, cols) for sh in p.shadows)
    return DecisionBatch(
        **{**common, "bundle_version": p.version, "reasons": p.reasons},
        outputs=p.outputs, scores=S, action_codes=a, propensities=prop, why_codes=w,
        guardrails=p.guard.names if p.guard else (), guardrail_codes=guard_codes, shadows=shadows,
    )



def _shadow_one(sh: _Shadow, x: tuple[float, ...], c: Any, actions: tuple[str, ...]) -> ShadowResult:
    s = sh.one(x, c)
    return ShadowResult(sh.version, dict(zip(sh.outputs, s, strict=True)), actions[sh.chooser.one(s)[0]])


def _shadow_batch(sh: _Shadow, X: np.ndarray, cols: Any) -> tuple[str, tuple[str, ...], np.ndarray, np.ndarray]:
    S = np.asarray(sh.batch(X, cols), dtype=np.float64)
    return sh.version, sh.outputs, S, sh.chooser.batch(S)[0]

"""What serves, bound: a bundle bound once into the :class:`_Plan` every decision reads (with its
shadows), the deployment's arms bound together into one :class:`_Serving` that the runtime swaps
with a single assignment (:func:`bind_serving`), and one plan run over a validated batch
(:func:`_score_plan`) and over its shadows.

A ranking system binds one :class:`~closedloop.experience.ranking.RankingPlan` per bundle
(production, each flight's, each shadow's); with flights or shadows they are held together in
:class:`_RankingArms`, which the production plan's ``decide`` / ``decide_batch`` call to score a
request with its arm's bundle (:func:`~closedloop.runtime.deployment.assign_flight` on its unit)
and the shadows on the same feature rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.context.schema import Columns, Int
from closedloop.errors import SpecError
from closedloop.experience.exploration import choose_batch, uniform_batch
from closedloop.experience.guardrails import CapStore, GuardLayer
from closedloop.experience.ranked import RankedShadow
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.decision import DecisionBatch, ShadowResult
from closedloop.runtime.deployment import Deployment, Flight, assign_flight
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

    __slots__ = ("arms", "deployment", "flights", "plan", "ranking_arms")

    def __init__(self, plan: Any, flights: tuple[Flight, ...], arms: tuple[Any, ...], deployment: Deployment,
                 ranking_arms: _RankingArms | None = None) -> None:
        self.plan = plan
        self.flights = flights
        self.arms = arms
        self.deployment = deployment
        #: a ranking system's flights and shadows, bound (None: production alone, or not a ranking)
        self.ranking_arms = ranking_arms


class _RankingArms:
    """A ranking deployment's flights and shadows, bound: which bundle scores a request (its
    unit's arm), and each shadow's scores and greedy slate over the same feature rows."""

    __slots__ = ("arms", "flights", "names", "plan", "shadows")

    def __init__(self, plan: Any, flights: tuple[Flight, ...], arms: tuple[Any, ...], shadows: tuple[Any, ...]) -> None:
        self.plan = plan
        self.flights = flights
        self.arms = arms
        self.names = tuple(f.name for f in flights)
        self.shadows = shadows

    def arm(self, unit: str) -> tuple[Any, str | None]:
        """The plan that decides for ``unit`` and its flight (None: production)."""
        if self.flights:
            k = assign_flight(self.flights, unit)
            if k >= 0:
                return self.arms[k], self.names[k]
        return self.plan, None

    def empty(self, unit: str) -> tuple[str, str | None, list[RankedShadow]]:
        """(version, flight, shadows) of a request without candidates."""
        p, flight = self.arm(unit)
        return p.version, flight, [RankedShadow(sh.version, [], []) for sh in self.shadows]

    def score_one(self, unit: str, cols: Any, ids: list[str]) -> tuple[np.ndarray, str, str | None, list[RankedShadow]]:
        """One request's candidates ``cols``: (its arm's scores, the arm's version, its flight, the shadows)."""
        p, flight = self.arm(unit)
        X = p.features(cols)
        s = p.score_rows(X, cols)
        shadows = []
        for sh in self.shadows:
            t = sh.score_rows(X, cols)
            shadows.append(RankedShadow(sh.version, t.tolist(), sh.greedy_slate(t, ids)))
        return s, p.version, flight, shadows

    def score_batch(self, units: list[str], cols: Any, req_idx: np.ndarray) -> tuple[
            np.ndarray, list[str], list[str | None] | None, list[tuple[str, np.ndarray]]]:
        """Every candidate of a batch (``cols``, request ``req_idx[j]``; None: no candidates):
        (the scores, each by its request's arm; each request's version; each request's flight,
        None when production decided every one; each shadow's (version, scores))."""
        total = 0 if cols is None else cols.n
        arm_of = _unit_arms(self.flights, units) if self.flights else np.full(len(units), -1, dtype=np.int64)
        plans = (self.plan, *self.arms)
        X = None if cols is None else self.plan.features(cols)
        flat = np.empty(total, dtype=np.float64)
        if X is not None:
            arm_cand = arm_of[req_idx]
            for k, p in enumerate(plans, start=-1):
                idx = np.flatnonzero(arm_cand == k)
                if idx.size == total:
                    flat = np.ascontiguousarray(p.score_rows(X, cols))
                elif idx.size:
                    flat[idx] = p.score_rows(X[idx], _rows(cols, idx, p.bundle.intelligence.context_fields()))
        shadows = [(sh.version, np.ascontiguousarray(sh.score_rows(X, cols)) if X is not None else np.zeros(0))
                   for sh in self.shadows]
        if not bool((arm_of >= 0).any()):
            return flat, [], None, shadows
        ks = (arm_of + 1).tolist()
        names = (None, *self.names)
        return flat, [plans[k].version for k in ks], [names[k] for k in ks], shadows


def _rows(cols: Any, idx: np.ndarray, fields: tuple[str, ...]) -> Columns:
    """The rows ``idx`` of ``cols`` with only the context ``fields`` an intelligence reads (most read
    none: a batch's text columns are not copied for nothing)."""
    pa_idx = pa.array(idx)
    data = {}
    for name in fields:
        col = cols[name]
        data[name] = col.take(pa_idx) if isinstance(col, pa.Array) else col[idx]
    return Columns(data, int(idx.shape[0]), cols.rows[idx], [])


def _unit_arms(flights: tuple[Flight, ...], units: list[str]) -> np.ndarray:
    """Each unit's arm: the index of the flight that claims it, or -1 (production); one hash per distinct unit."""
    memo: dict[str, int] = {}
    out = np.empty(len(units), dtype=np.int64)
    for i, u in enumerate(units):
        k = memo.get(u)
        if k is None:
            k = memo[u] = assign_flight(flights, u)
        out[i] = k
    return out



def bind_serving(
    system: System, deployment: Deployment, old: _Serving | None, caps: CapStore, ranking: bool
) -> _Serving:
    """Bind every arm of ``deployment`` (reusing plans ``old`` already bound for the same
    bundle and shadows) and check them; nothing is swapped in here. A ranking system binds
    one :class:`~closedloop.experience.ranking.RankingPlan` per bundle (:func:`_bind_ranking`)."""
    shadows = deployment.shadows
    if ranking:
        return _bind_ranking(system, deployment, old)
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
    _check_outputs(deployment.flights, arms, prod)
    return _Serving(prod, deployment.flights, arms, deployment)


def _check_outputs(flights: tuple[Flight, ...], arms: tuple[Any, ...], prod: Any) -> None:
    for f, arm in zip(flights, arms, strict=True):
        if arm.outputs != prod.outputs:
            raise SpecError(
                f"Flight '{f.name}' bundle {arm.version} outputs {list(arm.outputs)}; a flight's bundle must "
                f"output what production's does ({list(prod.outputs)})."
            )


def _bind_ranking(system: System, deployment: Deployment, old: _Serving | None) -> _Serving:
    """A ranking deployment bound: one :class:`~closedloop.experience.ranking.RankingPlan` per
    bundle (production, flights, shadows; reusing those ``old`` bound for the same bundle version),
    and — with flights or shadows — the :class:`_RankingArms` that route and shadow with them."""
    from closedloop.experience.ranking import RankingPlan

    reuse: dict[str, Any] = {}
    if old is not None:
        ra = old.ranking_arms
        for pl in (old.plan, *old.arms, *(ra.shadows if ra is not None else ())):
            reuse[pl.version] = pl

    def plan(b: Bundle) -> Any:
        got = reuse.get(b.version)
        if got is None:
            got = reuse[b.version] = RankingPlan(system, b)
        return got

    prod = plan(deployment.production)
    arms = tuple(plan(f.bundle) for f in deployment.flights)
    _check_outputs(deployment.flights, arms, prod)
    shadows = tuple(plan(b) for b in deployment.shadows)
    ra = _RankingArms(prod, deployment.flights, arms, shadows) if arms or shadows else None
    return _Serving(prod, deployment.flights, arms, deployment, ra)


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

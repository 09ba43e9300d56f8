"""The runtime: every decision, one path.

``Runtime.decide`` (one context) and ``Runtime.decide_batch`` (a columnar batch) run the same
steps and give identical decisions — the same action, propensity and reason, and bitwise-equal
scores (each step's two forms are built to round identically; see :mod:`closedloop.context.features`)::

    validate → features → intelligence (production, and shadows beside it)
             → experience (greedy choice; exploration drawn from the decision id)
             → guardrails (bundle's inside, system's outside; caps last) → Decision

The service, batch evaluation, the simulator and in-process callers all go through here.
With the kill switch on, the intelligence is skipped: the system's default action, with
propensity 1, and the decision says so.

The per-decision path is lean: the context is validated once (msgspec), features are one
generated function, the intelligence's single-row form is generated or compiled code, reasons
are precomputed strings, and everything a decision reads sits in one :class:`_Plan` that
:meth:`Runtime.load` swaps with a single assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.schema import Columns, Int
from closedloop.errors import ContextError, SpecError
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import choose, choose_batch, uniform, uniform_batch
from closedloop.experience.guardrails import CapStore, GuardLayer, InMemoryCapStore
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.clock import Clock, SystemClock
from closedloop.runtime.decision import Decision, DecisionBatch, ShadowResult
from closedloop.runtime.deployment import Deployment, Flight, assign_flight
from closedloop.runtime.ids import DecisionIds, IdSource
from closedloop.system.spec import System

__all__ = ["Runtime"]


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


class Runtime:
    """Executes a system's intelligence.

    Parameters
    ----------
    system:
        The declared :class:`~closedloop.System`.
    bundle:
        The production :class:`~closedloop.Bundle` (checked against the system).
    shadows:
        Bundles scored beside production and recorded in each decision, never acted on.
    clock:
        Where timestamps come from (default: wall clock). Simulations pass a ``ManualClock``.
    ids:
        Where decision ids come from (default: :class:`~closedloop.runtime.ids.DecisionIds`; pass a
        seeded one for reproducible runs).
    caps:
        The :class:`~closedloop.experience.guardrails.CapStore` that frequency caps count in (default: a
        new in-memory store).
    killswitch:
        Start with the kill switch on.
    telemetry:
        A :class:`~closedloop.telemetry.Telemetry` that every decision is logged to (put on its
        buffer; the disk write happens on its own thread). ``None``: nothing is logged.
    flights:
        :class:`~closedloop.Flight` s: shares of units that other bundles decide for (a unit's arm
        is a stable hash of the flight name and the unit). :meth:`apply` swaps in a whole
        :class:`~closedloop.Deployment` (production, shadows, flights, kill switch) at once.
    """

    def __init__(
        self,
        system: System,
        bundle: Bundle,
        *,
        shadows: Sequence[Bundle] = (),
        clock: Clock | None = None,
        ids: IdSource | None = None,
        caps: CapStore | None = None,
        killswitch: bool = False,
        telemetry: Any = None,
        flights: Sequence[Flight] = (),
    ) -> None:
        if not isinstance(system, System):
            raise SpecError(f"Runtime needs a closedloop.System. Got {system!r} instead.")
        if not isinstance(bundle, Bundle):
            raise SpecError(f"Runtime needs a closedloop.Bundle. Got {bundle!r} instead.")
        for s in shadows:
            if not isinstance(s, Bundle):
                raise SpecError(f"Shadows must be closedloop.Bundle objects. Got {s!r} instead.")
        self.system = system
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.ids: IdSource = ids if ids is not None else DecisionIds()
        self.caps: CapStore = caps if caps is not None else InMemoryCapStore()
        self.telemetry = telemetry
        self._ranking = isinstance(system.experience, Ranking)
        if self._ranking and telemetry is not None:
            raise SpecError(
                "Telemetry does not log ranked decisions yet (their records differ); run the ranking "
                f"system '{system.name}' without telemetry= rather than lose its decisions silently."
            )
        self._serving: _Serving = self._build(
            Deployment(bundle, tuple(shadows), tuple(flights), bool(killswitch)), None
        )

    def _build(self, deployment: Deployment, old: _Serving | None) -> _Serving:
        """Bind every arm of ``deployment`` (reusing plans ``old`` already bound for the same
        bundle and shadows) and check them; nothing is swapped in here."""
        shadows = deployment.shadows
        if self._ranking:
            from closedloop.experience.ranking import RankingPlan

            if shadows:
                raise SpecError("Shadow bundles are not supported for ranking systems yet.")
            if deployment.flights:
                raise SpecError("Flights are not supported for ranking systems yet.")
            return _Serving(RankingPlan(self.system, deployment.production), (), (), deployment)
        reuse: dict[tuple[str, ...], _Plan] = {}
        if old is not None:
            for pl in (old.plan, *old.arms):
                reuse[(pl.version, *(sh.version for sh in pl.shadows))] = pl
        skey = tuple(b.version for b in shadows)

        def plan(b: Bundle) -> _Plan:
            got = reuse.get((b.version, *skey))
            return got if got is not None else _Plan(self.system, b, shadows, self.caps)

        prod = plan(deployment.production)
        arms = tuple(plan(f.bundle) for f in deployment.flights)
        for f, arm in zip(deployment.flights, arms, strict=True):
            if arm.outputs != prod.outputs:
                raise SpecError(
                    f"Flight '{f.name}' bundle {arm.version} outputs {list(arm.outputs)}; a flight's bundle must "
                    f"output what production's does ({list(prod.outputs)})."
                )
        return _Serving(prod, deployment.flights, arms, deployment)

    @property
    def _plan(self) -> Any:
        return self._serving.plan

    @property
    def deployment(self) -> Deployment:
        """What serves now: production, shadows, flights, the kill switch (and its registry revision)."""
        return self._serving.deployment

    @property
    def killswitch(self) -> bool:
        return self._serving.deployment.killswitch

    @property
    def bundle(self) -> Bundle:
        return self._serving.plan.bundle

    @property
    def shadows(self) -> tuple[str, ...]:
        """Versions of the shadow bundles being scored."""
        return tuple(s.version for s in getattr(self._serving.plan, "shadows", ()))

    @property
    def flights(self) -> tuple[Flight, ...]:
        return self._serving.deployment.flights

    def apply(self, deployment: Deployment) -> None:
        """Serve ``deployment``: every arm is built and checked first, then swapped in with one
        assignment, so a decision in flight finishes on the deployment it started with. Plans
        already bound for an unchanged bundle (and shadows) are reused."""
        if not isinstance(deployment, Deployment):
            raise SpecError(f"Runtime.apply needs a closedloop.Deployment. Got {deployment!r} instead.")
        self._serving = self._build(deployment, self._serving)

    def load(self, bundle: Bundle, shadows: Sequence[Bundle] | None = None) -> None:
        """Switch to another production bundle (and shadows; by default keep the current ones,
        and the flights and kill switch). Swapped in with one assignment, as :meth:`apply`."""
        d = self._serving.deployment
        keep = d.shadows if shadows is None else tuple(shadows)
        self.apply(Deployment(bundle, keep, d.flights, d.killswitch, d.revision))

    def set_killswitch(self, on: bool) -> None:
        """Turn the kill switch on (skip the intelligence: the default action) or off."""
        d = self._serving.deployment
        self.apply(Deployment(d.production, d.shadows, d.flights, bool(on), d.revision))

    # -- one decision -----------------------------------------------------------------------
    def decide(
        self, context: Any, *, decision_id: str | None = None, timestamp_ns: int | None = None
    ) -> Any:
        """Decide for one context (a mapping such as parsed JSON, or a validated context)."""
        sv = self._serving
        p = sv.plan
        killswitch = sv.deployment.killswitch
        if timestamp_ns is None:
            timestamp_ns = self.clock.now_ns()
        if self._ranking:
            if decision_id is None:
                decision_id = self.ids.next_id(timestamp_ns)
            return p.decide(context, decision_id, timestamp_ns, killswitch=killswitch)
        c = p.validate(context)
        unit = getattr(c, p.unit)
        if p.unit_is_int:
            unit = str(unit)
        flight = None
        if sv.flights and not killswitch:
            arm = assign_flight(sv.flights, unit)
            if arm >= 0:
                p = sv.arms[arm]
                flight = sv.flights[arm].name
        if killswitch:
            if decision_id is None:
                decision_id = self.ids.next_id(timestamp_ns)
            d = p.default
            out = Decision(
                decision_id, p.system.name, unit, timestamp_ns, p.version, {}, p.actions[d], 1.0,
                p.kill_reason, p.presentations[d], None, (), True,
            )
            if self.telemetry is not None:
                self.telemetry.log_decision(out, c, None)
            return out
        x = p.features_one(c)
        s = p.score_one(x, c)
        ch = p.chooser
        a, w = ch.one(s)
        if decision_id is None:
            decision_id = self.ids.next_id(timestamp_ns)
        probs = None
        if ch.explores:
            probs = ch.probs(s, a)
            e = choose(probs, uniform(decision_id))
            if e != a:
                a, w = e, ch.explored + e
        guardrail = None
        if p.guard is not None:
            a, fired, propensity = p.guard.one(c, a, probs, unit, timestamp_ns)
            if fired >= 0:
                guardrail = p.guard.names[fired]
                w = len(ch.reasons) + fired
        else:
            propensity = 1.0 if probs is None else probs[a]
        shadows: tuple[ShadowResult, ...] = ()
        if p.shadows:
            shadows = tuple(_shadow_one(sh, x, c, p.actions) for sh in p.shadows)
        out = Decision(
            decision_id,
            p.system.name,
            unit,
            timestamp_ns,
            p.version,
            {p.single: s[0]} if p.single is not None else dict(zip(p.outputs, s, strict=True)),
            p.actions[a],
            propensity,
            p.reasons[w],
            p.presentations[a],
            guardrail,
            shadows,
            False,
            flight,
        )
        if self.telemetry is not None:
            self.telemetry.log_decision(out, c, x)
        return out

    # -- a batch ------------------------------------------------------------------------------
    def decide_batch(
        self,
        batch: Any,
        *,
        candidates: Any = None,
        decision_ids: Sequence[str] | None = None,
        timestamps_ns: Any = None,
        errors: str = "raise",
    ) -> Any:
        """Decide for a columnar batch (an Arrow table / record batch, or a mapping of column
        name → array or list), or for :class:`~closedloop.context.schema.Columns` validated already
        (``Schema.validate_batch``, or ``Schema.columns`` of contexts validated one by one, as
        the service decodes them): those are not validated again, and ``decision_ids`` /
        ``timestamps_ns`` then give one value per row of the Columns.

        ``decision_ids`` and ``timestamps_ns`` (one per input row) replay decisions exactly;
        otherwise one clock reading stamps the batch and ids come from the id source.
        ``errors="raise"`` refuses a batch with any invalid row (naming every one);
        ``errors="skip"`` decides the valid rows and lists the others in ``.errors``.
        For a ranking system, ``candidates`` is a columnar batch of candidates with a
        ``request`` column naming each one's row in ``batch``.
        """
        sv = self._serving
        p = sv.plan
        killswitch = sv.deployment.killswitch
        if self._ranking:
            if isinstance(batch, Columns):
                raise SpecError("A ranking system decides batches of requests given as a table or a mapping of "
                                "columns (with candidates), not as Columns.")
            n_req = _input_rows(batch)
            ts = self._timestamps(timestamps_ns, n_req, np.arange(n_req))
            ids = self._ids(decision_ids, n_req, np.arange(n_req), ts)
            return p.decide_batch(batch, candidates, ids.to_pylist(), ts.tolist(), killswitch=killswitch)
        if isinstance(batch, Columns):  # validated already (Schema.validate_batch / Schema.columns)
            cols = batch
            n_in = cols.n
            sel = np.arange(n_in, dtype=np.int64)
        else:
            cols = p.system.schema.validate_batch(batch, errors=errors)
            n_in = _input_rows(batch)
            sel = cols.rows
        rows = cols.rows
        ts = self._timestamps(timestamps_ns, n_in, sel)
        ids = self._ids(decision_ids, n_in, sel, ts)
        unit_col = cols[p.unit]
        units = unit_col if isinstance(unit_col, pa.Array) else pa.array(unit_col).cast(pa.string())
        n = cols.n
        common = dict(
            system=p.system.name, bundle_version=p.version, decision_ids=ids, units=units,
            timestamps_ns=ts, actions=p.actions, reasons=p.reasons, rows=rows, errors=cols.errors,
            presentations=p.presentations,
        )
        if killswitch:
            out = DecisionBatch(
                **common, outputs=(), scores=np.empty((n, 0)),
                action_codes=np.full(n, p.default, dtype=np.int64), propensities=np.ones(n),
                why_codes=np.full(n, len(p.reasons) - 1, dtype=np.int64), killswitch=True,
            )
            if self.telemetry is not None:
                self.telemetry.log_batch(out, cols, None)
            return out
        X = p.system.features.batch(cols)
        if sv.flights:
            arm_of = _arms(sv.flights, units)
            if bool((arm_of >= 0).any()):
                out = _decide_arms(sv, arm_of, X, cols, units, common)
                if self.telemetry is not None:
                    self.telemetry.log_batch(out, cols, X)
                return out
        out = _score_plan(p, X, cols, units, ts, ids, common)
        if self.telemetry is not None:
            self.telemetry.log_batch(out, cols, X)
        return out

    def _timestamps(self, timestamps_ns: Any, n_in: int, rows: np.ndarray) -> np.ndarray:
        if timestamps_ns is None:
            return np.full(rows.shape[0], self.clock.now_ns(), dtype=np.int64)
        ts_all = np.asarray(timestamps_ns, dtype=np.int64)
        if ts_all.shape != (n_in,):
            raise ContextError("timestamps_ns", f"one timestamp per input row ({n_in})", f"{ts_all.shape[0]} timestamps")
        return ts_all[rows]

    def _ids(self, decision_ids: Any, n_in: int, rows: np.ndarray, ts: np.ndarray) -> pa.StringArray:
        if decision_ids is None:
            return _ids_for(self.ids, ts)
        ids_all = decision_ids if isinstance(decision_ids, pa.Array) else list(decision_ids)
        if len(ids_all) != n_in or not _all_nonempty_str(ids_all):
            raise ContextError("decision_ids", f"one non-empty string per input row ({n_in})", f"{len(ids_all)} values")
        ids = ids_all.cast(pa.string()) if isinstance(ids_all, pa.Array) else pa.array(ids_all, type=pa.string())
        if rows.shape[0] != n_in:
            ids = ids.take(pa.array(rows))
        return ids


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


def _arms(flights: tuple[Flight, ...], units: pa.Array) -> np.ndarray:
    """Each row's arm: the index of the flight that claims its unit, or -1 (production)."""
    memo: dict[str, int] = {}
    out = np.empty(len(units), dtype=np.int64)
    for i, u in enumerate(units.to_pylist()):
        k = memo.get(u)
        if k is None:
            k = memo[u] = assign_flight(flights, u)
        out[i] = k
    return out


def _decide_arms(sv: _Serving, arm_of: np.ndarray, X: np.ndarray, cols: Any, units: pa.Array,
                 common: dict[str, Any]) -> DecisionBatch:
    """Decide each arm's rows with its own plan and put the results back in row order: per-row
    bundle versions and flights, reasons and guardrail names merged into one table each."""
    n = cols.n
    plans = (sv.plan, *sv.arms)
    ts, ids = common["timestamps_ns"], common["decision_ids"]
    S = np.empty((n, len(sv.plan.outputs)), dtype=np.float64)
    a = np.empty(n, dtype=np.int64)
    prop = np.empty(n, dtype=np.float64)
    why = np.empty(n, dtype=np.int64)
    guard = np.full(n, -1, dtype=np.int64)
    reasons: dict[str, int] = {}
    gnames: dict[str, int] = {}
    shadow_S = [np.empty((n, len(sh.outputs))) for sh in sv.plan.shadows]
    shadow_a = [np.empty(n, dtype=np.int64) for _ in sv.plan.shadows]
    any_guard = False
    for k, p in enumerate(plans, start=-1):
        idx = np.flatnonzero(arm_of == k)
        if idx.size == 0:
            continue
        pa_idx = pa.array(idx)
        part = _score_plan(p, X[idx], cols.take(idx), units.take(pa_idx), ts[idx], ids.take(pa_idx), common)
        S[idx], a[idx], prop[idx] = part.score_matrix, part.action_codes, part.propensities
        rmap = np.array([reasons.setdefault(r, len(reasons)) for r in part.reasons], dtype=np.int64)
        why[idx] = rmap[part.why_codes]
        if part.guardrail_codes is not None:
            any_guard = True
            gmap = np.array([gnames.setdefault(g, len(gnames)) for g in part.guardrails] + [-1], dtype=np.int64)
            guard[idx] = gmap[part.guardrail_codes]  # -1 indexes the trailing -1: no guardrail fired
        for j, (_v, _o, Sj, cj) in enumerate(part.shadows):
            shadow_S[j][idx], shadow_a[j][idx] = Sj, cj
    arm_ix = pa.array(arm_of + 1)
    versions = pa.array([p.version for p in plans], type=pa.string()).take(arm_ix)
    flights = pa.array([None, *(f.name for f in sv.flights)], type=pa.string()).take(arm_ix)
    shadows = tuple(
        (sh.version, sh.outputs, shadow_S[j], shadow_a[j]) for j, sh in enumerate(sv.plan.shadows)
    )
    return DecisionBatch(
        **{**common, "bundle_version": sv.plan.version, "reasons": tuple(reasons)},
        outputs=sv.plan.outputs, scores=S, action_codes=a, propensities=prop, why_codes=why,
        guardrails=tuple(gnames), guardrail_codes=guard if any_guard else None, shadows=shadows,
        bundle_versions=versions, flights=flights,
    )


def _shadow_one(sh: _Shadow, x: tuple[float, ...], c: Any, actions: tuple[str, ...]) -> ShadowResult:
    s = sh.one(x, c)
    return ShadowResult(sh.version, dict(zip(sh.outputs, s, strict=True)), actions[sh.chooser.one(s)[0]])


def _shadow_batch(sh: _Shadow, X: np.ndarray, cols: Any) -> tuple[str, tuple[str, ...], np.ndarray, np.ndarray]:
    S = np.asarray(sh.batch(X, cols), dtype=np.float64)
    return sh.version, sh.outputs, S, sh.chooser.batch(S)[0]


def _input_rows(batch: Any) -> int:
    """Rows in the (already validated) input batch."""
    if isinstance(batch, pa.Table | pa.RecordBatch):
        return int(batch.num_rows)
    return len(next(iter(batch.values())))


def _all_nonempty_str(ids: Any) -> bool:
    if isinstance(ids, pa.Array):
        if ids.null_count or not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            return False
        return len(ids) == 0 or pc.min(pc.binary_length(ids)).as_py() > 0
    return all(isinstance(d, str) and d for d in ids)


def _ids_for(source: IdSource, ts: np.ndarray) -> pa.StringArray:
    n = int(ts.shape[0])
    if n == 0:
        return pa.array([], type=pa.string())
    if bool((ts == ts[0]).all()):
        ids = source.next_ids(n, int(ts[0]))
    else:
        ids = [source.next_id(int(t)) for t in ts.tolist()]
    return ids if isinstance(ids, pa.Array) else pa.array(ids, type=pa.string())

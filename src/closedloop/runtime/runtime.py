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
are precomputed strings, and everything a decision reads sits in one
:class:`~closedloop.runtime.serving._Plan` that :meth:`Runtime.load` swaps with a single assignment.

This module is the decider. What serves — bundles bound into plans, the deployment's arms, one
plan run over a batch — is :mod:`closedloop.runtime.serving`; a batch routed across flights is
:mod:`closedloop.runtime.routing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.schema import Columns
from closedloop.errors import ContextError, SpecError
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import choose, uniform
from closedloop.experience.guardrails import CapStore, InMemoryCapStore
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.clock import Clock, SystemClock
from closedloop.runtime.decision import Decision, DecisionBatch, ShadowResult
from closedloop.runtime.deployment import Deployment, Flight, assign_flight
from closedloop.runtime.ids import DecisionIds, IdSource
from closedloop.runtime.routing import _arms, _decide_arms
from closedloop.runtime.serving import _score_plan, _Serving, _shadow_one, bind_serving
from closedloop.system.spec import System

__all__ = ["Runtime"]


class Runtime:
    """Executes a system's intelligence.

    Parameters
    ----------
    system:
        The declared :class:`~closedloop.System`.
    bundle:
        The production :class:`~closedloop.Bundle` (checked against the system).
    shadows:
        Bundles scored beside production and recorded in each decision, never acted on (for a
        ranking system: each one's candidate scores and greedy slate, ``RankedDecision.shadows``).
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
        buffer; the disk write happens on its own thread; a ranking system's decisions with their
        request and candidates, :mod:`closedloop.telemetry.ranked`). ``None``: nothing is logged.
    flights:
        :class:`~closedloop.Flight` s: shares of units that other bundles decide for (a unit's arm
        is a stable hash of the flight name and the unit; a ranking system's unit is a request
        field, and a flight's bundle ranks that unit's requests). :meth:`apply` swaps in a whole
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
        self._serving: _Serving = self._build(
            Deployment(bundle, tuple(shadows), tuple(flights), bool(killswitch)), None
        )

    def _build(self, deployment: Deployment, old: _Serving | None) -> _Serving:
        """Bind every arm of ``deployment`` (reusing plans ``old`` already bound for the same
        bundle and shadows) and check them; nothing is swapped in here."""
        return bind_serving(self.system, deployment, old, self.caps, self._ranking)

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
        return tuple(s.version for s in self._serving.deployment.shadows)

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
            ranked = p.decide(context, decision_id, timestamp_ns, killswitch, sv.ranking_arms)
            if self.telemetry is not None:
                self.telemetry.log_ranked(ranked, context)
            return ranked
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
            rb = p.decide_batch(batch, candidates, ids.to_pylist(), ts.tolist(), killswitch, sv.ranking_arms)
            if self.telemetry is not None:
                self.telemetry.log_ranked_batch(rb, batch, candidates)
            return rb
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
            got = f"{ts_all.shape[0]} timestamps" if ts_all.ndim == 1 else f"an array of shape {ts_all.shape}"
            raise ContextError("timestamps_ns", f"one timestamp per input row ({n_in})", got)
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

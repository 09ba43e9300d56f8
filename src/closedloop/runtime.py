"""The runtime: every decision, one path.

``Runtime.decide`` (one context) and ``Runtime.decide_batch`` (a columnar batch) run the same
steps — validate → features → intelligence → experience → id and timestamp — and give identical
decisions: the same action and propensity, and bitwise-equal scores (each step's two forms are
built to round identically; see :mod:`closedloop.features`). The service, batch evaluation, the
simulator and in-process callers all go through here.

The per-decision path is lean: the context is validated once (msgspec), features are one
generated function, the intelligence's single-row form is generated code, reasons are
precomputed strings, and the state a decision reads is gathered into one :class:`_Plan` object
that :meth:`Runtime.load` swaps atomically when a new bundle arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .bundle import Bundle
from .clock import Clock, SystemClock
from .decision import Decision, DecisionBatch
from .errors import ContextError, SpecError
from .ids import DecisionIds, IdSource
from .schema import Int
from .spec import System

__all__ = ["Runtime"]


class _Plan:
    """Everything one decision reads, bound once per bundle."""

    __slots__ = (
        "bundle", "chooser", "features_one", "outputs", "score_batch", "score_one", "single",
        "system", "unit", "unit_is_int", "validate", "version",
    )

    def __init__(self, system: System, bundle: Bundle) -> None:
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
        self.chooser = bundle.experience(system).bind(self.outputs)
        self.unit = system.unit
        self.unit_is_int = isinstance(system.schema.by_name[system.unit], Int)


class Runtime:
    """Executes a system's intelligence.

    Parameters
    ----------
    system:
        The declared :class:`~closedloop.System`.
    bundle:
        The :class:`~closedloop.Bundle` to run (checked against the system).
    clock:
        Where timestamps come from (default: wall clock). Simulations pass a ``ManualClock``.
    ids:
        Where decision ids come from (default: :class:`~closedloop.ids.DecisionIds`; pass a
        seeded one for reproducible runs).
    """

    def __init__(
        self,
        system: System,
        bundle: Bundle,
        *,
        clock: Clock | None = None,
        ids: IdSource | None = None,
    ) -> None:
        if not isinstance(system, System):
            raise SpecError(f"Runtime needs a closedloop.System. Got {system!r} instead.")
        if not isinstance(bundle, Bundle):
            raise SpecError(f"Runtime needs a closedloop.Bundle. Got {bundle!r} instead.")
        self.system = system
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.ids: IdSource = ids if ids is not None else DecisionIds()
        self._plan = _Plan(system, bundle)

    @property
    def bundle(self) -> Bundle:
        return self._plan.bundle

    def load(self, bundle: Bundle) -> None:
        """Switch to another bundle. The new plan is built and checked first, then swapped in
        with one assignment: a decision in flight finishes on the plan it started with."""
        self._plan = _Plan(self.system, bundle)

    # -- one decision -----------------------------------------------------------------------
    def decide(
        self, context: Any, *, decision_id: str | None = None, timestamp_ns: int | None = None
    ) -> Decision:
        """Decide for one context (a mapping such as parsed JSON, or a validated context)."""
        p = self._plan
        c = p.validate(context)
        x = p.features_one(c)
        s = p.score_one(x, c)
        action, propensity, why = p.chooser.one(s)
        if timestamp_ns is None:
            timestamp_ns = self.clock.now_ns()
        if decision_id is None:
            decision_id = self.ids.next_id(timestamp_ns)
        unit = getattr(c, p.unit)
        return Decision(
            decision_id,
            p.system.name,
            str(unit) if p.unit_is_int else unit,
            timestamp_ns,
            p.version,
            {p.single: s[0]} if p.single is not None else dict(zip(p.outputs, s, strict=True)),
            action,
            propensity,
            why,
        )

    # -- a batch ------------------------------------------------------------------------------
    def decide_batch(
        self,
        batch: Any,
        *,
        decision_ids: Sequence[str] | None = None,
        timestamps_ns: Any = None,
        errors: str = "raise",
    ) -> DecisionBatch:
        """Decide for a columnar batch (an Arrow table / record batch, or a mapping of column
        name → array or list).

        ``decision_ids`` and ``timestamps_ns`` (one per input row) replay decisions exactly;
        otherwise one clock reading stamps the batch and ids come from the id source.
        ``errors="raise"`` refuses a batch with any invalid row (naming every one);
        ``errors="skip"`` decides the valid rows and lists the others in ``.errors``.
        """
        p = self._plan
        cols = p.system.schema.validate_batch(batch, errors=errors)
        n_in = _input_rows(batch)
        X = p.system.features.batch(cols)
        S = np.asarray(p.score_batch(X, cols), dtype=np.float64)
        if S.shape != (cols.n, len(p.outputs)):
            raise SpecError(
                f"The intelligence returned scores of shape {S.shape}; expected {(cols.n, len(p.outputs))}."
            )
        action_codes, propensities, why_codes = p.chooser.batch(S)
        rows = cols.rows
        if timestamps_ns is None:
            ts = np.full(cols.n, self.clock.now_ns(), dtype=np.int64)
        else:
            ts_all = np.asarray(timestamps_ns, dtype=np.int64)
            if ts_all.shape != (n_in,):
                raise ContextError("timestamps_ns", f"one timestamp per input row ({n_in})", f"{ts_all.shape[0]} timestamps")
            ts = ts_all[rows]
        if decision_ids is None:
            ids = _ids_for(self.ids, ts)
        else:
            ids_all = decision_ids if isinstance(decision_ids, pa.Array) else list(decision_ids)
            if len(ids_all) != n_in or not _all_nonempty_str(ids_all):
                raise ContextError(
                    "decision_ids", f"one non-empty string per input row ({n_in})", f"{len(ids_all)} values"
                )
            ids = pa.array(ids_all, type=pa.string()) if not isinstance(ids_all, pa.Array) else ids_all.cast(pa.string())
            if cols.n != n_in:
                ids = ids.take(pa.array(rows))
        unit_col = cols[p.unit]
        units = unit_col if isinstance(unit_col, pa.Array) else pa.array(unit_col).cast(pa.string())
        return DecisionBatch(
            system=p.system.name,
            bundle_version=p.version,
            decision_ids=ids,
            units=units,
            timestamps_ns=ts,
            outputs=p.outputs,
            scores=S,
            actions=p.chooser.actions,
            action_codes=action_codes,
            propensities=propensities,
            reasons=p.chooser.reasons,
            why_codes=why_codes,
            rows=rows,
            errors=cols.errors,
        )


def _input_rows(batch: Any) -> int:
    """Rows in the (already validated) input batch."""
    if isinstance(batch, pa.Table | pa.RecordBatch):
        return int(batch.num_rows)
    return len(next(iter(batch.values())))


def _all_nonempty_str(ids: Any) -> bool:
    if isinstance(ids, pa.Array):
        return ids.null_count == 0 and (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)) and (
            len(ids) == 0 or pc.min(pc.binary_length(ids)).as_py() > 0
        )
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

"""A batch routed across the deployment's flights: each row's arm (a stable hash of the flight
name and the row's unit, :func:`~closedloop.runtime.deployment.assign_flight`), each arm's rows
decided with its own plan, and the results put back in row order (:func:`_decide_arms`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.runtime.decision import DecisionBatch
from closedloop.runtime.deployment import Flight
from closedloop.runtime.serving import _score_plan, _Serving, _unit_arms


def _arms(flights: tuple[Flight, ...], units: pa.Array) -> np.ndarray:
    """Each row's arm: the index of the flight that claims its unit, or -1 (production)."""
    return _unit_arms(flights, units.to_pylist())


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

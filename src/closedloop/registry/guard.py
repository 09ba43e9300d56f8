"""Guard metrics per flight against production, the automatic rollback, the sample-ratio-mismatch
check and shadow disagreement — all from telemetry.

:func:`guard_check` compares every running flight with production **over the same window** (from
the flight's start, or the policy's window, until now):

=================  ======================================================  ==========================
metric             per arm                                                 source
=================  ======================================================  ==========================
``mistake_rate``   share of decisions followed by one of the system's      telemetry: decisions (with
                   ``mistake_outcomes`` (e.g. a user reporting a false     ``flight``) and outcomes
                   block), linked by ``decision_id``                       linked by decision_id
``error_rate``     decision errors / requests                              ``ops=`` (the service's
                                                                           counters per arm)
``latency_p99``    99th percentile of decision latency                     ``ops=`` (latency samples)
=================  ======================================================  ==========================

Telemetry records the decisions that were made, not the requests that failed, and no latency:
without ``ops`` those two metrics are reported as not measured, with the reason.

Each metric is a one-sided test that the flight is worse than production by more than the
declared tolerance (:class:`GuardPolicy`): for rates, Fisher's exact test when a cell is small
(expected count < 5) and no tolerance is declared, else a two-proportion z-test (pooled under
H0: p_flight ≤ p_production, or Wald when a tolerance shifts H0); for latency, the share of the
flight's decisions slower than production's p99 against production's own share (≈ 1 %). A
metric breaches when its p-value is below ``alpha`` **and** the observed difference exceeds
the tolerance; nothing is judged below ``min_decisions`` per arm. A breach stops the flight
(:meth:`Registry.guard_stop`): the history records the metric, both values, the test and why.

:func:`srm` is a chi-square goodness-of-fit test of the units seen per arm against the shares the
flights should get (:func:`closedloop.runtime.deployment.expected_shares`); it runs once every arm expects
at least :data:`SRM_MIN_EXPECTED` units and says "not enough data yet" before. :func:`srm_view`
counts exposure for it: from the change that set the current arms (a flight started, a promotion,
a new production …), and — since serving workers apply a change at their next poll, and a
decision record carries its bundle and flight but not the revision it was made under — in each
writer (process) only after its first decision that only the new arms can make (the new flight's
bundle, the new production bundle): decisions a worker made before it applied the change, and
the arms of a flight that has ended, are not counted. :func:`shadow_disagreement` counts, per
shadow and per production action, how often the shadow would have acted differently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import pyarrow as pa

from closedloop.errors import RegistryError
from closedloop.telemetry.records import DECISION_SCHEMA

__all__ = ["ArmOps", "GuardPolicy", "arm_counts", "guard_check", "shadow_disagreement", "srm", "srm_view"]

#: p-value under which the sample ratio is called a mismatch (the usual, strict SRM threshold).
SRM_ALPHA = 0.001

#: Units every arm must expect before the chi-square test runs (its approximation's usual rule).
SRM_MIN_EXPECTED = 5


@dataclass(frozen=True)
class GuardPolicy:
    """The declared tolerance of the guard.

    Parameters
    ----------
    alpha:
        Significance level of each one-sided test (flight worse than production).
    mistake_tolerance:
        Absolute increase of the mistake rate tolerated (0.002: +0.2 percentage points).
    error_tolerance:
        Absolute increase of the decision error rate tolerated.
    latency_tolerance:
        Relative increase of the p99 latency tolerated (0.5: up to 50 % slower).
    min_decisions:
        Decisions each arm needs in the window before it is judged.
    window_s:
        Compare over the last ``window_s`` seconds only (None: since the flight started).
    mistakes:
        The outcome kinds the mistake rate counts (None: the system's ``mistake_outcomes``). A
        flight sees only the mistakes users report — never the phishing a warning or a block
        caught — so a candidate that warns more always looks worse on reported false warnings;
        ``("reported_false_block",)`` judges it by the mistakes that cost enough to stop it for.
    """

    alpha: float = 0.01
    mistake_tolerance: float = 0.0
    error_tolerance: float = 0.0
    latency_tolerance: float = 0.5
    min_decisions: int = 200
    window_s: float | None = None
    mistakes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        m = self.mistakes
        if m is not None and (isinstance(m, str) or not isinstance(m, tuple | list) or not m
                              or not all(isinstance(k, str) and k for k in m)):
            raise RegistryError(
                f"The 'mistakes' of GuardPolicy must be a non-empty tuple of outcome kinds or None. Got {m!r} instead."
            )
        if m is not None:
            object.__setattr__(self, "mistakes", tuple(m))
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha < 1.0):
            raise RegistryError(f"The 'alpha' of GuardPolicy must be a number in (0, 1). Got {self.alpha!r} instead.")
        for name in ("mistake_tolerance", "error_tolerance", "latency_tolerance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v >= 0):
                raise RegistryError(f"The '{name}' of GuardPolicy must be a number ≥ 0. Got {v!r} instead.")
        if isinstance(self.min_decisions, bool) or not isinstance(self.min_decisions, int) or self.min_decisions < 1:
            raise RegistryError(
                f"The 'min_decisions' of GuardPolicy must be an integer ≥ 1. Got {self.min_decisions!r} instead."
            )
        if self.window_s is not None and (
            isinstance(self.window_s, bool) or not isinstance(self.window_s, int | float) or not self.window_s > 0
        ):
            raise RegistryError(f"The 'window_s' of GuardPolicy must be a number > 0 or None. Got {self.window_s!r} instead.")


@dataclass(frozen=True)
class ArmOps:
    """Operational counters of one arm over the window, kept by whoever serves (the service):
    requests, failed decisions, and latency samples in milliseconds."""

    requests: int
    errors: int = 0
    latencies_ms: Sequence[float] = ()


# -- tests ------------------------------------------------------------------------------------------
def _rate_test(x1: int, n1: int, x0: int, n0: int, tolerance: float) -> tuple[float, str]:
    """One-sided p-value of "flight rate − production rate > tolerance"."""
    from scipy import stats

    p1, p0 = x1 / n1, x0 / n0
    if tolerance == 0.0:
        pooled = (x1 + x0) / (n1 + n0)
        small = min(n1 * pooled, n1 * (1 - pooled), n0 * pooled, n0 * (1 - pooled)) < 5
        if small:
            res = stats.fisher_exact([[x1, n1 - x1], [x0, n0 - x0]], alternative="greater")
            return float(res.pvalue), "Fisher exact, one-sided"
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
        z = (p1 - p0) / se if se > 0 else 0.0
        return float(stats.norm.sf(z)), f"two-proportion z-test (pooled), one-sided, z={z:.3f}"
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    if se == 0:
        return (0.0 if p1 - p0 > tolerance else 1.0), "exact (no variance)"
    z = (p1 - p0 - tolerance) / se
    return float(stats.norm.sf(z)), f"two-proportion z-test (Wald, H0 shifted by the tolerance), one-sided, z={z:.3f}"


def _metric(name: str, x1: int, n1: int, x0: int, n0: int, tolerance: float, policy: GuardPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"metric": name, "measured": True, "n_flight": n1, "n_production": n0,
                           "count_flight": x1, "count_production": x0, "tolerance": tolerance, "alpha": policy.alpha}
    if n1 < policy.min_decisions or n0 < policy.min_decisions:
        out.update(flight=(x1 / n1) if n1 else None, production=(x0 / n0) if n0 else None, p_value=None, test=None,
                   breach=False, note=f"not judged: fewer than {policy.min_decisions} decisions in an arm")
        return out
    p, test = _rate_test(x1, n1, x0, n0, tolerance)
    v1, v0 = x1 / n1, x0 / n0
    out.update(flight=v1, production=v0, p_value=p, test=test, breach=bool(p < policy.alpha and v1 - v0 > tolerance))
    return out


def _latency_metric(flight: Sequence[float], prod: Sequence[float], policy: GuardPolicy) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"metric": "latency_p99", "measured": True, "n_flight": len(flight),
                           "n_production": len(prod), "tolerance": policy.latency_tolerance, "alpha": policy.alpha}
    if len(flight) < policy.min_decisions or len(prod) < policy.min_decisions:
        out.update(flight=None, production=None, p_value=None, test=None, breach=False,
                   note=f"not judged: fewer than {policy.min_decisions} latency samples in an arm")
        return out
    f, p = np.asarray(flight, dtype=np.float64), np.asarray(prod, dtype=np.float64)
    p99f, p99p = float(np.quantile(f, 0.99)), float(np.quantile(p, 0.99))
    slow_f, slow_p = int((f > p99p).sum()), int((p > p99p).sum())
    pv, test = _rate_test(slow_f, f.size, slow_p, p.size, 0.0)
    out.update(flight=p99f, production=p99p, p_value=pv,
               test=f"share slower than production's p99 — {test}",
               breach=bool(pv < policy.alpha and p99f > p99p * (1 + policy.latency_tolerance)))
    return out


def _not_measured(name: str, why: str) -> dict[str, Any]:
    return {"metric": name, "measured": False, "flight": None, "production": None, "p_value": None,
            "breach": False, "note": why}


# -- telemetry queries ---------------------------------------------------------------------------
#: The decision columns the guard reads: everything but the context and the features (a read of a
#: live segment need not decode a context a decision logged).
_DECISION_COLUMNS = tuple(n for n in DECISION_SCHEMA.names if n not in ("context_json", "features"))


def _tables(telemetry: Any) -> tuple[pa.Table, pa.Table]:
    if isinstance(telemetry, tuple) and len(telemetry) == 2:
        return telemetry[0], telemetry[1]
    if hasattr(telemetry, "read"):  # only the columns the guard's queries read (no context decoded)
        return telemetry.read("decisions", _DECISION_COLUMNS), telemetry.read("outcomes")
    raise RegistryError(
        "The guard's 'telemetry' must be a closedloop.telemetry.TelemetryStore or a (decisions, outcomes) pair of "
        f"Arrow tables. Got {telemetry!r} instead."
    )


def arm_counts(decisions: pa.Table, outcomes: pa.Table, system: str, mistake_kinds: Sequence[str],
               since_ns: int, until_ns: int, exclude_sources: Sequence[str] = (),
               ) -> dict[tuple[str | None, str], dict[str, int]]:
    """Per (flight or None, bundle version): decisions, distinct units and decisions followed by
    a mistake outcome (linked by decision id, reported by ``until_ns``, by a source not in
    ``exclude_sources``), in [since, until]."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("decisions", decisions)
        con.register("outcomes", outcomes)
        kinds = list(mistake_kinds) or ["\x00none"]
        excluded = list(exclude_sources) or ["\x00none"]
        rows = con.execute(
            """
            WITH m AS (SELECT DISTINCT decision_id FROM outcomes
                       WHERE decision_id IS NOT NULL AND kind IN (SELECT unnest(?)) AND event_ns <= ?
                         AND source NOT IN (SELECT unnest(?)))
            SELECT d.flight, d.bundle_version, count(*) AS n, count(DISTINCT d.unit) AS units,
                   count(m.decision_id) AS mistakes
            FROM decisions d LEFT JOIN m ON d.decision_id = m.decision_id
            WHERE d.system = ? AND d.timestamp_ns >= ? AND d.timestamp_ns <= ? AND NOT d.killswitch
            GROUP BY 1, 2
            """,
            [kinds, int(until_ns), excluded, system, int(since_ns), int(until_ns)],
        ).fetchall()
    finally:
        con.close()
    return {(f, v): {"n": int(n), "units": int(u), "mistakes": int(m)} for f, v, n, u, m in rows}


def srm(observed: Mapping[Any, int], expected: Mapping[Any, float]) -> dict[str, Any]:
    """Chi-square goodness of fit of observed arm sizes (units) against expected shares.
    Keys are arm names (None: production). ``mismatch`` is p < 0.001."""
    from scipy import stats

    arms = list(expected)
    n = sum(int(observed.get(a, 0)) for a in arms)
    total = sum(expected.values())
    rows = []
    chi2 = 0.0
    for a in arms:
        o = int(observed.get(a, 0))
        e = n * expected[a] / total if total > 0 else 0.0
        if e > 0:
            chi2 += (o - e) ** 2 / e
        rows.append({"arm": a if a is not None else "production", "units": o, "expected_share": expected[a] / total,
                     "observed_share": (o / n) if n else None, "expected_units": e})
    df = len(arms) - 1
    if df == 0:
        return {"arms": rows, "units": n, "chi2": None, "df": df, "p_value": None, "mismatch": False,
                "verdict": "nothing to test", "note": "one arm only: there is no split to test"}
    smallest = min(expected[a] / total for a in arms) if total > 0 else 0.0
    needed = math.ceil(SRM_MIN_EXPECTED / smallest - 1e-9) if smallest > 0 else 0
    if n < needed:
        return {"arms": rows, "units": n, "units_needed": needed, "chi2": None, "df": df, "p_value": None,
                "mismatch": False, "verdict": "not enough data yet",
                "note": f"not enough data yet ({n} units; the test needs {needed}: {SRM_MIN_EXPECTED} expected "
                        f"in the smallest arm, {smallest * 100:.3g}%)"}
    p = float(stats.chi2.sf(chi2, df))
    mismatch = p < SRM_ALPHA
    return {"arms": rows, "units": n, "units_needed": needed, "chi2": chi2, "df": df, "p_value": p,
            "mismatch": mismatch, "alpha": SRM_ALPHA, "verdict": "mismatch" if mismatch else "ok"}


def shadow_disagreement(decisions: pa.Table, system: str, since_ns: int, until_ns: int) -> dict[str, Any]:
    """Per shadow version: decisions scored, how often its action differed from the action taken,
    and the same per production action with the shadow's actions counted."""
    import pyarrow.compute as pc

    if decisions.num_rows == 0:
        return {}
    mask = pc.and_(pc.and_(pc.equal(decisions["system"], system), pc.greater_equal(decisions["timestamp_ns"], since_ns)),
                   pc.and_(pc.less_equal(decisions["timestamp_ns"], until_ns), pc.is_valid(decisions["shadows_json"])))
    t = decisions.filter(mask).select(["action", "shadows_json"])
    decode = msgspec.json.decode
    out: dict[str, Any] = {}
    for action, raw in zip(t["action"].to_pylist(), t["shadows_json"].to_pylist(), strict=True):
        for sh in decode(raw):
            s = out.setdefault(sh["bundle_version"], {"n": 0, "disagree": 0, "by_action": {}})
            s["n"] += 1
            a = s["by_action"].setdefault(action, {"n": 0, "disagree": 0, "shadow_actions": {}})
            a["n"] += 1
            a["shadow_actions"][sh["action"]] = a["shadow_actions"].get(sh["action"], 0) + 1
            if sh["action"] != action:
                s["disagree"] += 1
                a["disagree"] += 1
    for s in out.values():
        s["rate"] = s["disagree"] / s["n"]
        for a in s["by_action"].values():
            a["rate"] = a["disagree"] / a["n"]
    return out


def _arms(st: Any) -> tuple[Any, ...]:
    """What decides a unit's arm: the production bundle and the flights (name, bundle, share)."""
    return (st.production, tuple((f.name, f.bundle, f.share) for f in st.flights))


def arms_change(registry: Any, name: str, state: Any) -> dict[str, Any] | None:
    """The applied change that set the current arms of ``state`` (``{"event", "before"}``: the
    history event and the state before it), or None when the history does not hold one."""
    from closedloop.registry.state import DeploymentState

    now = _arms(state)
    for e in reversed(registry.history(name, attempts=False)):
        after = DeploymentState.from_dict(e["after"])
        before = DeploymentState.from_dict(e["before"]) if e["before"] else DeploymentState(name)
        if _arms(before) != _arms(after):
            return {"event": e, "before": before} if _arms(after) == now else None
    return None


def exposure_counts(decisions: pa.Table, system: str, since_ns: int, until_ns: int,
                    markers: Sequence[tuple[str | None, str]]) -> tuple[dict[tuple[str | None, str], int], dict[str, int]]:
    """Distinct units per (flight or None, bundle version) among the decisions in [since, until]
    without the kill switch — with ``markers`` (the arms only the new deployment has), in each
    writer only the decisions after its first marker decision (by the writer's sequence
    number): that decision shows the writer had applied the change, and what follows it is an
    unselected stream of the new split. Returns the counts and ``{"writers", "writers_applied",
    "decisions", "decisions_counted"}``."""
    import duckdb

    cols = decisions.column_names
    writer = "writer" if "writer" in cols else "''"
    order = "seq" if "seq" in cols else "timestamp_ns"
    base = (f"SELECT {writer} AS w, {order} AS o, flight, bundle_version, unit FROM decisions "
            "WHERE system = ? AND timestamp_ns >= ? AND timestamp_ns <= ? AND NOT killswitch")
    params = [system, int(since_ns), int(until_ns)]
    con = duckdb.connect()
    try:
        con.register("decisions", decisions)
        if markers:
            con.register("markers", pa.table({"flight": pa.array([m[0] for m in markers], pa.string()),
                                              "bundle": pa.array([m[1] for m in markers], pa.string())}))
            first = ("s AS (SELECT d.w, min(d.o) AS o0 FROM d JOIN markers m ON d.flight IS NOT DISTINCT FROM m.flight "
                     "AND d.bundle_version = m.bundle GROUP BY d.w)")
            rows = con.execute(f"WITH d AS ({base}), {first} SELECT d.flight, d.bundle_version, count(DISTINCT d.unit) "
                               "FROM d JOIN s ON d.w = s.w AND d.o > s.o0 GROUP BY 1, 2", params).fetchall()
            info = con.execute(f"WITH d AS ({base}), {first} SELECT count(DISTINCT d.w), count(DISTINCT s.w), "
                               "count(*), count(*) FILTER (WHERE d.o > s.o0) FROM d LEFT JOIN s ON d.w = s.w",
                               params).fetchone()
        else:
            rows = con.execute(f"WITH d AS ({base}) SELECT flight, bundle_version, count(DISTINCT unit) FROM d "
                               "GROUP BY 1, 2", params).fetchall()
            info = con.execute(f"WITH d AS ({base}) SELECT count(DISTINCT w), count(DISTINCT w), count(*), count(*) "
                               "FROM d", params).fetchone()
    finally:
        con.close()
    w, wa, n, nc = (int(x or 0) for x in (info or (0, 0, 0, 0)))
    return ({(f, v): int(u) for f, v, u in rows},
            {"writers": w, "writers_applied": wa, "decisions": n, "decisions_counted": nc})


def srm_view(registry: Any, system: Any, state: Any, decisions: pa.Table, until_ns: int) -> dict[str, Any] | None:
    """The sample-ratio check of the current flights (None: no flight runs): units per arm
    counted from the change that set the arms (see :func:`exposure_counts`), against the shares
    the flights should get. The result of :func:`srm`, with ``since`` (the change), ``counted``
    (how exposure was counted) and ``writers`` / ``decisions`` (seen, and counted)."""
    from closedloop.base.times import iso
    from closedloop.runtime.deployment import expected_shares

    name = getattr(system, "name", system)
    if state.production is None or not state.flights:
        return None
    change = arms_change(registry, name, state)
    new = {(None, state.production)} | {(f.name, f.bundle) for f in state.flights}
    if change is None:
        since, markers = 0, []
    else:
        b = change["before"]
        old = ({(None, b.production)} if b.production is not None else set()) | {(f.name, f.bundle) for f in b.flights}
        since = int(change["event"]["at_ns"])
        markers = sorted(new - old, key=lambda m: (m[0] or "", m[1]))
    counts, info = exposure_counts(decisions, name, since, until_ns, markers)
    observed: dict[str | None, int] = {None: counts.get((None, state.production), 0)}
    for f in state.flights:
        observed[f.name] = counts.get((f.name, f.bundle), 0)
    out = srm(observed, expected_shares(state.flights))
    ev = None if change is None else change["event"]
    out["since"] = {"at_ns": since, "at": iso(since),
                    "change": None if ev is None else {k: ev[k] for k in ("id", "operation", "revision_after", "actor")}}
    if markers:
        shown = ", ".join(f"{'production' if f is None else 'flight ' + f} {v}" for f, v in markers)
        out["counted"] = (f"in each writer, from its first decision by {shown} (it had applied revision "
                          f"{ev['revision_after'] if ev else '?'}); before that, and in ended arms, not counted")
    elif change is not None:
        out["counted"] = (f"from {iso(since)}: the change only moved shares or ended a flight, so no decision shows "
                          "when a worker applied it — a mismatch within a poll interval of it may be workers that "
                          "had not yet")
    else:
        out["counted"] = "every decision (the history does not say when the arms were set)"
    out["writers"] = {"seen": info["writers"], "applied": info["writers_applied"]}
    out["decisions"] = {"seen": info["decisions"], "counted": info["decisions_counted"]}
    return out


# -- the guard --------------------------------------------------------------------------------------
def guard_check(
    registry: Any,
    system: Any,
    telemetry: Any,
    *,
    policy: GuardPolicy | None = None,
    ops: Mapping[str | None, ArmOps] | None = None,
    now_ns: int | None = None,
    actor: str = "guard",
    apply: bool = True,
    exclude_sources: Sequence[str] = (),
) -> dict[str, Any]:
    """Check every running flight of ``system`` against production over the same window and,
    with ``apply`` (default), stop each flight that breaches (recorded with the metric, both
    values, the test and the reason). ``telemetry``: a :class:`~closedloop.telemetry.TelemetryStore`
    or ``(decisions, outcomes)`` Arrow tables; ``ops``: per-arm :class:`ArmOps` (key None =
    production) for decision errors and latency. ``exclude_sources``: outcome sources whose
    reports do not count (e.g. those an :class:`~closedloop.orchestration.AbusePolicy`
    quarantined — an abusive reporter whose unit hashes into the flight would otherwise stop every
    candidate). Returns a JSON-ready report."""
    if isinstance(exclude_sources, str) or not all(isinstance(x, str) for x in exclude_sources):
        raise RegistryError(f"The 'exclude_sources' of guard_check must be a list of source names. Got {exclude_sources!r} instead.")
    policy = policy or GuardPolicy()
    if not isinstance(policy, GuardPolicy):
        raise RegistryError(f"The 'policy' of guard_check must be a GuardPolicy. Got {policy!r} instead.")
    name = getattr(system, "name", None)
    if not isinstance(name, str) or not hasattr(system, "mistake_outcomes"):
        raise RegistryError(f"guard_check needs the closedloop.System. Got {system!r} instead.")
    now = int(now_ns if now_ns is not None else registry.clock.now_ns())
    state = registry.state(name)
    decisions, outcomes = _tables(telemetry)
    notes = []
    kinds = tuple(policy.mistakes) if policy.mistakes is not None else tuple(system.mistake_outcomes)
    if not kinds:
        notes.append(f"system {name!r} declares no mistake_outcomes: the mistake rate cannot be measured")
    notes.append("outcomes linked only by unit (no decision_id) are not attributed to an arm")
    report: dict[str, Any] = {"system": name, "revision": state.revision, "checked_at_ns": now,
                              "policy": asdict(policy), "state": state.to_dict(), "flights": [], "breaches": [],
                              "notes": notes}
    if exclude_sources:
        report["excluded_sources"] = sorted(set(exclude_sources))
    if state.production is None:
        report["notes"].append("nothing deployed")
        return report
    view = registry.at(name, 2**62)
    began = {f["name"]: (f["started"] or {}).get("at_ns") for f in view["flights"]}
    starts = [began.get(f.name) for f in state.flights]
    if state.flights:  # units per arm since the arms were set: is the split itself sound?
        report["srm"] = srm_view(registry, system, state, decisions, now)
        if report["srm"] and report["srm"]["mismatch"]:
            notes.append("sample ratio mismatch: the arms' sizes differ from their shares; metrics may be biased")
    shadow_starts = [(s["started"] or {}).get("at_ns") or 0 for s in view["shadows"]]
    if shadow_starts:
        report["shadow_disagreement"] = shadow_disagreement(decisions, name, min(shadow_starts), now)
    for f, started in zip(state.flights, starts, strict=True):
        since = started if started is not None else 0
        if policy.window_s is not None:
            since = max(since, now - int(policy.window_s * 1e9))
        counts = arm_counts(decisions, outcomes, name, kinds, since, now, exclude_sources)
        fl = counts.get((f.name, f.bundle), {"n": 0, "units": 0, "mistakes": 0})
        pr = counts.get((None, state.production), {"n": 0, "units": 0, "mistakes": 0})
        metrics = []
        if kinds:
            metrics.append(_metric("mistake_rate", fl["mistakes"], fl["n"], pr["mistakes"], pr["n"],
                                   float(policy.mistake_tolerance), policy))
        else:
            metrics.append(_not_measured("mistake_rate", "the system declares no mistake_outcomes"))
        fo, po = (ops or {}).get(f.name), (ops or {}).get(None)
        if fo is not None and po is not None:
            metrics.append(_metric("error_rate", int(fo.errors), int(fo.requests), int(po.errors), int(po.requests),
                                   float(policy.error_tolerance), policy))
            if fo.latencies_ms and po.latencies_ms:
                metrics.append(_latency_metric(fo.latencies_ms, po.latencies_ms, policy))
            else:
                metrics.append(_not_measured("latency_p99", "no latency samples were given for both arms"))
        else:
            why = ("telemetry records decisions made, not failed requests, and no latency; pass ops= with the "
                   "serving process's per-arm counters")
            metrics.append(_not_measured("error_rate", why))
            metrics.append(_not_measured("latency_p99", why))
        entry: dict[str, Any] = {**f.to_dict(), "since_ns": since, "until_ns": now,
                                 "decisions": {"flight": fl["n"], "production": pr["n"]},
                                 "units": {"flight": fl["units"], "production": pr["units"]},
                                 "metrics": metrics, "breach": any(m["breach"] for m in metrics), "action": "none"}
        if entry["breach"]:
            worst = [m for m in metrics if m["breach"]]
            reason = "; ".join(
                f"guard: {m['metric']} {m['flight']:.6g} in flight {f.name!r} vs {m['production']:.6g} in production "
                f"over {m['n_flight']} vs {m['n_production']} (p={m['p_value']:.3g} < alpha {policy.alpha}, "
                f"tolerance {m['tolerance']:g}; {m['test']})"
                for m in worst
            )
            report["breaches"].append({"flight": f.name, "bundle": f.bundle, "reason": reason,
                                       "metrics": [m["metric"] for m in worst]})
            if apply:
                change = registry.guard_stop(name, f.name, actor=actor, reason=reason, detail={
                    "metrics": worst, "all_metrics": metrics, "window": {"since_ns": since, "until_ns": now},
                    "policy": asdict(policy)})
                entry["action"] = "stopped"
                entry["change"] = change.to_dict()
            else:
                entry["action"] = "would stop (dry run)"
        report["flights"].append(entry)
    return report

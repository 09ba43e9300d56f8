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

``reward_per_decision``  for a system with ``rewards=RewardPolicy(...)``: the mean reward per
                   decision whose reward window closed, rewards linked by ``decision_id`` (+
                   ``candidate_id`` per slot), lower than production's beyond the noise and
                   ``GuardPolicy.reward_tolerance`` (relative) — :mod:`closedloop.registry.guard_rewards`

``goal:<name>``     each system goal an arm's telemetry measures without labels (outcome rates,
                   action shares): the flight's figure past the target production keeps, beyond
                   the noise (:mod:`closedloop.registry.guard_goals`; ``GuardPolicy.goals``)

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

:func:`srm` (the sample-ratio-mismatch check) and :func:`srm_view` (the exposure it counts) live
in :mod:`closedloop.registry.srm` and are importable from here too. :func:`shadow_disagreement`
counts, per shadow and per production action, how often the shadow would have acted differently.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import pyarrow as pa

from closedloop.errors import RegistryError
from closedloop.registry.guard_goals import describe_breach, flight_goals, goal_arm_counts, goal_metric
from closedloop.registry.guard_rewards import (
    REWARD_METRIC,
    describe_reward_breach,
    missing_columns,
    reward_arm_counts,
    reward_metric,
    rewards_are_binary,
)
from closedloop.registry.srm import (  # noqa: F401 - re-exported: they were defined here
    SRM_ALPHA,
    SRM_MIN_EXPECTED,
    arms_change,
    exposure_counts,
    srm,
    srm_view,
)
from closedloop.telemetry.records import DECISION_SCHEMA

__all__ = ["ArmOps", "GuardPolicy", "arm_counts", "guard_check", "shadow_disagreement", "srm", "srm_view"]


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
    reward_tolerance:
        Relative decrease of the reward per decision tolerated, as a share of production's mean
        (0.05: a flight up to 5 % below production is not stopped); systems with ``rewards`` only.
    min_decisions:
        Decisions each arm needs in the window before it is judged.
    window_s:
        Compare over the last ``window_s`` seconds only (None: since the flight started).
    mistakes:
        The outcome kinds the mistake rate counts (None: the system's ``mistake_outcomes``). A
        flight sees only the mistakes users report — never the phishing a warning or a block
        caught — so a candidate that warns more always looks worse on reported false warnings;
        ``("reported_false_block",)`` judges it by the mistakes that cost enough to stop it for.
    goals:
        Judge the system's goals an arm's telemetry measures without labels (outcome rates,
        action shares: :mod:`closedloop.registry.guard_goals`): a flight that pushes one past its
        target, where production keeps it, beyond the noise (p < ``alpha``), is stopped.
    """

    alpha: float = 0.01
    mistake_tolerance: float = 0.0
    error_tolerance: float = 0.0
    latency_tolerance: float = 0.5
    reward_tolerance: float = 0.0
    min_decisions: int = 200
    window_s: float | None = None
    mistakes: tuple[str, ...] | None = None
    goals: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.goals, bool):
            raise RegistryError(f"The 'goals' of GuardPolicy must be True or False. Got {self.goals!r} instead.")
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
        for name in ("mistake_tolerance", "error_tolerance", "latency_tolerance", "reward_tolerance"):
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
               *, con: Any = None) -> dict[tuple[str | None, str], dict[str, int]]:
    """Per (flight or None, bundle version): decisions, distinct units and decisions followed by
    a mistake outcome (linked by decision id, reported by ``until_ns``, by a source not in
    ``exclude_sources``), in [since, until]. ``con``: a DuckDB connection whose cursor runs the
    query (:func:`guard_check` passes one per check); None: a new in-memory database."""
    import duckdb

    cur = duckdb.connect() if con is None else con.cursor()
    try:
        cur.register("decisions", decisions)
        cur.register("outcomes", outcomes)
        kinds = list(mistake_kinds) or ["\x00none"]
        excluded = list(exclude_sources) or ["\x00none"]
        rows = cur.execute(
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
        cur.close()
    return {(f, v): {"n": int(n), "units": int(u), "mistakes": int(m)} for f, v, n, u, m in rows}


class _Shadow(msgspec.Struct, gc=False):
    """What :func:`shadow_disagreement` reads of a shadow's entry in ``shadows_json``."""

    bundle_version: str
    action: str | None


def _order(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if k is None else str(k) for k in key)


def shadow_disagreement(decisions: pa.Table, system: str, since_ns: int, until_ns: int) -> dict[str, Any]:
    """Per shadow version: decisions scored, how often its action differed from the action taken,
    and the same per production action with the shadow's actions counted."""
    import pyarrow.compute as pc

    if decisions.num_rows == 0:
        return {}
    mask = pc.and_(pc.and_(pc.equal(decisions["system"], system), pc.greater_equal(decisions["timestamp_ns"], since_ns)),
                   pc.and_(pc.less_equal(decisions["timestamp_ns"], until_ns), pc.is_valid(decisions["shadows_json"])))
    t = decisions.select(["action", "shadows_json"]).filter(mask)
    raws = t["shadows_json"].to_pylist()
    # one decode of every row (only the two fields read), then the (shadow, action, its action) triples counted in C
    rows = msgspec.json.decode(("[" + ",".join(raws) + "]").encode(), type=list[list[_Shadow]]) if raws else []
    triples = Counter((sh.bundle_version, action, sh.action) for action, shs in zip(t["action"].to_pylist(), rows, strict=True)
                      for sh in shs)
    out: dict[str, Any] = {}
    for (version, action, shadow_action), n in sorted(triples.items(), key=lambda kv: _order(kv[0])):
        s = out.setdefault(version, {"n": 0, "disagree": 0, "by_action": {}})
        a = s["by_action"].setdefault(action, {"n": 0, "disagree": 0, "shadow_actions": {}})
        s["n"] += n
        a["n"] += n
        a["shadow_actions"][shadow_action] = n
        if shadow_action != action:
            s["disagree"] += n
            a["disagree"] += n
    for s in out.values():
        s["rate"] = s["disagree"] / s["n"]
        for a in s["by_action"].values():
            a["rate"] = a["disagree"] / a["n"]
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
    policy, name = _checked(system, policy, exclude_sources)
    now = int(now_ns if now_ns is not None else registry.clock.now_ns())
    state = registry.state(name)
    decisions, outcomes = _tables(telemetry)
    kinds = tuple(policy.mistakes) if policy.mistakes is not None else tuple(system.mistake_outcomes)
    report = _new_report(name, state, now, policy, kinds, exclude_sources)
    if state.production is None:
        report["notes"].append("nothing deployed")
        return report
    import duckdb

    con = duckdb.connect()  # one in-memory database for the whole check: each query runs on a cursor of it
    try:
        view = registry.at(name, 2**62)
        began = {f["name"]: (f["started"] or {}).get("at_ns") for f in view["flights"]}
        _split_checks(report, registry, system, state, view, decisions, now, con)
        judged, skipped = flight_goals(system) if policy.goals else ([], [])
        if policy.goals:
            report["goals_not_judged"] = skipped
        for f in state.flights:
            since = began.get(f.name)
            since = since if since is not None else 0
            if policy.window_s is not None:
                since = max(since, now - int(policy.window_s * 1e9))
            counts = arm_counts(decisions, outcomes, name, kinds, since, now, exclude_sources, con=con)
            fl = counts.get((f.name, f.bundle), {"n": 0, "units": 0, "mistakes": 0})
            pr = counts.get((None, state.production), {"n": 0, "units": 0, "mistakes": 0})
            metrics = _flight_metrics(fl, pr, (ops or {}).get(f.name), (ops or {}).get(None), kinds, policy)
            if getattr(system, "rewards", None) is not None:
                metrics.append(_reward_metric(decisions, outcomes, system, f, state.production, (since, now), policy,
                                              exclude_sources, con))
            for goal, metric in judged:
                gc = goal_arm_counts(decisions, outcomes, name, metric, since, now, exclude_sources, con=con)
                metrics.append(goal_metric(goal, metric, gc.get((f.name, f.bundle), {"n": 0, "x": 0}),
                                           gc.get((None, state.production), {"n": 0, "x": 0}), policy.alpha, policy.min_decisions))
            entry: dict[str, Any] = {**f.to_dict(), "since_ns": since, "until_ns": now,
                                     "decisions": {"flight": fl["n"], "production": pr["n"]},
                                     "units": {"flight": fl["units"], "production": pr["units"]},
                                     "metrics": metrics, "breach": any(m["breach"] for m in metrics), "action": "none"}
            if entry["breach"]:
                _on_breach(report, entry, registry, name, f, policy, (since, now), actor, apply)
            report["flights"].append(entry)
    finally:
        con.close()
    return report


def _checked(system: Any, policy: GuardPolicy | None, exclude_sources: Sequence[str]) -> tuple[GuardPolicy, str]:
    """guard_check's arguments checked: the policy (the default when None) and the system's name."""
    if isinstance(exclude_sources, str) or not all(isinstance(x, str) for x in exclude_sources):
        raise RegistryError(f"The 'exclude_sources' of guard_check must be a list of source names. Got {exclude_sources!r} instead.")
    policy = policy or GuardPolicy()
    if not isinstance(policy, GuardPolicy):
        raise RegistryError(f"The 'policy' of guard_check must be a GuardPolicy. Got {policy!r} instead.")
    name = getattr(system, "name", None)
    if not isinstance(name, str) or not hasattr(system, "mistake_outcomes"):
        raise RegistryError(f"guard_check needs the closedloop.System. Got {system!r} instead.")
    return policy, name


def _new_report(name: str, state: Any, now: int, policy: GuardPolicy, kinds: tuple[str, ...],
                exclude_sources: Sequence[str]) -> dict[str, Any]:
    """The report before any flight is judged: the system, its state, the policy and the notes
    on what cannot be measured."""
    notes = []
    if not kinds:
        notes.append(f"system {name!r} declares no mistake_outcomes: the mistake rate cannot be measured")
    notes.append("outcomes linked only by unit (no decision_id) are not attributed to an arm (nor paid as rewards)")
    report: dict[str, Any] = {"system": name, "revision": state.revision, "checked_at_ns": now,
                              "policy": asdict(policy), "state": state.to_dict(), "flights": [], "breaches": [],
                              "notes": notes}
    if exclude_sources:
        report["excluded_sources"] = sorted(set(exclude_sources))
    return report


def _split_checks(report: dict[str, Any], registry: Any, system: Any, state: Any, view: dict[str, Any],
                  decisions: pa.Table, now: int, con: Any = None) -> None:
    """Into ``report``: the sample-ratio check of the flights' arms (is the split itself sound?)
    and the shadows' disagreement since the first of them started."""
    if state.flights:  # units per arm since the arms were set: is the split itself sound?
        report["srm"] = srm_view(registry, system, state, decisions, now, con=con)
        if report["srm"] and report["srm"]["mismatch"]:
            report["notes"].append("sample ratio mismatch: the arms' sizes differ from their shares; metrics may be biased")
    shadow_starts = [(s["started"] or {}).get("at_ns") or 0 for s in view["shadows"]]
    if shadow_starts:
        report["shadow_disagreement"] = shadow_disagreement(decisions, report["system"], min(shadow_starts), now)


def _flight_metrics(fl: dict[str, int], pr: dict[str, int], fo: ArmOps | None, po: ArmOps | None,
                    kinds: tuple[str, ...], policy: GuardPolicy) -> list[dict[str, Any]]:
    """The guard's metrics of one flight against production: the mistake rate from the arms'
    counts, the error rate and p99 latency from their ``ops`` (each not measured, with the
    reason, when its data is missing)."""
    metrics = []
    if kinds:
        metrics.append(_metric("mistake_rate", fl["mistakes"], fl["n"], pr["mistakes"], pr["n"],
                               float(policy.mistake_tolerance), policy))
    else:
        metrics.append(_not_measured("mistake_rate", "the system declares no mistake_outcomes"))
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
    return metrics


def _reward_metric(decisions: pa.Table, outcomes: pa.Table, system: Any, f: Any, production: str,
                   window: tuple[int, int], policy: GuardPolicy, exclude_sources: Sequence[str],
                   con: Any = None) -> dict[str, Any]:
    """The flight's ``reward_per_decision`` against production (:mod:`closedloop.registry.guard_rewards`),
    or not measured when the telemetry given lacks a column it reads."""
    rewards = system.rewards
    lacking = missing_columns(decisions, outcomes, rewards)
    if lacking:
        return _not_measured(REWARD_METRIC, f"the telemetry given lacks the column(s) {lacking}")
    counts = reward_arm_counts(decisions, outcomes, system.name, rewards, window[0], window[1], exclude_sources, con=con)
    return reward_metric(counts.get((f.name, f.bundle), {}), counts.get((None, production), {}),
                         binary=rewards_are_binary(rewards, system), tolerance=float(policy.reward_tolerance),
                         alpha=policy.alpha, min_decisions=policy.min_decisions, rate_test=_rate_test)


def _on_breach(report: dict[str, Any], entry: dict[str, Any], registry: Any, name: str, f: Any, policy: GuardPolicy,
               window: tuple[int, int], actor: str, apply: bool) -> None:
    """A flight breached: the breach and its reason into ``report``, and with ``apply`` the
    flight stopped (:meth:`Registry.guard_stop`) — else marked as a dry run in ``entry``."""
    metrics = entry["metrics"]
    worst = [m for m in metrics if m["breach"]]
    reason = "; ".join(
        describe_breach(m, f.name, policy.alpha) if "goal" in m else
        describe_reward_breach(m, f.name) if m["metric"] == REWARD_METRIC else
        f"guard: {m['metric']} {m['flight']:.6g} in flight {f.name!r} vs {m['production']:.6g} in production "
        f"over {m['n_flight']} vs {m['n_production']} (p={m['p_value']:.3g} < alpha {policy.alpha}, "
        f"tolerance {m['tolerance']:g}; {m['test']})"
        for m in worst
    )
    report["breaches"].append({"flight": f.name, "bundle": f.bundle, "reason": reason,
                               "metrics": [m["metric"] for m in worst]})
    if apply:
        since, now = window
        change = registry.guard_stop(name, f.name, actor=actor, reason=reason, detail={
            "metrics": worst, "all_metrics": metrics, "window": {"since_ns": since, "until_ns": now},
            "policy": asdict(policy)})
        entry["action"] = "stopped"
        entry["change"] = change.to_dict()
    else:
        entry["action"] = "would stop (dry run)"

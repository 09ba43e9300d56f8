"""The guard judges a system that declares rewards by its reward per decision: a flight whose mean
reward is lower than production's, beyond the noise and the declared tolerance, is stopped.

For a system with ``System(rewards=RewardPolicy(...))`` (:mod:`closedloop.system.rewards`) the
guard adds the metric ``reward_per_decision`` per running flight, from the same telemetry and over
the same window as its other metrics:

- **each decision's reward** is the policy's: its outcomes of the declared kinds linked by
  ``decision_id`` (per slot, also by a ``candidate_id`` the decision's slate showed), with event
  time in ``[decision, decision + window]``, combined per slot (or per decision) by the first
  :class:`~closedloop.system.rewards.Reward` in order with a counted outcome (its ``aggregate``
  — ``first`` takes the earliest by event time — times its ``scale``); a slot (or decision)
  without one takes the policy's ``default``. Per slot, the decision's reward is the **sum over
  the slots of its slate**; with ``default=None`` a decision none of whose slots was paid has no
  reward and is counted ``no_reward`` instead. Outcomes are counted once per ``outcome_id`` (a
  retried report pays once), reported by the end of the window and not by an excluded
  (quarantined) source; outcomes linked only by unit and time carry no arm and are not counted;
- **only decisions whose reward window has closed** by the end of the guard's window
  (``timestamp + window ≤ now``) count; the others are counted ``open``. A decision that may still
  be clicked would count as a default (0) and make a young flight — all of whose decisions are
  recent — look worse than production;
- **the test** is one-sided, "the flight's mean is lower than production's by more than the
  tolerance". ``GuardPolicy.reward_tolerance`` is **relative** to production's mean (rewards have
  any unit — clicks, money, seconds — so a share means the same for each): 0.05 tolerates a flight
  up to 5 % below production (``|production| × 0.05`` below it). For rewards declared 0/1 —
  ``per="decision"`` (or a ranking that shows one slot), every Reward ``any`` with scale 1, default
  0, 1 or None — the guard's rate tests: Fisher's exact test when a cell is small (expected count
  < 5) and no tolerance is declared, else a two-proportion z-test. For any other reward, a
  one-sided Welch t-test on the means (unequal variances, Welch–Satterthwaite degrees of freedom).
  A breach needs p < ``alpha`` **and** the observed shortfall beyond the tolerance; nothing is
  judged below ``min_decisions`` counted (closed, rewarded) decisions per arm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pyarrow as pa

__all__ = ["REWARD_METRIC", "describe_reward_breach", "missing_columns", "reward_arm_counts", "reward_metric", "rewards_are_binary"]

#: The name of the guard's reward metric.
REWARD_METRIC = "reward_per_decision"

_DECISION_NEEDS = ("decision_id", "system", "timestamp_ns", "flight", "bundle_version", "killswitch")
_OUTCOME_NEEDS = ("outcome_id", "decision_id", "kind", "value", "event_ns", "source")

_EMPTY = {"n": 0, "mean": None, "var": None, "open": 0, "no_reward": 0}


def rewards_are_binary(policy: Any, system: Any) -> bool:
    """Whether every decision's reward is 0 or 1 by declaration: one reward per decision (or a
    ranking that shows one slot), every Reward ``any`` with scale 1, the default 0, 1 or None."""
    one_slot = policy.per == "decision" or getattr(getattr(system, "experience", None), "k", None) == 1
    return bool(one_slot and all(r.aggregate == "any" and r.scale == 1.0 for r in policy.rewards)
                and policy.default in (None, 0.0, 1.0))


def missing_columns(decisions: pa.Table, outcomes: pa.Table, policy: Any) -> list[str]:
    """The columns the reward metric reads that the given telemetry tables lack."""
    dec = [*_DECISION_NEEDS, *(["slate"] if policy.per == "slot" else [])]
    out = [*_OUTCOME_NEEDS, *(["candidate_id"] if policy.per == "slot" else [])]
    return ([f"decisions.{c}" for c in dec if c not in decisions.column_names]
            + [f"outcomes.{c}" for c in out if c not in outcomes.column_names])


_SQL = """
WITH d AS (
  SELECT decision_id, flight, bundle_version, timestamp_ns, {slots} AS slots, {slate} AS slate,
         timestamp_ns + $window <= $until AS closed
  FROM decisions
  WHERE system = $system AND timestamp_ns >= $since AND timestamp_ns <= $until AND NOT killswitch
  QUALIFY row_number() OVER (PARTITION BY decision_id) = 1
),
o AS (
  SELECT decision_id, {cid} AS cid, kind, value, event_ns FROM outcomes
  WHERE decision_id IS NOT NULL AND list_contains($kinds, kind) AND event_ns <= $until
    AND NOT list_contains($excluded, source)
  QUALIFY row_number() OVER (PARTITION BY outcome_id ORDER BY event_ns) = 1
),
lo AS (
  SELECT o.decision_id, o.cid, o.kind, o.value, o.event_ns, list_position($kinds, o.kind) AS rank
  FROM o JOIN d ON o.decision_id = d.decision_id
  WHERE d.closed AND o.event_ns >= d.timestamp_ns AND o.event_ns <= d.timestamp_ns + $window {in_slate}
),
k AS (  -- per (decision, slot, kind): the kind's aggregate times its scale
  SELECT decision_id, cid, rank,
         CASE list_extract($aggregates, rank)
           WHEN 'any' THEN CASE WHEN bool_or(value <> 0) THEN 1.0 ELSE 0.0 END
           WHEN 'first' THEN arg_min(value, event_ns)
           WHEN 'sum' THEN sum(value)
           ELSE max(value) END * list_extract($scales, rank) AS r
  FROM lo GROUP BY decision_id, cid, rank
),
s AS (SELECT decision_id, cid, arg_min(r, rank) AS r FROM k GROUP BY decision_id, cid),
p AS (SELECT decision_id, sum(r) AS paid, count(*) AS rewarded FROM s GROUP BY decision_id),
dr AS (
  SELECT d.flight, d.bundle_version, d.closed,
         CASE WHEN NOT d.closed THEN NULL
              WHEN p.rewarded IS NULL AND {default} IS NULL THEN NULL
              ELSE coalesce(p.paid, 0.0) + coalesce({default}, 0.0) * (d.slots - coalesce(p.rewarded, 0)) END AS reward
  FROM d LEFT JOIN p ON d.decision_id = p.decision_id
)
SELECT flight, bundle_version, count(reward), avg(reward), var_samp(reward),
       count(*) FILTER (WHERE NOT closed), count(*) FILTER (WHERE closed AND reward IS NULL)
FROM dr GROUP BY 1, 2
"""


def reward_arm_counts(decisions: pa.Table, outcomes: pa.Table, system: str, policy: Any, since_ns: int, until_ns: int,
                      exclude_sources: Sequence[str] = (), *, con: Any = None) -> dict[tuple[str | None, str], dict[str, Any]]:
    """Per (flight or None, bundle version), of the decisions in [since, until] (kill-switch
    decisions left out): ``n`` decisions counted (window closed by ``until``, with a reward), their
    reward's ``mean`` and sample variance ``var``, ``open`` (window still open) and ``no_reward``
    (closed, nothing paid and no default). The rules: the module doc.
    ``con``: a DuckDB connection whose cursor runs the query (:func:`~closedloop.registry.guard.guard_check`
    passes one per check: a cursor costs microseconds, a new database tens of ms); None: a new database."""
    import duckdb

    per_slot = policy.per == "slot"
    sql = _SQL.format(
        slots="coalesce(len(slate), 0)" if per_slot else "1", slate="slate" if per_slot else "NULL",
        cid="candidate_id" if per_slot else "NULL", in_slate="AND list_contains(d.slate, o.cid)" if per_slot else "",
        default="NULL::DOUBLE" if policy.default is None else f"{float(policy.default)!r}::DOUBLE",
    )
    params = {
        "window": policy.window // timedelta(microseconds=1) * 1000, "until": int(until_ns), "since": int(since_ns),
        "system": system, "kinds": list(policy.kinds), "excluded": list(exclude_sources) or ["\x00none"],
        "aggregates": [r.aggregate for r in policy.rewards], "scales": [r.scale for r in policy.rewards],
    }
    cur = duckdb.connect() if con is None else con.cursor()
    try:
        cur.register("decisions", decisions)
        cur.register("outcomes", outcomes)
        rows = cur.execute(sql, params).fetchall()
    finally:
        cur.close()
    return {(f, v): {"n": int(n), "mean": None if mean is None else float(mean), "var": None if var is None else float(var),
                     "open": int(op), "no_reward": int(nr)} for f, v, n, mean, var, op, nr in rows}


def _welch(m1: float, v1: float, n1: int, m0: float, v0: float, n0: int, delta: float) -> tuple[float, str]:
    """One-sided p-value of "production mean − flight mean > delta" (Welch)."""
    from scipy import stats

    a, b = v1 / n1, v0 / n0
    se = math.sqrt(a + b)
    if se == 0:
        return (0.0 if m0 - m1 > delta else 1.0), "exact (no variance)"
    t = (m0 - m1 - delta) / se
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n0 - 1))
    return float(stats.t.sf(t, df)), f"Welch t-test on the means, one-sided, t={t:.3f}, df={df:.1f}"


def reward_metric(fl: dict[str, Any], pr: dict[str, Any], *, binary: bool, tolerance: float, alpha: float,
                  min_decisions: int, rate_test: Callable[[int, int, int, int, float], tuple[float, str]]) -> dict[str, Any]:
    """The guard's ``reward_per_decision`` entry of one flight against production: the arms'
    :func:`reward_arm_counts`, judged by the module doc's test (``rate_test``: the guard's test of
    "rate 1 − rate 2 > tolerance", used with production first for 0/1 rewards)."""
    fl, pr = {**_EMPTY, **fl}, {**_EMPTY, **pr}
    n1, n0 = fl["n"], pr["n"]
    out: dict[str, Any] = {"metric": REWARD_METRIC, "measured": True, "n_flight": n1, "n_production": n0,
                           "flight": fl["mean"], "production": pr["mean"], "open_flight": fl["open"],
                           "open_production": pr["open"], "no_reward_flight": fl["no_reward"],
                           "no_reward_production": pr["no_reward"], "tolerance": tolerance, "tolerance_kind": "relative",
                           "alpha": alpha, "binary": binary}
    if n1 < min_decisions or n0 < min_decisions:
        out.update(p_value=None, test=None, breach=False,
                   note=f"not judged: fewer than {min_decisions} decisions whose reward window closed in an arm")
        return out
    m1, m0 = float(fl["mean"]), float(pr["mean"])
    delta = tolerance * abs(m0)
    if binary:
        x1, x0 = round(m1 * n1), round(m0 * n0)
        p, test = rate_test(x0, n0, x1, n1, delta)
        test = f"0/1 rewards: {test} (production's rate above the flight's)"
        out.update(count_flight=x1, count_production=x0)
    else:
        p, test = _welch(m1, float(fl["var"] or 0.0), n1, m0, float(pr["var"] or 0.0), n0, delta)
    out.update(p_value=p, test=test, shortfall=m0 - m1, tolerance_abs=delta,
               breach=bool(p < alpha and m0 - m1 > delta))
    return out


def describe_reward_breach(m: dict[str, Any], flight: str) -> str:
    """A reward breach in words: both means, the counts, how much lower, the tolerance and the test."""
    rel = f"{m['shortfall'] / abs(m['production']):.1%} " if m["production"] else ""
    return (f"guard: {REWARD_METRIC} {m['flight']:.6g} in flight {flight!r} vs {m['production']:.6g} in production over "
            f"{m['n_flight']} vs {m['n_production']} decisions whose reward window closed — {rel}lower, beyond the "
            f"tolerated {m['tolerance']:.1%} of production's mean (p={m['p_value']:.3g} < alpha {m['alpha']}; {m['test']})")

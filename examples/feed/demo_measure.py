"""The feed demo's measurements: the loop's cycles in brief, the truth of its evaluations, the
bad-candidate episode's story, and each arm's figures pooled over the measured days.

**Intervals.** An arm's clicks per session over the measured days is the mean of the world's
expected genuine clicks per session (the true value of each slate shown, so no click noise) with a
normal 95 % interval from the per-session variance. The loop's lift over another arm is paired by
day (the arms share each day's users and draws): the mean of the day-by-day differences, a 95 %
t-interval over the days, and the ratio of the pooled means.

**The truth of an evaluation.** When a cycle's gate judged a candidate against production, the demo
decides the evaluation window's sessions (the loop's own days, kept) with both bundles through an
exploring runtime without telemetry and takes the world's truth of each on the estimator's own
scale — expected clicks per logged slot, the click farm's clicks included (the log holds them unless
its units are quarantined): the true difference is then checked against the gate's 95 % interval
of the difference (its estimator is named: SNIPS without a reward model, DR with one). The truth
is taken on the sessions the evaluation held out: with a time split (the demo's), those at or after
the split's cut-off over the window's rows — the same sessions the estimate read, up to the farm
units the dataset left out; with a unit split, the whole window (the same population, not the same
sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop import Bundle, Runtime

__all__ = ["brief_cycle", "evaluation_truth", "fault_story", "summarize"]

_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13, 20: 2.09, 30: 2.04}


def _t(df: int) -> float:
    if df <= 0:
        return float("nan")
    keys = [k for k in _T975 if k <= df]
    return _T975[max(keys)] if df <= 30 else 1.96


def _done(steps: dict[str, Any], name: str) -> dict[str, Any] | None:
    st = steps.get(name) or {}
    res = st.get("result")
    return res if st.get("status") == "done" and isinstance(res, dict) else None


def brief_cycle(rec: dict[str, Any], day: int) -> dict[str, Any]:
    """What a cycle did, in a few JSON fields."""
    steps = rec.get("steps", {})
    out: dict[str, Any] = {"id": rec.get("id"), "day": day, "outcome": rec.get("outcome"), "reason": (rec.get("reason") or "")[:300],
                           "changes": [{"operation": c.get("operation"), "message": c.get("message")} for c in rec.get("changes", [])]}
    tr = _done(steps, "train")
    if tr:
        out["candidate"] = tr.get("version")
    ev = _done(steps, "evaluate")
    if ev and ev.get("gate"):
        g = ev["gate"]
        out["gate"] = {k: g.get(k) for k in ("passed", "estimator", "difference", "ci", "reason") if k in g}
    adv = _done(steps, "advance")
    if adv:
        out["advance"] = {k: adv.get(k) for k in ("outcome", "message")}
    mon = _done(steps, "monitor")
    if mon:
        out["quarantined"] = [*mon.get("quarantined", []), *mon.get("quarantined_units", [])]
    return out


def evaluation_truth(rec: dict[str, Any], day: int, kept: dict[int, Any], world: Any, loop: Any) -> dict[str, Any] | None:
    """The true difference candidate − production on the evaluation's held-out sessions beside the
    gate's interval (module doc); None when the cycle judged nothing."""
    steps = rec.get("steps", {})
    ev, tr = _done(steps, "evaluate"), _done(steps, "train")
    gate = (ev or {}).get("gate") or {}
    ci = gate.get("ci")
    if not tr or not ci or gate.get("difference") is None:
        return None
    prod_version = gate.get("baseline")
    if not prod_version:
        return None
    system = loop.system
    cand = Runtime(system, Bundle.load(tr["path"], system))  # a candidate the gate stopped is not registered
    prod = Runtime(system, loop.reg.load_bundle(prod_version, system))
    window = [sessions for d, sessions in sorted(kept.items()) if day - loop.window_days < d <= day]
    (a, sa, b, sb, n), _ = held_out_sums(world, window, _held_out(system, window), cand, prod)
    true = a / sa - b / sb if sa and sb else float("nan")
    lo, hi = float(ci[0]), float(ci[1])
    return {"day": day, "candidate": tr["version"], "production": prod_version, "estimator": gate.get("estimator"),
            "estimate": gate.get("difference"), "ci": [lo, hi], "true": true, "covered": lo <= true <= hi, "sessions": n}


def held_out_sums(world: Any, window: list[Any], held: list[np.ndarray], cand: Any, prod: Any, *,
                  every_day: bool = False) -> tuple[tuple[float, float, float, float, int], int]:
    """The candidate's and production's expected logged clicks and slots over the held-out sessions
    of ``window`` (``held``: each day's mask), and the sessions held out → ((clicks, slots of the
    candidate, clicks, slots of production, sessions), the days decided). A day with no held-out
    session adds exactly nothing (0.0 clicks, 0 slots), so it is not decided (a time split holds out
    the window's last seventh: one or two of its days) unless ``every_day``."""
    a = b = sa = sb = 0.0
    n = decided = 0
    for sessions, mask in zip(window, held, strict=True):
        if not every_day and not mask.any():
            continue
        ca, na = _clicks_and_slots(world, sessions, _batch(cand, world, sessions), mask)
        cb, nb = _clicks_and_slots(world, sessions, _batch(prod, world, sessions), mask)
        a, sa, b, sb, n = a + ca, sa + na, b + cb, sb + nb, n + int(mask.sum())
        decided += 1
    return (a, sa, b, sb, n), decided


def _held_out(system: Any, window: list[Any]) -> list[np.ndarray]:
    """Each day's sessions the evaluation held out: with a time split, those at or after the cut-off
    the split computes over the window's rows (each session's slots: its timestamp, k times); with a
    unit split, every session (the held-out units are a sample of the same population)."""
    from closedloop.system.splits import time_cutoff

    if system.split.by != "time":
        return [np.ones(s.n, dtype=bool) for s in window]
    k = system.experience.k
    times = np.concatenate([np.repeat(s.timestamps_ns, k) for s in window]) if window else np.zeros(0, dtype=np.int64)
    cut = time_cutoff(times, system.split.test_fraction) if len(times) else 0
    return [s.timestamps_ns >= cut for s in window]


def _clicks_and_slots(world: Any, sessions: Any, batch: Any, mask: np.ndarray) -> tuple[float, int]:
    """The expected clicks the log would record for ``batch`` on the sessions of ``mask`` (genuine
    users' expected clicks plus every farm item shown to a farm unit, which it always clicks) and
    the slots shown."""
    from closedloop.world.feed_sessions import slates

    pos = slates(sessions, batch)
    shown = (pos >= 0) & mask[:, None]
    item = np.take_along_axis(sessions.cand, np.maximum(pos, 0), axis=1)
    farm = (shown & sessions.farm[:, None] & world.farm_item[item]).sum()
    return float(world.expected_clicks(sessions, batch)[mask].sum() + farm), int(shown.sum())


def _batch(runtime: Any, world: Any, sessions: Any) -> Any:
    from closedloop.runtime.ids import DecisionIds

    ids = DecisionIds(7).next_ids(sessions.n, world.day_start_ns(sessions.day)).to_pylist()
    return runtime.decide_batch(sessions.requests(), candidates=sessions.candidates(), decision_ids=ids,
                                timestamps_ns=sessions.timestamps_ns)


def fault_story(fault_day: int, cycles: list[dict[str, Any]], evaluations: Sequence[dict[str, Any]] = (),
                held_out_last: bool = False) -> dict[str, Any]:
    """The fate of the first candidate trained on the shifted-rewards day, with the world's true
    difference against production where the gate judged it (from ``evaluations``): how bad it
    truly was. The cycle at the day's end trains on it — unless the split holds the window's last
    day out (``held_out_last``: a time split), when the day is that cycle's evaluation data and the
    next cycle's candidate is the first trained on it."""
    truth = {e["candidate"]: e["true"] for e in evaluations}
    first = fault_day + 1 if held_out_last else fault_day
    fates = []
    for c in cycles:
        if c["day"] < first or "candidate" not in c:
            continue
        if c["outcome"] in ("gate_failed", "sanity_failed"):
            fates.append({"day": c["day"], "candidate": c["candidate"], "fate": "stopped by the gate", "why": c["reason"]})
        else:
            fate, why = "still rolling out", ""
            for x in cycles:
                if x["day"] <= c["day"] or not x.get("advance"):
                    continue
                o = x["advance"].get("outcome")
                if o in ("rolled_back", "promoted"):
                    fate = "stopped by the flight's guard" if o == "rolled_back" else "promoted"
                    why = x["advance"].get("message") or ""
                    break
            fates.append({"day": c["day"], "candidate": c["candidate"], "fate": fate, "why": why})
        break
    for f in fates:
        f["true_difference"] = truth.get(f["candidate"])
    return {"day": fault_day, "kind": "rewards shifted by one slot", "candidates": fates,
            "stopped": bool(fates) and fates[0]["fate"].startswith("stopped")}


def _pooled(rows: list[dict[str, Any]]) -> dict[str, float]:
    n = sum(r["sessions"] for r in rows)
    s = sum(r["value_sum"] for r in rows)
    ss = sum(r["value_sq_sum"] for r in rows)
    mean = s / n if n else float("nan")
    var = max(ss / n - mean * mean, 0.0) * n / max(n - 1, 1) if n else float("nan")
    half = 1.96 * math.sqrt(var / n) if n else float("nan")
    clicks = sum(r["genuine_clicks"] for r in rows)
    return {"clicks_per_session": mean, "ci": [mean - half, mean + half], "sessions": n,
            "genuine_clicks_per_session": clicks / n if n else float("nan"),
            "farm_clicks": sum(r["farm_clicks"] for r in rows), "days": len(rows)}


def _lift(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """a against b, paired by day (module doc)."""
    d = np.asarray([x["true_value"] - y["true_value"] for x, y in zip(a, b, strict=True)])
    ma, mb = _pooled(a)["clicks_per_session"], _pooled(b)["clicks_per_session"]
    half = _t(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    m = float(d.mean()) if len(d) else float("nan")
    return {"relative": ma / mb - 1.0 if mb else None, "difference": m, "ci": [m - half, m + half]}


def summarize(run: Any) -> dict[str, Any]:
    """The table's figures for one run: arms pooled over the measured days, lifts, the safety net, time."""
    s = run.settings
    period = {a: [r for r in rows if s.measure_from <= r["day"]] for a, rows in run.arms.items()}
    arms = {a: _pooled(rows) for a, rows in period.items()}
    vs_frozen, vs_vw = _lift(period["loop"], period["frozen"]), _lift(period["loop"], period["vw"])
    ops = [c.get("operation") for cy in run.cycles for c in cy["changes"]]
    evs = run.evaluations
    covered = sum(1 for e in evs if e["covered"])
    t = run.timings
    vw_share = t["vw"] / t["total"] if t.get("total") else None
    return {
        "seed": s.seed, "days": s.days, "sessions_per_day": s.sessions, "measure_from": s.measure_from, "arms": arms,
        "loop_vs_frozen": vs_frozen, "loop_vs_vw": vs_vw,
        "promotions": sum(1 for c in run.cycles if (c.get("advance") or {}).get("outcome") == "promoted"),
        "gate_stops": sum(1 for c in run.cycles if c["outcome"] in ("gate_failed", "sanity_failed")),
        "rollbacks": sum(1 for c in run.cycles if (c.get("advance") or {}).get("outcome") == "rolled_back"),
        "changes": {op: ops.count(op) for op in sorted({str(o) for o in ops})},
        "farm": {k: run.farm[k] for k in ("farm_units", "caught")} | {"quarantined": len(run.farm["quarantined"])},
        "fault": None if run.fault is None else {"day": run.fault["day"], "stopped": run.fault["stopped"],
                                                   "fate": (run.fault["candidates"] or [{"fate": "no candidate trained"}])[0]["fate"]},
        "dr_coverage": {"n": len(evs), "covered": covered, "share": covered / len(evs) if evs else None},
        "seconds": t.get("total"), "vw_share_of_time": vw_share,
        "targets": {
            "loop_15pct_over_frozen": bool(vs_frozen["relative"] is not None and vs_frozen["relative"] >= 0.15),
            "loop_not_below_vw": bool(vs_vw["ci"][1] >= 0) if not math.isnan(vs_vw["ci"][1]) else False,
            "dr_coverage_90pct": bool(evs) and covered / len(evs) >= 0.9,
            "farm_quarantined": run.farm["caught"] == run.farm["farm_units"] and not run.farm["wrongly_quarantined"],
            "bad_candidate_stopped": bool(run.fault and run.fault["stopped"]),
            "under_5_minutes": bool(t.get("total", 1e9) <= 300),
        },
    }

"""Sanity checks a bundle passes before it may take any traffic, each with a name.

=========== ==================================================================================== =========
check       passes when                                                                          --force
=========== ==================================================================================== =========
``loads``   the bundle loads from the store and verifies (checksums, manifest digest, the digest  never
            the registry recorded, fit to the system)
``parity``  on the golden rows its evaluation report recorded, ``Runtime.decide`` reproduces the  only when
            report's scores bit for bit and its actions (train/serve parity; a ranking: every    no report
            candidate's score and slot propensity bit for bit, and the slate). A row whose       has golden
            action differs only because a frequency cap fired during the evaluation's batch     rows
            (the report carries the capped action, a fresh runtime does not) counts as
            reproduced and is reported as such
``range``   every score is finite — and within [0, 1] when the experience's thresholds are —      never
            on the golden contexts and on generated ones (for a ranking system: generated requests
            with 1–12 generated candidates each; every candidate's score finite, the slate made of
            the request's candidates, every slot propensity in (0, 1])
``latency`` the 99th percentile of single-decision latency (``Runtime.decide``, warmed up) is    yes
            within the system's ``latency_budget_ms``, timed in the calling thread's CPU time:
            the bundle's own cost, the same on a busy machine as on a quiet one (the wall-clock
            p99 is reported beside it; what users wait for is served latency, which the flight
            guard compares with production's)
``gate``    an attached evaluation report's gate passed with this bundle as the candidate and     yes
            the current production as the baseline (not required for a shadow, which never acts,
            nor for the first production when there is nothing to compare with)
=========== ==================================================================================== =========

``--force`` (``force=`` with a reason) lets a bundle through checks marked "yes" above; the
reason and the forced checks are recorded in the history.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from closedloop.errors import ClosedLoopError
from closedloop.experience.experiences import Thresholds

__all__ = ["Check", "run_checks"]

_LATENCY_CALLS = 300
_WARMUP = 50
_GENERATED = 200
_MAX_CANDIDATES = 12


@dataclass(frozen=True, slots=True)
class Check:
    """One named check's result."""

    name: str
    passed: bool
    detail: str
    forceable: bool = False
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail, "forced": self.forced}


def _same(a: float, b: Any) -> bool:
    if b is None:  # the report writes non-finite numbers as null
        return not math.isfinite(a)
    return struct.pack("<d", float(a)) == struct.pack("<d", float(b))


def golden_rows(reports: Sequence[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    """The golden rows of the newest report (``reports`` newest first) that has some for ``version``."""
    for rep in reports:
        for b in rep.get("bundles", ()):
            if b.get("version") == version and b.get("golden"):
                return list(b["golden"])
    return []


def _no_golden(version: str) -> str:
    """The parity check's refusal when no report has golden rows: what the check needs, and the
    three ways to give it (or to go without)."""
    return (
        f"no evaluation report with golden rows is attached to {version} (parity replays a report's golden rows "
        "through the runtime: what serves must reproduce what was evaluated). Attach one: "
        f"'closedloop evaluate --system MODULE:ATTR --bundle {version} --dataset DATASET --register' (with "
        f"'--bundle PRODUCTION' first when something serves: the gate compares the two), or "
        "'closedloop deploy BUNDLE --report FILE.json …' (promote takes --report too) with the JSON report "
        "'closedloop evaluate' wrote, or in Python Registry.add_report(evaluate(system, [production, bundle], "
        "dataset)); or deploy without it: '--force \"why\"' (force=, recorded in the history)"
    )


def _parity(system: Any, bundle: Any, golden: list[dict[str, Any]]) -> Check:
    from closedloop.runtime.runtime import Runtime

    if not golden:
        return Check("parity", False, _no_golden(bundle.version), forceable=True)
    rt = Runtime(system, bundle)
    caps = {(g.action, g.fallback) for g in (*system.guardrails, *bundle.guardrails) if hasattr(g, "fallback")}
    capped = 0
    for i, row in enumerate(golden):
        try:
            d = rt.decide(row["context"], decision_id=row["decision_id"], timestamp_ns=int(row["timestamp_ns"]))
        except (ClosedLoopError, KeyError, TypeError, ValueError) as exc:
            return Check("parity", False, f"golden row {i} ({row.get('decision_id')!r}) cannot be decided: {exc}")
        if system.candidate_schema is not None:
            differs = _ranking_differs(d, row)
            if differs is not None:
                return Check("parity", False, f"golden row {i} ({row['decision_id']!r}): {differs}")
            continue
        for name, want in row["scores"].items():
            got = d.scores.get(name)
            if got is None or not _same(got, want):
                return Check("parity", False, f"golden row {i} ({row['decision_id']!r}): score {name!r} is {got!r} at "
                             f"runtime, the evaluation recorded {want!r}")
        if d.action != row["action"]:
            if (d.action, row["action"]) in caps:
                capped += 1
                continue
            return Check("parity", False, f"golden row {i} ({row['decision_id']!r}): action {d.action!r} at runtime, "
                         f"the evaluation recorded {row['action']!r}")
    note = f" ({capped} differ only by a frequency cap that fired in the evaluation's batch)" if capped else ""
    return Check("parity", True, f"{len(golden)} golden rows reproduced exactly{note}")


def _ranking_differs(d: Any, row: dict[str, Any]) -> str | None:
    """How a ranking decision differs from the golden row the evaluation recorded (every
    candidate's score and each slot's propensity bit for bit, the slate exactly), or None."""
    want_s, want_p = row.get("candidate_scores", []), row.get("slot_propensities", [])
    if len(d.scores) != len(want_s) or not all(_same(g, w) for g, w in zip(d.scores, want_s, strict=True)):
        return f"the candidates' scores at runtime {d.scores!r} differ from the evaluation's {want_s!r}"
    if list(d.ranking) != list(row.get("ranking", [])):
        return f"slate {d.ranking!r} at runtime, the evaluation recorded {row.get('ranking')!r}"
    if len(d.slot_propensities) != len(want_p) or not all(_same(g, w) for g, w in zip(d.slot_propensities, want_p, strict=True)):
        return f"slot propensities {d.slot_propensities!r} at runtime, the evaluation recorded {want_p!r}"
    return None


def _contexts(system: Any, golden: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from closedloop.runtime.checks import generate_contexts, records

    made = records(generate_contexts(system.schema, _GENERATED, seed=7))
    if system.candidate_schema is not None:
        _add_candidates(system, made)
    return [row["context"] for row in golden] + made


def _add_candidates(system: Any, requests: list[dict[str, Any]]) -> None:
    """Give each generated request of a ranking system 1–12 generated candidates with distinct ids
    (``c0``, ``c1``, … — or 0, 1, … when the id field is a number)."""
    import numpy as np

    from closedloop.runtime.checks import generate_contexts, records

    schema, id_field = system.candidate_schema, system.candidate_id
    pool = records(generate_contexts(schema, _GENERATED * _MAX_CANDIDATES, seed=11))
    text_id = isinstance(next((c[id_field] for c in pool if id_field in c), ""), str)
    sizes = np.random.default_rng(13).integers(1, _MAX_CANDIDATES + 1, size=len(requests))
    at = 0
    for req, m in zip(requests, sizes.tolist(), strict=True):
        cands = pool[at:at + m]
        at += m
        req["candidates"] = [{**c, id_field: (f"c{j}" if text_id else j)} for j, c in enumerate(cands)]


def _range(system: Any, bundle: Any, contexts: list[dict[str, Any]]) -> Check:
    from closedloop.runtime.runtime import Runtime

    rt = Runtime(system, bundle)
    exp = bundle.experience(system)
    unit = isinstance(exp, Thresholds) and all(0.0 <= t <= 1.0 for _, t in exp.levels)
    n = 0
    for c in contexts:
        try:
            d = rt.decide(c)
        except ClosedLoopError:
            continue  # a generated context the system refuses is not the bundle's fault
        n += 1
        if system.candidate_schema is not None:
            bad = _ranking_out_of_range(d, c)
            if bad is not None:
                return Check("range", False, bad)
            continue
        for name, s in d.scores.items():
            if not math.isfinite(s) or (unit and not 0.0 <= s <= 1.0):
                rule = "a finite number in [0, 1] (the thresholds are probabilities)" if unit else "a finite number"
                return Check("range", False, f"score {name!r} must be {rule}. Got {s!r} for context {c!r}")
        if d.action not in system.actions:
            return Check("range", False, f"action {d.action!r} is not one of the system's {list(system.actions)}")
    if n == 0:
        return Check("range", False, "no context could be decided to check the outputs on")
    return Check("range", True, f"scores in range on {n} contexts" + (" ([0, 1])" if unit else " (finite)"))


def _ranking_out_of_range(d: Any, c: dict[str, Any]) -> str | None:
    """What is wrong with a ranking decision's outputs, or None."""
    for cid, s in zip(d.candidates, d.scores, strict=True):
        if not math.isfinite(s):
            return f"the score of candidate {cid!r} must be a finite number. Got {s!r} for request {c!r}"
    if not set(d.ranking) <= set(d.candidates):
        return f"the slate {d.ranking!r} shows ids that are not the request's candidates {d.candidates!r}"
    for j, p in enumerate(d.slot_propensities):
        if not 0.0 < p <= 1.0:
            return f"slot {j + 1}'s propensity must be in (0, 1]. Got {p!r} for request {c!r}"
    return None


def _latency(system: Any, bundle: Any, contexts: list[dict[str, Any]],
             clock: Callable[[], int] = time.thread_time_ns) -> Check:
    from closedloop.runtime.runtime import Runtime

    rt = Runtime(system, bundle)
    usable = []
    for c in contexts:
        try:
            rt.decide(c)
            usable.append(c)
        except ClosedLoopError:
            continue
    if not usable:
        return Check("latency", False, "no context could be decided to time", forceable=True)
    for i in range(_WARMUP):
        rt.decide(usable[i % len(usable)])
    times, wall = [], []
    wall_clock = time.perf_counter_ns
    for i in range(_LATENCY_CALLS):
        c = usable[i % len(usable)]
        w0, t0 = wall_clock(), clock()
        rt.decide(c)
        times.append(clock() - t0)
        wall.append(wall_clock() - w0)
    times.sort()
    wall.sort()
    k = min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)
    p99, p50, wall_p99 = times[k] / 1e6, times[len(times) // 2] / 1e6, wall[k] / 1e6
    budget = system.latency_budget_ms
    ok = p99 <= budget
    return Check("latency", ok, f"p99 {p99:.3f} ms CPU (median {p50:.3f} ms; wall clock p99 {wall_p99:.3f} ms) over "
                 f"{len(times)} decisions, budget {budget:g} ms" + ("" if ok else " — over budget"), forceable=True)


def _gate(version: str, reports: Sequence[dict[str, Any]], production: str | None, need: bool) -> Check:
    if not need:
        return Check("gate", True, "not required for a shadow (it never acts)", forceable=True)
    if production is None:
        return Check("gate", True, "not required for the first production (nothing serves to compare with)", forceable=True)
    if production == version:
        return Check("gate", True, f"{version} is production already", forceable=True)
    verdicts = [r["gate"] for r in reports if isinstance(r.get("gate"), dict) and r["gate"].get("candidate") == version]
    if not verdicts:
        return Check("gate", False, f"no evaluation report with a gate verdict for {version} as candidate is attached "
                     f"(evaluate it against production {production} and register the report)", forceable=True)
    mine = [v for v in verdicts if v.get("baseline") == production]
    if not mine:
        return Check("gate", False, f"the attached gate verdicts compare {version} with "
                     f"{sorted({str(v.get('baseline')) for v in verdicts})}, not with production {production}",
                     forceable=True)
    v = mine[0]
    if not v.get("passed"):
        return Check("gate", False, f"the gate failed against {production}: " + "; ".join(v.get("reasons") or []),
                     forceable=True)
    return Check("gate", True, f"the gate passed against production {production}", forceable=True)


def run_checks(
    system: Any,
    load: Callable[[], Any],
    reports: Sequence[dict[str, Any]],
    *,
    production: str | None,
    need_gate: bool,
    force: str | None = None,
) -> tuple[Any, list[Check]]:
    """Run every check in order on the bundle ``load()`` returns (``reports``: the evaluation
    reports attached to it, newest first). Returns the loaded bundle (None when it did not load)
    and the results, with forceable failures marked ``forced`` when ``force`` gives a reason."""
    try:
        bundle = load()
    except ClosedLoopError as exc:
        return None, [Check("loads", False, str(exc))]
    checks = [Check("loads", True, f"{bundle.version} verified ({bundle.size_bytes()} bytes)")]
    golden = golden_rows(reports, bundle.version)
    parity = _parity(system, bundle, golden)
    if not parity.passed and golden:
        parity = Check(parity.name, False, parity.detail, forceable=False)
    checks.append(parity)
    contexts = _contexts(system, golden)
    checks.append(_range(system, bundle, contexts))
    checks.append(_latency(system, bundle, contexts))
    checks.append(_gate(bundle.version, reports, production, need_gate))
    if force:
        checks = [Check(c.name, c.passed, c.detail, c.forceable, forced=c.forceable and not c.passed) for c in checks]
    return bundle, checks

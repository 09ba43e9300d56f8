"""A decision looked up in the telemetry (by id, or a unit's latest) and replayed: through the
bundle that served it — which must reproduce the logged decision bit for bit — and through the
current candidate (a flight's or a shadow's bundle), side by side.

What a replay needs, and where it comes from: the context as the decision saw it
(``context_json``; a ranking's candidates too, ``candidates_json``), its ``decision_id`` (the
exploration draw is a hash of it) and ``timestamp_ns``, the kill switch, and the bundle
(``bundle_version``, loaded verified from the registry). ``Runtime.decide`` with the logged id and
time then runs the one decision path. Compared: every score as float64 bits, the action, the
propensity as float64 bits, the reason (``why``) and the guardrail (a ranking: every candidate's
score, the slate, every slot's propensity). What cannot be replayed says why: a context field
logged hashed or dropped (``sensitive=``), a ranking whose telemetry kept only the candidates'
digest, a frequency cap (its count lives in the serving process).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from closedloop.base.times import iso
from closedloop.console.data._common import known_system
from closedloop.console.data._telemetry import Lake, open_lake
from closedloop.errors import ClosedLoopError, SpecError, clip_value

__all__ = ["bits", "lookup", "replay"]

_COLS = ("decision_id, unit, timestamp_ns, bundle_version, flight, feature_fingerprint, context_json, features, "
         "score_names, scores, action, propensity, why, guardrail, killswitch, shadows_json, candidate_ids, "
         "candidate_scores, candidates_json, slate, slot_propensities")
#: The most decisions of one unit listed beside the one looked up.
MAX_UNIT_DECISIONS = 20


def bits(x: Any) -> str | None:
    """A float64 as its 16 hex digits (big-endian IEEE 754): two numbers are bitwise equal when
    these are (None stays None)."""
    return None if x is None else struct.pack(">d", float(x)).hex()


def _find(lake: Lake, name: str, decision_id: str | None, unit: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The decision looked up (by id; or a unit's newest, its others listed): the unit's decisions
    are found on the cheap columns first, then only the one shown is read whole."""
    if decision_id is None:
        if unit is None:
            raise SpecError("A decision is looked up by its 'decision_id' or its 'unit'. Got neither.")
        brief = lake.rows("SELECT decision_id, timestamp_ns, action, bundle_version FROM decisions WHERE system = ? AND "
                          f"unit = ? ORDER BY timestamp_ns DESC, decision_id LIMIT {MAX_UNIT_DECISIONS}", [name, unit])
        if not brief:
            raise SpecError(f"No decision for unit {clip_value(unit)!r} in the telemetry of {name!r} "
                            f"({lake.searched('decisions')}).")
        decision_id = str(brief[0]["decision_id"])
        others = [{"decision_id": r["decision_id"], "at": iso(int(r["timestamp_ns"])), "action": r["action"],
                   "bundle_version": r["bundle_version"]} for r in brief[1:]]
    else:
        others = []
    row = lake.decisions(name, [decision_id], _COLS).get(decision_id)
    if row is None:
        raise SpecError(f"No decision with id {clip_value(decision_id)!r} in the telemetry of {name!r} "
                        f"({lake.searched('decisions')}).")
    return row, others


def _feature_names(home: Path, fingerprint: str | None) -> list[str] | None:
    if not fingerprint:
        return None
    p = home / "telemetry" / "feature_sets" / f"{fingerprint}.json"
    try:
        names = json.loads(p.read_bytes()).get("names")
    except (OSError, ValueError, AttributeError):
        return None
    return list(names) if isinstance(names, list) else None


def _logged(row: dict[str, Any], home: Path) -> dict[str, Any]:
    """The decision record as the page shows it."""
    ranking = row["candidate_ids"] is not None
    names = _feature_names(home, row["feature_fingerprint"])
    feats = row["features"]
    out: dict[str, Any] = {
        "decision_id": row["decision_id"], "unit": row["unit"], "at": iso(int(row["timestamp_ns"])),
        "timestamp_ns": int(row["timestamp_ns"]), "bundle_version": row["bundle_version"], "flight": row["flight"],
        "context": None if row["context_json"] is None else json.loads(row["context_json"]),
        "features": None if feats is None else (dict(zip(names, feats, strict=True)) if names and len(names) == len(feats)
                                                else list(feats)),
        "action": row["action"], "propensity": row["propensity"], "propensity_bits": bits(row["propensity"]),
        "why": row["why"], "guardrail": row["guardrail"], "killswitch": bool(row["killswitch"]),
        "shadows": None if row["shadows_json"] is None else json.loads(row["shadows_json"]), "ranking": ranking,
    }
    if ranking:
        out.update(candidates=list(row["candidate_ids"]), candidate_scores=list(row["candidate_scores"] or []),
                   slate=list(row["slate"] or []), slot_propensities=list(row["slot_propensities"] or []),
                   candidate_fields=None if row["candidates_json"] is None else json.loads(row["candidates_json"]))
    else:
        out["scores"] = dict(zip(row["score_names"] or [], row["scores"] or [], strict=True))
        out["score_bits"] = {k: bits(v) for k, v in out["scores"].items()}
    return out


def _not_replayable(system: Any, logged: dict[str, Any]) -> str | None:
    """Why the logged record cannot be replayed (None: it can)."""
    if logged["context"] is None:
        return "the telemetry did not keep this decision's context (not sampled in: context_json is null)"
    hidden = [f.name for f in system.schema.fields if getattr(f, "sensitive", None) in ("hash", "drop")]
    if hidden:
        return (f"the context fields {hidden} are logged hashed or dropped (sensitive=): the values the decision saw "
                "are not in the telemetry")
    if logged["ranking"]:
        if logged["candidate_fields"] is None:
            return ("the telemetry kept only the candidates' digest (Telemetry(candidates='digest')): their fields, "
                    "which the features read, are needed to replay a ranking")
        cs = getattr(system, "candidate_schema", None)
        hidden = [f.name for f in (cs.fields if cs is not None else ()) if getattr(f, "sensitive", None) in ("hash", "drop")]
        if hidden:
            return f"the candidate fields {hidden} are logged hashed or dropped (sensitive=)"
    return None


def _compare(logged: dict[str, Any], d: Any) -> list[dict[str, Any]]:
    """Field by field: the logged value, the replayed one, and whether they are equal (floats as bits)."""
    rows: list[dict[str, Any]] = []

    def add(field: str, a: Any, b: Any, floats: bool = False) -> None:
        eq = ([bits(x) for x in a] == [bits(x) for x in b]) if floats and isinstance(a, list) else \
            (bits(a) == bits(b)) if floats else a == b
        rows.append({"field": field, "logged": a, "replayed": b, "equal": bool(eq)})

    if logged["ranking"]:
        add("candidates", logged["candidates"], list(d.candidates))
        add("candidate_scores", logged["candidate_scores"], list(d.scores), floats=True)
        add("slate", logged["slate"], list(d.ranking))
        add("slot_propensities", logged["slot_propensities"], list(d.slot_propensities), floats=True)
        add("why", logged["why"], d.why)
        return rows
    names = sorted(set(logged["scores"]) | set(d.scores))
    for k in names:
        add(f"scores.{k}", logged["scores"].get(k), d.scores.get(k), floats=True)
    add("action", logged["action"], d.action)
    add("propensity", logged["propensity"], d.propensity, floats=True)
    add("why", logged["why"], d.why)
    add("guardrail", logged["guardrail"], d.guardrail)
    return rows


def replay(registry: Any, system: Any, logged: dict[str, Any], version: str) -> dict[str, Any]:
    """``logged`` (a record as :func:`lookup` shows it) decided again by bundle ``version``: the
    replayed decision and the field-by-field comparison (``equal``: every field bitwise equal)."""
    from closedloop.runtime.runtime import Runtime

    out: dict[str, Any] = {"bundle": version}
    why = _not_replayable(system, logged)
    if why is not None:
        return {**out, "replayed": False, "why_not": why}
    try:
        bundle = registry.load_bundle(version, system)
        ctx = dict(logged["context"])
        if logged["ranking"]:
            ctx["candidates"] = logged["candidate_fields"]
        rt = Runtime(system, bundle, killswitch=logged["killswitch"])
        d = rt.decide(ctx, decision_id=logged["decision_id"], timestamp_ns=logged["timestamp_ns"])
    except ClosedLoopError as exc:
        return {**out, "replayed": False, "why_not": f"the bundle cannot decide this context: {exc}"}
    fields = _compare(logged, d)
    decision = d.to_dict()
    if not logged["ranking"]:
        decision["score_bits"] = {k: bits(v) for k, v in d.scores.items()}
    res = {**out, "replayed": True, "decision": decision, "fields": fields, "equal": all(f["equal"] for f in fields)}
    caps = {(g.action, g.fallback) for g in getattr(system, "guardrails", ()) if hasattr(g, "fallback")}
    if not res["equal"] and not logged["ranking"] and (logged["action"], d.action) in caps:
        res["note"] = ("the served action was a frequency cap's fallback: the cap counts the unit's decisions in the "
                       "serving process, which a replay does not have")
    return res


def _candidate(registry: Any, name: str, served: str, candidate: str | None) -> str | None:
    if candidate is not None:
        return candidate
    st = registry.state(name)
    for v in [f.bundle for f in st.flights] + list(st.shadows) + ([st.production] if st.production else []):
        if v != served:
            return str(v)
    return None


def lookup(registry: Any, home: Any, system: Any, *, decision_id: str | None = None, unit: str | None = None,
           candidate: str | None = None) -> dict[str, Any]:
    """One decision of ``system`` (the :class:`~closedloop.System`), by ``decision_id`` or a
    ``unit``'s latest (its others listed): the record (context, features, scores, action,
    propensity, the rule that decided — ``why``, ``guardrail`` —, flight, bundle, shadows), the
    outcomes that name it, and two replays side by side: ``served`` (through the bundle that served
    it: equal to the logged decision bit for bit) and ``candidate`` (``candidate``, else the first
    flight's or shadow's bundle that is not the served one, else production's; None when there is
    none)."""
    name = known_system(registry, system)
    if (decision_id is None) == (unit is None):
        raise SpecError("lookup takes one of 'decision_id' or 'unit'. Got "
                        f"decision_id={clip_value(decision_id)!r}, unit={clip_value(unit)!r}.")
    for what, v in (("decision_id", decision_id), ("unit", unit)):
        if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > 512):
            raise SpecError(f"The '{what}' to look up must be a non-empty string of at most 512 characters. "
                            f"Got {clip_value(v)!r} instead.")
    if not hasattr(system, "schema"):
        raise SpecError(f"lookup needs the closedloop.System of {name!r} (to replay). Got {system!r} instead.")
    home = Path(home)
    with open_lake(home) as lake:
        row, others = _find(lake, name, decision_id, unit)
        outcomes = lake.rows("SELECT outcome_id, kind, value, event_ns, source FROM outcomes WHERE decision_id = ? "
                             "ORDER BY event_ns LIMIT 100", [row["decision_id"]])
    logged = _logged(row, home)
    for o in outcomes:
        o["at"] = iso(int(o["event_ns"]))
    cand = _candidate(registry, name, logged["bundle_version"], candidate)
    return {"system": name, "decision": logged, "outcomes": outcomes, "unit_decisions": others,
            "served": replay(registry, system, logged, logged["bundle_version"]),
            "candidate": None if cand is None else replay(registry, system, logged, cand)}

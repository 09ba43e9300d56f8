"""The Goals page: each goal's series over a chosen range (default: the last 30 days) with its
target and level, the events to mark on the time axis, and a Vega-Lite spec per goal.

Where each figure comes from:

* the points — ``<home>/goals/series.jsonl``, written by the cycle's ``goal_check`` step
  (:class:`~closedloop.orchestration.series.SeriesStore`: one point per goal and window, with its
  value, the number of decisions it was measured on, the target and whether it was met);
* deployments, promotions, rollbacks, kill-switch changes and the guard's stops — the registry's
  history, read through the ``events`` index on ``(system, at_ns)`` for the range only;
* gate stops — the cycle records (``<home>/orchestration/cycles/NNNNNN.json``): cycles run in
  time order, so the records of the range are found by a binary search over their numbers and only
  those are read (and of each only its time, outcome, reason and the gate step's status);
* alerts — ``<home>/orchestration/alerts.jsonl`` (drift, mistake spikes, goal misses, abuse …).

The charts are built like the evaluation report's (:mod:`closedloop.evaluation.html.charts`):
plain Vega-Lite dicts of aggregates, the same size, drawn by the same vendored libraries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select

from closedloop.base.times import DAY_NS, iso
from closedloop.console.data._common import known_system, to_time
from closedloop.errors import SpecError
from closedloop.evaluation.html.charts import _H, _W
from closedloop.registry.models import events as T_EVENTS

__all__ = ["DEFAULT_DAYS", "EVENT_KINDS", "chart_spec", "events", "goals"]

#: The range a page shows when none is chosen.
DEFAULT_DAYS = 30
#: The kinds of event marked on the time axis, with their colour.
EVENT_KINDS = {"deployment": "#2f6fbf", "rollback": "#c2410c", "gate stop": "#7c3aed", "guard stop": "#b91c1c",
               "kill switch": "#111827", "alert": "#d97706"}
#: At most this many events are marked on one chart (the newest kept).
MAX_EVENTS = 500


class _GateStep(msgspec.Struct):
    status: str | None = None


class _Steps(msgspec.Struct):
    gate: _GateStep | None = None


class _Cycle(msgspec.Struct):
    id: int
    now_ns: int
    outcome: str | None = None
    reason: str | None = None
    steps: _Steps = msgspec.field(default_factory=_Steps)


class _Alert(msgspec.Struct):
    kind: str = ""
    subject: str = ""
    message: str = ""
    at_ns: int = 0
    value: float | None = None
    threshold: float | None = None
    action: str = "none"
    system: str | None = None


def _range(since: Any, until: Any, now_ns: int | None) -> tuple[int, int]:
    end = to_time(until, "until") if until is not None else int(now_ns if now_ns is not None else _now())
    start = to_time(since, "since") if since is not None else end - DEFAULT_DAYS * DAY_NS
    if start >= end:
        raise SpecError(f"The goals' range must start before it ends. Got since {iso(start)} and until {iso(end)}.")
    return start, end


def _now() -> int:
    from closedloop.base.times import now_ns

    return now_ns()


def _registry_events(registry: Any, name: str, start: int, end: int) -> list[dict[str, Any]]:
    e = T_EVENTS.c
    q = (select(e.id, e.at_ns, e.actor, e.operation, e.reason).where(
        e.system == name, e.at_ns >= start, e.at_ns <= end, e.status == "applied")
         .order_by(e.at_ns.desc()).limit(MAX_EVENTS))
    with registry.db.read() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        op = str(r.operation)
        kind = ("rollback" if op == "rollback" else "guard stop" if op == "guard_stop" else
                "kill switch" if op.startswith("killswitch") else "deployment")
        out.append({"kind": kind, "at_ns": int(r.at_ns), "at": iso(int(r.at_ns)), "what": op,
                    "detail": f"#{r.id} {op} by {r.actor}: {r.reason}"})
    return out


def _cycle_files(home: Path) -> list[Path]:
    """The cycle records' paths in cycle order (their names are the zero-padded cycle numbers)."""
    d = home / "orchestration" / "cycles"
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json") and n[:1].isdigit())
    except OSError:
        return []
    return [d / n for n in names]


def _read_cycle(p: Path) -> _Cycle | None:
    try:
        return msgspec.json.decode(p.read_bytes(), type=_Cycle)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _first_at_or_after(files: list[Path], t: int) -> int:
    """The index of the first cycle record at or after ``t`` (records run in time order)."""
    lo, hi = 0, len(files)
    while lo < hi:
        mid = (lo + hi) // 2
        rec = _read_cycle(files[mid])
        if rec is not None and rec.now_ns < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _gate_stops(home: Path, start: int, end: int) -> list[dict[str, Any]]:
    files = _cycle_files(home)
    out = []
    for p in files[_first_at_or_after(files, start):]:
        rec = _read_cycle(p)
        if rec is None:
            continue
        if rec.now_ns > end:
            break
        gate = rec.steps.gate
        if (gate is not None and gate.status == "stopped") or rec.outcome == "gate_failed":
            out.append({"kind": "gate stop", "at_ns": rec.now_ns, "at": iso(rec.now_ns), "what": rec.outcome or "stopped",
                        "detail": f"cycle #{rec.id}: {rec.reason or rec.outcome or 'the gate stopped the cycle'}"})
    return out


def _alerts(home: Path, name: str, start: int, end: int) -> list[dict[str, Any]]:
    path = home / "orchestration" / "alerts.jsonl"
    if not path.is_file():
        return []
    out: list[_Alert] = []
    decode = msgspec.json.Decoder(_Alert).decode
    with open(path, "rb") as fh:
        for line in fh:
            try:
                a = decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if start <= a.at_ns <= end and a.system in (None, name):
                out.append(a)
    out.sort(key=lambda a: a.at_ns)
    return [{"kind": "alert", "at_ns": a.at_ns, "at": iso(a.at_ns), "what": a.kind,
             "detail": f"{a.kind} {a.subject}: {a.message}"[:400]} for a in out[-MAX_EVENTS:]]


def events(registry: Any, home: Any, system: Any, *, since: Any = None, until: Any = None,
           now_ns: int | None = None) -> list[dict[str, Any]]:
    """The events in the range, oldest first: ``kind`` (a key of :data:`EVENT_KINDS`), ``at``,
    ``what`` and ``detail`` (the tooltip)."""
    name = known_system(registry, system)
    start, end = _range(since, until, now_ns)
    home = Path(home)
    found = _registry_events(registry, name, start, end) + _gate_stops(home, start, end) + _alerts(home, name, start, end)
    found.sort(key=lambda e: e["at_ns"])
    return found[-MAX_EVENTS:]  # each source is capped too: the newest MAX_EVENTS of each


def chart_spec(goal: dict[str, Any], marks: list[dict[str, Any]]) -> dict[str, Any]:
    """A goal's Vega-Lite spec: its value per window as a line, the target as a dashed rule, each
    event as a coloured vertical rule with a tooltip."""
    values = [{"t": iso(p["start_ns"]), "value": p["value"], "n": p.get("n"), "window": p.get("window"),
               "met": p.get("met")} for p in goal["points"] if p.get("value") is not None]
    x = {"field": "t", "type": "temporal", "title": "window start (UTC)"}
    layers: list[dict[str, Any]] = [{
        "data": {"values": values}, "mark": {"type": "line", "point": True, "strokeWidth": 2, "tooltip": True},
        "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": goal["metric"]},
                     "tooltip": [{"field": "window"}, {"field": "value", "format": ".4g"}, {"field": "n"},
                                 {"field": "met"}]}}]
    if goal["target"] is not None:
        layers.append({"data": {"values": [{"target": goal["target"]}]},
                       "mark": {"type": "rule", "strokeDash": [6, 4], "color": "#15803d"},
                       "encoding": {"y": {"field": "target", "type": "quantitative"},
                                    "tooltip": [{"field": "target", "title": f"target ({goal['direction']})"}]}})
    if marks:
        kinds = sorted({m["kind"] for m in marks})
        layers.append({"data": {"values": [{"t": m["at"], "kind": m["kind"], "detail": m["detail"]} for m in marks]},
                       "mark": {"type": "rule", "strokeWidth": 2, "opacity": 0.7},
                       "encoding": {"x": {"field": "t", "type": "temporal"},
                                    "color": {"field": "kind", "type": "nominal", "title": "event",
                                              "scale": {"domain": kinds, "range": [EVENT_KINDS[k] for k in kinds]},
                                              "legend": {"orient": "bottom"}},
                                    "tooltip": [{"field": "kind"}, {"field": "t", "type": "temporal", "format": "%Y-%m-%d %H:%M"},
                                                {"field": "detail"}]}})
    sub = f"{goal['level']} goal · target {goal['direction'].replace('_', ' ')} {goal['target']:g}" \
        if goal["target"] is not None else f"{goal['level']} goal"
    return {"title": {"text": goal["name"], "subtitle": sub}, "width": _W, "height": _H // 2 + 60, "layer": layers}


def _declared(system: Any) -> list[dict[str, Any]]:
    return [{"name": g.name, "level": g.level, "metric": g.metric, "target": g.target, "direction": g.direction,
             "cadence": g.cadence, "description": getattr(g, "description", "")} for g in getattr(system, "goals", ())]


def goals(registry: Any, home: Any, system: Any, *, since: Any = None, until: Any = None,
          now_ns: int | None = None) -> dict[str, Any]:
    """Each goal's points in the range (``since`` / ``until``: ISO text, ns or datetimes; default
    the last :data:`DEFAULT_DAYS` days to ``now_ns``), with its level, target, direction, the
    latest value and whether it met the target, plus the range's events and a Vega-Lite spec per
    goal. ``system``: the :class:`~closedloop.System` (its declared goals are listed even without
    points) or its name (the goals the series holds)."""
    from closedloop.orchestration.series import SeriesStore

    name = known_system(registry, system)
    start, end = _range(since, until, now_ns)
    home = Path(home)
    marks = events(registry, home, name, since=start, until=end)
    by_name: dict[str, dict[str, Any]] = {g["name"]: {**g, "points": []} for g in _declared(system)}
    for p in SeriesStore(home / "goals" / "series.jsonl").points():
        if not start <= int(p.get("start_ns", -1)) <= end:
            continue
        g = by_name.get(p["name"])
        if g is None:
            if not isinstance(system, str):
                continue  # a series of a goal the system no longer declares
            g = by_name[p["name"]] = {"name": p["name"], "level": p.get("level"), "metric": p.get("metric"),
                                      "target": p.get("target"), "direction": p.get("direction"),
                                      "cadence": p.get("cadence"), "description": "", "points": []}
        g["points"].append({k: p.get(k) for k in ("window", "start_ns", "end_ns", "value", "n", "met")})
    out = []
    for g in by_name.values():
        g["points"].sort(key=lambda q: q["start_ns"])
        last = next((q for q in reversed(g["points"]) if q["value"] is not None), None)
        g["latest"] = None if last is None else {"window": last["window"], "value": last["value"], "met": last["met"]}
        g["spec"] = chart_spec(g, marks)
        out.append(g)
    return {"system": name, "since": iso(start), "until": iso(end), "since_ns": start, "until_ns": end,
            "goals": out, "events": marks, "event_kinds": EVENT_KINDS}

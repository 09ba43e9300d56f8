"""The Flights page: each live flight against production on the guard's metrics.

Every figure is the guard's own (:func:`closedloop.registry.guard_check` run with ``apply=False``:
it judges, it stops nothing): per flight its bundle, share of units, when it started, the
decisions and units of each arm over the same window, and per metric both arms' values, the
test, its p-value and what the guard decides — ``stop`` (the metric breaches: the next guard run
stops the flight), ``keep`` (judged, no breach), ``not judged`` (too few decisions) or ``not
measured`` (the telemetry cannot measure it, with why). The sample-ratio check
(:func:`closedloop.registry.srm_view`: units per arm counted from the change that set the arms,
a chi-square test against the shares) says whether the split itself is sound. No statistic is
computed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from closedloop.base.times import DAY_NS, iso
from closedloop.console.data._common import known_system, when
from closedloop.console.data._telemetry import open_lake
from closedloop.errors import SpecError

__all__ = ["flights"]


def _since(view: dict[str, Any]) -> int:
    """The earliest time the guard reads: the first start among the running flights and shadows
    (the sample-ratio check counts from the change that set the arms, which is not earlier than
    the newest flight's start); 0 (everything) when a start is unknown."""
    starts = [(x.get("started") or {}).get("at_ns") for x in [*view["flights"], *view["shadows"]]]
    known = [int(s) for s in starts if s is not None]
    if not known or len(known) < len(starts):
        return 0
    return min(known)


def _telemetry(telemetry: Any, since: int) -> Any:
    """A home (path) as the guard's ``(decisions, outcomes)`` tables from ``since`` on (read by
    one query each, only the columns the guard reads; outcomes from a day earlier, for a
    reporter's clock); a store or a pair of tables as given."""
    if not isinstance(telemetry, str | Path):
        return telemetry
    import pyarrow as pa

    from closedloop.registry.guard import _DECISION_COLUMNS
    from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

    cols = ", ".join(f'"{c}"' for c in _DECISION_COLUMNS)
    with open_lake(telemetry, columns={"decisions": _DECISION_COLUMNS}) as lake:
        dec = lake.arrow(f"SELECT {cols} FROM decisions WHERE timestamp_ns >= ?", [since])
        out = lake.arrow("SELECT * FROM outcomes WHERE event_ns >= ?", [max(0, since - DAY_NS)])
    dschema = pa.schema([DECISION_SCHEMA.field(c).with_nullable(True) for c in _DECISION_COLUMNS])
    return (pa.table(dec).cast(dschema), pa.table(out).cast(pa.schema([f.with_nullable(True) for f in OUTCOME_SCHEMA])))


def _verdict(m: dict[str, Any]) -> str:
    if not m.get("measured", True):
        return "not measured"
    if m.get("breach"):
        return "stop"
    if m.get("p_value") is None:
        return "not judged"
    return "keep"


#: The fields every metric row has (None when the guard's metric has no such figure).
_FIELDS = ("metric", "flight", "production", "n_flight", "n_production", "count_flight", "count_production", "test",
           "p_value", "alpha", "tolerance", "note")


def _metric(m: dict[str, Any]) -> dict[str, Any]:
    """One guard metric as the page shows it: the guard's whole row (a goal's target and
    direction, a reward's shortfall …) with the common fields always present, the difference
    (flight − production) and the verdict."""
    f, p = m.get("flight"), m.get("production")
    diff = f - p if isinstance(f, int | float) and isinstance(p, int | float) else None
    return {**dict.fromkeys(_FIELDS), **m, "difference": diff, "breach": bool(m.get("breach")), "decision": _verdict(m)}


def flights(registry: Any, home: Any, system: Any, *, now_ns: int | None = None, policy: Any = None) -> dict[str, Any]:
    """Each running flight of ``system`` (the :class:`~closedloop.System`: the guard reads its
    mistake outcomes, rewards and goals) against production over the same window, from the
    telemetry of ``home`` (a path: only the decisions since the first running flight or shadow
    started are read; a :class:`~closedloop.telemetry.TelemetryStore`; or ``(decisions,
    outcomes)`` Arrow tables). ``policy``: the :class:`~closedloop.registry.GuardPolicy`
    (default: the guard's)."""
    from closedloop.registry.guard import guard_check

    name = known_system(registry, system)
    if not hasattr(system, "mistake_outcomes"):
        raise SpecError(f"The Flights page needs the closedloop.System of {name!r} (the guard reads its mistake "
                        f"outcomes and goals). Got {system!r} instead.")
    now = int(now_ns if now_ns is not None else registry.clock.now_ns())
    view = registry.at(name, 2**62)
    report = guard_check(registry, system, _telemetry(home, _since(view)), policy=policy, now_ns=now, apply=False)
    started = {f["name"]: f["started"] for f in view["flights"]}
    srm = report.get("srm")
    exposure = {a["arm"]: a for a in (srm or {}).get("arms", [])}
    out = []
    for f in report["flights"]:
        metrics = [_metric(m) for m in f["metrics"]]
        decision = ("stop" if f["breach"] else
                    "keep" if any(m["decision"] == "keep" for m in metrics) else "not judged yet")
        out.append({
            "name": f["name"], "bundle": f["bundle"], "share": f["share"], "started": started.get(f["name"]),
            "window": {"since": when(f["since_ns"]), "until": when(f["until_ns"])},
            "decisions": f["decisions"], "units": f["units"],
            "exposure": {"flight": exposure.get(f["name"]), "production": exposure.get("production")},
            "metrics": metrics, "breach": bool(f["breach"]), "decision": decision,
            "reason": next((b["reason"] for b in report["breaches"] if b["flight"] == f["name"]), None),
        })
    return {"system": name, "revision": report["revision"], "production": report["state"]["production"],
            "checked_at": iso(now), "flights": out, "srm": srm, "policy": report["policy"], "notes": report["notes"],
            "shadow_disagreement": report.get("shadow_disagreement")}

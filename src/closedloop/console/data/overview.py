"""What the Overview page shows, as plain data: :func:`overview` (and :func:`fingerprint`, which says
cheaply whether any of it may have changed).

* **serving** — the registry's status: production and since when, flights with their shares and
  since when, shadows, the kill switch, the revision, the last change and the attempts since;
* **cycles** — the last cycle records of the system (``<home>/orchestration/cycles/``): each step's
  status, the gate's verdict and its reason, the outcome;
* **alerts** — the newest alerts of the home's log (``<home>/orchestration/alerts.jsonl``), newest first;
* **telemetry** — the store's health from its files alone (no data is read): segments not compacted
  yet (the backlog), Parquet files, the last durable write (the watermark), torn tails (writes lost
  to a crash: the drops a reader of the home can see);
* **goals** — each goal's latest point in ``<home>/goals/series.jsonl`` against its target, by level.

Pure functions of the registry, the home and the time: no web framework here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from closedloop.base.times import iso
from closedloop.orchestration.steps import default_pipeline, reward_pipeline

#: the steps in the order a cycle runs them (a record keeps them by name; a step of another pipeline goes last)
_STEP_ORDER = {n: i for i, n in enumerate(dict.fromkeys([*default_pipeline().names, *reward_pipeline().names]))}

__all__ = ["LEVELS", "fingerprint", "overview", "registry_mark"]

#: The goal levels, in the order the page shows them.
LEVELS = ("organizational", "leading", "user", "model")
#: The alerts log is read from its end: this many bytes at most (the newest alerts).
_ALERTS_TAIL = 256 * 1024


def _cycles_dir(home: Path) -> Path:
    return Path(home) / "orchestration" / "cycles"


def _alerts_path(home: Path) -> Path:
    return Path(home) / "orchestration" / "alerts.jsonl"


def _series_path(home: Path) -> Path:
    return Path(home) / "goals" / "series.jsonl"


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def registry_mark(registry: Any, system: str) -> tuple[int, int]:
    """The system's revision and newest event id: what the registry's part of the page depends on
    (a refused attempt changes no revision, but it is an event). One indexed query each."""
    last = registry.history(system, limit=1)
    return int(registry.revision(system)), int(last[-1]["id"]) if last else 0


def fingerprint(registry: Any, home: Path, system: str) -> str:
    """A short text that changes whenever what :func:`overview` shows may have: the registry's
    revision and its newest event (a refused attempt changes no revision), and the modification times
    of the cycle records' folder and newest record, the alerts log, the goal series and the telemetry
    folders. Cheap: one indexed query and a few ``stat`` calls."""
    home = Path(home)
    parts: list[Any] = list(registry_mark(registry, system))
    cycles = _cycles_dir(home)
    parts.append(_mtime(cycles))
    newest = _newest_record(cycles)
    parts.append(0 if newest is None else _mtime(newest))
    parts += [_mtime(_alerts_path(home)), _mtime(_series_path(home))]
    tel = home / "telemetry"
    parts += [_mtime(tel / "store.json"), *(_mtime(tel / "segments" / s) for s in ("decisions", "outcomes"))]
    return "-".join(str(p) for p in parts)


def overview(registry: Any, home: Path, system: str, now_ns: int, *, system_obj: Any = None,
             cycles: int = 5, alerts: int = 20, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the Overview page shows for ``system`` at ``now_ns`` (JSON-ready). ``system_obj``
    (the :class:`~closedloop.System`, when known) gives every declared goal, measured or not.
    ``status``: the registry's status of the system when the caller has it already (it depends only
    on :func:`registry_mark`; finding when each bundle started walks the history back)."""
    home = Path(home)
    if status is None:
        status = registry.status(system, now_ns=now_ns)
    return {
        "system": system, "now": iso(now_ns), "serving": serving(status),
        "cycles": last_cycles(home, system, cycles), "alerts": recent_alerts(home, alerts),
        "telemetry": telemetry_health(home, now_ns), "goals": goal_levels(home, system_obj),
    }


# -- what serves ---------------------------------------------------------------------------------------
def serving(status: dict[str, Any]) -> dict[str, Any]:
    """The status as the page shows it: production, flights, shadows, the kill switch, the revision."""
    prod = status.get("production")
    return {
        "revision": status["revision"], "summary": status["summary"], "killswitch": bool(status["killswitch"]),
        "production": None if prod is None else {"bundle": prod["bundle"], "since": prod.get("since")},
        "flights": [{"name": f["name"], "bundle": f["bundle"], "share": f["share"],
                     "expected_share_of_units": f.get("expected_share_of_units"), "since": f.get("started")}
                    for f in status.get("flights", [])],
        "shadows": [{"bundle": s["bundle"], "since": s.get("started")} for s in status.get("shadows", [])],
        "last_change": status.get("last_change"),
        "attempts": status.get("attempts_since_last_change", []),
    }


# -- cycles --------------------------------------------------------------------------------------------
def _record_files(cycles: Path) -> list[Path]:
    if not cycles.is_dir():
        return []
    return sorted(p for p in cycles.iterdir() if p.suffix == ".json" and p.stem.isdigit())


def _newest_record(cycles: Path) -> Path | None:
    files = _record_files(cycles)
    return files[-1] if files else None


def last_cycles(home: Path, system: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` cycle records of ``system``, newest first (a record that cannot be read is skipped)."""
    out: list[dict[str, Any]] = []
    for p in reversed(_record_files(_cycles_dir(home))):
        if len(out) >= n:
            break
        try:
            rec = json.loads(p.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("system", system) == system:
            out.append(cycle_view(rec))
    return out


def cycle_view(rec: dict[str, Any]) -> dict[str, Any]:
    """One cycle record in brief: when, its outcome and reason, each step's status (with the reason of
    a step that stopped the cycle), the gate's verdict and reason, the registry changes it made."""
    steps = rec.get("steps") or {}
    rows = []
    for name, st in sorted(steps.items(), key=lambda kv: _STEP_ORDER.get(kv[0], len(_STEP_ORDER))):
        result = st.get("result") if isinstance(st, dict) else None
        note = result.get("reason") if isinstance(result, dict) and st.get("status") == "stopped" else None
        rows.append({"name": name, "status": (st or {}).get("status"), "note": note})
    changes = rec.get("changes") or []
    return {
        "id": rec.get("id"), "at": iso(rec.get("now_ns")) if isinstance(rec.get("now_ns"), int) else None,
        "finished": bool(rec.get("finished")), "outcome": rec.get("outcome"), "reason": rec.get("reason"),
        "steps": rows, "gate": gate_verdict(steps), "alerts": len(rec.get("alerts") or []),
        "changes": [c if isinstance(c, str) else c.get("message") or c.get("operation") for c in changes
                    if isinstance(c, str | dict)],
    }


def gate_verdict(steps: dict[str, Any]) -> dict[str, Any] | None:
    """The gate's verdict in a cycle's steps: ``{"verdict": "passed"|"failed", "reason": …}``, or
    None when the cycle did not reach the gate."""
    gate = steps.get("gate")
    evaluated = ((steps.get("evaluate") or {}).get("result") or {}).get("gate") if isinstance(steps.get("evaluate"), dict) else None
    reasons = "; ".join(evaluated.get("reasons") or []) if isinstance(evaluated, dict) else ""
    if not isinstance(gate, dict):
        return None
    if gate.get("status") == "done":
        res = gate.get("result") or {}
        why = reasons or f"candidate {res.get('candidate')} against baseline {res.get('baseline')}"
        return {"verdict": "passed", "reason": why}
    if gate.get("status") == "stopped":
        return {"verdict": "failed", "reason": (gate.get("result") or {}).get("reason") or reasons}
    return {"verdict": gate.get("status"), "reason": ""}


# -- alerts ----------------------------------------------------------------------------------------------
def recent_alerts(home: Path, n: int) -> list[dict[str, Any]]:
    """The newest ``n`` alerts of the home's log, newest first (read from the end of the file)."""
    path = _alerts_path(home)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _ALERTS_TAIL))
            data = fh.read()
    except OSError:
        return []
    lines = data.splitlines()
    if size > _ALERTS_TAIL and lines:
        lines = lines[1:]  # the first line read may be cut
    alerts = []
    for line in lines:
        try:
            a = json.loads(line)
        except ValueError:
            continue
        if isinstance(a, dict):
            alerts.append(a)
    alerts.sort(key=lambda a: a.get("at_ns") or 0, reverse=True)
    return [{"id": a.get("id"), "kind": a.get("kind"), "subject": a.get("subject"), "message": a.get("message"),
             "action": a.get("action"), "window": a.get("window"), "value": a.get("value"), "threshold": a.get("threshold"),
             "at": iso(a["at_ns"]) if isinstance(a.get("at_ns"), int) and a["at_ns"] else None} for a in alerts[:n]]


# -- telemetry health ----------------------------------------------------------------------------------
def _files(paths: Iterable[Path]) -> tuple[int, int, int]:
    """How many files, their bytes, the newest modification time (ns)."""
    n = size = newest = 0
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return n, size, newest


def telemetry_health(home: Path, now_ns: int) -> dict[str, Any]:
    """The telemetry store's health from its files: per stream the segments waiting for compaction
    (count, bytes: the backlog) and the Parquet files; the last durable write (the newest file:
    the watermark) and how long ago; torn tails counted by compaction (frames a crash cut off)."""
    root = Path(home) / "telemetry"
    streams: dict[str, Any] = {}
    newest = 0
    for stream in ("decisions", "outcomes"):
        seg_dir = root / "segments" / stream
        segs = _files(seg_dir.iterdir()) if seg_dir.is_dir() else (0, 0, 0)
        pq_dir = root / "parquet" / stream
        days = sorted(d.name[4:] for d in pq_dir.glob("day=*")) if pq_dir.is_dir() else []
        pq = _files(pq_dir.glob(f"day={days[-1]}/part-*.parquet")) if days else (0, 0, 0)
        newest = max(newest, segs[2], pq[2])
        streams[stream] = {"segments": segs[0], "segment_bytes": segs[1], "parquet_days": len(days),
                           "last_day": days[-1] if days else None}
    torn = 0
    try:
        torn = int(json.loads((root / "store.json").read_bytes()).get("torn_tails", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return {
        "present": root.is_dir(), "streams": streams, "torn_tails": torn,
        "watermark": iso(newest) if newest else None,
        "watermark_age_s": None if not newest else max(0.0, (now_ns - newest) / 1e9),
        "backlog_segments": sum(s["segments"] for s in streams.values()),
        "backlog_bytes": sum(s["segment_bytes"] for s in streams.values()),
    }


# -- goals -----------------------------------------------------------------------------------------------
def goal_levels(home: Path, system_obj: Any = None) -> list[dict[str, Any]]:
    """Each goal's latest value against its target, grouped by level (organizational, leading, user,
    model): ``[{"level", "goals": [...]}]``. With the System, every declared goal
    (:func:`closedloop.orchestration.goal_status`); without it, every goal the series file holds."""
    from closedloop.orchestration.goals import SeriesStore, goal_status

    store = SeriesStore(_series_path(home))
    if system_obj is not None and getattr(system_obj, "goals", None):
        rows = [{k: g[k] for k in ("name", "level", "metric", "cadence", "target", "direction", "value", "window", "met")}
                for g in goal_status(system_obj, store)]
    else:
        latest: dict[str, dict[str, Any]] = {}
        for p in store.points():
            if p.get("value") is None:
                continue
            have = latest.get(p["name"])
            if have is None or p.get("start_ns", 0) >= have.get("start_ns", 0):
                latest[p["name"]] = p
        rows = [{k: p.get(k) for k in ("name", "level", "metric", "cadence", "target", "direction", "value", "window", "met")}
                for p in sorted(latest.values(), key=lambda p: p["name"])]
    return [{"level": lv, "goals": [g for g in rows if g["level"] == lv]} for lv in LEVELS]

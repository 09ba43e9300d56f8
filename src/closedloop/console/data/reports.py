"""The Reports page: the evaluation reports, newest first, a page at a time, each with the link
target a page opens it by; one report opened; two bundles side by side.

Registered reports (``Registry.add_report``) are listed from the registry's ``reports`` table —
one query for the page (``LIMIT``/``OFFSET``, without the report bodies) and one for the bundles
each evaluated (``report_bundles``: position, the gate's verdict). Report files in the home
(``<home>/reports/*.json`` from ``closedloop evaluate``, ``<home>/orchestration/cycles/*/report.json``
from the cycles) are listed by modification time; only the page's files are read.

:func:`compare` puts two registered bundles side by side: each one's metrics from the newest
report that evaluated it, thresholds, lineage (its parents, oldest last), guardrails, the gate's
verdicts, and the difference of their manifests as ``(key, left, right)`` rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import func, select

from closedloop.base.times import iso
from closedloop.console.data._common import as_dict, check_page, known_system, page_of
from closedloop.errors import RegistryError, SpecError, clip_value
from closedloop.registry.models import bundles as T_BUNDLES
from closedloop.registry.models import report_bundles as T_RB
from closedloop.registry.models import reports as T_REPORTS

__all__ = ["compare", "manifest_diff", "report", "report_file", "report_files", "reports"]

#: How far back a bundle's lineage is followed.
MAX_LINEAGE = 20


def reports(registry: Any, system: Any, *, page: int = 1, per_page: int = 20) -> dict[str, Any]:
    """A page of the reports registered for ``system``, newest first: id, when and by whom it
    was registered, the dataset, the bundles it evaluated (in order) and the gate's verdict, and
    ``link`` (``{"kind": "registered", "id": …}``: what :func:`report` opens)."""
    name = known_system(registry, system)
    page, per_page = check_page(page, per_page)
    r = T_REPORTS.c
    with registry.db.read() as conn:
        total = int(conn.execute(select(func.count()).select_from(T_REPORTS).where(r.system == name)).scalar() or 0)
        rows = conn.execute(select(r.id, r.digest, r.dataset_id, r.created, r.registered_ns, r.registered_by)
                            .where(r.system == name).order_by(r.id.desc())
                            .limit(per_page).offset((page - 1) * per_page)).mappings().all()
        ids = [int(x["id"]) for x in rows]
        links = conn.execute(select(T_RB).where(T_RB.c.report_id.in_(ids)).order_by(T_RB.c.report_id, T_RB.c.position)
                             ).mappings().all() if ids else []
    by_report: dict[int, list[dict[str, Any]]] = {}
    for b in links:
        by_report.setdefault(int(b["report_id"]), []).append(
            {"version": b["bundle_version"], "position": b["position"], "gate_passed": b["gate_passed"],
             "gate_baseline": b["gate_baseline"]})
    items = []
    for x in rows:
        bundles = by_report.get(int(x["id"]), [])
        gate = next(({"candidate": b["version"], "baseline": b["gate_baseline"], "passed": b["gate_passed"]}
                     for b in bundles if b["gate_passed"] is not None), None)
        items.append({"id": int(x["id"]), "digest": x["digest"], "dataset_id": x["dataset_id"], "created": x["created"],
                      "registered_at": iso(x["registered_ns"]), "registered_by": x["registered_by"],
                      "bundles": [b["version"] for b in bundles], "gate": gate,
                      "link": {"kind": "registered", "id": int(x["id"])}})
    return {**page_of(items, page, per_page, total), "system": name}


def report(registry: Any, report_id: Any) -> dict[str, Any]:
    """The whole registered report ``report_id`` (the JSON ``closedloop evaluate`` wrote)."""
    if isinstance(report_id, bool) or not isinstance(report_id, int) or report_id < 1:
        raise SpecError(f"The 'report_id' must be a registered report's id (an integer ≥ 1). Got {clip_value(report_id)!r} instead.")
    with registry.db.read() as conn:
        body = conn.execute(select(T_REPORTS.c.body).where(T_REPORTS.c.id == report_id)).scalar()
    if body is None:
        raise RegistryError(f"No evaluation report with id {report_id} is registered.")
    return dict(json.loads(body))


def _report_paths(home: Path) -> list[Path]:
    found = list((home / "reports").glob("*.json")) if (home / "reports").is_dir() else []
    cycles = home / "orchestration" / "cycles"
    if cycles.is_dir():
        found += list(cycles.glob("*/report.json"))
    return found


def report_files(home: Any, *, page: int = 1, per_page: int = 20, system: str | None = None) -> dict[str, Any]:
    """A page of the report files in ``home``, newest (modified) first: ``path`` (relative to the
    home: the link target :func:`report_file` opens), size, when modified, and — read for the
    page's files only — the system, dataset and bundles of each (``error`` for a file that is not a
    report). ``system``: only that system's files (then every file is read)."""
    page, per_page = check_page(page, per_page)
    root = Path(home)
    stats = []
    for p in _report_paths(root):
        try:
            st = p.stat()
        except OSError:
            continue
        stats.append((st.st_mtime_ns, str(p.relative_to(root)), st.st_size, p))
    stats.sort(key=lambda s: (-s[0], s[1]))
    items = [{"path": rel, "size": size, "modified": iso(mt), "link": {"kind": "file", "path": rel}, **_summary(p)}
             for mt, rel, size, p in (stats if system is not None else stats[(page - 1) * per_page:page * per_page])]
    if system is not None:
        items = [i for i in items if i.get("system") == system]
        total = len(items)
        items = items[(page - 1) * per_page:page * per_page]
    else:
        total = len(stats)
    return page_of(items, page, per_page, total)


class _Meta(msgspec.Struct):
    dataset_id: str | None = None
    created: str | None = None


class _Entry(msgspec.Struct):
    version: str | None = None


class _Gate(msgspec.Struct):
    candidate: str | None = None
    baseline: str | None = None
    passed: bool | None = None


class _Summary(msgspec.Struct):
    """What a report file's row shows (msgspec skips the rest of the report unread)."""

    system: str | None = None
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    bundles: list[_Entry] = msgspec.field(default_factory=list)
    gate: _Gate | None = None


def _summary(p: Path) -> dict[str, Any]:
    try:
        r = msgspec.json.decode(p.read_bytes(), type=_Summary)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return {"error": f"not a readable report: {exc}"}
    return {"system": r.system, "dataset_id": r.metadata.dataset_id, "created": r.metadata.created,
            "bundles": [b.version for b in r.bundles],
            "gate": None if r.gate is None else msgspec.structs.asdict(r.gate)}


def report_file(home: Any, path: Any) -> dict[str, Any]:
    """The report file ``path`` (relative to ``home``, as :func:`report_files` lists it), read;
    a path outside the home's report folders is refused."""
    root = Path(home).resolve()
    if not isinstance(path, str) or not path:
        raise SpecError(f"The report 'path' must be a path relative to the home. Got {clip_value(path)!r} instead.")
    target = (root / path).resolve()
    allowed = {p.resolve() for p in _report_paths(root)}
    if target not in allowed:
        raise SpecError(f"The report 'path' must name a report file of the home (reports/*.json or "
                        f"orchestration/cycles/*/report.json). Got {clip_value(path)!r} instead.")
    return dict(json.loads(target.read_bytes()))


# -- two bundles side by side ----------------------------------------------------------------------------
def _record(conn: Any, version: str) -> dict[str, Any] | None:
    r = conn.execute(select(T_BUNDLES).where(T_BUNDLES.c.version == version)).mappings().first()
    if r is None:
        return None
    return {"version": r["version"], "system": r["system"], "kind": r["kind"], "parent": r["parent"],
            "created_at": r["created_at"], "registered_at": iso(r["registered_ns"]), "registered_by": r["registered_by"],
            "manifest": json.loads(r["manifest"])}


def _newest_report(conn: Any, *versions: str) -> dict[str, Any] | None:
    """The newest registered report that evaluated every one of ``versions`` (None: none did)."""
    ids = None
    for v in versions:
        mine = set(conn.execute(select(T_RB.c.report_id).where(T_RB.c.bundle_version == v)).scalars().all())
        ids = mine if ids is None else ids & mine
    if not ids:
        return None
    body = conn.execute(select(T_REPORTS.c.body).where(T_REPORTS.c.id == max(ids))).scalar()
    return None if body is None else json.loads(body)


def _lineage(conn: Any, parent: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while parent is not None and parent not in seen and len(out) < MAX_LINEAGE:
        seen.add(parent)
        rec = _record(conn, parent)
        if rec is None:
            out.append({"version": parent, "registered": False})
            break
        out.append({"version": parent, "registered": True, "kind": rec["kind"], "created_at": rec["created_at"]})
        parent = rec["parent"]
    return out


def _metrics(rep: dict[str, Any] | None, version: str) -> dict[str, Any] | None:
    """A bundle's figures in a report: quality, the mistakes' cost, the policy value (what the
    report holds for its kind)."""
    if rep is None:
        return None
    entry = next((b for b in rep.get("bundles") or [] if isinstance(b, dict) and b.get("version") == version), None)
    if entry is None:
        return None
    mistakes = as_dict(entry.get("mistakes"))
    out = {"report_dataset": (rep.get("metadata") or {}).get("dataset_id"), "n": entry.get("n"),
           "quality": entry.get("quality"), "cost_per_1000": mistakes.get("cost_per_1000"),
           "operating_point": entry.get("operating_point")}
    pv = rep.get("policy_value")
    if isinstance(pv, dict):
        out["policy_value"] = next((b for b in pv.get("bundles") or [] if b.get("version") == version), None)
    gate = rep.get("gate") if isinstance(rep.get("gate"), dict) else None
    if gate is not None and gate.get("candidate") == version:
        out["gate"] = {k: gate.get(k) for k in ("baseline", "passed", "reasons")}
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: obj}


def manifest_diff(left: dict[str, Any], right: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The keys (dotted paths) whose values differ between two manifests, sorted: ``(key, left,
    right)``; a key one side lacks has None there. Lists are compared whole."""
    a, b = _flatten(left), _flatten(right)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def compare(registry: Any, v1: Any, v2: Any) -> dict[str, Any]:
    """Two registered bundles side by side (``left`` = ``v1``, ``right`` = ``v2``): kind, when
    built and registered, thresholds, guardrails, metrics (from the newest report that evaluated
    both — ``same_report`` — else the newest that evaluated each),
    lineage (parents, nearest first), whether one descends from the other, and ``diff``: the
    manifests' differing keys as ``(key, left, right)`` rows."""
    sides = []
    with registry.db.read() as conn:
        for v in (v1, v2):
            if not isinstance(v, str) or not v:
                raise SpecError(f"compare needs two bundle versions (strings). Got {clip_value(v)!r} instead.")
            rec = _record(conn, v)
            if rec is None:
                raise RegistryError(f"Bundle {v!r} is not registered: compare takes two registered bundle versions.")
            rec["lineage"] = _lineage(conn, rec["parent"])
            sides.append(rec)
        both = _newest_report(conn, v1, v2)  # one report of both: the same rows, comparable figures
        for rec in sides:
            rep = both if both is not None else _newest_report(conn, rec["version"])
            rec["metrics"] = _metrics(rep, rec["version"])
            if rec["metrics"] is not None:
                rec["metrics"]["same_report"] = both is not None
    left, right = sides
    if left["system"] != right["system"]:
        raise SpecError(f"compare takes two bundles of one system. Got {v1!r} of {left['system']!r} and {v2!r} of "
                        f"{right['system']!r}.")
    out: dict[str, Any] = {"system": left["system"], "diff": manifest_diff(left["manifest"], right["manifest"])}
    for side, rec in (("left", left), ("right", right)):
        m = rec.pop("manifest")
        out[side] = {**rec, "thresholds": m.get("thresholds"), "guardrails": m.get("guardrails", []),
                     "intelligence": {k: v for k, v in (m.get("intelligence") or {}).items() if k != "trusted_types"},
                     "manifest_metrics": m.get("metrics", {})}
    names_l = {x["version"] for x in out["left"]["lineage"]}
    names_r = {x["version"] for x in out["right"]["lineage"]}
    out["related"] = ("right descends from left" if left["version"] in names_r else
                      "left descends from right" if right["version"] in names_l else
                      "common ancestor" if names_l & names_r else "unrelated")
    return out

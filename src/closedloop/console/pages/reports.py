"""The Reports page: the evaluation reports registered for a system and the report files of the home,
newest first and paged (:func:`closedloop.console.data.reports.reports`, ``report_files``); one opened
*in place* as a console page — its gate, headline metrics, thresholds, costs, goals, slices and worst
mistakes as tables, its charts drawn by ``charts.js`` — and two bundles side by side (``compare``:
metrics, thresholds, lineage, guardrails, the manifests' differing keys).

A report is never shown through its own HTML (``closedloop evaluate --html``): that page inlines its
scripts, which the console's Content-Security-Policy refuses. The charts are the report's own
Vega-Lite specs (:mod:`closedloop.evaluation.html.charts`), drawn like the Goals page's.

URLs: ``/systems/{system}/reports?page=N``, ``…/reports/{id}`` (a registered report),
``…/reports/file?path=<relative path>`` (a file), ``…/reports/compare?left=<version>&right=<version>``;
the JSON twins under ``/api/systems/{system}/reports…`` (the same paths; a report is its whole JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.data.reports import compare, report, report_file, report_files, reports
from closedloop.console.framework import ConsoleError, console_of, page_of, render, viewer
from closedloop.console.pages._common import call, pager
from closedloop.service.auth import Credential

__all__ = ["report_view", "router"]

#: Rows shown per slice field and per list of worst mistakes.
MAX_ROWS = 20

router = APIRouter()


def _lists(request: Request, system: str) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    p = page_of(request)
    per = min(p.size, 50)
    return {"registered": call(reports, con.registry(), system, page=p.number, per_page=per),
            "files": call(report_files, con.home, page=p.number, per_page=per, system=system)}


@router.get("/systems/{system}/reports", name="reports", include_in_schema=False)
def reports_page(request: Request, system: str, cred: Credential = Depends(viewer)) -> Response:
    data = _lists(request, system)
    reg, files = data["registered"], data["files"]
    merged = {"page": reg["page"], "pages": max(reg["pages"], files["pages"]), "total": reg["total"] + files["total"],
              "has_prev": reg["has_prev"] or files["has_prev"], "has_next": reg["has_next"] or files["has_next"]}
    versions = sorted({v for r in reg["items"] + files["items"] for v in (r.get("bundles") or [])})
    return render(request, "reports.html", title=f"{system} — reports", system=system, data=data, versions=versions,
                  pages=pager(request, "reports", merged, system=system))


@router.get("/api/systems/{system}/reports", name="api_reports")
def reports_api(request: Request, system: str, cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _lists(request, system)


# -- one report, in place -------------------------------------------------------------------------------
def _registered(request: Request, system: str, report_id: str) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    rid: Any = int(report_id) if report_id.isdigit() and len(report_id) < 19 else report_id[:80]
    rep = call(report, con.registry(), rid)
    if rep.get("system") not in (None, system):
        raise ConsoleError(404, "Not found", f"Report {rid} evaluates system {rep.get('system')!r}, not {system!r}.", slug="not-found")
    return rep


def _file(request: Request, system: str, path: str) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    rep = call(report_file, con.home, path)
    if not isinstance(rep, dict) or not isinstance(rep.get("bundles"), list):
        raise ConsoleError(422, "Not a report", f"The file {path!r} is not an evaluation report (no 'bundles').")
    return rep


def _charts(rep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's own Vega-Lite specs (a classification report's curves, costs and slices)."""
    if rep.get("kind") in ("ranking", "choice"):
        return []
    from closedloop.evaluation.html.charts import _cost_spec, _pr_spec, _reliability_spec, _roc_spec, _slice_spec
    from closedloop.evaluation.html.text import _labels, _slice_fields

    try:
        labels = _labels(rep)
        specs = [_roc_spec(rep, labels), _pr_spec(rep, labels), _reliability_spec(rep, labels), _cost_spec(rep, labels)]
        specs += [_slice_spec(rep, labels, f) for f in _slice_fields(rep)]
    except (KeyError, TypeError, ValueError, IndexError):  # an older or partial report: its tables still show
        return []
    return [{"spec": s, "title": (s.get("title") or {}).get("text", "Chart") if isinstance(s.get("title"), dict)
             else str(s.get("title") or "Chart")} for s in specs if s]


def _map(obj: Any) -> Mapping[str, Any]:
    return obj if isinstance(obj, Mapping) else {}


def _scalars(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if isinstance(v, int | float | str | bool) or v is None} if isinstance(obj, Mapping) else {}


def _values(obj: Any) -> dict[str, Any]:
    """``{metric: value}`` of a ranking report's ``{metric: {"value", "ci", …}}``."""
    return _scalars({k: v.get("value") if isinstance(v, Mapping) else v for k, v in _map(obj).items()})


def _bundle(b: Mapping[str, Any]) -> dict[str, Any]:
    mistakes, worst, slices = _map(b.get("mistakes")), _map(b.get("worst")), _map(b.get("slices"))
    return {
        "version": b.get("version"), "kind": b.get("kind"), "n": b.get("n"), "operating_point": b.get("operating_point"),
        "quality": _scalars(b.get("quality")) or _values(b.get("metrics")),  # a ranking report's: ndcg, mrr, …
        "thresholds": _scalars(b.get("thresholds")),
        "figures": {k: v for k, v in _scalars(b).items() if k not in ("version", "kind", "n", "operating_point", "score")},
        "cost_per_1000": mistakes.get("cost_per_1000"), "best_cost_per_1000": mistakes.get("best_cost_per_1000"),
        "confusion": _map(mistakes.get("confusion")), "costs": _map(mistakes.get("costs")),
        "goals": [g for g in (b.get("goals") or []) if isinstance(g, Mapping)],
        "slices": {str(f): [r for r in rows if isinstance(r, Mapping)][:MAX_ROWS] for f, rows in slices.items() if isinstance(rows, list)},
        "worst": {k: [r for r in (worst.get(k) or []) if isinstance(r, Mapping)][:MAX_ROWS]
                  for k in ("false_positives", "false_negatives")},
    }


def _policy(pv: Any) -> dict[str, Any] | None:
    """A ranking or choice report's off-policy values: per bundle each estimator's value, interval and
    ESS; per candidate its difference from the baseline by each estimator (None for a report without)."""
    pv = _map(pv)
    if not pv:
        return None
    names = [str(e) for e in pv.get("estimators") or []]
    rows = [b for b in pv.get("bundles") or [] if isinstance(b, Mapping)]
    comps = [c for c in pv.get("comparison") or [] if isinstance(c, Mapping)]
    return {"estimators": names, "interval": pv.get("interval"), "reward_model": pv.get("reward_model"),
            "notes": [str(n) for n in pv.get("notes") or []],
            "bundles": [{"version": b.get("version"), "estimates": {n: _map(_map(b.get("estimates")).get(n)) for n in names}}
                        for b in rows],
            "comparison": [{"candidate": c.get("candidate"), "baseline": c.get("baseline"),
                            "differences": {n: _map(_map(c.get("differences")).get(n)) for n in names}} for c in comps]}


def report_view(rep: Mapping[str, Any]) -> dict[str, Any]:
    """What the in-place page shows of a report: its header, gate, comparison, each bundle's tables and the charts."""
    bundles = [_bundle(b) for b in rep.get("bundles", []) if isinstance(b, Mapping)]
    metrics = sorted({k for b in bundles for k in b["quality"]})
    meta = _map(rep.get("metadata"))
    return {"system": rep.get("system"), "kind": rep.get("kind") or "classification", "metadata": _scalars(meta),
            "notes": [str(n) for n in meta.get("notes", [])] if isinstance(meta.get("notes"), list) else [],
            "gate": rep.get("gate") if isinstance(rep.get("gate"), Mapping) else None,
            "comparison": [c for c in rep.get("comparison") or [] if isinstance(c, Mapping)],
            "bundles": bundles, "metrics": metrics, "charts": _charts(rep), "heuristic_note": rep.get("heuristic_note"),
            "policy": _policy(rep.get("policy_value"))}


@router.get("/systems/{system}/reports/file", name="report_file", include_in_schema=False)
def report_file_page(request: Request, system: str, path: str = "", cred: Credential = Depends(viewer)) -> Response:
    rep = _file(request, system, path)
    return render(request, "report.html", title=f"{system} — report {path}", system=system, name=f"Report file {path}",
                  view=report_view(rep))


@router.get("/api/systems/{system}/reports/file", name="api_report_file")
def report_file_api(request: Request, system: str, path: str = "", cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _file(request, system, path)


# -- two bundles side by side -------------------------------------------------------------------------------
def _compare(request: Request, system: str, left: str, right: str) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    if not left.strip() or not right.strip():
        raise ConsoleError(422, "Bad request", "Name two bundles to compare: ?left=<version>&right=<version>.")
    return call(compare, con.registry(), left.strip()[:200], right.strip()[:200])


@router.get("/systems/{system}/reports/compare", name="compare", include_in_schema=False)
def compare_page(request: Request, system: str, left: str = "", right: str = "", cred: Credential = Depends(viewer)) -> Response:
    data = _compare(request, system, left, right)
    metrics = sorted({k for side in ("left", "right") for k in ((data[side].get("metrics") or {}).get("quality") or {})})
    return render(request, "compare.html", title=f"{system} — {left} vs {right}", system=system, data=data, metrics=metrics)


@router.get("/api/systems/{system}/reports/compare", name="api_compare")
def compare_api(request: Request, system: str, left: str = "", right: str = "", cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _compare(request, system, left, right)


@router.get("/systems/{system}/reports/{report_id}", name="report", include_in_schema=False)
def report_page(request: Request, system: str, report_id: str, cred: Credential = Depends(viewer)) -> Response:
    rep = _registered(request, system, report_id)
    return render(request, "report.html", title=f"{system} — report {report_id}", system=system,
                  name=f"Report #{report_id}", view=report_view(rep))


@router.get("/api/systems/{system}/reports/{report_id}", name="api_report")
def report_api(request: Request, system: str, report_id: str, cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _registered(request, system, report_id)

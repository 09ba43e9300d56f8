"""The Mistakes page: the worst mistakes of the latest registered evaluation (costliest first) and the
mistakes users reported lately, with their contexts (:func:`closedloop.console.data.mistakes.worst`,
``reported``); a lookup form (a decision id, or a unit: its newest decision) leading to the decision
page — the context, the features, the scores, the action, the rule that decided (``why``, the
guardrail), the outcomes that name it, and its replay through the bundle that served it (equal to the
log bit for bit, or what differs) beside the replay through the candidate
(:func:`closedloop.console.data.replay.lookup`).

URLs: ``/systems/{system}/mistakes?page=N&days=7``, ``/systems/{system}/decision?id=<decision id>``
(or ``?unit=<unit>``; ``&candidate=<version>``); the JSON twins ``/api/systems/{system}/mistakes`` and
``/api/systems/{system}/decision``. A decision that is not in the telemetry is a 404 naming what was
searched (problem+json under ``/api/``). Looking up and replaying needs the System (``--system``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.data.mistakes import DEFAULT_DAYS, reported, worst
from closedloop.console.data.replay import lookup
from closedloop.console.framework import ConsoleError, console_of, page_of, render, viewer
from closedloop.console.pages._common import call, pager
from closedloop.service.auth import Credential

__all__ = ["router"]

#: Rows per list on a page (each row carries a whole context): at most the settings' ``page_size``.
PER_PAGE = 20

router = APIRouter()


def _days(days: str) -> float:
    d = days.strip() or str(DEFAULT_DAYS)
    try:
        value = float(d)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3650:
        raise ConsoleError(422, "Bad request", f"'days' must be a number of days in (0, 3650]. Got {d[:40]!r} instead.")
    return value


def _mistakes(request: Request, system: str, days: str) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    p = page_of(request)
    per = min(p.size, PER_PAGE)
    subject = con.system_object(system) or system
    reg = con.registry()
    return {"worst": call(worst, reg, subject, page=p.number, per_page=per),
            "reported": call(reported, reg, con.home, subject, days=_days(days), now_ns=con.now_ns(), page=p.number, per_page=per),
            "system_loaded": subject is not system}


@router.get("/systems/{system}/mistakes", name="mistakes", include_in_schema=False)
def mistakes_page(request: Request, system: str, days: str = "", cred: Credential = Depends(viewer)) -> Response:
    data = _mistakes(request, system, days)
    w, r = data["worst"], data["reported"]
    merged = {"page": w["page"], "pages": max(w["pages"], r.get("pages", 1)), "total": w["total"] + r.get("total", 0),
              "has_prev": w["has_prev"] or r.get("has_prev", False), "has_next": w["has_next"] or r.get("has_next", False)}
    return render(request, "mistakes.html", title=f"{system} — mistakes", system=system, data=data, days=days[:16],
                  pages=pager(request, "mistakes", merged, system=system, days=days[:16]))


@router.get("/api/systems/{system}/mistakes", name="api_mistakes")
def mistakes_api(request: Request, system: str, days: str = "", cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _mistakes(request, system, days)


def _lookup(request: Request, system: str, id: str, unit: str, candidate: str) -> dict[str, Any]:  # noqa: A002 - the query's name
    con = console_of(request)
    con.check_system(system)
    if bool(id.strip()) == bool(unit.strip()):
        raise ConsoleError(422, "Bad request", "Look up one decision: ?id=<decision id> or ?unit=<unit> (its newest decision).")
    sys_obj = con.system_object(system)
    if sys_obj is None:
        raise ConsoleError(409, "System needed", f"Looking a decision up replays it, which needs the System {system!r} itself: "
                           "start the console with --system MODULE:ATTR naming it.", slug="system-needed")
    found: dict[str, Any] = call(lookup, con.registry(), con.home, sys_obj, decision_id=id.strip() or None,
                                 unit=unit.strip() or None, candidate=candidate.strip() or None)
    return found


@router.get("/systems/{system}/decision", name="decision", include_in_schema=False)
def decision_page(request: Request, system: str, id: str = "", unit: str = "", candidate: str = "",  # noqa: A002
                  cred: Credential = Depends(viewer)) -> Response:
    found = _lookup(request, system, id, unit, candidate)
    return render(request, "decision.html", title=f"{system} — decision {found['decision']['decision_id']}", system=system,
                  data=found)


@router.get("/api/systems/{system}/decision", name="api_decision")
def decision_api(request: Request, system: str, id: str = "", unit: str = "", candidate: str = "",  # noqa: A002
                 cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _lookup(request, system, id, unit, candidate)

"""The Overview page of a system: what serves, the last cycles, alerts, telemetry health and the goals
(:func:`closedloop.console.data.overview.overview`), refreshed live.

Live: the page's body is one fragment that htmx asks for again every ``refresh_seconds``
(``GET …/overview/live?since=<fingerprint>``). The server answers ``204 No Content`` — htmx then
keeps the page as it is — while :func:`~closedloop.console.data.overview.fingerprint` (the registry's
revision and newest event, the modification times of the cycle records, alerts, goal series and
telemetry) is the one the page shows; else the fragment, rendered anew with its new fingerprint. A
change made by the CLI or another console is on the page within ``refresh_seconds`` plus one render.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.data.overview import fingerprint, overview, registry_mark
from closedloop.console.framework import console_of, render, unchanged, viewer
from closedloop.service.auth import Credential

__all__ = ["router"]

router = APIRouter()


def _status(request: Request, system: str) -> dict[str, Any]:
    """The registry's status of ``system``, kept in the console's cache with the mark it was read at.
    It depends only on the registry's revision and newest event (:func:`registry_mark`); finding when
    each bundle started walks the history back, so every viewer's page and poll after a change share
    one walk."""
    con = console_of(request)
    reg = con.registry()
    key = ("overview.status", system)
    mark = registry_mark(reg, system)
    hit = con.cache.get(key)
    if hit is not None and hit[0] == mark:
        cached: dict[str, Any] = hit[1]
        return cached
    status: dict[str, Any] = reg.status(system, now_ns=con.now_ns())
    if registry_mark(reg, system) == mark:  # nothing changed while it was read
        con.cache[key] = (mark, status)
    return status


def _data(request: Request, system: str) -> tuple[dict[str, Any], str]:
    con = console_of(request)
    con.check_system(system)
    reg = con.registry()
    fp = fingerprint(reg, con.home, system)  # first: a change made meanwhile shows at the next poll
    data = overview(reg, con.home, system, con.now_ns(), system_obj=con.system_object(system), status=_status(request, system))
    return data, fp


@router.get("/systems/{system}/overview", name="overview", include_in_schema=False)
def overview_page(request: Request, system: str, cred: Credential = Depends(viewer)) -> Response:
    data, fp = _data(request, system)
    return render(request, "overview.html", title=f"{system} — overview", system=system, data=data, fingerprint=fp)


@router.get("/systems/{system}/overview/live", name="overview_live", include_in_schema=False)
def overview_live(request: Request, system: str, since: str = "", cred: Credential = Depends(viewer)) -> Response:
    con = console_of(request)
    con.check_system(system)
    same = unchanged(since, fingerprint(con.registry(), con.home, system))
    if same is not None:
        return same
    data, fp = _data(request, system)
    return render(request, "overview_live.html", title="", system=system, data=data, fingerprint=fp)


@router.get("/api/systems/{system}/overview", name="api_overview")
def overview_api(request: Request, system: str, cred: Credential = Depends(viewer)) -> dict[str, Any]:
    data, fp = _data(request, system)
    return {**data, "fingerprint": fp}

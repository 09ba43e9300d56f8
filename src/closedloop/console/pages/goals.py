"""The Goals page: one Vega-Lite chart per goal over a chosen range — its value per window, the target,
and the deployments, rollbacks, gate stops, guard stops, kill-switch changes and alerts marked on the
time axis (:func:`closedloop.console.data.goals.goals`) — with the range picked by a plain ``GET`` form
(the last 7, 30 or 90 days, or from / to).

The charts are drawn in the browser by ``static/vendor/charts.js`` with the chart libraries the HTML
evaluation report vendors (``closedloop/evaluation/html/assets``: vega, vega-lite, vega-embed),
served here from the console's own origin at ``/charts/<file>``, and vega-interpreter (no ``eval``:
the Content-Security-Policy allows none). Each spec is a ``<script type="application/json">`` (data,
not code) beside its ``<div class="vl-chart">``; every goal also has its figures in a table.

``GET /systems/{system}/goals?days=30`` or ``?since=<ISO>&until=<ISO>``; the JSON twin is
``/api/systems/{system}/goals`` (same parameters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, Response

from closedloop.base.times import DAY_NS
from closedloop.console.data.goals import goals
from closedloop.console.framework import ConsoleError, console_of, render, viewer
from closedloop.console.pages._common import call
from closedloop.service.auth import Credential

__all__ = ["CHART_LIBS", "RANGES", "router"]

#: The chart libraries served at ``/charts/<file>``: the HTML evaluation report's vendored copies.
CHART_LIBS = Path(__file__).resolve().parents[2] / "evaluation" / "html" / "assets"
_SERVED = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
#: The ranges the picker offers, in days.
RANGES = (7, 30, 90)

router = APIRouter()


@router.get("/charts/{name}", name="chart_lib", include_in_schema=False)
def chart_lib(name: str) -> Response:
    """One of the vendored chart libraries (no login: they are public code, like ``/static``)."""
    if name not in _SERVED:
        raise ConsoleError(404, "Not found", f"The console serves the chart libraries {list(_SERVED)}. Got {name[:80]!r}.")
    return FileResponse(CHART_LIBS / name, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=86400"})


def _range(days: str, since: str, until: str, now_ns: int) -> tuple[Any, Any, int | None]:
    """``(since, until, days)`` for :func:`goals`: from / to when given, else the last ``days``."""
    since, until = since.strip(), until.strip()
    if since or until:
        return since or None, until or None, None
    d = days.strip() or "30"
    if not d.isdigit() or not 1 <= int(d) <= 3660:
        raise ConsoleError(422, "Bad request", f"'days' must be a whole number of days from 1 to 3660. Got {d[:40]!r} instead.")
    return now_ns - int(d) * DAY_NS, now_ns, int(d)


def _goals(request: Request, system: str, days: str, since: str, until: str) -> tuple[dict[str, Any], int | None]:
    con = console_of(request)
    con.check_system(system)
    now = con.now_ns()
    start, end, n = _range(days, since, until, now)
    subject = con.system_object(system) or system
    return call(goals, con.registry(), con.home, subject, since=start, until=end, now_ns=now), n


@router.get("/systems/{system}/goals", name="goals", include_in_schema=False)
def goals_page(request: Request, system: str, days: str = "", since: str = "", until: str = "",
               cred: Credential = Depends(viewer)) -> Response:
    try:
        data, n = _goals(request, system, days, since, until)
        message, status = None, 200
    except ConsoleError as exc:
        if exc.status == 404:
            raise
        data, n = _goals(request, system, "30", "", "")
        message, status = exc.detail, exc.status
    return render(request, "goals.html", title=f"{system} — goals", system=system, data=data, days=n, ranges=RANGES,
                  since=since[:64], until=until[:64], message=message, status=status)


@router.get("/api/systems/{system}/goals", name="api_goals")
def goals_api(request: Request, system: str, days: str = "", since: str = "", until: str = "",
              cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _goals(request, system, days, since, until)[0]

"""The Flights page: each running flight against production on the guard's metrics — each metric's
test, p-value, the difference and the verdict —, the sample-ratio check (SRM), exposure per arm, the
share and since when (:func:`closedloop.console.data.flights.flights`: the guard itself, judging and
stopping nothing), with **Stop** and **Promote** leading to the admin actions' confirmation pages
(viewers see them disabled).

Live like the overview: the page's body is a fragment htmx asks for again every ``refresh_seconds``
(``GET …/flights/live?since=<fingerprint>``), answered ``204`` while the fingerprint (the registry's
revision and newest event, the telemetry's and the home's modification times:
:func:`closedloop.console.data.overview.fingerprint`) is the one the page shows; a flight stopped by
the CLI or another console is on the page within ``refresh_seconds`` plus one render. New telemetry
alone renews the figures at most every :data:`TELEMETRY_EVERY_S` seconds. The guard's figures are
kept in the console's cache under that fingerprint: every viewer's poll after a change shares one
computation.

Without the System (``closedloop console`` started without ``--system`` naming it) the guard cannot
judge (it reads the system's mistake outcomes and goals): the page lists the flights the registry
holds and says so. The JSON twin is ``/api/systems/{system}/flights``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.data.flights import flights
from closedloop.console.data.overview import fingerprint, registry_mark
from closedloop.console.framework import console_of, render, unchanged, viewer
from closedloop.console.pages._common import call
from closedloop.service.auth import Credential

__all__ = ["TELEMETRY_EVERY_S", "router"]

#: A change of the telemetry alone renews the guard's figures at most this often (seconds).
TELEMETRY_EVERY_S = 10

router = APIRouter()


def _without_system(reg: Any, system: str) -> dict[str, Any]:
    """The flights as the registry holds them, with no guard figures (the System is not loaded)."""
    view = reg.at(system, 2**62)
    st = reg.state(system)
    return {"system": system, "revision": st.revision, "production": st.production, "checked_at": None, "srm": None,
            "policy": None, "notes": [], "shadow_disagreement": None, "judged": False,
            "flights": [{"name": f["name"], "bundle": f["bundle"], "share": f["share"], "started": f["started"],
                         "window": None, "decisions": None, "units": None, "exposure": None, "metrics": [],
                         "breach": False, "decision": "not judged", "reason": None} for f in view["flights"]]}


def _fingerprint(request: Request, system: str) -> str:
    """What the page depends on: the registry's revision and newest event (a stop, a promotion: new at
    once) and the telemetry and home files (:func:`fingerprint`) — but a change there alone renews it
    at most every :data:`TELEMETRY_EVERY_S` seconds: on a serving system the telemetry changes every
    second, and judging the flights again reads it all (the guard's queries)."""
    con = console_of(request)
    reg = con.registry()
    mark, full, now = registry_mark(reg, system), fingerprint(reg, con.home, system), con.now_ns()
    key = ("flights.fingerprint", system)
    kept = con.cache.get(key)
    if kept is not None and kept[0] == mark and (kept[1] == full or now - kept[3] < TELEMETRY_EVERY_S * 1e9):
        return str(kept[2])
    fp = f"{full}-{now}"
    con.cache[key] = (mark, full, fp, now)
    return fp


def _data(request: Request, system: str) -> tuple[dict[str, Any], str]:
    con = console_of(request)
    con.check_system(system)
    reg = con.registry()
    fp = _fingerprint(request, system)  # first: a change made meanwhile shows at the next poll
    key = ("flights", system)
    hit = con.cache.get(key)
    if hit is not None and hit[0] == fp:
        return hit[1], fp
    sys_obj = con.system_object(system)
    if sys_obj is None:
        data = _without_system(reg, system)
    else:
        data = {**call(flights, reg, con.home, sys_obj, now_ns=con.now_ns()), "judged": True}
    con.cache[key] = (fp, data)
    return data, fp


@router.get("/systems/{system}/flights", name="flights", include_in_schema=False)
def flights_page(request: Request, system: str, cred: Credential = Depends(viewer)) -> Response:
    data, fp = _data(request, system)
    return render(request, "flights.html", title=f"{system} — flights", system=system, data=data, fingerprint=fp)


@router.get("/systems/{system}/flights/live", name="flights_live", include_in_schema=False)
def flights_live(request: Request, system: str, since: str = "", cred: Credential = Depends(viewer)) -> Response:
    console_of(request).check_system(system)
    same = unchanged(since, _fingerprint(request, system))
    if same is not None:
        return same
    data, fp = _data(request, system)
    return render(request, "flights_live.html", title="", system=system, data=data, fingerprint=fp)


@router.get("/api/systems/{system}/flights", name="api_flights")
def flights_api(request: Request, system: str, cred: Credential = Depends(viewer)) -> dict[str, Any]:
    data, fp = _data(request, system)
    return {**data, "fingerprint": fp}

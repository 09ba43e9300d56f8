"""``GET /v1/bundles/current?unit=…``: the bundle a client's unit should run, signed (the
``client`` role).

The unit gets what the service would decide it with: production, or the candidate of the
flight that claims it — the same stable hash of ``(flight, unit)`` the service's runtime routes
by (:func:`~closedloop.runtime.deployment.assign_flight`). Under the kill switch it gets the kill
switch's document (decide the system's default action). Either is one signed document
(:mod:`~closedloop.service.client_bundles`), made once per bundle and cached; its strong ETag is
its bytes' sha256, and a request whose ``If-None-Match`` names it is answered 304 without a
body. ``Closedloop-Bundle`` names the bundle served and ``Closedloop-Flight`` the unit's flight
(absent: production), so a client's decision reports can say which arm decided. A ranking
system's bundle is served alike (its client form ranks: ``runtime.rank``); its kill switch's
document says to show the first ``k`` candidates in input order.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.errors import ClosedLoopError
from closedloop.runtime.deployment import assign_flight
from closedloop.service.client_bundles import ClientBundles, Served
from closedloop.service.core import Service
from closedloop.service.problems import Problem, invalid
from closedloop.service.settings import ServiceSettings
from closedloop.telemetry.records import MAX_UNIT

__all__ = ["DOCUMENT_TYPE", "bundles_routes", "unit_problem"]

#: The media type of a served document (a signature line, then the payload: not JSON as a whole).
DOCUMENT_TYPE = "application/vnd.closedloop.signed"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNIT_RULE = f"a non-empty string of at most {MAX_UNIT} characters without control characters"


def _doc() -> dict[str, Any]:
    return {
        "summary": "The signed bundle (client form) a unit should run, or the kill switch's document",
        "response_class": Response,
        "openapi_extra": {"parameters": [
            {"name": "unit", "in": "query", "required": True, "description": "The unit the client decides for.",
             "schema": {"type": "string", "minLength": 1, "maxLength": MAX_UNIT}},
            {"name": "If-None-Match", "in": "header", "required": False, "description": "The ETag of the document held.",
             "schema": {"type": "string"}},
        ]},
        "responses": {
            200: {"description": "The signed document (a signature line, a newline, the payload). ETag: its sha256.",
                  "content": {DOCUMENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
            304: {"description": "Not modified: the ETag in If-None-Match is current (no body)."},
            **{c: {"$ref": "#/components/responses/Problem"} for c in (401, 403, 422, 501, 503)},
        },
        "tags": ["clients"],
    }


def unit_problem(unit: Any) -> dict[str, Any] | None:
    """The problem of a unit given by a client (query or body), or None when it is acceptable."""
    if not isinstance(unit, str) or not unit or len(unit) > MAX_UNIT or _CONTROL.search(unit):
        return invalid("query", "unit", _UNIT_RULE, unit)
    return None


def bundles_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Service]) -> None:
    """Register ``GET /v1/bundles/current`` on ``app`` (the worker's Service is ``holder["svc"]``)."""
    made: dict[str, ClientBundles] = {}
    app.state.client_documents = made  # the worker's document cache, once made ("docs")

    @app.get("/v1/bundles/current", **_doc())
    async def current(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "client")
        unit = request.query_params.get("unit")
        bad = unit_problem(unit)
        if bad is not None:
            raise Problem(422, "invalid-query", "Invalid query", bad["detail"], field="unit", rule=bad["rule"],
                          value=bad["value"])
        unit_s = str(unit)
        rt = svc.runtime
        dep = rt.deployment  # type: ignore[union-attr]
        bundle, flight = dep.production, None
        if not dep.killswitch and dep.flights:
            i = assign_flight(dep.flights, _unit_key(svc, unit_s))
            if i >= 0:
                bundle, flight = dep.flights[i].bundle, dep.flights[i].name
        docs = made.get("docs") or _documents(svc, made)
        try:
            served = docs.cached(bundle, dep.killswitch)
            if served is None:  # not made yet: made off the event loop
                served = await asyncio.to_thread(docs.get, bundle, dep.killswitch)
        except ClosedLoopError as e:
            svc.m_responses.inc(("/v1/bundles/current", 503))
            raise Problem(503, "not-exportable", "Bundle not servable to clients",
                          f"The bundle {bundle.version} cannot be served to clients: {e}", bundle=bundle.version) from None
        return _answer(svc, request, served, bundle.version, flight, dep.killswitch)


def _documents(svc: Service, made: dict[str, ClientBundles]) -> ClientBundles:
    """The worker's document cache, made at the first request: it needs the home's signing key."""
    from closedloop.runtime.signing import home_key

    try:
        hk = home_key(svc.settings.project.home, create=False)
    except ClosedLoopError as e:
        raise Problem(503, "no-signing-key", "No signing key", f"The project home's signing key cannot be read: {e}") from None
    if hk is None:
        raise Problem(503, "no-signing-key", "No signing key",
                      f"The project home {svc.settings.project.home} has no signing key to sign what clients run: "
                      "create it with `closedloop init` (or by saving a bundle in the home).")
    docs = made["docs"] = ClientBundles(svc.system, hk.key)
    return docs


def _unit_key(svc: Service, unit: str) -> str:
    """The unit as the runtime hashes it: an integer unit as its decimal string."""
    from closedloop.context.schema import Int

    if isinstance(svc.system.schema.by_name[svc.system.unit], Int):
        try:
            return str(int(unit))
        except ValueError:
            return unit
    return unit


def _answer(svc: Service, request: Request, served: Served, version: str, flight: str | None,
            killswitch: bool) -> Response:
    """200 with the document, or 304 when ``If-None-Match`` names its ETag."""
    headers = {"ETag": served.etag, "Cache-Control": "no-cache", "Closedloop-Bundle": version}
    if flight is not None:
        headers["Closedloop-Flight"] = flight
    if killswitch:
        headers["Closedloop-Killswitch"] = "on"
    if _matches(request.headers.get("if-none-match"), served.etag):
        svc.m_responses.inc(("/v1/bundles/current", 304))
        return Response(status_code=304, headers=headers)
    svc.m_responses.inc(("/v1/bundles/current", 200))
    return Response(served.body, media_type=DOCUMENT_TYPE, headers=headers)


def _matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``); weak comparison, as RFC 9110 asks."""
    if not header:
        return False
    for tag in header.split(","):
        t = tag.strip()
        if t == "*" or (t[2:] if t.startswith("W/") else t) == etag:
            return True
    return False

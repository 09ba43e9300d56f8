"""Every error a route raises, answered as problem details (RFC 9457) and counted by route and
status in ``closedloop_http_responses_total``: :class:`~closedloop.service.problems.Problem`,
auth refusals (401/403), other closedloop errors (422), FastAPI's request validation (422),
Starlette's HTTP errors (404, 405, …) and anything else (500, logged)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from closedloop.errors import AuthError, ClosedLoopError, ContextError
from closedloop.service.core import Service
from closedloop.service.problems import Problem, problem_response

__all__ = ["error_handlers"]

log = logging.getLogger("closedloop.service")
#: Problem details listing more refused rows than this are rendered in a worker thread.
_ERRORS_ON_LOOP = 200


def _count(svc: Service | None, route: str, code: int) -> None:
    if svc is not None:
        svc.m_responses.inc((route, code))


def _route_of(request: Request) -> str:
    r = request.scope.get("route")
    return getattr(r, "path", "other")


def error_handlers(app: FastAPI, holder: dict[str, Service]) -> None:
    """Register the app's exception handlers (the worker's Service, counting them, is ``holder["svc"]`` once started)."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        _count(holder.get("svc"), _route_of(request), exc.status)
        errors = exc.extra.get("errors")
        if errors is not None and len(errors) > _ERRORS_ON_LOOP:
            # A whole refused batch: making its problem entries JSON-safe is Python work per row.
            return await asyncio.to_thread(exc.response)
        return exc.response()

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> Response:
        forbidden = "lacks the role" in str(exc)
        status = 403 if forbidden else 401
        _count(holder.get("svc"), _route_of(request), status)
        headers = None if forbidden else {"WWW-Authenticate": 'Bearer realm="closedloop"'}
        return problem_response(status, {
            "type": "urn:closedloop:problem:" + ("forbidden" if forbidden else "unauthorized"),
            "title": "Forbidden" if forbidden else "Unauthorized", "status": status, "detail": str(exc),
        }, headers)

    @app.exception_handler(ClosedLoopError)
    async def _closedloop(request: Request, exc: ClosedLoopError) -> Response:
        _count(holder.get("svc"), _route_of(request), 422)
        body: dict[str, Any] = {"type": "urn:closedloop:problem:" + type(exc).__name__, "title": type(exc).__name__,
                                "status": 422, "detail": str(exc)}
        if isinstance(exc, ContextError):
            body.update(field=exc.field, rule=exc.rule, value=exc.to_dict()["value"])
        return problem_response(422, body)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        _count(holder.get("svc"), _route_of(request), 422)
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ())]
        return problem_response(422, {
            "type": "urn:closedloop:problem:invalid-request", "title": "Invalid request", "status": 422,
            "detail": f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}.",
            "field": loc[-1] if loc else None, "rule": first.get("msg"), "value": first.get("input"),
            "errors": [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg")} for e in errs],
        })

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        _count(holder.get("svc"), _route_of(request), exc.status_code)
        return problem_response(exc.status_code, {
            "type": "about:blank", "title": str(exc.detail), "status": exc.status_code,
            "detail": f"{request.method} {request.url.path}: {exc.detail}.",
        }, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        _count(holder.get("svc"), _route_of(request), 500)
        return problem_response(500, {
            "type": "urn:closedloop:problem:internal", "title": "Internal error", "status": 500,
            "detail": f"{type(exc).__name__} while handling {request.method} {request.url.path}; see the service log.",
        })

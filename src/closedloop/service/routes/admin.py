"""Admin routes: the registry's lifecycle operations over HTTP (``admin`` role).

Each endpoint authenticates the caller, checks the ``admin`` role and calls the registry's own
API (:class:`closedloop.registry.Registry`) with the credential's name as the actor — there is no
second implementation of deploy, promote, stop, rollback or the kill switch here. After a change
this worker applies the new deployment at once; the other workers pick it up on their next poll
(within ``poll_interval_s``). ``POST /v1/admin/reload`` asks a worker to poll now (a
notification hook for deploy tooling). The bodies are :mod:`closedloop.service.admin`'s.

A service started with ``--bundle`` serves a fixed deployment and answers 409 here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.service.admin import BODIES
from closedloop.service.problems import Problem
from closedloop.service.routes.edge import BAD_JSON, JSON, encode, malformed, path_field, read_body
from closedloop.service.settings import ServiceSettings

__all__ = ["admin_routes"]

#: The largest admin request body.
_BODY_LIMIT = 64 * 1024
#: The operations with a body, and their summaries in the OpenAPI document.
_OPERATIONS = {
    "deploy": "Deploy a bundle: production, a shadow, or a flight with a share of units",
    "promote": "Promote a flight (or a shadow) to production",
    "stop": "Stop a flight (or a shadow)",
    "rollback": "Restore the state before the last change",
    "killswitch": "Turn the kill switch on or off",
}


def admin_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Any]) -> None:
    """Register the admin routes on ``app``: one per registry operation, then reload, history
    and guard (the worker's Service is ``holder["svc"]`` once started)."""
    for operation, summary in _OPERATIONS.items():
        _operation_route(app, holder, operation, summary)
    _maintenance_routes(app, holder)


def _operation_route(app: FastAPI, holder: dict[str, Any], operation: str, summary: str) -> None:
    """Register ``POST /v1/admin/<operation>``, its body :data:`~closedloop.service.admin.BODIES`' type."""
    body = BODIES[operation]

    async def endpoint(request: Request) -> Response:
        return await _run(request, holder, operation)

    endpoint.__name__ = f"admin_{operation}"
    app.post(
        f"/v1/admin/{operation}", summary=summary, response_class=Response, tags=["admin"],
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": {
            "$ref": f"#/components/schemas/{body.__name__}"}}}}},
        responses={200: {"description": "The change (as the registry recorded it) and the revision now serving.",
                         "content": {JSON: {"schema": {"type": "object"}}}},
                   **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 409, 413, 422)}},
    )(endpoint)


async def _run(request: Request, holder: dict[str, Any], operation: str) -> Response:
    """One registry operation: authenticate, decode the body, call the registry in a worker
    thread, apply the change here → the change and the revision this worker serves."""
    svc = holder["svc"]
    cred = svc.authenticate(request.headers.get("authorization"), "admin")
    body = await _decode_body(request, operation)
    reg = _registry(svc)
    try:
        change = await asyncio.to_thread(_call, reg, svc.system, operation, body, cred.name)
    except Exception as e:  # noqa: BLE001 - registry refusals become problem details
        raise _registry_problem(e) from None
    await asyncio.to_thread(svc.refresh, "admin")  # (the poller may have been first: either way)
    svc.m_responses.inc((f"/v1/admin/{operation}", 200))
    # applied: this worker serves the change (or something newer) now; the others within a poll
    out = {"change": change.to_dict(), "applied": svc.revision >= change.revision, "serving_revision": svc.revision}
    return Response(encode(out), media_type=JSON)


async def _decode_body(request: Request, operation: str) -> Any:
    """The operation's body, decoded and checked (a non-empty ``reason``); 422 or 400 otherwise."""
    raw = await read_body(request, _BODY_LIMIT)
    try:
        body: Any = msgspec.json.decode(raw or b"{}", type=BODIES[operation])
    except msgspec.ValidationError as e:
        raise Problem(422, "invalid-request", "Invalid request", str(e), **path_field(e)) from None
    except BAD_JSON as e:
        raise malformed(e) from None
    if not body.reason.strip():
        raise Problem(422, "invalid-request", "Invalid request",
                      "Field 'reason' must be a non-empty string (it is recorded in the history). Got '' instead.",
                      field="reason", rule="a non-empty string", value=body.reason)
    return body


def _call(reg: Any, system: Any, operation: str, b: Any, actor: str) -> Any:
    """The registry's own operation, with the credential's name as the actor → the recorded change."""
    if operation == "deploy":
        return reg.deploy(system, b.bundle, actor=actor, reason=b.reason, shadow=b.shadow, flight=b.flight,
                          share=b.share, force=b.force, allow_unsigned=b.allow_unsigned)
    if operation == "promote":
        return reg.promote(system, b.flight, actor=actor, reason=b.reason, force=b.force)
    if operation == "stop":
        return reg.stop(system, b.flight, actor=actor, reason=b.reason)
    if operation == "rollback":
        return reg.rollback(system, actor=actor, reason=b.reason)
    return reg.killswitch(system, b.on, actor=actor, reason=b.reason)


def _maintenance_routes(app: FastAPI, holder: dict[str, Any]) -> None:
    """Register ``POST /v1/admin/reload``, ``GET /v1/admin/history`` and ``POST /v1/admin/guard``."""

    @app.post("/v1/admin/reload", summary="Poll the registry now and apply a new deployment at once",
              tags=["admin"], response_class=Response,
              responses={200: {"content": {JSON: {"schema": {"type": "object"}}}}, **_problems()})
    async def admin_reload(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "admin")
        _registry(svc)
        applied = await asyncio.to_thread(svc.refresh, "notify")
        return Response(encode({"applied": applied, "serving_revision": svc.revision, "problems": svc.problems()}),
                        media_type=JSON)

    @app.get("/v1/admin/history", summary="The registry's history of this system (changes and attempts)",
             tags=["admin"], response_class=Response,
             responses={200: {"content": {JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}}, **_problems()})
    async def admin_history(request: Request, limit: int = 50) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "admin")
        reg = _registry(svc)
        n = max(1, min(int(limit), 1000))
        hist = await asyncio.to_thread(reg.history, svc.system, limit=n)
        return Response(encode(hist), media_type=JSON)

    @app.post("/v1/admin/guard", summary="Run the guard check now (stops a flight that breaches its guard metrics)",
              tags=["admin"], response_class=Response,
              responses={200: {"content": {JSON: {"schema": {"type": "object"}}}}, **_problems()})
    async def admin_guard(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "admin")
        _registry(svc)
        if svc.guard is None:
            raise Problem(409, "no-guard", "No guard",
                          "The guard needs the registry and telemetry (and guard_interval_s > 0).")
        try:
            report = await asyncio.to_thread(svc.guard.check)
        except Exception as e:  # noqa: BLE001
            raise _registry_problem(e) from None
        return Response(encode(report), media_type=JSON)


def _problems() -> dict[int | str, dict[str, Any]]:
    """The problem responses of the maintenance routes, for the OpenAPI document."""
    return {c: {"$ref": "#/components/responses/Problem"} for c in (401, 403, 409)}


def _registry(svc: Any) -> Any:
    """The registry the service's deployment source reads; 409 for a fixed deployment (``--bundle``)."""
    src = svc.source
    reg = getattr(src, "registry", None)
    if reg is None:
        raise Problem(409, "no-registry", "No registry",
                      "This service serves a fixed deployment (closedloop serve --bundle); admin operations change "
                      "the registry. Start the service without --bundle to manage deployments over HTTP.")
    return reg


def _registry_problem(e: Exception) -> Problem:
    """A registry refusal as problem details (anything else is raised again)."""
    from closedloop.errors import BundleError, ConflictError, RegistryError, SanityCheckError

    if isinstance(e, ConflictError):
        return Problem(409, "conflict", "The deployment changed meanwhile", str(e))
    if isinstance(e, SanityCheckError):
        return Problem(422, "sanity-check-failed", "Sanity checks failed", str(e),
                       failed=list(getattr(e, "failed", []) or []), checks=getattr(e, "checks", None))
    if isinstance(e, BundleError):
        return Problem(422, "bundle-refused", "Bundle refused", str(e), check=e.check)
    if isinstance(e, RegistryError):
        return Problem(400, "registry-refused", "Refused by the registry", str(e))
    raise e


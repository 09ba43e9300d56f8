"""Admin endpoints: the registry's lifecycle operations over HTTP (``admin`` role).

Each endpoint authenticates the caller, checks the ``admin`` role and calls the registry's own
API (:class:`closedloop.registry.Registry`) with the credential's name as the actor — there is no
second implementation of deploy, promote, stop, rollback or the kill switch here. After a change
this worker applies the new deployment at once; the other workers pick it up on their next poll
(within ``poll_interval_s``). ``POST /v1/admin/reload`` asks a worker to poll now (a
notification hook for deploy tooling).

A service started with ``--bundle`` serves a fixed deployment and answers 409 here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.service.problems import Problem
from closedloop.service.settings import ServiceSettings

__all__ = ["admin_routes"]

JSON = "application/json"
_encode = msgspec.json.Encoder().encode


class DeployBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Deploy a bundle (a version in the registry's store, or a path on the server) to production,
    as a shadow (``shadow``) or in a flight (``flight`` with ``share`` in (0, 1])."""

    bundle: str
    reason: str
    shadow: bool = False
    flight: str | None = None
    share: float | None = None
    force: str | None = None
    #: The reason for deploying a bundle not signed by a key the registry trusts (recorded).
    allow_unsigned: str | None = None


class PromoteBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Promote a flight (or a shadow, by bundle version) to production."""

    flight: str
    reason: str
    force: str | None = None


class StopBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Stop a flight (or a shadow)."""

    flight: str
    reason: str


class RollbackBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Restore the state before the last change not rolled back yet."""

    reason: str


class KillswitchBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Turn the kill switch on (the system's default action for everyone) or off."""

    on: bool
    reason: str


BODIES: dict[str, type[msgspec.Struct]] = {
    "deploy": DeployBody, "promote": PromoteBody, "stop": StopBody, "rollback": RollbackBody,
    "killswitch": KillswitchBody,
}


def schemas() -> dict[str, Any]:
    """JSON schemas of the admin bodies (merged into the OpenAPI document)."""
    _, comps = msgspec.json.schema_components(list(BODIES.values()), ref_template="#/components/schemas/{name}")
    for body in BODIES.values():  # reasons are recorded in the history: never empty
        comps[body.__name__]["properties"]["reason"]["minLength"] = 1
    return comps


def _registry(svc: Any) -> Any:
    src = svc.source
    reg = getattr(src, "registry", None)
    if reg is None:
        raise Problem(409, "no-registry", "No registry",
                      "This service serves a fixed deployment (closedloop serve --bundle); admin operations change "
                      "the registry. Start the service without --bundle to manage deployments over HTTP.")
    return reg


def _registry_problem(e: Exception) -> Problem:
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


def admin_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Any]) -> None:
    limit = 64 * 1024

    async def run(request: Request, operation: str) -> Response:
        from closedloop.service.app import read_body

        svc = holder["svc"]
        cred = svc.authenticate(request.headers.get("authorization"), "admin")
        body_type = BODIES[operation]
        raw = await read_body(request, limit)
        try:
            body = msgspec.json.decode(raw or b"{}", type=body_type)
        except msgspec.ValidationError as e:
            from closedloop.service.app import _path_field

            raise Problem(422, "invalid-request", "Invalid request", str(e), **_path_field(e)) from None
        except (msgspec.DecodeError, RecursionError) as e:
            from closedloop.service.app import _malformed

            raise _malformed(e) from None
        if not body.reason.strip():  # type: ignore[attr-defined]
            raise Problem(422, "invalid-request", "Invalid request",
                          "Field 'reason' must be a non-empty string (it is recorded in the history). Got '' instead.",
                          field="reason", rule="a non-empty string", value=body.reason)  # type: ignore[attr-defined]
        reg = _registry(svc)
        system = svc.system
        actor = cred.name

        def call() -> Any:
            b: Any = body
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

        try:
            change = await asyncio.to_thread(call)
        except Exception as e:  # noqa: BLE001 - registry refusals become problem details
            raise _registry_problem(e) from None
        await asyncio.to_thread(svc.refresh, "admin")  # (the poller may have been first: either way)
        svc.m_responses.inc((f"/v1/admin/{operation}", 200))
        # applied: this worker serves the change (or something newer) now; the others within a poll
        out = {"change": change.to_dict(), "applied": svc.revision >= change.revision, "serving_revision": svc.revision}
        return Response(_encode(out), media_type=JSON)

    def route(operation: str, summary: str) -> None:
        body = BODIES[operation]

        async def endpoint(request: Request) -> Response:
            return await run(request, operation)

        endpoint.__name__ = f"admin_{operation}"
        app.post(
            f"/v1/admin/{operation}", summary=summary, response_class=Response, tags=["admin"],
            openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": {
                "$ref": f"#/components/schemas/{body.__name__}"}}}}},
            responses={200: {"description": "The change (as the registry recorded it) and the revision now serving.",
                             "content": {JSON: {"schema": {"type": "object"}}}},
                       **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 409, 413, 422)}},
        )(endpoint)

    route("deploy", "Deploy a bundle: production, a shadow, or a flight with a share of units")
    route("promote", "Promote a flight (or a shadow) to production")
    route("stop", "Stop a flight (or a shadow)")
    route("rollback", "Restore the state before the last change")
    route("killswitch", "Turn the kill switch on or off")

    @app.post("/v1/admin/reload", summary="Poll the registry now and apply a new deployment at once",
              tags=["admin"], response_class=Response,
              responses={200: {"content": {JSON: {"schema": {"type": "object"}}}},
                         **{c: {"$ref": "#/components/responses/Problem"} for c in (401, 403, 409)}})
    async def admin_reload(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "admin")
        _registry(svc)
        applied = await asyncio.to_thread(svc.refresh, "notify")
        return Response(_encode({"applied": applied, "serving_revision": svc.revision, "problems": svc.problems()}),
                        media_type=JSON)

    @app.get("/v1/admin/history", summary="The registry's history of this system (changes and attempts)",
             tags=["admin"], response_class=Response,
             responses={200: {"content": {JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}},
                        **{c: {"$ref": "#/components/responses/Problem"} for c in (401, 403, 409)}})
    async def admin_history(request: Request, limit: int = 50) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "admin")
        reg = _registry(svc)
        n = max(1, min(int(limit), 1000))
        hist = await asyncio.to_thread(reg.history, svc.system, limit=n)
        return Response(_encode(hist), media_type=JSON)

    @app.post("/v1/admin/guard", summary="Run the guard check now (stops a flight that breaches its guard metrics)",
              tags=["admin"], response_class=Response,
              responses={200: {"content": {JSON: {"schema": {"type": "object"}}}},
                         **{c: {"$ref": "#/components/responses/Problem"} for c in (401, 403, 409)}})
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
        return Response(_encode(report), media_type=JSON)

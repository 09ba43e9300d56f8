"""The OpenAPI document (``/openapi.json``, ``/docs``): FastAPI's, with the System's context
schema, the Decision and every body merged in — generated from the same msgspec types that decode
and encode them — and the bearer scheme on every route that asks for a credential."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from closedloop.runtime.decision import Decision
from closedloop.service.bodies import OutcomeReport
from closedloop.service.settings import ServiceSettings
from closedloop.system.spec import System

__all__ = ["extra_schemas", "install_openapi", "schemas"]


def install_openapi(app: FastAPI, settings: ServiceSettings) -> None:
    """Make ``app.openapi`` build the document with the schemas in ``app.state.extra_schemas``
    (set once the System is known); it is cached from then on."""
    metrics_public = settings.listens_on_loopback

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = doc.setdefault("components", {})
        extra = getattr(app.state, "extra_schemas", None)
        if extra is None:
            return doc  # not started: the System is not known yet; not cached
        comps.setdefault("schemas", {}).update(extra)
        comps["responses"] = {"Problem": {"description": "Problem details (RFC 9457).", "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}
        comps["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        public = {"/healthz", "/readyz", *(("/metrics",) if metrics_public else ())}
        for path, ops in doc.get("paths", {}).items():
            if path in public:
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def extra_schemas(system: System) -> dict[str, Any]:
    """Every schema merged into the document: the bodies' (:func:`schemas`) and the admin bodies'."""
    from closedloop.service.admin import schemas as admin_schemas

    return {**schemas(system), **admin_schemas()}


def schemas(system: System) -> dict[str, Any]:
    """JSON schemas of the bodies, from the msgspec types that decode and encode them."""
    _, comps = msgspec.json.schema_components(
        [system.schema.struct, Decision, OutcomeReport], ref_template="#/components/schemas/{name}"
    )
    if system.schema.struct.__name__ != "Context":
        comps["Context"] = comps.pop(system.schema.struct.__name__)
    comps["Context"]["description"] = f"A context of System '{system.name}' (schema version {system.schema.version})."
    dec_ref = {"$ref": "#/components/schemas/Decision"}
    comps["DecisionBatchResult"] = {
        "type": "object",
        "properties": {
            "decisions": {"type": "array", "items": dec_ref},
            "index": {"type": "array", "items": {"type": "integer"},
                      "description": "the row of the batch each decision is for"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"},
                       "description": "the refused rows, with their index, field, rule and value"},
        },
        "required": ["decisions", "index", "errors"],
    }
    comps["OutcomesAccepted"] = {
        "type": "object",
        "properties": {"accepted": {"type": "integer"},
                       "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}},
        "required": ["accepted", "rejected"],
    }
    if system.candidate_schema is not None:
        _ranking_schemas(system, comps)
    comps["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details; validation errors name the field, the rule and the value.",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "field": {}, "rule": {}, "value": {}, "index": {"type": "integer"},
                       "errors": {}},
        "required": ["type", "title", "status", "detail"],
    }
    return comps


def _ranking_schemas(system: System, comps: dict[str, Any]) -> None:
    """A ranking system's bodies: its request (``Context``) carries ``candidates`` (``Candidate``
    objects), and its decision is a :class:`~closedloop.service.ranked.Ranked` (as ``Decision``)."""
    from closedloop.service.ranked import Ranked

    cand = system.candidate_schema.struct  # type: ignore[union-attr]
    _, more = msgspec.json.schema_components([cand, Ranked], ref_template="#/components/schemas/{name}")
    comps["Candidate"] = more.pop(cand.__name__)
    comps["Candidate"]["title"] = "Candidate"
    comps["Candidate"]["description"] = f"A candidate of System '{system.name}' (its id: '{system.candidate_id}')."
    ctx = comps["Context"]
    ctx.setdefault("properties", {})["candidates"] = {
        "type": "array", "items": {"$ref": "#/components/schemas/Candidate"},
        "description": "the candidates to rank (ids unique within the request)",
    }
    ctx["required"] = [*ctx.get("required", []), "candidates"]
    ctx["description"] = f"A ranking request of System '{system.name}': the request fields and its candidates."
    comps["Decision"] = more.pop("Ranked")

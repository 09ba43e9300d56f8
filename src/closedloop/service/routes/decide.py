"""``POST /v1/decide``: one context (a JSON object) or a batch (a JSON array of objects).

One context is decoded and validated in one msgspec step, decided by ``Runtime.decide`` and its
:class:`~closedloop.Decision` encoded with msgspec — the per-decision path (the app answers it
directly: :class:`closedloop.service.app._ServiceApp`). A batch is decoded into validated contexts
and decided by one ``Runtime.decide_batch`` on ``Schema.columns`` of them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.errors import ContextError
from closedloop.runtime.decision import Decision
from closedloop.service.bodies import ContextDecoder, TooLarge, first_byte
from closedloop.service.core import Service
from closedloop.service.problems import Problem
from closedloop.service.routes.edge import BAD_JSON, JSON, batch_answer, batch_too_large, encode, malformed, not_an_array, read_body
from closedloop.service.routes.ranked import decide_ranked, decide_ranked_batch
from closedloop.service.settings import ServiceSettings

__all__ = ["decide_routes"]

_perf = time.perf_counter


def _decide_doc() -> dict[str, Any]:
    """The route's OpenAPI description: a context or an array of them → a decision or a batch result."""
    return {
        "summary": "Decide for one context (a JSON object) or a batch (a JSON array of objects)",
        "response_class": Response,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Context"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Context"}},
                ]}}},
            },
        },
        "responses": {
            200: {"description": "The decision (one context) or the decisions and the refused rows (a batch).",
                  "content": {JSON: {"schema": {"oneOf": [
                      {"$ref": "#/components/schemas/Decision"},
                      {"$ref": "#/components/schemas/DecisionBatchResult"},
                  ]}}}},
            **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 413, 422, 503)},
        },
        "tags": ["decisions"],
    }


def decide_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Service]) -> Any:
    """Register ``POST /v1/decide`` on ``app`` (the worker's Service is ``holder["svc"]`` once
    started); its route is returned, for the app to answer directly."""
    limit = settings.max_body_bytes
    max_batch = settings.max_batch
    auth_header = "authorization"

    @app.post("/v1/decide", **_decide_doc())
    async def decide(request: Request) -> Response:
        t0 = _perf()
        svc = holder["svc"]
        svc.authenticate(request.headers.get(auth_header), "decide")
        body = await read_body(request, limit)
        rt = svc.runtime
        fb = first_byte(body)
        if svc.ranking:
            if fb == 123:  # '{': one ranking request
                return decide_ranked(svc, body, t0)
            if fb == 91:  # '[': a batch of them
                return decide_ranked_batch(svc, request.app.state.ranked_rows, body, t0)
            raise Problem(400, "bad-request", "Bad request", "The request body must be a JSON object (one ranking "
                          "request, with its 'candidates') or a JSON array of them (a batch).")
        if fb == 123:  # '{': one context
            try:
                ctx = request.app.state.decoder.one(body)
            except ContextError as e:
                svc.m_invalid.inc()
                raise Problem(422, "invalid-context", "Invalid context", str(e), field=e.field, rule=e.rule,
                              value=e.to_dict()["value"]) from None
            except BAD_JSON as e:
                raise malformed(e) from None
            try:
                d: Decision = rt.decide(ctx)  # type: ignore[union-attr]
            except Exception:
                svc.arms.error(_arm(rt, ctx))
                raise
            out = encode(d)
            svc.m_decisions.inc((d.action, d.bundle_version, d.flight or ""))
            dt = _perf() - t0
            svc.m_latency.observe(dt)
            svc.arms.record(d.flight, dt)
            svc.m_responses.inc(("/v1/decide", 200))
            return Response(out, media_type=JSON)
        if fb == 91:  # '[': a batch
            return await decide_batch(request, svc, body, t0, max_batch)
        raise Problem(400, "bad-request", "Bad request",
                      "The request body must be a JSON object (one context) or a JSON array of objects (a batch).")

    return next(r for r in app.routes if getattr(r, "endpoint", None) is decide)


async def decide_batch(request: Request, svc: Service, body: bytes, t0: float, max_batch: int) -> Response:
    """Answer a batch: its valid contexts decided in one ``Runtime.decide_batch``, its refused
    rows listed as problems (422 when every row is refused)."""
    good, index, problems = await _decode_batch(request.app.state.decoder, body, max_batch)
    if problems:
        svc.m_invalid.inc(n=len(problems))
    # The decoded contexts are validated already: Runtime.decide_batch takes them as Columns
    # (built column by column when read, never validated again) and telemetry logs the batch
    # as one record batch, the contexts encoded as the single path encodes them.
    decisions: list[Decision] = []
    if good:
        rt = svc.runtime
        db = rt.decide_batch(rt.system.schema.columns(good))  # type: ignore[union-attr]
        decisions = db.decisions()
        for (action, bundle, flight), n in db.counts().items():
            svc.m_decisions.inc((action, bundle, flight or ""), n)
            svc.arms.count(flight, n)
    return batch_answer(svc, decisions, index, problems, t0, "context")


async def _decode_batch(decoder: ContextDecoder, body: bytes, max_batch: int,
                        ) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """A batch body → (its valid contexts, their rows, the problems of the refused rows).

    Never reads past the (max_batch + 1)-th row: a longer batch is refused before any per-row
    work. A batch with an invalid row is validated row by row in a worker thread, so one
    client's bad batch does not hold the event loop (and every other request) meanwhile."""
    problems: list[dict[str, Any]] = []
    try:
        try:
            good = decoder.batch(body)
            index = list(range(len(good)))
        except msgspec.ValidationError:  # an invalid row, or too many rows
            items = decoder.rows.items(body)
            good, index, problems = await asyncio.to_thread(decoder.rows_one_by_one, items)
    except TooLarge:
        raise batch_too_large(max_batch, "contexts") from None
    except msgspec.ValidationError:
        raise not_an_array("contexts") from None
    except BAD_JSON as e:
        raise malformed(e) from None
    return good, index, problems


def _arm(rt: Any, ctx: Any) -> str | None:
    """The arm (flight name, None: production) a validated context's unit is assigned to."""
    from closedloop.runtime.deployment import assign_flight

    flights = rt.deployment.flights
    if not flights:
        return None
    unit = getattr(ctx, rt.system.unit)
    i = assign_flight(flights, str(unit))
    return None if i < 0 else flights[i].name

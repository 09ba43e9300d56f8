"""``POST /v1/decisions``: decisions made in clients, reported back as telemetry (the ``client``
role); 202 only once durable.

The body is a JSON array of decisions (:mod:`~closedloop.service.client_reports`), at most
``max_batch`` of them (a longer one is refused, 413, before any per-item work). Each item is
judged alone: the good ones are logged — as the service logs its own decisions, every column
filled — and the bad ones listed in ``rejected`` with their ``index`` and ``field``; one bad
item never sinks the batch. The answer is 202 ``{"accepted": n, "rejected": [...]}`` once
telemetry has made the accepted ones durable (the outcomes' contract: acknowledged means
durable; :mod:`~closedloop.service.durability`), 503 when it has not (nothing of them
acknowledged: send the batch again). On a ranking system the items are rankings
(:mod:`~closedloop.service.client_ranked`: the request with its candidates, the slate, the slot
propensities), logged as the service's own rankings. A resent decision is the same decision: datasets keep one
record per ``decision_id`` (the first written), so a retry never duplicates a row.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.service.bodies import BoundedArray, TooLarge, first_byte
from closedloop.service.client_ranked import judge_ranked_items
from closedloop.service.client_reports import judge_items
from closedloop.service.core import Service
from closedloop.service.problems import Problem
from closedloop.service.routes.edge import BAD_JSON, JSON, batch_too_large, encode, malformed, not_an_array, read_body
from closedloop.service.settings import ServiceSettings

__all__ = ["decisions_routes"]

_ROUTE = "/v1/decisions"


def _doc() -> dict[str, Any]:
    item = {"type": "object", "required": ["decision_id", "bundle_id", "system", "unit", "context", "action",
                                            "propensity", "timestamp"]}
    return {
        "summary": "Report decisions made in clients (a JSON array); 202 once durable",
        "status_code": 202,
        "response_class": Response,
        "openapi_extra": {"requestBody": {"required": True, "content": {JSON: {"schema": {"type": "array", "items": item}}}}},
        "responses": {
            202: {"description": "The accepted decisions are durable in telemetry; the refused ones listed with index and field.",
                  "content": {JSON: {"schema": {"type": "object", "properties": {
                      "accepted": {"type": "integer"}, "rejected": {"type": "array", "items": {"type": "object"}}}}}}},
            **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 413, 422, 503)},
        },
        "tags": ["clients"],
    }


def decisions_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Service]) -> None:
    """Register ``POST /v1/decisions`` on ``app`` (the worker's Service is ``holder["svc"]`` once started)."""
    limit = settings.max_body_bytes
    max_batch = settings.max_batch
    ack_timeout_s = settings.ack_timeout_s
    raws = BoundedArray(msgspec.Raw, max_batch)

    @app.post(_ROUTE, **_doc())
    async def decisions(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "client")
        body = await read_body(request, limit)
        if first_byte(body) != 91:
            raise Problem(400, "bad-request", "Bad request", "The request body must be a JSON array of decisions.")
        try:
            items = raws.items(body)
        except TooLarge:
            raise batch_too_large(max_batch, "decisions") from None
        except msgspec.ValidationError:
            raise not_an_array("decisions") from None
        except BAD_JSON as e:
            raise malformed(e) from None
        if svc.telemetry is None:
            raise Problem(503, "telemetry-off", "Telemetry is off",
                          "This service runs without telemetry, so client decisions cannot be made durable.")
        dep = svc.runtime.deployment  # type: ignore[union-attr]
        if svc.ranking:  # rankings: the request with its candidates, the slate and its slot propensities
            good, problems = await asyncio.to_thread(judge_ranked_items, items, svc.runtime._plan, dep, time.time_ns())  # type: ignore[union-attr]
        else:
            good, problems = await asyncio.to_thread(judge_items, items, svc.system, dep)
        if problems:
            svc.m_client_rejections.inc(("invalid",), len(problems))
        seqs = _log(svc, good, problems)
        if seqs:
            await _durable(svc, seqs, problems, ack_timeout_s)
        if not seqs and problems:
            statuses = {p["status"] for p in problems}
            raise Problem(statuses.pop() if len(statuses) == 1 else 422, "decisions-refused", "Decisions refused",
                          f"Every decision of the batch was refused ({len(problems)}).", errors=problems)
        svc.m_client_decisions.inc((), len(seqs))  # durable
        svc.m_responses.inc((_ROUTE, 202))
        return Response(encode({"accepted": len(seqs), "rejected": problems}), status_code=202, media_type=JSON)


def _log(svc: Service, good: list[Any], problems: list[dict[str, Any]]) -> list[int]:
    """Hand each accepted decision to telemetry → the sequence numbers; one the buffer refuses
    (full or closing) is listed in ``problems``."""
    tel = svc.telemetry
    seqs: list[int] = []
    for j in good:
        if svc.ranking:
            seq = tel.log_reported_ranked(j.decision, j.context, j.sample_prob)
        else:
            seq = tel.log_reported(j.decision, j.context, j.features, j.sample_prob)
        if seq is None:
            svc.m_client_rejections.inc(("telemetry",))
            problems.append({"type": "urn:closedloop:problem:telemetry-full", "title": "Telemetry buffer full",
                             "status": 503, "index": j.at,
                             "detail": "Telemetry could not take the decision (buffer full or closing); retry later."})
            continue
        seqs.append(seq)
    problems.sort(key=lambda p: p["index"])
    return seqs


async def _durable(svc: Service, seqs: list[int], problems: list[dict[str, Any]], timeout_s: float) -> None:
    """Wait until telemetry made the decisions durable; 503 (nothing acknowledged) when it did not
    within ``timeout_s`` or its write failed."""
    try:
        ok = await asyncio.wait_for(svc.acks.wait(seqs, decisions=True), timeout_s)  # type: ignore[union-attr]
    except TimeoutError:
        ok = None
    if not ok:
        svc.m_client_rejections.inc(("telemetry",), len(seqs))
        why = (f"not durable within {timeout_s:g} s" if ok is None
               else f"the telemetry write failed ({svc.telemetry.stats().get('last_error')})")
        raise Problem(503, "not-durable", "Decisions not durable",
                      f"{len(seqs)} decision(s) were not acknowledged: {why}. Nothing of them is acknowledged; "
                      "sending the same batch again is safe (datasets keep one record per decision_id).",
                      headers={"Retry-After": "1"}, errors=problems or None)

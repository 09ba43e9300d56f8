"""``POST /v1/outcomes``: one outcome report (a JSON object) or a batch (a JSON array); 202 only
once durable in telemetry.

The stages of a request: decode the reports (:func:`decode_outcomes`), take each one that passes
the edge's rules and the rate limits to telemetry (:func:`log_reports`), wait until telemetry
has made them durable (:func:`await_durable`), answer what was accepted and refused
(:func:`answer`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.errors import ContextError, OutcomeError
from closedloop.service.bodies import BoundedArray, OutcomeReport, TooLarge, check_outcome, first_byte
from closedloop.service.core import Service
from closedloop.service.limits import take_both
from closedloop.service.problems import Problem, invalid, problem_response
from closedloop.service.routes.edge import BAD_JSON, JSON, batch_too_large, encode, malformed, not_an_array, path_field, read_body
from closedloop.service.settings import ServiceSettings

__all__ = ["answer", "await_durable", "decode_outcomes", "log_reports", "outcomes_routes"]

#: One decoded report at its index in the request (0 for a single report).
Indexed = tuple[int, OutcomeReport]


def _outcomes_doc() -> dict[str, Any]:
    """The route's OpenAPI description: a report or an array of them → what was accepted."""
    return {
        "summary": "Report one outcome (a JSON object) or a batch (a JSON array); 202 once durable",
        "status_code": 202,
        "response_class": Response,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/OutcomeReport"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/OutcomeReport"}},
                ]}}},
            },
        },
        "responses": {
            202: {"description": "Accepted and durable in telemetry (refused items of a batch listed).",
                  "content": {JSON: {"schema": {"$ref": "#/components/schemas/OutcomesAccepted"}}}},
            **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 413, 422, 429, 503)},
        },
        "tags": ["outcomes"],
    }


def outcomes_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Service]) -> None:
    """Register ``POST /v1/outcomes`` on ``app`` (the worker's Service is ``holder["svc"]`` once started)."""
    limit = settings.max_body_bytes
    max_batch = settings.max_batch
    ack_timeout_s = settings.ack_timeout_s
    one_outcome = msgspec.json.Decoder(OutcomeReport)

    @app.post("/v1/outcomes", **_outcomes_doc())
    async def outcomes(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), "report")
        body = await read_body(request, limit)
        fb = first_byte(body)
        single = fb == 123
        if not single and fb != 91:
            raise Problem(400, "bad-request", "Bad request",
                          "The request body must be a JSON object (one outcome) or a JSON array of objects (a batch).")
        reports, problems = await decode_outcomes(one_outcome, request.app.state.outcome_rows, body, single, max_batch)
        if svc.telemetry is None:
            raise Problem(503, "telemetry-off", "Telemetry is off",
                          "This service runs without telemetry, so outcome reports cannot be made durable.")
        seqs, sources, retry_after = log_reports(svc, reports, single, problems)
        if seqs:
            await await_durable(svc, seqs, sources, problems, ack_timeout_s)
        return answer(svc, seqs, problems, single, retry_after)


async def decode_outcomes(one: msgspec.json.Decoder, rows: BoundedArray, body: bytes, single: bool, max_batch: int,
                          ) -> tuple[list[Indexed], list[dict[str, Any]]]:
    """The reports of a body, and the problems of a batch's invalid ones. A batch is never read
    past its (max_batch + 1)-th item; one with an invalid item is decoded item by item in a
    worker thread (the event loop serves other requests meanwhile)."""
    try:
        if single:
            return [(0, one.decode(body))], []
        return list(enumerate(rows.decode(body))), []
    except msgspec.ValidationError as e:  # an invalid report, or (a batch) too many
        if single:
            raise Problem(422, "invalid-outcome", "Invalid outcome", str(e), **path_field(e)) from None
    except BAD_JSON as e:
        raise malformed(e) from None
    try:
        items = rows.items(body)
    except TooLarge:
        raise batch_too_large(max_batch, "outcomes") from None
    except msgspec.ValidationError:
        raise not_an_array("outcomes") from None
    except BAD_JSON as e:
        raise malformed(e) from None
    return await asyncio.to_thread(_outcomes_one_by_one, one, items)


def _outcomes_one_by_one(one: msgspec.json.Decoder, items: list[msgspec.Raw]) -> tuple[list[Indexed], list[dict[str, Any]]]:
    """Each raw item decoded alone → (the reports, the problems of the rest). Pure: run it in a worker thread."""
    good: list[Indexed] = []
    bad: list[dict[str, Any]] = []
    for i, r in enumerate(items):
        try:
            good.append((i, one.decode(r)))
        except msgspec.ValidationError as e:
            where = path_field(e)
            if where:
                bad.append({"type": "urn:closedloop:problem:invalid-outcome", "title": "Invalid outcome",
                            "status": 422, "detail": str(e), "index": i, **where})
            else:  # not an object at all
                bad.append(invalid("outcome", "<outcome>", "a JSON object", _shown(r), index=i))
        except BAD_JSON:
            bad.append(invalid("outcome", "<outcome>", "a JSON object nested less deeply", "<too deep>", index=i))
    return good, bad


def log_reports(svc: Service, reports: list[Indexed], single: bool, problems: list[dict[str, Any]],
                ) -> tuple[list[int], list[str], float]:
    """Hand each report that passes the edge's rules and the rate limits to telemetry →
    (telemetry's sequence numbers, the reports' sources, the longest wait a rate limit asks for).
    A refused report's problem is appended to ``problems`` (with its index in a batch)."""
    now = time.time_ns()
    tel = svc.telemetry
    system = svc.system.name
    seqs: list[int] = []
    sources: list[str] = []
    retry_after = 0.0
    for i, o in reports:
        got = check_outcome(o, system, now, None if single else i)
        if isinstance(got, dict):
            problems.append(got)
            svc.m_outcome_rejections.inc(("invalid",))
            continue
        decision_id, unit, kind, value, event_ns, source, outcome_id, candidate_id, slot = got
        which, wait = take_both(svc.per_source, source, svc.per_unit, unit if unit is not None else f"decision:{decision_id}")
        if which:
            svc.m_outcome_rejections.inc(("rate_source" if which == 1 else "rate_unit",))
            retry_after = max(retry_after, _secs(wait))
            problems.append(_rate_limited(which, wait, source, unit, decision_id, None if single else i))
            continue
        try:
            seq = tel.log_outcome(decision_id, unit, kind=kind, value=value, event_ns=event_ns, source=source,
                                  outcome_id=outcome_id, candidate=candidate_id, slot=slot)
        except ContextError as e:
            problems.append(_refused(e, None if single else i))
            svc.m_outcome_rejections.inc(("invalid",))
            continue
        if seq is None:
            svc.m_outcome_rejections.inc(("telemetry",))
            p = {"type": "urn:closedloop:problem:telemetry-full", "title": "Telemetry buffer full", "status": 503,
                 "detail": "Telemetry could not take the outcome (buffer full or closing); retry later."}
            if not single:
                p["index"] = i
            problems.append(p)
            continue
        seqs.append(seq)
        sources.append(source)
    return seqs, sources, retry_after


def _refused(e: ContextError, index: int | None) -> dict[str, Any]:
    """The problem of a report telemetry refused (e.g. a candidate its decision did not show, a
    slot past its slate), named by the report's fields (telemetry's ``candidate`` is the body's
    ``candidate_id``)."""
    if e.field == "candidate":
        e = OutcomeError("candidate_id", e.rule, e.value)
    p = {"type": "urn:closedloop:problem:invalid-outcome", "title": "Invalid outcome", "status": 422,
         "detail": str(e), "field": e.field, "rule": e.rule, "value": e.to_dict()["value"]}
    if index is not None:
        p["index"] = index
    return p


def _rate_limited(which: int, wait: float, source: str, unit: Any, decision_id: Any, index: int | None) -> dict[str, Any]:
    """The problem of a report refused by the per-source (``which`` 1) or the per-unit rate limit."""
    lim = "source" if which == 1 else "unit"
    key = source if which == 1 else (unit if unit is not None else decision_id)
    p = {"type": "urn:closedloop:problem:rate-limited", "title": "Too many outcome reports", "status": 429,
         "detail": f"Outcome reports for {lim} {key!r} exceed the declared limit; retry in {_secs(wait)} s.",
         "limit": lim, "retry_after_s": _secs(wait)}
    if index is not None:
        p["index"] = index
    return p


async def await_durable(svc: Service, seqs: list[int], sources: list[str], problems: list[dict[str, Any]],
                        timeout_s: float) -> None:
    """Wait until telemetry has made the reports durable (then count them by source); 503 when it
    has not within ``timeout_s`` or its write failed — nothing of them acknowledged."""
    acks = svc.acks
    try:
        ok = await asyncio.wait_for(acks.wait(seqs), timeout_s)  # type: ignore[union-attr]
    except TimeoutError:
        ok = None
    if not ok:
        svc.m_outcome_rejections.inc(("telemetry",), len(seqs))
        why = (f"not durable within {timeout_s:g} s" if ok is None
               else f"the telemetry write failed ({svc.telemetry.stats().get('last_error')})")
        raise Problem(503, "not-durable", "Outcomes not durable",
                      f"{len(seqs)} outcome report(s) were not acknowledged: {why}. Nothing of them is "
                      "acknowledged; retrying the same reports is safe (they are deduplicated).",
                      headers={"Retry-After": "1"}, errors=problems or None)
    for s in sources:
        svc.m_outcomes.inc((s,))


def answer(svc: Service, seqs: list[int], problems: list[dict[str, Any]], single: bool, retry_after: float) -> Response:
    """202 with what was accepted and refused; when nothing was accepted, the refusal itself (the
    problem of a single report; for a batch, its common status, else 422, listing every refusal)."""
    if not seqs and problems:
        statuses = {p["status"] for p in problems}
        status = statuses.pop() if len(statuses) == 1 else 422
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after and status == 429 else None
        if single:
            svc.m_responses.inc(("/v1/outcomes", status))
            return problem_response(status, problems[0], headers)
        raise Problem(status, "outcomes-refused", "Outcome reports refused",
                      f"Every outcome report of the batch was refused ({len(problems)}).", headers=headers,
                      errors=problems)
    svc.m_responses.inc(("/v1/outcomes", 202))
    return Response(encode({"accepted": len(seqs), "rejected": problems}), status_code=202, media_type=JSON)


def _secs(w: float) -> float:
    return round(w, 3) if w != float("inf") else 3600.0


def _shown(raw: msgspec.Raw) -> Any:
    """A refused item's value for a problem entry: a scalar as is, a container by its kind."""
    head = bytes(memoryview(raw)[:1])
    if head in (b"[", b"{"):
        return "<an array>" if head == b"[" else "<an object>"
    v = msgspec.json.decode(raw)
    if isinstance(v, str) and len(v) > 200:
        return v[:197] + "..."
    return v

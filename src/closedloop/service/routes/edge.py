"""What every route group shares at the edge: reading a request body within its limit, and the problem
details of a body that cannot be read (too large, malformed, not an array, too many items)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from fastapi import Request

from closedloop.service.problems import Problem

__all__ = ["BAD_JSON", "JSON", "batch_answer", "batch_too_large", "encode", "malformed", "not_an_array", "path_field", "read_body",
           "too_large"]

JSON = "application/json"
encode = msgspec.json.Encoder().encode
#: What decoding a body may raise: malformed JSON, or JSON nested deeper than the decoder recurses.
BAD_JSON = (msgspec.DecodeError, RecursionError)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise Problem(400, "bad-request", "Bad request", f"Content-Length must be an integer. Got {declared!r} instead.") from None
        if n > limit:
            raise too_large(n, limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(n: int, limit: int) -> Problem:
    """413: a body of ``n`` bytes, past ``limit``."""
    return Problem(413, "body-too-large", "Request body too large",
                   f"The request body must be at most {limit} bytes. Got {n} bytes instead.", limit=limit, size=n)


def malformed(e: Exception) -> Problem:
    """400: a body that is not JSON (or JSON nested too deeply to decode)."""
    if isinstance(e, RecursionError):
        return Problem(400, "malformed-json", "Malformed JSON", "The request body is JSON nested too deeply.")
    return Problem(400, "malformed-json", "Malformed JSON", f"The request body must be JSON. {e}.")


def batch_answer(svc: Any, decisions: list[Any], index: list[int], problems: list[dict[str, Any]], t0: float,
                 what: str) -> Any:
    """A decide batch's answer, ``{"decisions", "index", "errors"}`` (the batch's latency and the
    response counted), or 422 when every ``what`` (contexts, requests) of it was refused."""
    from starlette.responses import Response

    if not decisions and problems:
        raise Problem(422, "invalid-context", "Invalid contexts",
                      f"Every {what} of the batch was refused ({len(problems)}).", errors=problems)
    out = encode({"decisions": decisions, "index": index, "errors": problems})
    svc.m_batch_latency.observe(time.perf_counter() - t0)
    svc.m_responses.inc(("/v1/decide", 200))
    return Response(out, media_type=JSON)


def batch_too_large(limit: int, what: str) -> Problem:
    """413: a batch with more than ``limit`` items (``what``: contexts, outcomes)."""
    return Problem(413, "batch-too-large", "Batch too large",
                   f"A batch must have at most {limit} {what}. Got {limit + 1} or more instead.",
                   limit=limit, field="<batch>", rule=f"at most {limit} {what}", value=f"{limit + 1} or more")


def not_an_array(what: str) -> Problem:
    """400: a batch body that is not a JSON array."""
    return Problem(400, "bad-request", "Bad request", f"A batch of {what} must be a JSON array.")


def path_field(e: msgspec.ValidationError) -> dict[str, Any]:
    """The field a msgspec validation error names (``… - at `$[0].value``` or ``Object missing
    required field `kind```); empty when it names none (the value is not an object at all)."""
    msg = str(e)
    missing = "Object missing required field `"
    if msg.startswith(missing):
        name = msg[len(missing):].split("`", 1)[0]
        return {"field": name, "rule": "present"}
    at = msg.rfind("at `$")
    if at < 0:
        return {}
    path = msg[at + 4:].rstrip("`")
    name = path.rsplit(".", 1)[-1] if "." in path else path
    name = name.split("[", 1)[0] or path
    return {"field": name, "rule": msg[:at].rstrip(" -")}

"""``POST /v1/decide`` for a ranking system: one request (a JSON object with ``"candidates"``) or
a batch (a JSON array of them).

A request is decoded with msgspec once, its candidates counted against ``max_candidates``, and
decided by ``Runtime.decide`` — which validates the request fields and every candidate — and its
ranking encoded as :class:`~closedloop.service.ranked.Ranked`. A batch is decided request by
request (the same path, so each answer equals the one request's): a refused request is listed
with its index, field, rule and value, and the others are decided.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.responses import Response

from closedloop.errors import ContextError
from closedloop.service.bodies import BoundedArray, TooLarge
from closedloop.service.core import Service
from closedloop.service.problems import Problem, context_problem, invalid
from closedloop.service.ranked import candidates_problem, ranked
from closedloop.service.routes.edge import BAD_JSON, JSON, batch_answer, batch_too_large, encode, malformed, not_an_array

__all__ = ["decide_ranked", "decide_ranked_batch"]

_perf = time.perf_counter
_decode = msgspec.json.decode
#: The label a ranking decision is counted under in ``closedloop_decisions_total`` (its slot-1
#: candidate would give the counter one series per candidate id).
RANKING_ACTION = "(ranking)"


def decide_ranked(svc: Service, body: bytes, t0: float) -> Response:
    """One ranking request → its :class:`~closedloop.service.ranked.Ranked` (JSON)."""
    try:
        req = _decode(body)
    except BAD_JSON as e:
        raise malformed(e) from None
    many = candidates_problem(req, svc.settings.max_candidates)
    if many is not None:
        svc.m_invalid.inc()
        raise _too_many(*many)
    rt = svc.runtime
    try:
        d = rt.decide(req)  # type: ignore[union-attr]
    except ContextError as e:
        svc.m_invalid.inc()
        raise Problem(422, "invalid-context", "Invalid context", str(e), field=e.field, rule=e.rule,
                      value=e.to_dict()["value"]) from None
    except Exception:
        svc.arms.error(None)
        raise
    out = encode(ranked(d))
    flight = getattr(d, "flight", None)
    svc.m_decisions.inc((RANKING_ACTION, d.bundle_version, flight or ""))
    dt = _perf() - t0
    svc.m_latency.observe(dt)
    svc.arms.record(flight, dt)
    svc.m_responses.inc(("/v1/decide", 200))
    return Response(out, media_type=JSON)


def decide_ranked_batch(svc: Service, rows: BoundedArray, body: bytes, t0: float) -> Response:
    """A JSON array of ranking requests → ``{"decisions": [Ranked…], "index": [row…], "errors":
    [problem…]}``, as for other systems' batches (422 when every request is refused)."""
    items, problems = _items(rows, body)
    rt = svc.runtime
    limit = svc.settings.max_candidates
    decisions: list[Any] = []
    index: list[int] = []
    counts: dict[tuple[str, str, str], int] = {}
    for i, req in items:
        many = candidates_problem(req, limit)
        if many is not None:
            problems.append(invalid("context", "candidates", many[1], many[0], index=i))
            continue
        try:
            d = rt.decide(req)  # type: ignore[union-attr]
        except ContextError as e:
            problems.append(context_problem(e, index=i))
            continue
        decisions.append(ranked(d))
        index.append(i)
        key = (RANKING_ACTION, d.bundle_version, getattr(d, "flight", None) or "")
        counts[key] = counts.get(key, 0) + 1
    for key, n in counts.items():
        svc.m_decisions.inc(key, n)
        svc.arms.count(key[2] or None, n)
    if problems:
        svc.m_invalid.inc(n=len(problems))
        problems.sort(key=lambda p: p["index"])
    return batch_answer(svc, decisions, index, problems, t0, "request")


def _items(rows: BoundedArray, body: bytes) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """The batch's requests with their rows, and the problems of the items that are not objects.
    Never reads past the (max_batch + 1)-th item."""
    try:
        return list(enumerate(rows.decode(body))), []
    except msgspec.ValidationError:  # an item that is not an object, or too many items
        pass
    except BAD_JSON as e:
        raise malformed(e) from None
    try:
        raw = rows.items(body)
    except TooLarge:
        raise batch_too_large(rows.max_items, "requests") from None
    except msgspec.ValidationError:
        raise not_an_array("ranking requests") from None
    except BAD_JSON as e:
        raise malformed(e) from None
    good: list[tuple[int, Any]] = []
    bad: list[dict[str, Any]] = []
    for i, r in enumerate(raw):
        v = _decode(r)
        if isinstance(v, dict):
            good.append((i, v))
        else:
            bad.append(invalid("context", "<context>", "a JSON object (a ranking request)", v, index=i))
    return good, bad


def _too_many(n: int, rule: str) -> Problem:
    """413: a request with ``n`` candidates, past the service's ``max_candidates``."""
    return Problem(413, "too-many-candidates", "Too many candidates",
                   f"A ranking request must have {rule}. Got {n} candidates instead.",
                   field="candidates", rule=rule, value=n)

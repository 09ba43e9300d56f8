"""Errors as JSON problem details (RFC 9457, ``application/problem+json``).

Every error the service answers has ``type``, ``title``, ``status`` and ``detail``; a validation
error also names the ``field``, the ``rule`` and the ``value`` (as :class:`~closedloop.ContextError`
does), and a batch lists the failed items in ``errors`` with their ``index``.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from starlette.responses import Response

from closedloop.errors import ContextError, clip_value

__all__ = ["PROBLEM_TYPE", "Problem", "context_problem", "problem_response"]

#: The media type of problem details.
PROBLEM_TYPE = "application/problem+json"
_PREFIX = "urn:closedloop:problem:"
_encode = msgspec.json.Encoder().encode


class Problem(Exception):
    """An error answered as problem details: raise it from a route."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out = {"type": _PREFIX + self.slug, "title": self.title, "status": self.status, "detail": self.detail}
        out.update(self.extra)
        return out

    def response(self) -> Response:
        return problem_response(self.status, self.body(), self.headers)


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(_jsonable(body)), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def _jsonable(v: Any) -> Any:
    """Problem bodies must be JSON: non-finite numbers and odd objects are shown as strings."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return repr(v)


def context_problem(e: ContextError, *, index: int | None = None, what: str = "context") -> dict[str, Any]:
    """The problem-details entry of one invalid context or outcome (``index``: its batch position)."""
    value = e.value
    if not isinstance(value, str | int | float | bool | type(None)):
        value = repr(value)
    out: dict[str, Any] = {
        "type": _PREFIX + f"invalid-{what}",
        "title": f"Invalid {what}",
        "status": 422,
        "detail": str(e),
        "field": e.field,
        "rule": e.rule,
        "value": value,
    }
    if index is not None:
        out["index"] = index
    return out


def invalid(what: str, field: str, rule: str, value: Any, *, index: int | None = None) -> dict[str, Any]:
    """A problem-details entry for a value refused at the edge (not by the System's schema)."""
    value = clip_value(value)  # a refused 7 MB value is never echoed back whole
    shown = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
    out: dict[str, Any] = {
        "type": _PREFIX + f"invalid-{what}",
        "title": f"Invalid {what}",
        "status": 422,
        "detail": f"{what.capitalize()} field '{field}' must be {rule}. Got {_short(shown)} instead.",
        "field": field,
        "rule": rule,
        "value": shown,
    }
    if index is not None:
        out["index"] = index
    return out


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."

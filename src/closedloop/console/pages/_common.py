"""What the pages built on :mod:`closedloop.console.data` share: a data function's refusal as the
console's error (a clear message on the page, problem+json under ``/api/``) and the paging links."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from fastapi import Request

from closedloop.console.framework import ConsoleError
from closedloop.errors import ClosedLoopError

__all__ = ["NOT_FOUND", "call", "data_errors", "pager"]

T = TypeVar("T")

#: The beginnings of the data functions' messages that mean "there is no such thing" (a 404, not a 422).
NOT_FOUND = ("No decision", "No evaluation report", "Unknown bundle", "Unknown system", "No report file", "No such")


@contextmanager
def data_errors(title: str = "Bad request") -> Iterator[None]:
    """A :class:`~closedloop.errors.ClosedLoopError` raised inside (a bad time, page, id, entry …)
    becomes a :class:`ConsoleError` carrying its message: 404 when the thing does not exist, else 422."""
    try:
        yield
    except ConsoleError:
        raise
    except ClosedLoopError as exc:
        text = str(exc)
        if text.startswith(NOT_FOUND) or " is not registered" in text or " not found" in text:
            raise ConsoleError(404, "Not found", text, slug="not-found") from None
        raise ConsoleError(422, title, text, slug="bad-request") from None


def call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(*args, **kw)`` with :func:`data_errors`."""
    with data_errors():
        return fn(*args, **kw)


def pager(request: Request, name: str, data: dict[str, Any], **params: Any) -> dict[str, Any]:
    """The previous / next links of a paged list (``data`` as the data functions return it: ``page``,
    ``pages``, ``has_prev``, ``has_next``, ``total``), keeping the query's other ``params``."""
    from urllib.parse import urlencode

    from closedloop.console.framework import url

    base = url(request, name, system=params.pop("system"))
    kept = {k: v for k, v in params.items() if v not in (None, "")}

    def link(n: int) -> str:
        return base + "?" + urlencode({**kept, "page": n})

    page = int(data.get("page", 1))
    return {"page": page, "pages": max(int(data.get("pages", 1)), 1), "total": data.get("total", 0),
            "prev": link(page - 1) if data.get("has_prev") else None, "next": link(page + 1) if data.get("has_next") else None}


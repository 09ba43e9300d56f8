"""The History page: every registry change and attempt of a system, newest first and paged — who,
why, the operation, its status, what served before and after, the checks —, and "what served at
time T" (:func:`closedloop.console.data.history.history`, :func:`~closedloop.console.data.history.served_at`).

``GET /systems/{system}/history?page=N&at=<ISO time>`` (``&applied=1``: the applied changes only, no attempts); the JSON twins are
``/api/systems/{system}/history?page=N`` and ``/api/systems/{system}/history/at?when=<ISO time>``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.data.history import history, served_at
from closedloop.console.framework import ConsoleError, console_of, page_of, render, viewer
from closedloop.console.pages._common import call, pager
from closedloop.service.auth import Credential

__all__ = ["router"]

router = APIRouter()


def _history(request: Request, system: str, attempts: bool = True) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    p = page_of(request)
    return call(history, con.registry(), system, page=p.number, per_page=p.size, attempts=attempts)


@router.get("/systems/{system}/history", name="history", include_in_schema=False)
def history_page(request: Request, system: str, at: str = "", applied: str = "", cred: Credential = Depends(viewer)) -> Response:
    only_applied = applied not in ("", "0")
    data = _history(request, system, attempts=not only_applied)
    answer, message, status = None, None, 200
    if at.strip():
        try:
            answer = call(served_at, console_of(request).registry(), system, at.strip())
        except ConsoleError as exc:
            message, status = exc.detail, exc.status
    return render(request, "history.html", title=f"{system} — history", system=system, data=data, at=at[:64],
                  answer=answer, message=message, status=status, only_applied=only_applied,
                  pages=pager(request, "history", data, system=system, at=at[:64], applied="1" if only_applied else ""))


@router.get("/api/systems/{system}/history", name="api_history")
def history_api(request: Request, system: str, attempts: bool = True, cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _history(request, system, attempts)


@router.get("/api/systems/{system}/history/at", name="api_served_at")
def served_at_api(request: Request, system: str, when: str = "", cred: Credential = Depends(viewer)) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    if not when.strip():
        raise ConsoleError(422, "Bad request", "Say when: ?when=<ISO-8601 time> (UTC when no offset is given).")
    result: dict[str, Any] = call(served_at, con.registry(), system, when.strip())
    return result

"""The pages of the navigation that are not built yet: each answers "not built yet" at the URL it will
have (``/systems/{system}/<name>``), so the navigation and the URL scheme are whole from the start."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.framework import NAV, console_of, render, viewer
from closedloop.service.auth import Credential

__all__ = ["PENDING", "router"]

#: The route names (of :data:`~closedloop.console.framework.NAV`) whose pages are not built yet.
PENDING: tuple[str, ...] = ("goals", "history", "flights", "reports", "mistakes", "hotfix")

router = APIRouter()


def _pending(name: str, label: str) -> None:
    def page(request: Request, system: str, cred: Credential = Depends(viewer)) -> Response:
        console_of(request).check_system(system)
        return render(request, "pending.html", title=label, system=system, page=label)

    page.__name__ = f"pending_{name}"
    router.add_api_route(f"/systems/{{system}}/{name}", page, methods=["GET"], name=name, include_in_schema=False)


for _name, _label in NAV:
    if _name in PENDING:
        _pending(_name, _label)

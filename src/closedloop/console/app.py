"""``create_console_app(settings)``: the operations console as an ASGI app (FastAPI, Jinja2, htmx).

Served alone by ``closedloop console`` or mounted at ``/console`` on the decision service by
``closedloop serve --console`` (the service app gets a route, no middleware: its per-decision fast
path is untouched). The app's own routes — login, logout, the system picker, the static files — are
here; the pages are the routers of :mod:`closedloop.console.pages`; what they share is
:mod:`closedloop.console.framework`. docs/console.md is the guide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from closedloop.console.framework import Console, ConsoleError, console_of, csrf_guard, form, is_api, render, session_of, url, viewer
from closedloop.console.pages import PAGES
from closedloop.console.security import SecurityHeaders
from closedloop.console.sessions import COOKIE
from closedloop.console.settings import ConsoleSettings
from closedloop.errors import AuthError
from closedloop.service.auth import Credential
from closedloop.service.problems import Problem

__all__ = ["create_console_app"]

_STATIC = Path(__file__).parent / "static"


def create_console_app(settings: ConsoleSettings, *, clock: Callable[[], int] | None = None) -> FastAPI:
    """The console over the home and registry ``settings`` name. ``clock`` (ns since the epoch;
    default the wall clock) times sessions and pages — tests move it to expire a session. The
    session secret is read (or made) here; the registry is opened at the first request."""
    if not isinstance(settings, ConsoleSettings):
        raise TypeError(f"create_console_app needs a ConsoleSettings. Got {settings!r} instead.")
    app = FastAPI(title="closedloop console", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(csrf_guard)])
    app.state.console = Console(settings, clock or time.time_ns)
    app.state.console.signer()  # the session secret: read, or made on this first start (<home>/console/secret)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
    _own_routes(app)
    for page in PAGES:
        app.include_router(page.router)
    _error_handlers(app)
    return app


def _root(request: Request) -> str:
    return request.scope.get("root_path") or "/"


def _set_session_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    response.set_cookie(COOKIE, value, max_age=max_age, path=_root(request), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=_root(request), httponly=True, samesite="strict", secure=request.url.scheme == "https")


def _safe_next(request: Request, target: str | None) -> str:
    """Where to go after login: a path inside the console, else its start page (no open redirect)."""
    root = request.scope.get("root_path") or ""
    if target and target.startswith((root + "/") if root else "/") and not target.startswith("//") and "\\" not in target:
        return target
    return url(request, "home")


def _own_routes(app: FastAPI) -> None:
    @app.get("/", name="home", include_in_schema=False)
    def home(request: Request) -> Response:
        if request.cookies.get(COOKIE) is None:
            return RedirectResponse(url(request, "login_form"), status_code=303)
        viewer(request)
        systems = console_of(request).systems()
        if len(systems) == 1:
            return RedirectResponse(url(request, "overview", system=systems[0]), status_code=303)
        return RedirectResponse(url(request, "systems"), status_code=303)

    @app.get("/login", name="login_form", include_in_schema=False)
    def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query parameter's name
        return render(request, "login.html", title="Log in", next=_safe_next(request, next), message=None)

    @app.post("/login", name="login", include_in_schema=False)
    def login(request: Request) -> Response:
        fields = form(request)
        nxt = _safe_next(request, fields.get("next"))
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
            raise ConsoleError(403, "Forbidden", f"A login from another site ({origin}) is refused.", slug="cross-site")
        con = console_of(request)
        try:
            cred = con.credentials().authenticate(fields.get("token", "").strip())
        except AuthError as exc:
            return render(request, "login.html", title="Log in", status=401, next=nxt,
                          message=f"{exc} Check the token (`closedloop token add NAME --role viewer` makes one).")
        if not (cred.has("viewer") or cred.has("admin")):
            return render(request, "login.html", title="Log in", status=403, next=nxt,
                          message=f"The credential {cred.name!r} has the roles {sorted(cred.roles)}: the console needs "
                                  "'viewer' (to see) or 'admin' (to see and act).")
        _, value = con.signer().issue(cred.name, cred.roles, con.now_ns() // 1_000_000_000)
        response = RedirectResponse(nxt, status_code=303)
        _set_session_cookie(request, response, value, con.settings.session_seconds)
        return response

    @app.post("/logout", name="logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        response = render(request, "login.html", title="Logged out", next=url(request, "home"),
                          message="You are logged out.", logged_out=True)
        _clear_session_cookie(request, response)
        return response

    @app.get("/systems", name="systems", include_in_schema=False)
    def systems(request: Request, cred: Credential = Depends(viewer)) -> Response:
        return render(request, "systems.html", title="Systems")

    @app.get("/healthz", name="healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", name="readyz", include_in_schema=False)
    def readyz(request: Request) -> Response:
        """Ready when the registry answers (no login needed; says nothing about what it holds)."""
        try:
            console_of(request).systems()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the registry is "not ready"
            return JSONResponse({"status": "unavailable", "detail": f"the registry cannot be read: {type(exc).__name__}"},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/api/systems", name="api_systems")
    def api_systems(request: Request, cred: Credential = Depends(viewer)) -> dict[str, Any]:
        return {"systems": console_of(request).systems(), "user": cred.name, "roles": sorted(cred.roles)}


def _error_handlers(app: FastAPI) -> None:
    async def console_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, ConsoleError):  # registered for ConsoleError only: anything else is not ours to answer
            raise exc
        if is_api(request):
            response: Response = Problem(exc.status, exc.slug, exc.title, exc.detail).response()
        elif exc.status == 401 and request.headers.get("hx-request"):
            # a live fragment's poll after the session ended: htmx swaps no error, so send the page to the login
            current = request.headers.get("hx-current-url", "")
            target = url(request, "login_form") + "?" + urlencode({"next": _safe_next(request, urlsplit(current).path)})
            response = Response(status_code=204, headers={"HX-Redirect": target})
        elif exc.status == 401:
            response = render(request, "login.html", title="Log in", status=401, message=exc.detail,
                              next=_safe_next(request, request.url.path if request.method == "GET" else None))
        else:
            response = _error_page(request, exc.status, exc.title, exc.detail)
        if exc.extra.get("clear_cookie"):
            _clear_session_cookie(request, response)
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # registered for HTTPException only
            raise exc
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"The console has no page at {request.url.path}."
        return await console_error(request, ConsoleError(exc.status_code, "Not found" if exc.status_code == 404 else "Error", detail))

    async def validation_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, RequestValidationError):  # registered for RequestValidationError only
            raise exc
        what = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return await console_error(request, ConsoleError(422, "Bad request", f"The request is not valid: {what}."))

    app.add_exception_handler(ConsoleError, console_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _error_page(request: Request, status: int, title: str, detail: str) -> Response:
    try:
        session_of(request)
        return render(request, "error.html", title=title, status=status, detail=detail, code=status)
    except ConsoleError:
        return JSONResponse({"title": title, "detail": detail}, status_code=status)

"""The console's page framework: what every page module uses.

A page is a small module of :mod:`closedloop.console.pages` with an ``APIRouter`` named ``router``;
its routes take the caller with ``Depends(viewer)`` (see everything) or ``Depends(admin)`` (change
things), read through :func:`console_of` (the registry, the home, the settings, the clock) and
answer with :func:`render` (a page: the template with the common context) or plain JSON under
``/api/…``. A :class:`ConsoleError` raised anywhere is answered as an error page, or as
problem+json under ``/api/``. Every URL is built with :func:`url` (``request.url_for``): the console
also serves under a root path (``/console`` in ``closedloop serve --console``).

Every ``POST``/``PUT``/``PATCH``/``DELETE`` passes :func:`csrf_guard` (an app-wide dependency) before
its route runs: the form (``application/x-www-form-urlencoded``, at most 256 KiB) is read there and
is the route's :func:`form`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from starlette.responses import HTMLResponse, Response

from closedloop.console.security import MAX_FORM_BYTES, UNSAFE_METHODS, csrf_matches, parse_form
from closedloop.console.sessions import COOKIE, Session, SessionSigner, load_secret
from closedloop.console.settings import ConsoleSettings
from closedloop.errors import AuthError
from closedloop.service.auth import Credential, Credentials

__all__ = [
    "NAV", "Console", "ConsoleError", "Page", "admin", "common_context", "console_of", "csrf_guard", "form", "page_of", "render",
    "session_of", "unchanged", "url", "viewer",
]

#: The pages of a system, in the navigation's order: (route name, label). Each route takes ``system``.
NAV: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"), ("goals", "Goals"), ("history", "History"), ("flights", "Flights"),
    ("reports", "Reports"), ("mistakes", "Mistakes"), ("hotfix", "Hot fixes"),
)
_TEMPLATES = Path(__file__).parent / "templates"
_UNSET = object()


class ConsoleError(Exception):
    """An error the console answers: ``status``, a ``title`` and the ``detail`` shown (an error page,
    or problem+json under ``/api/``). ``slug`` names its problem type."""

    def __init__(self, status: int, title: str, detail: str, *, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.slug = slug or title.lower().replace(" ", "-")
        self.extra = extra


@dataclass
class Console:
    """One console app's state (``app.state.console``): settings, clock, templates, and the registry,
    the session signer and the Systems, each made on first use (a mounted app has no start-up of its own)."""

    settings: ConsoleSettings
    clock: Callable[[], int] = time.time_ns
    templates: jinja2.Environment = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _registry: Any = field(default=None, init=False)
    _signer: SessionSigner | None = field(default=None, init=False)
    _systems: dict[str, Any] | None = field(default=None, init=False)
    #: What pages keep between requests, each under a key of its own (a page's own entries: bounded by it).
    cache: dict[Any, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.templates.filters["when"] = when

    def now_ns(self) -> int:
        return int(self.clock())

    @property
    def home(self) -> Path:
        return self.settings.home

    def registry(self) -> Any:
        """The home's :class:`~closedloop.registry.Registry`, opened once."""
        if self._registry is None:
            from closedloop.registry import Registry

            with self._lock:
                if self._registry is None:
                    self._registry = Registry(self.settings.registry, self.settings.project.bundles).open()
        return self._registry

    def signer(self) -> SessionSigner:
        if self._signer is None:
            with self._lock:
                if self._signer is None:
                    self._signer = SessionSigner(load_secret(self.settings.secret_path), lifetime_s=self.settings.session_seconds)
        return self._signer

    def credentials(self) -> Credentials:
        """The credentials file, read now (a token added or removed counts at once); 503 when it
        cannot be read (nobody is let in on a file that does not parse)."""
        try:
            return Credentials.load(self.settings.credentials_path)
        except AuthError as exc:
            raise ConsoleError(503, "Credentials unreadable", str(exc), slug="credentials") from None

    def systems(self) -> list[str]:
        """The systems the registry knows."""
        return list(self.registry().systems())

    def check_system(self, name: str) -> str:
        """``name`` when the registry knows it; else a 404 naming the systems it has."""
        known = self.systems()
        if name not in known:
            raise ConsoleError(404, "Unknown system", f"No system named {name!r} in this registry; systems: {known}.",
                               slug="unknown-system")
        return name

    def system_object(self, name: str) -> Any:
        """The :class:`~closedloop.System` named ``name`` among ``settings.systems`` (loaded once), or None."""
        if self._systems is None:
            from closedloop.system.loading import load_system

            loaded = {}
            for ref in self.settings.systems:
                s = load_system(ref)
                loaded[s.name] = s
            self._systems = loaded
        return self._systems.get(name)


def when(iso_time: Any) -> str:
    """An ISO time as a page shows it: to the second, ``2026-12-06 23:22:35 UTC`` (``—`` for none)."""
    if not isinstance(iso_time, str) or len(iso_time) < 19:
        return "—"
    return iso_time[:19].replace("T", " ") + " UTC"


def console_of(request: Request) -> Console:
    con: Console = request.app.state.console
    return con


def url(request: Request, name: str, /, **params: Any) -> str:
    """The path of the console's route ``name`` with the root path in front (``/console/…`` when the
    console is mounted there): ``request.url_for`` without scheme and host, looked up in the console's
    own routes (under a mount, ``request.url_for`` would search the outer app's)."""
    path = request.app.router.url_path_for(name, **params)
    return request.scope.get("root_path", "") + str(path)


def is_api(request: Request) -> bool:
    root = request.scope.get("root_path", "")
    path = request.scope["path"]
    rel = path[len(root):] if root and path.startswith(root) else path
    return rel.startswith("/api/")


# -- who is calling -----------------------------------------------------------------------------------
def session_of(request: Request) -> Session | None:
    """The request's session: None without a cookie; :class:`ConsoleError` (401) for a tampered,
    expired or malformed one."""
    cached = getattr(request.state, "console_session", _UNSET)
    if cached is not _UNSET:
        return cached if isinstance(cached, Session) else None
    raw = request.cookies.get(COOKIE)
    session = None
    if raw:
        try:
            session = console_of(request).signer().verify(raw, console_of(request).now_ns() // 1_000_000_000)
        except AuthError as exc:
            raise ConsoleError(401, "Not logged in", str(exc), slug="bad-session", clear_cookie=True) from None
    request.state.console_session = session
    return session


def _credential(request: Request) -> Credential:
    """The caller: a bearer token (API clients), else the session cookie's credential as the
    credentials file holds it now."""
    con = console_of(request)
    auth = request.headers.get("authorization")
    if auth and request.cookies.get(COOKIE) is None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            raise ConsoleError(401, "Not logged in", "The Authorization header must be 'Bearer <token>'.", slug="unauthorized")
        try:
            return con.credentials().authenticate(token.strip())
        except AuthError as exc:
            raise ConsoleError(401, "Not logged in", str(exc), slug="unauthorized") from None
    session = session_of(request)
    if session is None:
        raise ConsoleError(401, "Not logged in", "Log in with a token to see the console.", slug="unauthorized")
    for entry in con.credentials().describe():
        if entry["name"] == session.name:
            return Credential(session.name, frozenset(str(r) for r in entry["roles"]))  # type: ignore[attr-defined]
    raise ConsoleError(401, "Not logged in", f"The credential {session.name!r} of this session no longer exists; log in again.",
                       slug="bad-session", clear_cookie=True)


def viewer(request: Request) -> Credential:
    """Dependency: the caller, who must hold ``viewer`` or ``admin`` (403 otherwise)."""
    cred = _credential(request)
    request.state.credential = cred
    if not (cred.has("viewer") or cred.has("admin")):
        raise ConsoleError(403, "Forbidden", f"The credential {cred.name!r} has the roles {sorted(cred.roles)}; the console needs "
                           "'viewer' (to see) or 'admin' (to see and act).", slug="forbidden")
    return cred


def admin(request: Request) -> Credential:
    """Dependency: the caller, who must hold ``admin`` (403 with a clear message otherwise; nothing changes)."""
    cred = viewer(request)
    if not cred.has("admin"):
        raise ConsoleError(403, "Forbidden", f"The credential {cred.name!r} is a viewer: only an admin may change what serves. "
                           "Nothing was changed.", slug="forbidden")
    return cred


# -- changes: the CSRF check and the form ---------------------------------------------------------------
async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise ConsoleError(413, "Too large", f"The console reads bodies of at most {MAX_FORM_BYTES} bytes. Got {declared}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise ConsoleError(413, "Too large", f"The console reads bodies of at most {MAX_FORM_BYTES} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def csrf_guard(request: Request) -> None:
    """App-wide dependency: a ``POST``/``PUT``/``PATCH``/``DELETE`` made with the session cookie must
    carry the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``), else 403
    before the route runs. Reads the body (a form: :func:`form`; JSON: ``request.state.body``)."""
    if request.method not in UNSAFE_METHODS:
        return
    body = await _read_body(request)
    request.state.body = body
    ctype = request.headers.get("content-type", "")
    fields: dict[str, str] = {}
    if ctype.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            fields = parse_form(body, ctype)
        except ValueError as exc:
            raise ConsoleError(400, "Bad form", str(exc)) from None
    request.state.form = fields
    if request.url.path == url(request, "login"):
        return  # no session yet: login checks its Origin instead
    if request.cookies.get(COOKIE) is None and request.headers.get("authorization"):
        return  # a bearer token: never sent by a browser on its own
    session = session_of(request)
    if session is None:
        raise ConsoleError(401, "Not logged in", "Log in first: a change needs a session.", slug="unauthorized")
    given = request.headers.get("x-csrf-token") or fields.get("csrf_token")
    if not csrf_matches(session.csrf, given):
        why = "carries no CSRF token" if not given else "carries a CSRF token that is not this session's"
        raise ConsoleError(403, "Forbidden", f"This request {why} (form field 'csrf_token' or header 'X-CSRF-Token'): "
                           "refused, nothing was changed. Reload the page and try again.", slug="csrf")


def form(request: Request) -> dict[str, str]:
    """The request's form fields (read by :func:`csrf_guard`)."""
    fields: dict[str, str] = getattr(request.state, "form", {})
    return fields


# -- pages ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a list a request asks for: ``?page=N`` (1-based) of ``size`` rows (the
    settings' ``page_size``); ``offset`` is where it starts."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def page_of(request: Request) -> Page:
    """The list page ``?page=N`` asks for (1 when absent); a bad value is a 422 saying so."""
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or int(raw) < 1 or int(raw) > 1_000_000:
        raise ConsoleError(422, "Bad request", f"'page' must be an integer from 1 to 1000000. Got {raw[:40]!r} instead.")
    return Page(int(raw), console_of(request).settings.page_size)



def common_context(request: Request, system: str | None) -> dict[str, Any]:
    """What every page's template gets: who is logged in, the systems, the current one, the CSRF
    token, the navigation, and ``url``/``static`` to build links."""
    con = console_of(request)
    try:
        session = session_of(request)
    except ConsoleError:  # the error page of a bad cookie: shown as logged out
        session = None
    cred: Credential | None = getattr(request.state, "credential", None)
    if cred is None and session is not None:
        cred = Credential(session.name, frozenset(session.roles))
    nav = []
    if system is not None:
        route = request.scope.get("route")
        current = getattr(route, "name", None)
        nav = [{"name": n, "label": label, "url": url(request, n, system=system), "active": n == current} for n, label in NAV]
    return {
        "request": request, "user": None if cred is None else cred.name,
        "roles": [] if cred is None else sorted(cred.roles), "is_admin": cred is not None and cred.has("admin"),
        "csrf_token": "" if session is None else session.csrf, "systems": con.systems() if cred is not None else [],
        "system": system, "nav": nav, "refresh_seconds": con.settings.refresh_seconds,
        "url": lambda name, /, **p: url(request, name, **p),
        "static": lambda path: url(request, "static", path=path),
    }


def unchanged(since: str | None, fingerprint: str) -> Response | None:
    """For a live fragment's poll (``?since=<the fingerprint the page shows>``): ``204 No Content`` —
    htmx then leaves the page as it is — when ``fingerprint`` (what the fragment depends on, now) is
    the one the page has; else None (render the fragment, carrying the new fingerprint)."""
    return Response(status_code=204) if since and since == fingerprint else None


def render(request: Request, template: str, *, title: str, system: str | None = None, status: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """A page: ``template`` (under ``console/templates/``, extending ``base.html``) rendered with the
    common context (:func:`common_context`), ``title`` and ``context``."""
    con = console_of(request)
    html = con.templates.get_template(template).render(**common_context(request, system), title=title, **context)
    return HTMLResponse(html, status_code=status, headers=headers)


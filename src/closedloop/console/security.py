"""The console's protections in the browser: CSRF tokens on every change, a Content-Security-Policy
that admits only the console's own files, and the headers that go with it; and the bounded reading
of form bodies.

* **CSRF.** A session carries a random ``csrf`` token (:mod:`closedloop.console.sessions`). Every
  ``POST``/``PUT``/``PATCH``/``DELETE`` made with the session cookie must carry it — the form field
  ``csrf_token`` or the header ``X-CSRF-Token`` — else it is refused (403) before anything runs.
  A request authenticated by an ``Authorization: Bearer`` token instead needs none (a browser never
  sends that header on its own). The login form is the one exception (there is no session yet):
  it needs a token to do anything, and a cross-site login is refused by its ``Origin`` check.
* **CSP.** :class:`SecurityHeaders` adds :data:`CSP` and ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` to every response of the console app
  (only the console's: the service app it may be mounted on gets no middleware). No page has an
  inline script or style: every script is a file under ``/static``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

__all__ = ["CSP", "MAX_FORM_BYTES", "SECURITY_HEADERS", "UNSAFE_METHODS", "SecurityHeaders", "csrf_matches", "parse_form"]

#: The Content-Security-Policy of every console response.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Every header :class:`SecurityHeaders` sets.
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
#: The methods that change something: they need the session's CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The largest form body the console reads (a hot-fix list fits; a bigger body is refused, 413).
MAX_FORM_BYTES = 256 * 1024
_RAW_HEADERS = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every HTTP response (replacing any a route set)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k for k, _ in _RAW_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": headers + _RAW_HEADERS}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:  # an unexpected error: its 500 carries the headers too (then it is raised, and logged)
                await send_with_headers({"type": "http.response.start", "status": 500,
                                         "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"Internal error: the console's log says what went wrong."})
            raise


def csrf_matches(expected: str, given: str | None) -> bool:
    """Whether ``given`` is the session's CSRF token (constant-time)."""
    if not given or not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode("utf-8", "replace"), given.encode("utf-8", "replace"))


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as ``{field: value}`` (a field given twice
    keeps its last value). Raises ``ValueError`` with a message for a body that is not one."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise ValueError(f"The console accepts forms as application/x-www-form-urlencoded. Got {media or 'no content type'!r} instead.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("The form body is not UTF-8.") from None
    try:
        fields: Mapping[str, list[str]] = parse_qs(text, keep_blank_values=True, strict_parsing=False,
                                                   max_num_fields=1000)
    except ValueError as exc:
        raise ValueError(f"The form body cannot be read: {exc}.") from None
    return {k: v[-1] for k, v in fields.items()}

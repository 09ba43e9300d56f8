"""Cross-origin access for the endpoints a browser client calls, and only those.

A page (or a browser extension) on another origin runs the JavaScript SDK (clients/js/src/sdk):
it fetches its bundle (``GET /v1/bundles/current``), sends the decisions it made
(``POST /v1/decisions``) and reports outcomes (``POST /v1/outcomes``). A browser lets it read the
answers only when the service allows its origin. ``ServiceSettings.cors_origins`` (``closedloop
serve --cors-origin URL``, repeatable) lists the origins allowed, exactly (``scheme://host[:port]``;
no wildcard: a client token is as public as the page that holds it, so the list is what keeps
other sites from spending it).

Only :data:`CLIENT_PATHS` take part. ``POST /v1/decide`` keeps its fast path (no middleware stack:
:class:`~closedloop.service.app._ServiceApp`), and the admin endpoints stay closed to pages.

* a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an allowed
  origin is answered 204 with the methods and headers the client sends (``Authorization``,
  ``Content-Type``, ``If-None-Match``), cached by the browser for 10 minutes; from any other
  origin 403 with a problem naming the origin;
* an answer to an allowed origin carries ``Access-Control-Allow-Origin`` (that origin) and exposes
  ``ETag`` and the ``Closedloop-*`` headers the SDK reads; ``Vary: Origin`` always.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from closedloop.errors import SpecError

__all__ = ["CLIENT_PATHS", "Cors", "check_origins"]

#: The paths a browser client calls, with the methods it uses on each.
CLIENT_PATHS: dict[str, str] = {"/v1/bundles/current": "GET", "/v1/decisions": "POST", "/v1/outcomes": "POST"}
ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match"
EXPOSE_HEADERS = "ETag, Closedloop-Bundle, Closedloop-Flight, Closedloop-Killswitch, Retry-After"
MAX_AGE = "600"
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$|^chrome-extension://[a-p]{32}$")


def check_origins(origins: Any, owner: str = "ServiceSettings") -> tuple[str, ...]:
    """``origins`` as a tuple of origins, or a SpecError naming the first that is not one."""
    if isinstance(origins, str) or not isinstance(origins, Sequence):
        raise SpecError(f"The 'cors_origins' parameter of {owner} must be a list of origins (scheme://host[:port]). "
                        f"Got {origins!r} instead.")
    for o in origins:
        if not isinstance(o, str) or not ORIGIN.match(o):
            raise SpecError(f"The 'cors_origins' parameter of {owner} must hold origins such as 'https://app.example:8443' "
                            f"(scheme://host[:port], no path, no wildcard). Got {o!r} instead.")
    return tuple(origins)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


class Cors:
    """The ASGI wrapper the app puts around requests to :data:`CLIENT_PATHS` (see the module)."""

    def __init__(self, origins: Sequence[str]) -> None:
        self.origins = frozenset(origins)

    def applies(self, scope: dict[str, Any]) -> bool:
        return scope["type"] == "http" and scope["path"] in CLIENT_PATHS

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, app: Any) -> None:
        origin = _header(scope, b"origin")
        if scope["method"] == "OPTIONS" and origin is not None and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, origin, send)
            return
        if origin is None or origin not in self.origins:
            await app(scope, receive, _vary(send))
            return
        extra = [(b"access-control-allow-origin", origin.encode("latin-1")),
                 (b"access-control-expose-headers", EXPOSE_HEADERS.encode())]
        await app(scope, receive, _vary(send, extra))

    async def _preflight(self, scope: dict[str, Any], origin: str, send: Any) -> None:
        method = CLIENT_PATHS[scope["path"]]
        if origin in self.origins:
            headers = [(b"access-control-allow-origin", origin.encode("latin-1")),
                       (b"access-control-allow-methods", method.encode()),
                       (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                       (b"access-control-max-age", MAX_AGE.encode()), (b"vary", b"Origin")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"type": "about:blank", "title": "Origin not allowed", "status": 403, "field": "Origin",
                           "rule": "one of the service's cors_origins (closedloop serve --cors-origin)",
                           "value": origin[:200]}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/problem+json"), (b"vary", b"Origin"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _vary(send: Any, extra: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"vary", b"Origin"), *(extra or [])]}
        await send(message)

    return wrapped

"""Console sessions: a login exchanges a token for a signed session cookie.

The cookie's value is ``base64url(JSON {name, roles, csrf, iat, exp})`` + ``"."`` +
``base64url(HMAC-SHA256(secret, payload))``. The secret is 32 random bytes kept in the home,
``<home>/console/secret`` (created on first start, ``0600`` in a ``0700`` folder): every console
of that home (and every worker of ``closedloop serve --console``) signs and verifies with it;
deleting it logs everybody out. Signatures are compared with :func:`hmac.compare_digest`.

The cookie holds no token: only who logged in, their roles then, the session's CSRF token and
its times. Each request still looks the name up in the credentials file (:mod:`closedloop.console.framework`):
a credential removed meanwhile ends its sessions, and a role taken away is gone at once.

Cookie flags: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page makes
the browser send it), ``Path=<the console's root>`` (``/console`` under ``closedloop serve
--console``: the service's own endpoints never see it). ``Secure`` is set when the request came
over https (directly, or as a proxy's ``X-Forwarded-Proto`` that uvicorn trusts): a Secure cookie
is never sent over plain http, and the console's default — ``http://127.0.0.1`` — is plain http on
the loopback interface, where nothing crosses a network to be read (browsers treat
``http://127.0.0.1``/``localhost`` as a secure context for this reason). Setting Secure there would
make login impossible; serving the console beyond loopback should go through https (a proxy).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.base.files import atomic_write, make_private_dirs
from closedloop.errors import AuthError

__all__ = ["COOKIE", "Session", "SessionSigner", "load_secret"]

#: The session cookie's name.
COOKIE = "closedloop_console"
_SECRET_BYTES = 32
#: A cookie longer than this is refused before any decoding (a browser keeps at most ~4 KB).
_MAX_COOKIE = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(seconds: int) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret at ``path``; created (32 random bytes, ``0600``, its folder ``0700``) when missing.
    Two processes starting together both end up with the one that was written first."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        make_private_dirs(p.parent)
        tmp = atomic_write(p.with_name(f".{p.name}.{secrets.token_hex(4)}.new"), secrets.token_bytes(_SECRET_BYTES))
        try:
            os.link(tmp, p)  # published whole, or not at all when another process was first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        data = p.read_bytes()
    if len(data) < _SECRET_BYTES:
        raise AuthError(
            f"The console's session secret {p} must hold at least {_SECRET_BYTES} bytes; it holds {len(data)}. "
            "Delete it: the console makes a new one at its next start (and everybody logs in again)."
        )
    return data


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user: the credential's ``name`` and ``roles`` at login, the session's ``csrf``
    token, and when it was issued and expires (seconds since the epoch)."""

    name: str
    roles: tuple[str, ...]
    csrf: str
    iat: int
    exp: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": list(self.roles), "csrf": self.csrf, "iat": self.iat, "exp": self.exp}

    @property
    def expires(self) -> str:
        return _iso(self.exp)


class SessionSigner:
    """Issues and verifies session cookies with one secret."""

    def __init__(self, secret: bytes, *, lifetime_s: int) -> None:
        if len(secret) < _SECRET_BYTES:
            raise AuthError(f"The session secret must hold at least {_SECRET_BYTES} bytes. Got {len(secret)} instead.")
        self._secret = secret
        self.lifetime_s = int(lifetime_s)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, name: str, roles: Any, now_s: int) -> tuple[Session, str]:
        """A new session for ``name`` with ``roles`` at ``now_s``, and its cookie value."""
        s = Session(name, tuple(sorted(roles)), secrets.token_urlsafe(32), int(now_s), int(now_s) + self.lifetime_s)
        payload = _b64(json.dumps(s.to_dict(), separators=(",", ":"), sort_keys=True).encode())
        return s, f"{payload}.{self._mac(payload)}"

    def verify(self, value: str, now_s: int) -> Session:
        """The session a cookie value holds: :class:`AuthError` when it is malformed, its signature
        does not match (tampered, or signed with another secret) or it expired."""
        if not isinstance(value, str) or len(value) > _MAX_COOKIE or not value.isascii() or value.count(".") != 1:
            raise AuthError("The session cookie is malformed; log in again.")
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(payload).encode("ascii")):
            raise AuthError(
                "The session cookie's signature does not match: it was changed, or signed with another console "
                "secret (a new <home>/console/secret logs everybody out). Log in again."
            )
        try:
            d = json.loads(_unb64(payload))
            s = Session(str(d["name"]), tuple(str(r) for r in d["roles"]), str(d["csrf"]), int(d["iat"]), int(d["exp"]))
        except (ValueError, KeyError, TypeError):
            raise AuthError("The session cookie is malformed; log in again.") from None
        if now_s >= s.exp:
            raise AuthError(f"The session expired at {s.expires} (sessions last {self.lifetime_s / 3600:g} h); log in again.")
        return s

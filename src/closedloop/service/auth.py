"""Credentials: named tokens with roles, stored hashed.

Six roles exist: ``decide`` (ask for decisions), ``report`` (report outcomes), ``client`` (a client
that decides locally: fetch the bundle its unit should run, ``GET /v1/bundles/current``, and send
the decisions it made back as telemetry, ``POST /v1/decisions``), ``metrics``
(read the service's ``/metrics`` — reporter sources, bundle versions — when the server listens
beyond loopback; ``admin`` may read them too), ``viewer`` (read-only: see everything the operations
console shows, change nothing) and ``admin`` (change what serves: deploy, promote, rollback, kill
switch; in the console ``admin`` implies ``viewer``). The registry records the credential's *name* as the actor of every change.

Tokens are 32 random bytes (``secrets.token_urlsafe``), shown once when created. At rest only
their SHA-256 is kept, in ``<home>/credentials.json``::

    {"version": 1, "credentials": [{"name": "ops", "roles": ["admin"], "sha256": "…", "created": "…"}]}

A plain (unsalted) hash is enough here because the tokens are high-entropy random strings, not
passwords: nothing can be guessed from the hash. Digests are compared with
:func:`hmac.compare_digest`. The file is written atomically
(temporary file, fsync, rename) with mode 0600.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from closedloop.base.files import atomic_write, make_private_dirs
from closedloop.errors import AuthError, SpecError

__all__ = ["ROLES", "Credential", "Credentials"]

#: The roles a credential may hold.
ROLES = ("decide", "report", "client", "metrics", "viewer", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_FORMAT = 1


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Credential:
    """An authenticated caller: its name (recorded as the actor of changes) and its roles."""

    name: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles

    def require(self, role: str, *alternatives: str) -> Credential:
        """Return self when it holds ``role`` (or one of ``alternatives``); else raise
        :class:`AuthError` naming them."""
        if role not in self.roles and self.roles.isdisjoint(alternatives):
            also = "".join(f" (or '{r}')" for r in alternatives)
            raise AuthError(
                f"The credential '{self.name}' lacks the role '{role}'{also} this operation needs. "
                f"It has {sorted(self.roles)}."
            )
        return self


class Credentials:
    """The credentials of one project home (``<home>/credentials.json``).

    Parameters
    ----------
    path:
        The credentials file. It need not exist yet: :meth:`add` creates it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._by_hash: dict[str, Credential] = {}
        self._entries: list[dict[str, object]] = []

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credentials:
        """Read the credentials file (a missing file holds no credentials)."""
        creds = cls(path)
        creds.reload()
        return creds

    def reload(self) -> None:
        """Read the file again (e.g. after another process added a credential)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._by_hash, self._entries = {}, []
            return
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise AuthError(f"The credentials file {self.path} is not valid JSON: {exc}.") from None
        if not isinstance(doc, dict) or doc.get("version") != _FORMAT or not isinstance(doc.get("credentials"), list):
            raise AuthError(
                f"The credentials file {self.path} must be an object with 'version': {_FORMAT} and a "
                "'credentials' list."
            )
        by_hash: dict[str, Credential] = {}
        entries: list[dict[str, object]] = []
        for i, e in enumerate(doc["credentials"]):
            if not isinstance(e, dict):
                raise AuthError(f"Entry {i} of {self.path} must be an object. Got {e!r} instead.")
            name, roles, digest = e.get("name"), e.get("roles"), e.get("sha256")
            if not isinstance(name, str) or not _NAME.match(name):
                raise AuthError(f"Entry {i} of {self.path}: 'name' must match {_NAME.pattern}. Got {name!r} instead.")
            if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
                raise AuthError(f"Entry {i} of {self.path}: 'roles' must be a non-empty list of {list(ROLES)}. Got {roles!r} instead.")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise AuthError(f"Entry {i} of {self.path}: 'sha256' must be 64 hex digits.")
            by_hash[digest] = Credential(name, frozenset(roles))
            entries.append(dict(e))
        self._by_hash, self._entries = by_hash, entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return [str(e["name"]) for e in self._entries]

    def describe(self) -> list[dict[str, object]]:
        """Each credential's name, roles and creation time (never its hash)."""
        return [{"name": e["name"], "roles": e["roles"], "created": e.get("created")} for e in self._entries]

    def authenticate(self, token: str | None) -> Credential:
        """The credential whose token this is; :class:`AuthError` when missing or unknown."""
        if not token or not isinstance(token, str):
            raise AuthError("A credential is required: pass a token (--token, CLOSEDLOOP_TOKEN or an Authorization header).")
        digest = _digest(token)
        # Compare against every stored digest in constant time: how long this takes says nothing
        # about which digest (or how much of one) matched. There are few credentials per home.
        found = None
        for h, cred in self._by_hash.items():
            if hmac.compare_digest(digest, h):
                found = cred
        if found is None:
            raise AuthError("The token given matches no credential.")
        return found

    def add(self, name: str, roles: Iterable[str]) -> str:
        """Create a credential; return its token (shown once, never stored)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError(f"The 'name' parameter of a credential must match {_NAME.pattern}. Got {name!r} instead.")
        roles = sorted(set(roles))
        if not roles or any(r not in ROLES for r in roles):
            raise SpecError(f"The 'roles' of a credential must be a non-empty subset of {list(ROLES)}. Got {roles!r} instead.")
        self.reload()
        if name in self.names():
            raise SpecError(f"A credential named '{name}' already exists in {self.path}; remove it first.")
        token = secrets.token_urlsafe(32)
        entry: dict[str, object] = {
            "name": name, "roles": roles, "sha256": _digest(token),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        self._write([*self._entries, entry])
        self.reload()
        return token

    def remove(self, name: str) -> None:
        """Delete the credential ``name`` (its token stops working)."""
        self.reload()
        kept = [e for e in self._entries if e["name"] != name]
        if len(kept) == len(self._entries):
            raise SpecError(f"No credential named '{name}' exists in {self.path}.")
        self._write(kept)
        self.reload()

    def _write(self, entries: list[dict[str, object]]) -> None:
        make_private_dirs(self.path.parent)
        data = json.dumps({"version": _FORMAT, "credentials": entries}, indent=1).encode()
        atomic_write(self.path, data)

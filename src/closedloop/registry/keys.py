"""The signing keys a registry trusts: trust, revoke and list the Ed25519 public keys whose bundle
signatures deploy accepts (:mod:`closedloop.runtime.signing`), a project home's own key, and the
verdict of the ``signature`` check on a bundle's manifest digest and signature document."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from closedloop.base.times import iso
from closedloop.errors import BundleError, RegistryError
from closedloop.registry.args import MAX_ACTOR, check_actor
from closedloop.registry.db import Database
from closedloop.registry.models import signing_keys as T_KEYS
from closedloop.runtime.signing import (
    SigningKey,
    encode_public_key,
    home_key,
    key_id,
    parse_public_key,
    verify_signature,
)

__all__ = ["Keys", "trusted_in"]


def trusted_in(conn: Connection) -> dict[str, str]:
    """The keys trusted now, read in the transaction ``conn``: key id → base64 public key."""
    rows = conn.execute(select(T_KEYS.c.key_id, T_KEYS.c.public_key).where(T_KEYS.c.revoked_ns.is_(None))).all()
    return {r.key_id: r.public_key for r in rows}


class Keys:
    """The ``signing_keys`` table of one registry database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def trust_key(self, public_key: str, *, name: str, actor: str) -> dict[str, Any]:
        """Trust bundles signed by the Ed25519 key ``public_key`` (base64, as
        ``closedloop key show`` prints it). Trusting a trusted key again is a no-op; a revoked
        key is trusted again (the revocation is cleared, and the record says who did it)."""
        actor = check_actor(actor)
        raw = parse_public_key(public_key)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_ACTOR:
            raise RegistryError(f"A trusted key's 'name' must be a non-empty string of at most {MAX_ACTOR} "
                                f"characters. Got {str(name)[:60]!r} instead.")
        kid, pub = key_id(raw), encode_public_key(raw)
        try:
            with self.db.write() as conn:
                row = conn.execute(select(T_KEYS).where(T_KEYS.c.key_id == kid)).mappings().first()
                now = self.db.clock.now_ns()
                if row is None:
                    conn.execute(insert(T_KEYS).values(key_id=kid, public_key=pub, name=name, added_ns=now,
                                                       added_by=actor, revoked_ns=None, revoked_by=None))
                elif row["revoked_ns"] is not None:
                    conn.execute(update(T_KEYS).where(T_KEYS.c.key_id == kid).values(
                        name=name, added_ns=now, added_by=actor, revoked_ns=None, revoked_by=None))
        except IntegrityError:  # trusted meanwhile by another process: the same key, fine
            pass
        return next(k for k in self.keys() if k["key_id"] == kid)

    def revoke_key(self, key: str, *, actor: str) -> dict[str, Any]:
        """Stop trusting a key (by id, ``ed25519:…``, or base64 public key): bundles it signed
        are refused by deploy from now on; what serves keeps serving."""
        actor = check_actor(actor)
        kid = key if isinstance(key, str) and key.startswith("ed25519:") else key_id(parse_public_key(key))
        with self.db.write() as conn:
            res = conn.execute(update(T_KEYS).where(and_(T_KEYS.c.key_id == kid, T_KEYS.c.revoked_ns.is_(None)))
                               .values(revoked_ns=self.db.clock.now_ns(), revoked_by=actor))
            if res.rowcount != 1:
                raise RegistryError(f"The key to revoke must be a trusted key id or public key. Got {str(key)[:60]!r} "
                                    f"instead (trusted: {', '.join(sorted(self.trusted_keys())) or 'none'}).")
        return next(k for k in self.keys() if k["key_id"] == kid)

    def keys(self) -> list[dict[str, Any]]:
        """Every key the registry trusts or trusted: id, public key, name, who added and revoked it, when."""
        with self.db.read() as conn:
            rows = conn.execute(select(T_KEYS).order_by(T_KEYS.c.added_ns, T_KEYS.c.key_id)).mappings().all()
        return [{"key_id": r["key_id"], "public_key": r["public_key"], "name": r["name"],
                 "added_at": iso(r["added_ns"]), "added_by": r["added_by"],
                 "revoked_at": iso(r["revoked_ns"]), "revoked_by": r["revoked_by"]} for r in rows]

    def trusted_keys(self) -> dict[str, str]:
        """The keys deploy accepts now: key id → base64 public key."""
        with self.db.read() as conn:
            return trusted_in(conn)

    def signing_key(self, home: str | os.PathLike[str]) -> SigningKey:
        """The signing key of the project home ``home`` (created on first use, see
        :func:`closedloop.runtime.signing.home_key`), trusted by this registry when it was just created or
        when this registry has never trusted a key: a home trusts its own key from the start.
        A key found in an established registry that does not trust it is not trusted silently
        (an admin does it: ``closedloop key trust --home``)."""
        hk = home_key(home)
        if hk is None:  # pragma: no cover - home_key creates
            raise RegistryError(f"No signing key in {home}.")
        if hk.created or not self.keys():
            self.trust_key(hk.key.public_key, name=f"home {Path(home).resolve()}"[:MAX_ACTOR], actor="closedloop")
        return hk.key

    def verdict(self, digest: str, signature: dict[str, Any] | None, where: str,
                allow_unsigned: str | None) -> dict[str, Any]:
        """The ``signature`` check of a bundle with manifest digest ``digest`` and signature
        document ``signature``: passed when a trusted key signed it; else
        :class:`~closedloop.errors.BundleError` — or, with ``allow_unsigned``, a failed check
        marked as allowed."""
        trusted = self.trusted_keys()
        try:
            kid = verify_signature(signature, digest, trusted, where)
        except BundleError as exc:
            if allow_unsigned is None:
                raise
            return {"name": "signature", "passed": False, "detail": exc.detail, "forced": True,
                    "allowed_unsigned": allow_unsigned}
        names = {k["key_id"]: k["name"] for k in self.keys()}
        return {"name": "signature", "passed": True, "detail": f"signed by {kid} ({names.get(kid, '?')})",
                "forced": False}

"""What ``GET /v1/bundles/current`` serves: a bundle's client form (or the kill switch's
document), signed with the project home's key, exported once per bundle.

The served document
-------------------
The signed envelope of ``closedloop bundle export --target js`` (clients/js/README.md), one
line of JSON, the same for a bundle and for the kill switch::

    {"format": "closedloop.client.bundle.signed", "format_version": 1, "payload": "<JSON text>",
     "signature": {"algorithm": "ed25519", "key_id": "ed25519:…", "public_key": "<base64>",
                   "signature": "<base64>"}}

``signature`` is the Ed25519 signature of ``b"closedloop.client.bundle.v1:"`` followed by the
payload's UTF-8 bytes, by the project home's key: a client verifies those bytes against the
public keys it was given *before* it parses the payload.

The payload is the bundle's client form (:func:`export_client_bundle`), or the kill switch's
document (:func:`killswitch_payload`: ``{"format": "closedloop.client.killswitch", "system",
"schema_version", "unit", "bundle_id", "default_action", "why"}`` — decide the system's default action,
propensity 1, until a later check says otherwise).

The client form and its envelope are the JavaScript runtime's export
(:mod:`closedloop.runtime.export_js`, clients/js/README.md); the kill switch's document goes in the
same envelope.

:class:`ClientBundles` caches the served bytes per bundle (its version and content digest):
a bundle is exported and signed once, never per request, and its ETag is the bytes' sha256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from closedloop.errors import BundleError, ClosedLoopError
from closedloop.runtime import export_js
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.signing import SigningKey, key_id, parse_public_key

__all__ = [
    "SIGNED_FORMAT",
    "ClientBundles",
    "Served",
    "export_client_bundle",
    "killswitch_payload",
    "sign_payload",
    "verify_document",
]

#: The ``format`` of a served document (the signed envelope).
SIGNED_FORMAT = export_js.ENVELOPE_FORMAT
#: The ``format`` of the kill switch's payload.
KILLSWITCH_FORMAT = "closedloop.client.killswitch"
_PREFIX = export_js.MESSAGE_PREFIX


def _json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


def export_client_bundle(bundle: Bundle, system: Any, key: SigningKey) -> bytes:
    """The signed envelope of ``bundle``'s client form (see the module doc). Raises
    :class:`~closedloop.errors.BundleError` for a bundle of another system or schema version,
    or one the client form cannot hold (the export's reason, naming the part)."""
    bundle.check_compatible(system)
    return export_js.export_client_bundle(system, bundle, key)


def killswitch_payload(system: Any, production: str) -> str:
    """The kill switch's payload: decide ``system``'s default action (``production``: the
    production bundle's version, which the decisions name as the service's do); for a ranking
    system, show the first ``k`` candidates in input order (``ranking``: k and the reason template)."""
    from closedloop.experience.experiences import Ranking
    from closedloop.experience.ranking import KILLSWITCH_WHY

    if isinstance(system.experience, Ranking):
        return _json({
            "format": KILLSWITCH_FORMAT, "format_version": 1, "system": system.name, "schema_version": system.schema.version,
            "unit": system.unit, "bundle_id": production, "default_action": None,
            "ranking": {"k": system.experience.k, "why": KILLSWITCH_WHY, "candidate_id": system.candidate_id},
        })
    return _json({
        "format": KILLSWITCH_FORMAT, "format_version": 1, "system": system.name, "schema_version": system.schema.version,
        "unit": system.unit, "bundle_id": production, "default_action": system.default_action,
        "why": f"kill switch on → {system.default_action}",
    })


def sign_payload(payload: str, key: SigningKey) -> bytes:
    """``payload`` (JSON text) in the signed envelope, signed by ``key``."""
    return export_js.envelope(payload, key)


def verify_document(document: bytes, trusted: Mapping[str, str] | list[str]) -> str:
    """The payload (JSON text) of a served document whose signature verifies with one of
    ``trusted`` (base64 public keys, or key id → base64 public key);
    :class:`~closedloop.errors.BundleError` (check ``signature``) naming what failed otherwise.
    What the SDK does, in Python."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = {key_id(parse_public_key(k)): k for k in trusted} if isinstance(trusted, list) else dict(trusted)
    try:
        env = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise BundleError("signature", "the document is not JSON (truncated?)") from None
    if not isinstance(env, dict) or env.get("format") != SIGNED_FORMAT or not isinstance(env.get("payload"), str) \
            or not isinstance(env.get("signature"), dict):
        raise BundleError("signature", f"the document must be a {SIGNED_FORMAT!r} envelope with a payload and a signature")
    sig = env["signature"]
    kid = sig.get("key_id")
    if sig.get("algorithm") != "ed25519" or not isinstance(kid, str) or kid not in keys:
        raise BundleError("signature", f"the document is signed by key {str(kid)[:40]!r}, which is not trusted here")
    payload: str = env["payload"]
    try:
        raw = base64.b64decode(str(sig.get("signature")), validate=True)
        Ed25519PublicKey.from_public_bytes(parse_public_key(keys[kid])).verify(raw, _PREFIX + payload.encode("utf-8"))
    except (InvalidSignature, ValueError):
        raise BundleError("signature", f"the signature by key {kid} does not match the payload (forged or corrupted)") from None
    return payload


@dataclass(frozen=True, slots=True)
class Served:
    """A served document and its strong ETag (the quoted sha256 of its bytes)."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Served:
        return cls(body, '"' + hashlib.sha256(body).hexdigest() + '"')


class ClientBundles:
    """The served documents of one service, made once each: per bundle (its version and content
    digest) and per kill-switch document, the ``limit`` most recently used kept. A bundle the
    export refuses is remembered too (its error raised again, not re-exported per request).

    Parameters
    ----------
    system:
        The System served.
    key:
        The project home's signing key.
    limit:
        How many documents are kept.
    """

    def __init__(self, system: Any, key: SigningKey, limit: int = 32) -> None:
        self.system = system
        self.key = key
        self.limit = limit
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str], Served | ClosedLoopError] = OrderedDict()
        self.exports = 0  # how many documents were made (a test reads it)

    def cached(self, bundle: Bundle, killswitch: bool) -> Served | None:
        """The document if it was made already (raises the export's error if it was refused)."""
        k = self._key(bundle, killswitch)
        with self._lock:
            got = self._cache.get(k)
            if got is not None:
                self._cache.move_to_end(k)
        if isinstance(got, ClosedLoopError):
            raise got
        return got

    def get(self, bundle: Bundle, killswitch: bool) -> Served:
        """The document of ``bundle`` (or, with ``killswitch``, of the kill switch while ``bundle``
        is production), made now if it was not yet. Blocking: call it off the event loop."""
        got = self.cached(bundle, killswitch)
        if got is not None:
            return got
        k = self._key(bundle, killswitch)
        made: Served | ClosedLoopError
        try:
            if killswitch:
                made = Served.of(sign_payload(killswitch_payload(self.system, bundle.version), self.key))
            else:
                made = Served.of(export_client_bundle(bundle, self.system, self.key))
        except ClosedLoopError as e:  # refused by the export: remembered, not retried per request
            made = e
        with self._lock:
            self.exports += 1
            self._cache[k] = made
            while len(self._cache) > self.limit:
                self._cache.popitem(last=False)
        if isinstance(made, ClosedLoopError):
            raise made
        return made

    @staticmethod
    def _key(bundle: Bundle, killswitch: bool) -> tuple[str, str, str]:
        return ("killswitch" if killswitch else "bundle", bundle.version, bundle.content_digest)

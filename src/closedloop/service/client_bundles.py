"""What ``GET /v1/bundles/current`` serves: a bundle's client form (or the kill switch's
document), signed with the project home's key, exported once per bundle.

The served document
-------------------
One signed document, the same for a bundle and for the kill switch::

    <signature line: a JSON object, at most 1024 bytes>\\n<payload bytes>

The signature line is ``{"format": "closedloop.client.signed", "version": 1, "algorithm":
"ed25519", "key_id": "ed25519:…", "signature": "<base64>"}`` and ``signature`` is the Ed25519
signature of ``b"closedloop.client.signed.v1:" + payload`` — the payload's exact bytes, so a
client verifies them *before* it parses anything of the payload (the line is small and parsed
first, bounded). The prefix keeps this signature from meaning anything else (a bundle's own
signature signs ``closedloop.runtime.bundle.signature.v1:`` and a manifest digest).

The payload is JSON: the bundle's client form (:func:`export_client_bundle`, with
``bundle_id``, ``system`` and ``schema_version``), or the kill switch's document
(:func:`killswitch_payload`: ``{"format": "closedloop.client.killswitch", "system",
"schema_version", "bundle_id", "default_action"}`` — decide the default action, propensity 1,
until the next check says otherwise).

The client form itself is the JavaScript runtime's (``closedloop bundle export --target js``,
clients/js/README.md). :func:`client_form` is the seam where this module takes it; until the
export is on this branch it builds a stand-in form (the fields every form has, and the
system's actions), which the SDK's tests load with a stand-in runtime.

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
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.signing import SigningKey, key_id, parse_public_key

__all__ = [
    "SIGNED_FORMAT",
    "ClientBundles",
    "Served",
    "client_form",
    "export_client_bundle",
    "killswitch_payload",
    "sign_payload",
    "verify_document",
]

#: The ``format`` of a served document's signature line.
SIGNED_FORMAT = "closedloop.client.signed"
#: The ``format`` of the kill switch's payload.
KILLSWITCH_FORMAT = "closedloop.client.killswitch"
_PREFIX = b"closedloop.client.signed.v1:"
#: The longest signature line a client reads.
MAX_SIGNATURE_LINE = 1024


def client_form(bundle: Bundle, system: Any) -> dict[str, Any]:
    """The client form of ``bundle`` (a JSON-ready mapping) — the seam for the JavaScript
    runtime's export (``closedloop bundle export --target js``). Until it is on this branch, a
    stand-in: the fields every form carries (``bundle_id``, ``system``, ``schema_version``)
    and the system's actions, which only the SDK tests' stand-in runtime loads."""
    return {
        "format": "closedloop.client.bundle.stand-in",
        "version": 1,
        "bundle_id": bundle.version,
        "system": system.name,
        "schema_version": system.schema.version,
        "unit": system.unit,
        "actions": list(system.actions),
        "default_action": system.default_action,
    }


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode()


def export_client_bundle(bundle: Bundle, system: Any, key: SigningKey) -> bytes:
    """The signed document of ``bundle``'s client form (see the module doc). Raises
    :class:`~closedloop.errors.BundleError` for a bundle of another system or schema version,
    or one the client form cannot hold (the export's reason)."""
    bundle.check_compatible(system)
    return sign_payload(_json(client_form(bundle, system)), key)


def killswitch_payload(system: Any, production: str) -> bytes:
    """The kill switch's payload: decide ``system``'s default action (``production``: the
    production bundle's version, which the decisions name as the server's do)."""
    return _json({
        "format": KILLSWITCH_FORMAT, "version": 1, "system": system.name, "schema_version": system.schema.version,
        "bundle_id": production, "default_action": system.default_action,
    })


def sign_payload(payload: bytes, key: SigningKey) -> bytes:
    """``payload`` as a served document: its signature line, a newline, the payload's bytes."""
    line = _json({
        "format": SIGNED_FORMAT, "version": 1, "algorithm": "ed25519", "key_id": key.key_id,
        "signature": base64.b64encode(key.sign_message(_PREFIX + payload)).decode("ascii"),
    })
    return line + b"\n" + payload


def verify_document(document: bytes, trusted: Mapping[str, str] | list[str]) -> bytes:
    """The payload of a served document whose signature verifies with one of ``trusted`` (base64
    public keys, or key id → base64 public key); :class:`~closedloop.errors.BundleError`
    (check ``signature``) naming what failed otherwise. What the SDK does, in Python."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = {key_id(parse_public_key(k)): k for k in trusted} if isinstance(trusted, list) else dict(trusted)
    nl = document.find(b"\n", 0, MAX_SIGNATURE_LINE + 1)
    if nl < 0:
        raise BundleError("signature", f"a served document starts with a signature line of at most {MAX_SIGNATURE_LINE} bytes")
    try:
        line = json.loads(document[:nl])
    except ValueError:
        line = None
    if not isinstance(line, dict) or line.get("format") != SIGNED_FORMAT or line.get("algorithm") != "ed25519":
        raise BundleError("signature", f"the signature line must be a {SIGNED_FORMAT!r} object, algorithm 'ed25519'")
    kid = line.get("key_id")
    if not isinstance(kid, str) or kid not in keys:
        raise BundleError("signature", f"the document is signed by key {str(kid)[:40]!r}, which is not trusted here")
    payload = document[nl + 1:]
    try:
        sig = base64.b64decode(str(line.get("signature")), validate=True)
        Ed25519PublicKey.from_public_bytes(parse_public_key(keys[kid])).verify(sig, _PREFIX + payload)
    except (InvalidSignature, ValueError):
        raise BundleError("signature", f"the signature by key {kid} does not match the document (forged, "
                          "corrupted or truncated)") from None
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

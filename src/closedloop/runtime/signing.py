"""Bundle signatures: who made a bundle, not only whether it is intact.

A bundle's checksums and manifest digest (:mod:`closedloop.runtime.bundle`) catch corruption and edits,
but anyone who can write a bundle can recompute them. A signature says the bundle was made by
the holder of a private key the registry trusts:

* every project home has its own **Ed25519 signing key**, ``<home>/keys/bundle-signing.pem``
  (PKCS#8 PEM, file mode 0600 in a 0700 folder), created the first time something in the home
  saves a bundle (or by ``closedloop init``). Several processes sharing a home share the key: it
  is created once, atomically (the file appears whole or not at all), and the others read it;
* a bundle saved with a key carries ``signature.json`` beside ``manifest.json``: the key's id,
  its public key, and the Ed25519 signature of the manifest's digest (which covers every file's
  sha256, so the signature covers the whole bundle);
* the **registry stores the public keys it trusts** (``closedloop key list | trust | revoke``).
  A home's own key is trusted in the home's registry when the key is created, or the first time
  it is used with a registry that trusts no key yet; any other key (a build machine's, a
  colleague's) is trusted explicitly, by an admin;
* **deploy refuses** a bundle that is unsigned, signed by an unknown or revoked key, or whose
  signature does not match its manifest — checked from ``manifest.json`` and ``signature.json``
  alone, before any other file of the bundle is read or parsed. The opt-out for local
  experiments is explicit and recorded: ``deploy(..., allow_unsigned="reason")``
  (``--allow-unsigned REASON``), written into the deployment's history like a forced check.
  Bundles deployed before signatures existed stay loadable (a rollback to one works and says
  that it is unsigned).

The signed message is ``b"closedloop.runtime.bundle.signature.v1:" + digest`` — the prefix keeps a
signature over a bundle from meaning anything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.base.files import fsync_dir, make_private_dirs
from closedloop.errors import BundleError

__all__ = [
    "KEY_FILE",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_FORMAT",
    "SigningKey",
    "encode_public_key",
    "home_key",
    "key_id",
    "parse_public_key",
    "parse_signature",
    "read_signature",
    "verify_signature",
]

#: Where a project home keeps its signing key, relative to the home.
KEY_FILE = Path("keys") / "bundle-signing.pem"
#: The ``format`` of a ``signature.json`` document.
SIGNATURE_FORMAT = "closedloop.runtime.bundle.signature"
SIGNATURE_FILE = "signature.json"
_MESSAGE_PREFIX = b"closedloop.runtime.bundle.signature.v1:"
#: The largest signature.json read (a signature document is ~400 bytes).
MAX_SIGNATURE_BYTES = 4096
_MAX_KEY_BYTES = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_public_key(raw: bytes) -> str:
    """The base64 text of a raw public key, as ``signature.json`` and the registry store it."""
    return _b64(raw)


def key_id(public_key: bytes) -> str:
    """A key's short id: ``ed25519:`` and the first 16 hex digits of the raw public key's sha256."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def parse_public_key(text: Any) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as base64 (as ``signature.json`` and
    ``closedloop key show`` write it); refused with the rule and the value otherwise."""
    if not isinstance(text, str) or len(text) > 100:
        raise BundleError("signature", f"a public key must be the base64 of 32 bytes. Got {str(text)[:60]!r} instead.")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise BundleError("signature", f"a public key must be the base64 of 32 bytes. Got {text[:60]!r} instead.")
    return raw


def _message(digest: str) -> bytes:
    return _MESSAGE_PREFIX + digest.encode("ascii")


class SigningKey:
    """An Ed25519 private key that signs bundles.

    Build one with :meth:`generate`, :meth:`from_pem`, or :func:`home_key` (a project home's own
    key, created on first use). The private key never leaves this object except through
    :meth:`to_pem`.
    """

    def __init__(self, private_key: Any) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if not isinstance(private_key, Ed25519PrivateKey):
            raise BundleError("signature", f"a signing key must be an Ed25519 private key. Got {type(private_key).__name__}.")
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        self.public_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, where: str = "the key") -> SigningKey:
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise BundleError("signature", f"{where} is not an unencrypted PEM private key ({exc})") from None
        return cls(key)

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def key_id(self) -> str:
        return key_id(self.public_bytes)

    @property
    def public_key(self) -> str:
        """The public key, base64 (what the registry stores and ``signature.json`` carries)."""
        return _b64(self.public_bytes)

    def sign(self, digest: str) -> dict[str, Any]:
        """The ``signature.json`` document for a bundle whose manifest digest is ``digest``."""
        return {
            "format": SIGNATURE_FORMAT,
            "version": 1,
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "public_key": self.public_key,
            "digest": digest,
            "signature": _b64(self._key.sign(_message(digest))),
        }

    def sign_message(self, message: bytes) -> bytes:
        """The raw Ed25519 signature of ``message``. The caller prefixes its own domain (as
        :meth:`sign` does with the bundle's), so that a signature means one thing only."""
        if not isinstance(message, bytes):
            raise BundleError("signature", f"a signed message must be bytes. Got {type(message).__name__} instead.")
        return bytes(self._key.sign(message))

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"


@dataclass(frozen=True)
class HomeKey:
    """A home's signing key and whether this call created it."""

    key: SigningKey
    created: bool
    path: Path


def home_key(home: str | os.PathLike[str], *, create: bool = True) -> HomeKey | None:
    """The signing key of the project home ``home``: read from ``<home>/keys/bundle-signing.pem``,
    or (with ``create``) generated and written there when missing — 0600 in a 0700 folder,
    atomically, so that several processes starting at once end up with one key. ``None`` when
    the key is missing and ``create`` is false."""
    path = Path(home) / KEY_FILE
    if path.is_file():
        return HomeKey(_read_key(path), False, path)
    if not create:
        return None
    folder = path.parent
    make_private_dirs(folder)
    folder.chmod(0o700)  # the key's own folder: owner only, even if it existed
    key = SigningKey.generate()
    fd, tmp = tempfile.mkstemp(prefix=".bundle-signing.", dir=folder)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.to_pem())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: use theirs
        except FileExistsError:
            return HomeKey(_read_key(path), False, path)
    finally:
        os.unlink(tmp)
    fsync_dir(folder)
    return HomeKey(key, True, path)


def _read_key(path: Path) -> SigningKey:
    st = path.lstat()
    if not path.is_file() or path.is_symlink() or st.st_size > _MAX_KEY_BYTES:
        raise BundleError("signature", f"the signing key {path} must be a regular file of at most {_MAX_KEY_BYTES} bytes")
    return SigningKey.from_pem(path.read_bytes(), str(path))



def read_signature(bundle_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``signature.json`` of a bundle directory (parsed, not verified), or ``None`` when the
    bundle has none. A signature file that is not a small regular JSON object is refused."""
    path = Path(bundle_dir) / SIGNATURE_FILE
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    import stat

    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIGNATURE_BYTES:
        raise BundleError("signature", f"{SIGNATURE_FILE} must be a regular file of at most {MAX_SIGNATURE_BYTES} bytes",
                          str(bundle_dir))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_SIGNATURE_BYTES + 1)
    return parse_signature(data, str(bundle_dir))


def parse_signature(data: bytes, where: str) -> dict[str, Any]:
    """The ``signature.json`` document ``data`` holds (parsed, not verified); refused unless it is
    a JSON object of at most :data:`MAX_SIGNATURE_BYTES` bytes. ``where`` names the bundle."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise BundleError("signature", f"{SIGNATURE_FILE} must be a regular file of at most {MAX_SIGNATURE_BYTES} bytes", where)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError("signature", f"{SIGNATURE_FILE} is not valid JSON ({exc})", where) from None
    if not isinstance(doc, dict):
        raise BundleError("signature", f"{SIGNATURE_FILE} must hold a JSON object", where)
    return doc


def verify_signature(signature: Mapping[str, Any] | None, digest: str, trusted: Mapping[str, str],
                     where: str | None = None) -> str:
    """Check that ``signature`` (a ``signature.json`` document) signs the manifest digest
    ``digest`` with a key in ``trusted`` (key id → base64 public key). Returns the key id;
    raises :class:`~closedloop.errors.BundleError` (check ``signature``) naming what failed."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if signature is None:
        raise BundleError("signature", "the bundle is not signed (no signature.json); sign it by saving it in a "
                          "project home, or deploy with an explicit, recorded allow_unsigned reason", where)
    if signature.get("format") != SIGNATURE_FORMAT or signature.get("version") != 1 \
            or signature.get("algorithm") != "ed25519":
        raise BundleError("signature", f"signature.json must be format {SIGNATURE_FORMAT!r} version 1, algorithm "
                          f"'ed25519'. Got {signature.get('format')!r} {signature.get('version')!r} "
                          f"{signature.get('algorithm')!r} instead.", where)
    kid = signature.get("key_id")
    if not isinstance(kid, str) or kid not in trusted:
        known = ", ".join(sorted(trusted)) or "none"
        raise BundleError("signature", f"the bundle is signed by key {str(kid)[:40]!r}, which the registry does not "
                          f"trust (trusted: {known}); an admin can trust it with `closedloop key trust`", where)
    if signature.get("digest") != digest:
        raise BundleError("signature", f"the signature is for manifest digest {str(signature.get('digest'))[:12]}…, "
                          f"the bundle's is {digest[:12]}…", where)
    sig = signature.get("signature")
    try:
        raw_sig = base64.b64decode(sig if isinstance(sig, str) else "", validate=True)
        Ed25519PublicKey.from_public_bytes(parse_public_key(trusted[kid])).verify(raw_sig, _message(digest))
    except (InvalidSignature, binascii.Error, ValueError):
        raise BundleError("signature", f"the signature by key {kid} does not match the bundle's manifest digest "
                          "(forged or corrupted)", where) from None
    return kid

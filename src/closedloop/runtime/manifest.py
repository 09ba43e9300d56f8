"""A bundle's manifest: its format, the canonical JSON its digests are computed over, and the
manifest a new bundle is built with (``manifest.json``'s entries are listed in
:mod:`closedloop.runtime.bundle`'s docstring; reading one back is :mod:`closedloop.runtime.bundle_verify`'s)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ENTRY", "FORMAT", "FORMAT_VERSION", "MANIFEST", "content_digest", "new_manifest"]

FORMAT = "closedloop.runtime.bundle"
FORMAT_VERSION = 1
_SUPPORTED = (1,)
MANIFEST = "manifest.json"
ENTRY = "intelligence.json"
_REQUIRED = (
    "format", "format_version", "system", "version", "created_at", "features", "intelligence",
    "thresholds", "parent", "metrics", "files", "digest",
)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    return _sha256(_canonical({k: v for k, v in manifest.items() if k != "digest"}))


def content_digest(manifest: Mapping[str, Any]) -> str:
    """The digest of a manifest's content (see :attr:`~closedloop.runtime.bundle.Bundle.content_digest`)."""
    keys = ("system", "features", "intelligence", "thresholds", "parent", "files", "guardrails")
    return _sha256(_canonical({k: manifest[k] for k in keys if k in manifest}))


def _trusted_types(spec: Any) -> list[str]:
    """Every ``trusted`` type list of the skops-stored estimators in a saved intelligence tree."""
    found: set[str] = set()
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("kind") == "sklearn" and isinstance(node.get("trusted"), list):
                found.update(t for t in node["trusted"] if isinstance(t, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(found)


def new_manifest(
    system: Any,
    intelligence: Any,
    spec: Any,
    files: Mapping[str, bytes],
    *,
    thresholds: Mapping[str, float] | None,
    guardrails: list[Any],
    parent: str | None,
    metrics: Any,
    version: str | None,
    created_at: _dt.datetime | None,
) -> dict[str, Any]:
    """The manifest of a new bundle: ``intelligence`` saved as ``spec`` with ``files`` (the entry
    included), for ``system``; its version (by default ``<system>-<12 hex of the content
    digest>``) and its digest filled in last."""
    created = created_at or _dt.datetime.now(_dt.UTC)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "system": {"name": system.name, "schema_version": system.schema_version},
        "version": "",
        "created_at": created.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z"),
        "features": {"fingerprint": system.feature_fingerprint, "names": list(system.features.names)},
        "intelligence": {
            "kind": intelligence.kind, "entry": ENTRY, "outputs": list(intelligence.outputs),
            # Types a skops-stored estimator may load: fixed here, in the digest-protected
            # manifest; loading accepts nothing else (see bundle_verify._check_trusted).
            "trusted_types": _trusted_types(spec),
        },
        "thresholds": None if thresholds is None else {k: float(v) for k, v in thresholds.items()},
        "guardrails": guardrails,
        "parent": parent,
        "metrics": metrics,
        "files": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in sorted(files.items())},
    }
    manifest["version"] = version or f"{system.name}-{content_digest(manifest)[:12]}"
    manifest["digest"] = _manifest_digest(manifest)
    return manifest

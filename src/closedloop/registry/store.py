"""Where bundles live: a :class:`BundleStore` interface and the embedded :class:`FileBundleStore`.

Bundles are stored content-addressed: under their version, which by default is derived from
their content (``<system>-<12 hex of the content digest>``, see :mod:`closedloop.runtime.bundle`). Every
load verifies the bundle (each file's sha256 and size, the manifest digest, no unlisted file);
the registry also checks the manifest digest against the one it recorded when the bundle was
registered, so a bundle swapped wholesale in the store (with recomputed checksums) is refused too.
Stored bundles are never overwritten. Storing a bundle whose version and content digest
(:attr:`~closedloop.Bundle.content_digest`: everything but when it was built and its metrics) match
a stored one is a no-op — a plan's heuristic rebuilt by another process is the stored bundle; a
different content under a stored version is refused.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from closedloop.errors import BundleError, RegistryError
from closedloop.runtime.bundle import Bundle, read_header

__all__ = ["BundleStore", "FileBundleStore"]


class BundleStore(ABC):
    """Stores immutable bundles by version and loads them verified."""

    @abstractmethod
    def put(self, bundle: Bundle) -> None:
        """Store ``bundle`` under its version (a no-op when that exact bundle is stored already;
        a different bundle under the same version is refused)."""

    @abstractmethod
    def load(self, version: str, system: Any = None) -> Bundle:
        """The bundle stored under ``version``, verified (and checked against ``system``)."""

    def header(self, version: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The stored bundle's manifest (digest verified) and signature document (or None),
        ideally without reading its other files (see :func:`closedloop.runtime.bundle.read_header`)."""
        b = self.load(version)
        return b.manifest, b.signature

    @abstractmethod
    def exists(self, version: str) -> bool:
        """Whether something is stored under ``version``."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is (for messages and status)."""


def _check_version(version: Any) -> str:
    if not isinstance(version, str) or not version or "/" in version or version.startswith(".") or "\x00" in version:
        raise RegistryError(f"A bundle version must be a non-empty name without '/'. Got {version!r} instead.")
    return version


class FileBundleStore(BundleStore):
    """Bundles as directories under ``root`` (the project home's ``bundles/``): ``root/<version>/``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, version: str) -> Path:
        return self.root / _check_version(version)

    def exists(self, version: str) -> bool:
        return self.path(version).exists()

    def put(self, bundle: Bundle) -> None:
        target = self.path(bundle.version)
        if target.exists():
            try:
                stored = Bundle.load(target)
            except BundleError as exc:
                raise RegistryError(
                    f"The store already holds something under version {bundle.version!r} at {target} and it "
                    f"fails verification ({exc}); it is never overwritten: remove it by hand after inspection."
                ) from exc
            if stored.content_digest != bundle.content_digest:  # the same content built again later: the same
                raise RegistryError(
                    f"The store already holds a different bundle under version {bundle.version!r} (manifest "
                    f"digest {stored.manifest['digest'][:12]}…, this one {bundle.manifest['digest'][:12]}…); "
                    "bundles are immutable: build it under another version."
                )
            return
        try:
            bundle.save(target)
        except BundleError:
            if target.exists():  # saved meanwhile by another process: check it is the same bundle
                self.put(bundle)
                return
            raise

    def load(self, version: str, system: Any = None) -> Bundle:
        return Bundle.load(self.path(version), system)

    def header(self, version: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return read_header(self.path(version))

    def describe(self) -> str:
        return str(self.root)

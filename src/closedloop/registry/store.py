"""Where bundles live: a :class:`BundleStore` interface, the embedded :class:`FileBundleStore`, and
:class:`CachedBundleStore`, a host's files in front of a store every host shares (the registry's
database: :mod:`closedloop.registry.store_db`).

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from closedloop.errors import BundleError, RegistryError
from closedloop.runtime.bundle import Bundle, content_digest, read_header, verify_bytes, write_files

__all__ = ["BundleStore", "CachedBundleStore", "FileBundleStore"]


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

    def files(self, version: str) -> dict[str, bytes]:
        """Every file of the bundle stored under ``version`` (relative path → bytes, the manifest
        and signature included), verified: what another store writes to hold the same bundle."""
        return self.load(version).file_bytes()

    def share(self, version: str) -> bool:
        """Make the bundle stored under ``version`` reachable from every host that shares this
        store; whether something was uploaded (only :class:`CachedBundleStore` uploads)."""
        return False


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
        self._put(bundle.version, bundle.content_digest, str(bundle.manifest["digest"]), bundle.save)

    def put_files(self, version: str, files: Mapping[str, bytes]) -> None:
        """Store the bundle ``files`` hold (relative path → bytes, as :meth:`BundleStore.files`
        gives them) under ``version``, byte for byte — verified first (every check but the
        intelligence's parsing), and refused unless its manifest names ``version`` — as
        :meth:`put` stores a bundle: atomically, idempotent by content, never overwriting."""
        where = f"the bundle {version!r} to store in {self.root}"
        manifest, _ = verify_bytes(files, where)
        if manifest["version"] != version:
            raise BundleError("manifest", f"the manifest names version {manifest['version']!r}, not {version!r}", where)
        self._put(version, content_digest(manifest), str(manifest["digest"]), lambda target: write_files(target, files))

    def _put(self, version: str, content: str, digest: str, write: Callable[[Path], Any]) -> None:
        """Write a bundle with ``write`` (to a temporary sibling renamed into place) unless the
        store holds it; what it holds under ``version`` must then be the same content."""
        target = self.path(version)
        if not target.exists():
            try:
                write(target)
                return
            except (BundleError, OSError):
                if not target.exists():
                    raise
                # saved meanwhile by another process (the rename lost): check it is the same bundle
        try:
            stored = Bundle.load(target)
        except BundleError as exc:
            raise RegistryError(
                f"The store already holds something under version {version!r} at {target} and it "
                f"fails verification ({exc}); it is never overwritten: remove it by hand after inspection."
            ) from exc
        if stored.content_digest != content:  # the same content built again later: the same
            raise RegistryError(
                f"The store already holds a different bundle under version {version!r} (manifest "
                f"digest {stored.manifest['digest'][:12]}…, this one {digest[:12]}…); "
                "bundles are immutable: build it under another version."
            )

    def load(self, version: str, system: Any = None) -> Bundle:
        return Bundle.load(self.path(version), system)

    def header(self, version: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return read_header(self.path(version))

    def describe(self) -> str:
        return str(self.root)


class CachedBundleStore(BundleStore):
    """A host's read-through cache of a shared store: ``local`` (the home's
    :class:`FileBundleStore`) in front of ``shared`` (e.g. the registry database's
    :class:`~closedloop.registry.store_db.DatabaseBundleStore`, which every host reaches).

    :meth:`put` stores a bundle in both (the shared store first: it is the authority). :meth:`load`
    and :meth:`header` use the local copy when there is one; else the bundle's files are fetched
    from the shared store, verified, and written into the local store atomically (a temporary
    directory renamed into place: two workers of one host fetching at once both end up with the one
    copy), then read from there as any local bundle is. :meth:`share` uploads a bundle that only
    the local store holds (one stored before the shared store existed)."""

    def __init__(self, local: FileBundleStore, shared: BundleStore) -> None:
        if not isinstance(local, FileBundleStore):
            raise RegistryError(f"The 'local' parameter of CachedBundleStore must be a FileBundleStore. Got {local!r} instead.")
        if not isinstance(shared, BundleStore) or isinstance(shared, CachedBundleStore):
            raise RegistryError(f"The 'shared' parameter of CachedBundleStore must be a BundleStore (not a cache). Got {shared!r} instead.")
        self.local = local
        self.shared = shared

    def put(self, bundle: Bundle) -> None:
        self.shared.put(bundle)
        self.local.put(bundle)

    def exists(self, version: str) -> bool:
        return self.local.exists(version) or self.shared.exists(version)

    def fetch(self, version: str) -> bool:
        """Copy the bundle ``version`` from the shared store into the local one unless it is there
        already; whether it was fetched."""
        if self.local.exists(version):
            return False
        self.local.put_files(version, self.shared.files(version))
        return True

    def load(self, version: str, system: Any = None) -> Bundle:
        self.fetch(version)
        return self.local.load(version, system)

    def header(self, version: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        self.fetch(version)
        return self.local.header(version)

    def share(self, version: str) -> bool:
        if not self.local.exists(version) or self.shared.exists(version):
            return False
        self.shared.put(self.local.load(version))
        return True

    def describe(self) -> str:
        return f"{self.local.describe()} (a cache of {self.shared.describe()})"

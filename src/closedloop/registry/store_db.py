"""Bundles kept in the registry's database, so that every host sharing the registry reaches them.

:class:`DatabaseBundleStore` stores a bundle's files in the ``bundle_files`` table (see
:mod:`closedloop.registry.models`): one row per file — ``manifest.json`` and ``signature.json``
included, the bytes exactly as :meth:`~closedloop.Bundle.save` writes them — and per part of it
(a file over :data:`PART_BYTES` is cut in parts, so no row holds more than 4 MiB), each row
with the whole file's sha256 and size. A bundle's rows are inserted in one transaction: a bundle
is stored whole or not at all.

It keeps :class:`~closedloop.registry.store.FileBundleStore`'s rules: storing the same version
with the same content digest again is a no-op, a different content under a stored version is
refused, nothing stored is overwritten. Reading never parses before verifying, and never runs
code (JSON and the intelligence kinds only, as from files): each file's parts are put together
and checked against the row's size and sha256, then the whole bundle goes through the checks a
bundle directory goes through (:func:`~closedloop.runtime.bundle_verify.verify_bytes`: the
manifest's format and digest, no unlisted file, every listed file's size and sha256), and the
manifest must name the version it is stored under. The registry then checks the manifest digest
against the one it recorded (:meth:`~closedloop.registry.catalog.Catalog.load_bundle`). Errors
name the file and the check (:class:`~closedloop.errors.BundleError`).

:func:`default_bundle_store` is the store a :class:`~closedloop.registry.Registry` uses when given
a directory: with a PostgreSQL registry (hosts share it) a
:class:`~closedloop.registry.store.CachedBundleStore` — the home's files in front of this store —
else the home's :class:`~closedloop.registry.store.FileBundleStore` alone, as before.
"""

from __future__ import annotations

import hashlib
import os
from itertools import groupby
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from closedloop.errors import BundleError, RegistryError
from closedloop.registry.db import Database
from closedloop.registry.models import bundle_files as T_FILES
from closedloop.registry.store import BundleStore, CachedBundleStore, FileBundleStore, _check_version
from closedloop.runtime.bundle import Bundle, content_digest, verify_bytes
from closedloop.runtime.bundle_verify import SIGNATURE, read_header_bytes
from closedloop.runtime.manifest import MANIFEST

__all__ = ["PART_BYTES", "DatabaseBundleStore", "default_bundle_store"]

#: The most bytes one ``bundle_files`` row holds: a larger file is stored in several parts.
PART_BYTES = 4 * 1024 * 1024
#: The longest file path a bundle stored in the database may hold (the column's width).
MAX_PATH = 1000


class DatabaseBundleStore(BundleStore):
    """Bundles in the registry's database ``db`` (a :class:`~closedloop.registry.db.Database`,
    opened by the registry), table ``bundle_files``."""

    def __init__(self, db: Database) -> None:
        if not isinstance(db, Database):
            raise RegistryError(f"The 'db' parameter of DatabaseBundleStore must be a closedloop.registry.db.Database. Got {db!r} instead.")
        self.db = db

    def describe(self) -> str:
        return f"the registry database {self.db.safe_url()} (table bundle_files)"

    def _where(self, version: str) -> str:
        return f"bundle {version!r} in the registry database"

    def exists(self, version: str) -> bool:
        version = _check_version(version)
        with self.db.read() as conn:
            return conn.execute(select(T_FILES.c.version).where(T_FILES.c.version == version).limit(1)).first() is not None

    # -- reading -----------------------------------------------------------------------------------
    def _rows(self, version: str, paths: tuple[str, ...] | None = None) -> dict[str, bytes]:
        """The stored files of ``version`` (only ``paths`` when given), each put together from its
        parts and checked against its rows' size and sha256. A version with no rows is refused."""
        version = _check_version(version)
        where = self._where(version)
        q = select(T_FILES.c.path, T_FILES.c.part, T_FILES.c.sha256, T_FILES.c.size, T_FILES.c.data).where(
            T_FILES.c.version == version)
        if paths is not None:
            q = q.where(T_FILES.c.path.in_(paths))
        with self.db.read(snapshot=True) as conn:
            if paths is not None and conn.execute(select(T_FILES.c.version).where(T_FILES.c.version == version).limit(1)).first() is None:
                raise BundleError("path", "no bundle is stored under this version", where)
            rows = conn.execute(q.order_by(T_FILES.c.path, T_FILES.c.part)).all()
        if not rows and paths is None:
            raise BundleError("path", "no bundle is stored under this version", where)
        return {path: _join(path, list(parts), where) for path, parts in groupby(rows, key=lambda r: r[0])}

    def files(self, version: str) -> dict[str, bytes]:
        """Every stored file of ``version``, verified (each file's rows, then the bundle as a whole),
        without parsing the intelligence: what :class:`~closedloop.registry.store.CachedBundleStore`
        writes into a host's files."""
        files = self._rows(version)
        manifest, _ = verify_bytes(files, self._where(version))
        self._check_named(manifest, version)
        return files

    def load(self, version: str, system: Any = None) -> Bundle:
        bundle = Bundle.from_bytes(self._rows(version), system, where=self._where(version))
        self._check_named(bundle.manifest, version)
        return bundle

    def header(self, version: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        manifest, sig = read_header_bytes(self._rows(version, (MANIFEST, SIGNATURE)), self._where(version))
        self._check_named(manifest, version)
        return manifest, sig

    def _check_named(self, manifest: dict[str, Any], version: str) -> None:
        if manifest["version"] != version:
            raise BundleError("manifest", f"the manifest names version {manifest['version']!r}, not the version it is "
                              "stored under", self._where(version))

    # -- writing -----------------------------------------------------------------------------------
    def put(self, bundle: Bundle) -> None:
        version = _check_version(bundle.version)
        files = bundle.file_bytes()
        manifest, _ = verify_bytes(files, f"bundle {version!r} to store in the registry database")
        too_long = [p for p in files if len(p) > MAX_PATH]
        if too_long:
            raise RegistryError(f"A bundle stored in the registry database holds file paths of at most {MAX_PATH} "
                                f"characters. Got {too_long[0][:80]!r}… ({len(too_long[0])} characters) instead.")
        digest = content_digest(manifest)
        for _ in range(3):
            if self._holds(version, digest, str(manifest["digest"])):
                return
            try:
                with self.db.write() as conn:
                    if conn.execute(select(T_FILES.c.version).where(T_FILES.c.version == version).limit(1)).first() is None:
                        _insert(conn, version, files)
                        return
            except IntegrityError:
                pass  # stored meanwhile by another process: compare with it
        raise RegistryError(f"Bundle {version!r} could not be stored in {self.describe()}.")  # pragma: no cover

    def _holds(self, version: str, digest: str, manifest_digest: str) -> bool:
        """Whether the bundle with content ``digest`` is stored under ``version`` (False: nothing
        is); something else stored there, or something that fails verification, is refused."""
        if not self.exists(version):
            return False
        try:
            stored, _ = verify_bytes(self._rows(version), self._where(version))
        except BundleError as exc:
            raise RegistryError(
                f"{self.describe()} already holds something under version {version!r} and it fails verification "
                f"({exc}); it is never overwritten: remove its rows by hand after inspection."
            ) from exc
        if content_digest(stored) != digest:
            raise RegistryError(
                f"{self.describe()} already holds a different bundle under version {version!r} (manifest digest "
                f"{stored['digest'][:12]}…, this one {manifest_digest[:12]}…); bundles are immutable: build it under "
                "another version."
            )
        return True


def _insert(conn: Connection, version: str, files: dict[str, bytes]) -> None:
    """One row per part of each file, in the caller's transaction."""
    rows = []
    for path, data in sorted(files.items()):
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
        view = memoryview(data)
        for part, start in enumerate(range(0, max(size, 1), PART_BYTES)):
            rows.append({"version": version, "path": path, "part": part, "sha256": sha, "size": size,
                         "data": bytes(view[start:start + PART_BYTES])})
    conn.execute(insert(T_FILES), rows)


def _join(path: str, parts: list[Any], where: str) -> bytes:
    """A file put together from its rows ``(path, part, sha256, size, data)`` in part order,
    checked: the parts numbered 0, 1, … and agreeing on the file's sha256 and size, the bytes of
    that size and that sha256."""
    sha, size = parts[0][2], parts[0][3]
    if [p[1] for p in parts] != list(range(len(parts))) or any(p[2] != sha or p[3] != size for p in parts):
        raise BundleError("file_size", f"{path!r} is stored in parts that are not numbered 0, 1, … or disagree on "
                          "the file's size and sha256", where)
    data = b"".join(bytes(p[4]) for p in parts)
    if len(data) != size:
        raise BundleError("file_size", f"{path!r} has {len(data)} bytes in the database, its row says {size} (altered)", where)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        raise BundleError("checksum", f"{path!r} has sha256 {actual[:16]}… in the database, its row says {sha[:16]}… "
                          "(altered)", where)
    return data


def default_bundle_store(db: Database, bundles: str | os.PathLike[str]) -> BundleStore:
    """The store of a registry given the bundle directory ``bundles`` (a project home's
    ``bundles/``): with a PostgreSQL registry — which several hosts share — a
    :class:`~closedloop.registry.store.CachedBundleStore` of that directory in front of a
    :class:`DatabaseBundleStore` on ``db``; else (SQLite: one host) the directory alone."""
    local = FileBundleStore(bundles)
    try:
        postgres = make_url(db.url).get_backend_name() == "postgresql"
    except ArgumentError:
        postgres = False  # refused with its reason when the registry opens
    return CachedBundleStore(local, DatabaseBundleStore(db)) if postgres else local

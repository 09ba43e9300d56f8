"""Reading a bundle from disk, verified: every check :meth:`~closedloop.runtime.bundle.Bundle.load`
makes before anything a bundle holds is parsed, in one place (the table of named checks is in
:mod:`closedloop.runtime.bundle`'s docstring).

In the order they run: the directory is opened once (:func:`_open_root`) and every later open
is relative to it; the tree is walked by ``lstat`` without following links (:func:`_walk`:
links, FIFOs, sockets and devices refused; at most :data:`MAX_ENTRIES` entries); the manifest is
read within :data:`MAX_MANIFEST_BYTES`, parsed, and its format, required entries and digest
checked (:func:`_read_manifest`); its file listing is checked (:func:`_check_listing`: plain
paths, sizes, at most :data:`MAX_BUNDLE_BYTES` in all); nothing unlisted may lie beside the
listed files (:func:`_check_unlisted`) but ``signature.json`` within its bound
(:func:`_check_signature_size`); and each listed file is read at most its size + 1 bytes and
its sha256 compared (:func:`_read_listed`). :func:`_check_trusted` then refuses a saved
estimator that trusts types the manifest does not list. :func:`read_header` reads the manifest
and the signature alone. :func:`verify_bytes` makes the same checks on a bundle held in memory
(a bundle read from the registry's database, :mod:`closedloop.registry.store_db`).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from closedloop.errors import BundleError, IntelligenceError
from closedloop.runtime.manifest import _REQUIRED, _SUPPORTED, FORMAT, MANIFEST, _manifest_digest, _sha256, _trusted_types
from closedloop.runtime.signing import MAX_SIGNATURE_BYTES, SIGNATURE_FILE, parse_signature, read_signature

__all__ = ["MAX_BUNDLE_BYTES", "MAX_ENTRIES", "MAX_MANIFEST_BYTES", "SIGNATURE", "read_header", "read_header_bytes", "verify_bytes"]

#: The largest manifest.json read (a bundle's manifest is a few kB; this bounds a hostile one).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: The one file a bundle may hold beside the manifest without listing it (closedloop.runtime.signing).
SIGNATURE = SIGNATURE_FILE
#: The most bytes a bundle's listed files may declare in all (each is read at most its size + 1).
MAX_BUNDLE_BYTES = 2 * 1024**3
#: The most directory entries (files and folders) a bundle may hold.
MAX_ENTRIES = 10_000
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _check_trusted(spec: Any, allowed: Any) -> None:
    """Refuse a saved intelligence whose skops-stored estimators trust a type the manifest's
    ``intelligence.trusted_types`` (fixed when the bundle was built) does not list."""
    extra = sorted(set(_trusted_types(spec)) - set(allowed if isinstance(allowed, list) else []))
    if extra:
        raise IntelligenceError(
            f"The saved estimator trusts types the manifest does not list: {extra}. Only the manifest's "
            "trusted_types may be loaded."
        )


def _open_root(root: str | os.PathLike[str], where: str) -> int:
    """A descriptor on the bundle directory: every file of the bundle is then opened relative
    to it, so nothing inside can be swapped for a link between a check and a read."""
    try:
        return os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError:
        raise BundleError("path", "not a directory", where) from None


def _verify_files(root: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every listed file's bytes, verified (see the module docstring's table).
    Nothing is followed or opened before ``lstat`` says it is a regular file, every read is
    bounded, and the directory is opened once: every later open is relative to it."""
    where = str(root)
    root_fd = _open_root(root, where)
    try:
        return _verify_open(root_fd, where)
    finally:
        os.close(root_fd)


def _verify_open(root_fd: int, where: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """:func:`_verify_files` on the opened directory, stage by stage (see the module docstring)."""
    found, dirs = _walk(root_fd, where)
    if MANIFEST not in found:
        if MANIFEST in dirs:
            raise BundleError("file_type", f"{MANIFEST} is a directory, not a regular file", where)
        raise BundleError("manifest", f"{MANIFEST} is missing", where)
    manifest = _read_manifest(root_fd, found[MANIFEST], where)
    listed = _check_listing(manifest, where)
    _check_unlisted(found, dirs, listed, where)
    _check_signature_size(root_fd, found, where)
    return manifest, _read_listed(root_fd, found, listed, where)


def _check_listing(manifest: dict[str, Any], where: str) -> dict[str, Any]:
    """The manifest's ``files``, checked: a non-empty listing holding the intelligence entry, each
    name a plain path inside the bundle with a sha256 and a size, at most :data:`MAX_BUNDLE_BYTES` in all."""
    listed = manifest["files"]
    if not isinstance(listed, dict) or not listed:
        raise BundleError("manifest", "'files' must list the bundle's files", where)
    try:
        entry = manifest["intelligence"]["entry"]
        _ = manifest["system"]["name"], manifest["system"]["schema_version"], manifest["features"]["fingerprint"]
    except (KeyError, TypeError) as exc:
        raise BundleError("manifest", f"{MANIFEST} has a malformed entry ({exc})", where) from exc
    if entry not in listed:
        raise BundleError("manifest", f"the intelligence entry {entry!r} is not a listed file", where)
    total = 0
    for name, meta in listed.items():
        if not _plain(name):
            raise BundleError("file_path", f"listed file {name!r} is not a plain path inside the bundle", where)
        if (
            not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or type(meta.get("size")) is not int
            or meta["size"] < 0
        ):
            raise BundleError("manifest", f"file entry {name!r} must have 'sha256' and a 'size' ≥ 0", where)
        total += meta["size"]
    if total > MAX_BUNDLE_BYTES:
        raise BundleError("size_limit", f"the listed files declare {total} bytes; a bundle holds at most {MAX_BUNDLE_BYTES}", where)
    return listed


def _check_unlisted(found: dict[str, int], dirs: set[str], listed: dict[str, Any], where: str) -> None:
    """Refuse anything the manifest does not list: a file, a directory no listed file lies in, or
    anything beside ``signature.json``."""
    parents = {name.rsplit("/", 1)[0] for name in listed if "/" in name}
    parents |= {p.rsplit("/", i)[0] for p in list(parents) for i in range(1, p.count("/") + 1)}
    for rel in sorted(found):
        if rel not in listed and rel not in (MANIFEST, SIGNATURE):
            raise BundleError("unlisted_file", f"{rel!r} is in the bundle but not in the manifest", where)
    for rel in sorted(dirs):
        if rel not in parents:
            kind = "file_type" if rel in listed or rel in (MANIFEST, SIGNATURE) else "unlisted_file"
            raise BundleError(kind, f"{rel!r} is a directory the manifest does not list", where)


def _check_signature_size(root_fd: int, found: dict[str, int], where: str) -> None:
    """Refuse a ``signature.json`` over :data:`~closedloop.runtime.signing.MAX_SIGNATURE_BYTES`
    (by lstat, then by a bounded read)."""
    if SIGNATURE in found:  # written by closedloop.runtime.signing beside the manifest; parsed there, not here
        if found[SIGNATURE] > MAX_SIGNATURE_BYTES or len(_read(root_fd, SIGNATURE, MAX_SIGNATURE_BYTES, where)) > MAX_SIGNATURE_BYTES:
            raise BundleError("size_limit", f"{SIGNATURE} holds at most {MAX_SIGNATURE_BYTES} bytes", where)


def _read_listed(root_fd: int, found: dict[str, int], listed: dict[str, Any], where: str) -> dict[str, bytes]:
    """Every listed file's bytes, in name order: present, of its listed size (by lstat, then by a
    read bounded to that size + 1), and of its listed sha256."""
    files: dict[str, bytes] = {}
    for name, meta in sorted(listed.items()):
        size = meta["size"]
        if name not in found:
            raise BundleError("file_present", f"listed file {name!r} is missing", where)
        if found[name] != size:  # by lstat: a huge or sparse file is refused without reading it
            raise BundleError(
                "file_size", f"{name!r} has {found[name]} bytes, the manifest says {size} (truncated or altered)", where
            )
        data = _read(root_fd, name, size, where)
        if len(data) != size:
            raise BundleError("file_size", f"{name!r} has {len(data)}+ bytes, the manifest says {size} (altered)", where)
        files[name] = _check_file(name, meta, data, where)
    return files


def _check_file(name: str, meta: dict[str, Any], data: bytes, where: str) -> bytes:
    """``data``, the bytes of the listed file ``name``, checked against its manifest entry: its size, then its sha256."""
    if len(data) != meta["size"]:
        raise BundleError("file_size", f"{name!r} has {len(data)} bytes, the manifest says {meta['size']} (truncated or altered)", where)
    actual = _sha256(data)
    if actual != meta["sha256"]:
        raise BundleError("checksum", f"{name!r} has sha256 {actual[:16]}…, the manifest says {meta['sha256'][:16]}…", where)
    return data


def verify_bytes(files: Mapping[str, bytes], where: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every listed file's bytes of a bundle held in memory (``files``: relative
    path → bytes, ``manifest.json`` and ``signature.json`` included), verified with the checks
    :func:`_verify_files` makes on a directory — size limits, the manifest's format and digest, its
    listing, nothing unlisted, each file's size and sha256 — before anything is parsed but the manifest."""
    if len(files) > MAX_ENTRIES:
        raise BundleError("size_limit", f"the bundle holds more than {MAX_ENTRIES} entries", where)
    manifest, _ = read_header_bytes({MANIFEST: files[MANIFEST]} if MANIFEST in files else {}, where)
    listed = _check_listing(manifest, where)
    for rel in sorted(files):
        if rel not in listed and rel not in (MANIFEST, SIGNATURE):
            raise BundleError("unlisted_file", f"{rel!r} is in the bundle but not in the manifest", where)
    if len(files.get(SIGNATURE, b"")) > MAX_SIGNATURE_BYTES:
        raise BundleError("size_limit", f"{SIGNATURE} holds at most {MAX_SIGNATURE_BYTES} bytes", where)
    out: dict[str, bytes] = {}
    for name, meta in sorted(listed.items()):
        if name not in files:
            raise BundleError("file_present", f"listed file {name!r} is missing", where)
        out[name] = _check_file(name, meta, files[name], where)
    return manifest, out


def _plain(name: Any) -> bool:
    """A relative path of plain components: no '', '.', '..', NUL, absolute or reserved name."""
    return (
        isinstance(name, str) and name not in (MANIFEST, SIGNATURE) and "\x00" not in name and "\\" not in name
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _walk(root_fd: int, where: str) -> tuple[dict[str, int], set[str]]:
    """Every regular file (relative path → size) and directory of the bundle, by ``lstat``:
    no link is followed. A symbolic link (to a file, a directory, or itself) or anything but a
    regular file or a directory is refused, as are more than :data:`MAX_ENTRIES` entries."""
    found: dict[str, int] = {}
    dirs: set[str] = set()
    stack = [""]
    count = 0
    while stack:
        rel = stack.pop()
        fd = _open_dir(root_fd, rel, where) if rel else root_fd
        try:
            with os.scandir(fd) as entries:
                for e in entries:
                    count += 1
                    if count > MAX_ENTRIES:
                        raise BundleError("size_limit", f"the bundle holds more than {MAX_ENTRIES} entries", where)
                    path = f"{rel}/{e.name}" if rel else e.name
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise BundleError("symlink", f"{path!r} is a symbolic link; a bundle holds no links", where)
                    if stat.S_ISDIR(st.st_mode):
                        dirs.add(path)
                        stack.append(path)
                    elif stat.S_ISREG(st.st_mode):
                        found[path] = st.st_size
                    else:
                        raise BundleError("file_type", f"{path!r} is {_kind(st.st_mode)}; a bundle holds regular files", where)
        finally:
            if rel:
                os.close(fd)
    return found, dirs


def _open_dir(root_fd: int, rel: str, where: str) -> int:
    """A directory below the bundle, opened component by component without following links."""
    fd = root_fd
    try:
        for part in rel.split("/"):
            nfd = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = nfd
    except OSError as exc:
        if fd != root_fd:
            os.close(fd)
        raise _open_error(rel, exc, where) from None
    return fd


def _open_error(rel: str, exc: OSError, where: str) -> BundleError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return BundleError("symlink", f"{rel!r} is (or lies behind) a symbolic link; a bundle holds no links", where)
    if exc.errno == errno.ENOENT:
        return BundleError("file_present", f"listed file {rel!r} is missing", where)
    return BundleError("file_present", f"{rel!r} cannot be opened ({exc.strerror})", where)


def _read_manifest(root_fd: int, size: int, where: str) -> dict[str, Any]:
    """The bundle's manifest (``size`` bytes by lstat): read within bounds, parsed, its format
    and required entries checked and its digest verified."""
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            "size_limit", f"{MANIFEST} has {size} bytes; a manifest holds at most {MAX_MANIFEST_BYTES}", where
        )
    raw = _read(root_fd, MANIFEST, MAX_MANIFEST_BYTES, where)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError("size_limit", f"{MANIFEST} grew beyond {MAX_MANIFEST_BYTES} bytes while read", where)
    return _parse_manifest(raw, where)


def _parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """The manifest ``raw`` holds, parsed: a JSON object of a format this package reads, with
    every required entry and a digest that matches."""
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError("manifest", f"{MANIFEST} is not valid JSON ({exc})", where) from exc
    if not isinstance(manifest, dict):
        raise BundleError("manifest", f"{MANIFEST} must hold a JSON object", where)
    if manifest.get("format") != FORMAT or manifest.get("format_version") not in _SUPPORTED:
        raise BundleError(
            "format_version",
            f"format {manifest.get('format')!r} version {manifest.get('format_version')!r} is not one this "
            f"package reads ({FORMAT!r} versions {list(_SUPPORTED)})",
            where,
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BundleError("manifest", f"{MANIFEST} lacks {missing}", where)
    try:
        digest = _manifest_digest(manifest)
    except (TypeError, ValueError) as exc:
        raise BundleError("manifest", f"{MANIFEST} holds values that are not canonical JSON ({exc})", where) from exc
    if digest != manifest["digest"]:
        raise BundleError("manifest_digest", "the manifest was changed after the bundle was written", where)
    return manifest


def _read(root_fd: int, rel: str, limit: int, where: str) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``rel``: opened without following links
    and without blocking (a FIFO swapped in never blocks), and checked to be a regular file."""
    head, _, base = rel.rpartition("/")
    parent = _open_dir(root_fd, head, where) if head else root_fd
    try:
        fd = os.open(base, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=parent)
    except OSError as exc:
        raise _open_error(rel, exc, where) from None
    finally:
        if head:
            os.close(parent)
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError("file_type", f"{rel!r} is {_kind(mode)}; a bundle holds regular files", where)
        return fh.read(limit + 1)


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A bundle's manifest (checked as :meth:`Bundle.load` checks it, digest included) and its
    ``signature.json`` (parsed, or None) — read without opening any other file of the bundle, so
    that a signature can be checked before anything the bundle holds is parsed
    (:meth:`closedloop.registry.Registry.deploy`)."""
    where = str(path)
    root_fd = _open_root(path, where)
    try:
        try:
            st = os.stat(MANIFEST, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise BundleError("manifest", f"{MANIFEST} is missing", where) from None
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("file_type", f"{MANIFEST} is {_kind(st.st_mode)}; a bundle holds regular files", where)
        manifest = _read_manifest(root_fd, st.st_size, where)
    finally:
        os.close(root_fd)
    return manifest, read_signature(path)


def read_header_bytes(files: Mapping[str, bytes], where: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """:func:`read_header` of a bundle held in memory: the manifest of ``files`` (checked as
    :func:`read_header` checks it, digest included) and its ``signature.json`` (parsed, or None);
    no other file is looked at."""
    raw = files.get(MANIFEST)
    if raw is None:
        raise BundleError("manifest", f"{MANIFEST} is missing", where)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError("size_limit", f"{MANIFEST} has {len(raw)} bytes; a manifest holds at most {MAX_MANIFEST_BYTES}", where)
    sig = files.get(SIGNATURE)
    return _parse_manifest(raw, where), None if sig is None else parse_signature(sig, where)

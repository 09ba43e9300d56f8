"""Bundles: intelligence packaged as an immutable, versioned, checksummed directory.

Layout::

    <bundle>/
      manifest.json        what the bundle is, for which system and features, and every file's sha256
      intelligence.json    the intelligence's parameters (JSON; never pickle)
      …                    further files an intelligence kind writes (e.g. a LightGBM text model)

``manifest.json`` holds: the bundle format and its version, the system's name and schema version,
the bundle version, the time it was created, the feature-definition fingerprint and names, the
intelligence kind and outputs, the thresholds the bundle carries, its parent bundle, free-form
metrics, each file's sha256 and size, and ``digest`` — the sha256 of the manifest's own canonical
JSON without ``digest`` (so an edited threshold is caught too). The default bundle version is
``<system>-<first 12 hex of the content digest>``: the same intelligence, features and thresholds
always get the same version.

Loading never executes code: JSON is parsed, the intelligence ``kind`` must be one of the kinds
passed in (by default :data:`closedloop.intelligence.KINDS`), and files are hashed before they
are parsed, from the very bytes that are hashed. Estimators stored with skops load only if every
type and function their skops file names — read from the file's own schema before skops reads or
imports anything — is on the exact allow-list
:data:`closedloop.intelligence.sklearn.TRUSTED_TYPES` (no module prefix is trusted) *and* in the
manifest's ``intelligence.trusted_types`` (derived when the bundle was built).

Reading is bounded and follows nothing: the directory is walked by ``lstat`` without following
links, and a symbolic link anywhere in it (to a file, a directory, or itself) is refused, as is
anything but regular files and directories (a FIFO is never opened, so loading never blocks);
``manifest.json`` is at most :data:`MAX_MANIFEST_BYTES` (4 MiB, checked before it is read), the
listed files declare at most :data:`MAX_BUNDLE_BYTES` (2 GiB) in all, each is read at most its
declared size + 1 bytes (opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked to be a regular
file), and the bundle holds at most :data:`MAX_ENTRIES` entries. The one unlisted file allowed is
:data:`SIGNATURE` (``signature.json``, at most :data:`MAX_SIGNATURE_BYTES`, written and parsed by
:mod:`closedloop.runtime.signing`) beside the manifest. Checksums and the digest protect integrity
(corruption, accidental edits), not authenticity: anyone who can rewrite a bundle can recompute
them, so bundles come from a store you trust (the registry). Each refusal names its check:

==================  ==========================================================================
check               refused when
==================  ==========================================================================
``path``            the path is not a directory
``manifest``        ``manifest.json`` is missing, not JSON, or lacks a required entry
``format_version``  the bundle format or its version is not one this package reads
``manifest_digest`` the manifest was edited after it was written
``file_path``       a listed file name escapes the bundle directory
``file_present``    a listed file is missing
``file_size``       a file's size differs from the manifest's (e.g. truncated)
``checksum``        a file's sha256 differs from the manifest's (tampered)
``unlisted_file``   the directory holds a file or folder the manifest does not list
``symlink``         the bundle holds a symbolic link (listed or not, to a file or a folder, a loop)
``file_type``       an entry is a FIFO, socket or device, or a listed name is a folder
``size_limit``      ``manifest.json`` exceeds 4 MiB, ``signature.json`` 4 KiB, the listed files
                    declare more than 2 GiB in all, or the bundle holds over 10,000 entries
``system``          the bundle was built for another system
``schema_version``  … for another version of the system's context schema
``features``        … for other feature definitions (fingerprint mismatch)
``intelligence``    the intelligence kind is unknown or its parameters are invalid, or a skops
                    file names a type or function outside the allow-list or the manifest's
                    ``trusted_types``, or cannot be parsed
``thresholds``      the thresholds do not fit the system's experience
``guardrails``      the bundle's allow/block lists are malformed or do not fit the system
==================  ==========================================================================
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from closedloop.base.files import fsync_dir, make_private_dirs
from closedloop.errors import BundleError, ClosedLoopError, IntelligenceError, SpecError
from closedloop.experience.experiences import Thresholds
from closedloop.experience.guardrails import Guardrail, guardrail_from_dict
from closedloop.intelligence import KINDS, Intelligence, load_intelligence
from closedloop.runtime.signing import (
    MAX_SIGNATURE_BYTES,
    SIGNATURE_FILE,
    SigningKey,
    read_signature,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "Bundle", "bundle_path", "content_digest", "read_header", "verify_bundle"]

FORMAT = "closedloop.runtime.bundle"
FORMAT_VERSION = 1
_SUPPORTED = (1,)
MANIFEST = "manifest.json"
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
    """The digest of a manifest's content (see :attr:`Bundle.content_digest`)."""
    keys = ("system", "features", "intelligence", "thresholds", "parent", "files", "guardrails")
    return _sha256(_canonical({k: manifest[k] for k in keys if k in manifest}))


class Bundle:
    """A packaged intelligence: parameters, thresholds and a manifest.

    Build one with :meth:`build` (in memory, validated against a system), write it with
    :meth:`save`, read it back with :meth:`load` (which verifies it). A bundle is immutable.
    """

    def __init__(self, manifest: dict[str, Any], intelligence: Intelligence, path: Path | None = None,
                 signature: dict[str, Any] | None = None) -> None:
        self.manifest = manifest
        self.intelligence = intelligence
        self.path = path
        #: The ``signature.json`` document (parsed, not verified: the registry verifies it against
        #: the keys it trusts when the bundle is deployed), or None for an unsigned bundle.
        self.signature = signature
        try:
            self.guardrails: tuple[Guardrail, ...] = tuple(
                guardrail_from_dict(g) for g in manifest.get("guardrails", [])
            )
        except (ClosedLoopError, TypeError) as exc:
            raise BundleError("guardrails", str(exc), str(path) if path else None) from exc

    # -- properties -----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def system_name(self) -> str:
        return str(self.manifest["system"]["name"])

    @property
    def schema_version(self) -> str:
        return str(self.manifest["system"]["schema_version"])

    @property
    def content_digest(self) -> str:
        """The digest of what the bundle *is* — system, features, intelligence, thresholds,
        guardrails, parent and every file's sha256 — without when it was built or its metrics:
        the default version is made from it, and a store treats two bundles with the same
        version and content digest as the same bundle."""
        return content_digest(self.manifest)

    @property
    def feature_fingerprint(self) -> str:
        return str(self.manifest["features"]["fingerprint"])

    @property
    def thresholds(self) -> dict[str, float] | None:
        t = self.manifest["thresholds"]
        return None if t is None else dict(t)

    @property
    def parent(self) -> str | None:
        return self.manifest["parent"]

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest["metrics"])

    def __repr__(self) -> str:
        return f"Bundle({self.version!r}, kind={self.manifest['intelligence']['kind']!r})"

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        system: Any,
        intelligence: Intelligence,
        *,
        thresholds: Mapping[str, float] | None = None,
        parent: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        version: str | None = None,
        created_at: _dt.datetime | None = None,
        guardrails: Sequence[Guardrail] = (),
    ) -> Bundle:
        """A bundle of ``intelligence`` for ``system``, validated: the intelligence binds to the
        system's features, its outputs feed the experience, ``thresholds`` (if given) fit it, and
        ``guardrails`` (allow and block lists: hot fixes shipped as data) fit the system."""
        if not isinstance(intelligence, Intelligence):
            raise SpecError(f"Bundle.build needs an Intelligence. Got {intelligence!r} instead.")
        intelligence.bind(system.features)
        experience = system.experience
        if thresholds is not None:
            if not isinstance(experience, Thresholds):
                raise SpecError(f"Only a Thresholds experience takes bundle thresholds; the system has {experience!r}.")
            experience = experience.with_levels(thresholds)
        experience.validate(system.actions, intelligence.outputs)
        rails = []
        for g in guardrails:
            if not isinstance(g, Guardrail):
                raise SpecError(f"Bundle guardrails must be AllowList or BlockList objects. Got {g!r} instead.")
            spec_g = g.describe()
            guardrail_from_dict(spec_g).validate(system)  # refuses kinds a bundle cannot carry
            rails.append(spec_g)
        files: dict[str, bytes] = {}
        spec = intelligence.to_dict(files)
        if ENTRY in files or MANIFEST in files:
            raise SpecError(f"Intelligence files must not be named {ENTRY!r} or {MANIFEST!r}.")
        files[ENTRY] = _canonical(spec) + b"\n"
        try:
            metrics_obj = json.loads(_canonical(dict(metrics or {})))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"Bundle 'metrics' must be JSON-serializable with finite numbers: {exc}") from exc
        if version is not None and (not isinstance(version, str) or not version or "/" in version):
            raise SpecError(f"A bundle 'version' must be a non-empty string without '/'. Got {version!r} instead.")
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
                # manifest; loading accepts nothing else (see _check_trusted).
                "trusted_types": _trusted_types(spec),
            },
            "thresholds": None if thresholds is None else {k: float(v) for k, v in thresholds.items()},
            "guardrails": rails,
            "parent": parent,
            "metrics": metrics_obj,
            "files": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in sorted(files.items())},
        }
        manifest["version"] = version or f"{system.name}-{content_digest(manifest)[:12]}"
        manifest["digest"] = _manifest_digest(manifest)
        bundle = cls(manifest, intelligence)
        bundle._files = files
        return bundle

    _files: dict[str, bytes] | None = None

    def signed(self, key: SigningKey) -> Bundle:
        """This bundle with a signature by ``key`` (a :class:`~closedloop.runtime.signing.SigningKey`):
        the same manifest, files and version; :meth:`save` writes the signature beside them."""
        if not isinstance(key, SigningKey):
            raise SpecError(f"The 'key' parameter of Bundle.signed must be a closedloop.runtime.signing.SigningKey. Got {key!r} instead.")
        out = Bundle(self.manifest, self.intelligence, self.path, key.sign(self.manifest["digest"]))
        out._files = self._files
        return out

    def save(self, directory: str | os.PathLike[str], *, key: SigningKey | None = None) -> Path:
        """Write the bundle to ``directory``, which must not exist yet (bundles are immutable),
        and return its path (read it back, verified, with :meth:`load`).

        With ``key`` the saved bundle is signed by it (``signature.json``, see
        :mod:`closedloop.runtime.signing`); without, a signature the bundle already carries is kept.
        Files are written to a temporary sibling, fsynced, and renamed into place, so a crash
        never leaves a half-written bundle under the final name. The files are read-only for
        their owner alone (0400) in a 0700 directory: a bundle may hold what its data taught it.
        """
        target = Path(directory)
        if target.exists():
            raise BundleError("path", "the target already exists; bundles are immutable, save to a new path", str(target))
        files = self._files
        if files is None:
            if self.path is None:
                raise BundleError("path", "this bundle has no files to save")
            files = {name: (self.path / name).read_bytes() for name in self.manifest["files"]}
        signature = key.sign(self.manifest["digest"]) if key is not None else self.signature
        make_private_dirs(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # mode 0700
        try:
            for name, data in files.items():
                _write_synced(tmp / name, data)
            _write_synced(tmp / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True).encode() + b"\n")
            if signature is not None:
                _write_synced(tmp / SIGNATURE_FILE, json.dumps(signature, indent=2, sort_keys=True).encode() + b"\n")
            for p in tmp.rglob("*"):
                p.chmod(0o700 if p.is_dir() else 0o400)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(target.parent)
        return target

    # -- loading and verifying ------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        system: Any = None,
        *,
        kinds: Mapping[str, type[Intelligence]] = KINDS,
    ) -> Bundle:
        """Read and verify a bundle. With ``system``, also check it was built for that system,
        its schema version and its features, and that its thresholds fit the experience."""
        root = Path(path)
        manifest, files = _verify_files(root)
        try:
            spec = json.loads(files[manifest["intelligence"]["entry"]])
            _check_trusted(spec, manifest["intelligence"].get("trusted_types", []))
            intelligence = load_intelligence(spec, files, kinds)
        except RecursionError as exc:  # a maliciously deep document
            raise BundleError("intelligence", "the saved intelligence is nested too deeply", str(root)) from exc
        except (ClosedLoopError, ValueError, KeyError, TypeError) as exc:
            raise BundleError("intelligence", str(exc), str(root)) from exc
        bundle = cls(manifest, intelligence, root, read_signature(root))
        if system is not None:
            bundle.check_compatible(system)
        return bundle

    def check_compatible(self, system: Any) -> None:
        """Refuse (``BundleError``) unless this bundle was built for ``system`` as declared now."""
        where = str(self.path) if self.path else self.version
        if self.system_name != system.name:
            raise BundleError("system", f"built for system {self.system_name!r}, not {system.name!r}", where)
        if self.schema_version != system.schema_version:
            raise BundleError(
                "schema_version",
                f"built for schema version {self.schema_version!r}, the system declares {system.schema_version!r}",
                where,
            )
        if self.feature_fingerprint != system.feature_fingerprint:
            raise BundleError(
                "features",
                f"built for features with fingerprint {self.feature_fingerprint[:12]}…, the system's "
                f"features have {system.feature_fingerprint[:12]}… (a feature was added, removed or changed)",
                where,
            )
        try:
            self.intelligence.bind(system.features)
        except ClosedLoopError as exc:
            raise BundleError("intelligence", str(exc), where) from exc
        try:
            self.experience(system).validate(system.actions, self.intelligence.outputs)
        except ClosedLoopError as exc:
            raise BundleError("thresholds", str(exc), where) from exc
        try:
            for g in self.guardrails:
                g.validate(system)
        except ClosedLoopError as exc:
            raise BundleError("guardrails", str(exc), where) from exc

    def experience(self, system: Any) -> Any:
        """The system's experience with this bundle's thresholds, when it carries any."""
        t = self.thresholds
        if t is None:
            return system.experience
        if not isinstance(system.experience, Thresholds):
            raise SpecError(f"Only a Thresholds experience takes bundle thresholds; the system has {system.experience!r}.")
        return system.experience.with_levels(t)

    def size_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.manifest["files"].values())


def verify_bundle(path: str | os.PathLike[str], system: Any = None) -> Bundle:
    """Verify a bundle (every check; the system checks too when ``system`` is given)."""
    return Bundle.load(path, system)


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


def _check_trusted(spec: Any, allowed: Any) -> None:
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
    found, dirs = _walk(root_fd, where)
    if MANIFEST not in found:
        if MANIFEST in dirs:
            raise BundleError("file_type", f"{MANIFEST} is a directory, not a regular file", where)
        raise BundleError("manifest", f"{MANIFEST} is missing", where)
    manifest = _read_manifest(root_fd, found[MANIFEST], where)
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
    # nothing unlisted: a file, a directory no listed file lies in, or anything beside signature.json
    parents = {name.rsplit("/", 1)[0] for name in listed if "/" in name}
    parents |= {p.rsplit("/", i)[0] for p in list(parents) for i in range(1, p.count("/") + 1)}
    for rel in sorted(found):
        if rel not in listed and rel not in (MANIFEST, SIGNATURE):
            raise BundleError("unlisted_file", f"{rel!r} is in the bundle but not in the manifest", where)
    for rel in sorted(dirs):
        if rel not in parents:
            kind = "file_type" if rel in listed or rel in (MANIFEST, SIGNATURE) else "unlisted_file"
            raise BundleError(kind, f"{rel!r} is a directory the manifest does not list", where)
    if SIGNATURE in found:  # written by closedloop.runtime.signing beside the manifest; parsed there, not here
        if found[SIGNATURE] > MAX_SIGNATURE_BYTES or len(_read(root_fd, SIGNATURE, MAX_SIGNATURE_BYTES, where)) > MAX_SIGNATURE_BYTES:
            raise BundleError("size_limit", f"{SIGNATURE} holds at most {MAX_SIGNATURE_BYTES} bytes", where)
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
        actual = _sha256(data)
        if actual != meta["sha256"]:
            raise BundleError("checksum", f"{name!r} has sha256 {actual[:16]}…, the manifest says {meta['sha256'][:16]}…", where)
        files[name] = data
    return manifest, files


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


def bundle_path(ref: str, bundles: str | os.PathLike[str]) -> Path:
    """The bundle a reference names: ``ref`` as a path, or — when no such path exists and ``ref``
    is a bare name — the bundle of that version in ``bundles`` (a project home's ``bundles/``)
    when it is there. Nothing is verified: :meth:`Bundle.load` does that (and names a path that
    is not a bundle)."""
    path = Path(ref)
    if not path.exists() and path.name == ref:
        candidate = Path(bundles) / ref
        if candidate.exists():
            return candidate
    return path


def _write_synced(path: Path, data: bytes) -> None:
    make_private_dirs(path.parent)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


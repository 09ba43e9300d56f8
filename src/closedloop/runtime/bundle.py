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

Where each part lives: the manifest's format, digests and layout in
:mod:`closedloop.runtime.manifest`; every check on reading a bundle from disk (the table's checks from ``path`` to
``size_limit``, and the manifest's ``trusted_types``) in one place,
:mod:`closedloop.runtime.bundle_verify`; here the
:class:`Bundle` itself — build, sign, save, load, and the checks against a system. Every name
stays importable from here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from closedloop.base.files import fsync_dir, make_private_dirs
from closedloop.errors import BundleError, ClosedLoopError, SpecError
from closedloop.experience.experiences import Thresholds
from closedloop.experience.guardrails import Guardrail, guardrail_from_dict
from closedloop.intelligence import KINDS, Intelligence, load_intelligence
from closedloop.runtime.bundle_verify import MAX_BUNDLE_BYTES as MAX_BUNDLE_BYTES
from closedloop.runtime.bundle_verify import MAX_ENTRIES as MAX_ENTRIES
from closedloop.runtime.bundle_verify import MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES
from closedloop.runtime.bundle_verify import SIGNATURE as SIGNATURE
from closedloop.runtime.bundle_verify import (
    _check_trusted,
    _verify_files,
    read_header,
    verify_bytes,
)
from closedloop.runtime.manifest import (
    ENTRY,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    _canonical,
    content_digest,
    new_manifest,
)
from closedloop.runtime.manifest import _manifest_digest as _manifest_digest
from closedloop.runtime.signing import SIGNATURE_FILE, SigningKey, parse_signature, read_signature

__all__ = [
    "FORMAT", "FORMAT_VERSION", "Bundle", "bundle_path", "content_digest", "read_header", "verify_bundle", "verify_bytes",
    "write_files",
]


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
        manifest = new_manifest(
            system, intelligence, spec, files, thresholds=thresholds, guardrails=rails, parent=parent,
            metrics=metrics_obj, version=version, created_at=created_at,
        )
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

    def file_bytes(self, key: SigningKey | None = None) -> dict[str, bytes]:
        """Every file of the bundle as :meth:`save` writes it (relative path → bytes): the listed
        files, ``manifest.json`` and — signed by ``key``, or the signature it carries — ``signature.json``."""
        files = self._files
        if files is None:
            if self.path is None:
                raise BundleError("path", "this bundle has no files to save")
            files = {name: (self.path / name).read_bytes() for name in self.manifest["files"]}
        out = dict(files)
        out[MANIFEST] = json.dumps(self.manifest, indent=2, sort_keys=True).encode() + b"\n"
        signature = key.sign(self.manifest["digest"]) if key is not None else self.signature
        if signature is not None:
            out[SIGNATURE_FILE] = json.dumps(signature, indent=2, sort_keys=True).encode() + b"\n"
        return out

    def save(self, directory: str | os.PathLike[str], *, key: SigningKey | None = None) -> Path:
        """Write the bundle to ``directory``, which must not exist yet (bundles are immutable),
        and return its path (read it back, verified, with :meth:`load`).

        With ``key`` the saved bundle is signed by it (``signature.json``, see
        :mod:`closedloop.runtime.signing`); without, a signature the bundle already carries is kept.
        Files are written as :func:`write_files` writes them (atomically, read-only)."""
        return write_files(directory, self.file_bytes(key))

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
        return cls._verified(manifest, files, read_signature(root), str(root), root, system, kinds)

    @classmethod
    def from_bytes(
        cls,
        files: Mapping[str, bytes],
        system: Any = None,
        *,
        where: str,
        kinds: Mapping[str, type[Intelligence]] = KINDS,
    ) -> Bundle:
        """A bundle held in memory (``files``: relative path → bytes, ``manifest.json`` and
        ``signature.json`` included, as :meth:`file_bytes` gives them), verified with the checks
        :meth:`load` makes (:func:`~closedloop.runtime.bundle_verify.verify_bytes`) before anything
        is parsed; ``where`` names it in errors. The bundle keeps its files: :meth:`save` writes them."""
        manifest, listed = verify_bytes(files, where)
        sig = files.get(SIGNATURE_FILE)
        bundle = cls._verified(manifest, listed, None if sig is None else parse_signature(sig, where), where, None,
                               system, kinds)
        bundle._files = listed
        return bundle

    @classmethod
    def _verified(cls, manifest: dict[str, Any], files: dict[str, bytes], signature: dict[str, Any] | None,
                  where: str, root: Path | None, system: Any, kinds: Mapping[str, type[Intelligence]]) -> Bundle:
        """The bundle of a verified manifest and files: its intelligence parsed (only the kinds in
        ``kinds``, the manifest's trusted types), then checked against ``system`` when given."""
        try:
            spec = json.loads(files[manifest["intelligence"]["entry"]])
            _check_trusted(spec, manifest["intelligence"].get("trusted_types", []))
            intelligence = load_intelligence(spec, files, kinds)
        except RecursionError as exc:  # a maliciously deep document
            raise BundleError("intelligence", "the saved intelligence is nested too deeply", where) from exc
        except (ClosedLoopError, ValueError, KeyError, TypeError) as exc:
            raise BundleError("intelligence", str(exc), where) from exc
        bundle = cls(manifest, intelligence, root, signature)
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


def write_files(directory: str | os.PathLike[str], files: Mapping[str, bytes]) -> Path:
    """Write a bundle's files (relative path → bytes, as :meth:`Bundle.file_bytes` gives them) to
    ``directory``, which must not exist yet, and return it. The files go to a temporary sibling,
    fsynced, which is renamed into place, so a crash never leaves a half-written bundle under the
    final name (nor does a concurrent writer: one rename wins, the other fails). The files are
    read-only for their owner alone (0400) in a 0700 directory: a bundle may hold what its data taught it."""
    target = Path(directory)
    if target.exists():
        raise BundleError("path", "the target already exists; bundles are immutable, save to a new path", str(target))
    make_private_dirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # mode 0700
    try:
        for name, data in files.items():
            _write_synced(tmp / name, data)
        for p in tmp.rglob("*"):
            p.chmod(0o700 if p.is_dir() else 0o400)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    return target


def _write_synced(path: Path, data: bytes) -> None:
    make_private_dirs(path.parent)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


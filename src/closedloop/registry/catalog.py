"""The registry's catalog: the bundles it knows (registered with their manifest digest, kept in a
:class:`~closedloop.registry.store.BundleStore`, loaded verified), their signature check, and the
evaluation reports attached to them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from closedloop.base.times import iso
from closedloop.errors import BundleError, RegistryError
from closedloop.registry.args import check_actor, system_name
from closedloop.registry.db import Database
from closedloop.registry.keys import Keys
from closedloop.registry.models import bundles as T_BUNDLES
from closedloop.registry.models import report_bundles as T_RB
from closedloop.registry.models import reports as T_REPORTS
from closedloop.registry.rows import dumps, inserted_id
from closedloop.registry.store import BundleStore
from closedloop.runtime.bundle import Bundle, content_digest, read_header

__all__ = ["Catalog"]

BundleRef = Bundle | str | os.PathLike[str]


class Catalog:
    """Bundles and evaluation reports of one registry database; ``store`` holds the bundles'
    files, ``keys`` the trusted signing keys."""

    def __init__(self, db: Database, store: BundleStore, keys: Keys) -> None:
        self.db = db
        self.store = store
        self.keys = keys

    # -- bundles ---------------------------------------------------------------------------------
    def add_bundle(self, bundle: BundleRef, *, actor: str, allow_unsigned: str | None = None) -> dict[str, Any]:
        """Register a bundle (a :class:`~closedloop.Bundle`, a bundle directory, or a version
        already in the store): check its signature, verify it, copy it into the store, record it.
        Registering the same bundle again is a no-op; a different bundle under a registered
        version is refused.

        The signature is checked first, from the manifest and ``signature.json`` alone: a bundle
        not signed by a key this registry trusts (:meth:`Keys.trust_key`) is refused before any of its
        other files is read, and nothing is copied. ``allow_unsigned`` (the reason) lets an
        unsigned bundle in for a local experiment."""
        actor = check_actor(actor)
        if not (isinstance(bundle, str) and self.registered_version(bundle)):
            self.check_signature(bundle, allow_unsigned=allow_unsigned)
        return self.register(bundle, actor)

    def register(self, bundle: BundleRef, actor: str) -> dict[str, Any]:
        """add_bundle after its signature check: verify, copy into the store, record."""
        b = self.bundle_object(bundle)
        self.store.put(b)
        m = b.manifest
        row = {
            "version": b.version, "system": b.system_name, "kind": m["intelligence"]["kind"],
            "digest": m["digest"], "created_at": str(m["created_at"])[:40], "parent": b.parent,
            "manifest": dumps(m), "registered_ns": self.db.clock.now_ns(), "registered_by": actor,
        }
        for _ in range(2):
            existing = self.bundle(b.version)
            if existing is not None:
                # the same content built again (another creation time or metrics) is the stored bundle
                if existing["digest"] != m["digest"] and content_digest(existing["manifest"]) != b.content_digest:
                    raise RegistryError(
                        f"Bundle version {b.version!r} is registered with manifest digest {existing['digest'][:12]}…; "
                        f"this bundle has {m['digest'][:12]}…. Versions are immutable: build it under another version."
                    )
                return existing
            try:
                with self.db.write() as conn:
                    conn.execute(insert(T_BUNDLES).values(**row))
            except IntegrityError:
                continue  # registered meanwhile by another process: compare with it
            break
        rec = self.bundle(b.version)
        if rec is None:  # pragma: no cover - inserted above or found
            raise RegistryError(f"Bundle {b.version!r} could not be registered.")
        return rec

    def bundle_object(self, ref: BundleRef) -> Bundle:
        """The :class:`~closedloop.Bundle` a reference names: itself, a directory, or a stored version."""
        if isinstance(ref, Bundle):
            return ref
        if not isinstance(ref, str | os.PathLike):
            raise RegistryError(f"A bundle must be a closedloop.Bundle, a directory or a version. Got {ref!r} instead.")
        p = Path(ref)
        if (p / "manifest.json").is_file():
            return Bundle.load(p)
        if isinstance(ref, str) and self.store.exists(ref):
            return self.store.load(ref)
        raise RegistryError(f"{str(ref)!r} is neither a bundle directory nor a bundle version in the store "
                            f"({self.store.describe()}).")

    def bundle(self, version: str) -> dict[str, Any] | None:
        """The record of a registered bundle (without its manifest), or None."""
        with self.db.read() as conn:
            r = conn.execute(select(T_BUNDLES).where(T_BUNDLES.c.version == version)).mappings().first()
        if r is None:
            return None
        out = {k: r[k] for k in ("version", "system", "kind", "digest", "created_at", "parent", "registered_by")}
        out["registered_at"] = iso(r["registered_ns"])
        out["manifest"] = json.loads(r["manifest"])
        return out

    def bundle_brief(self, version: str) -> dict[str, Any] | None:
        """The record of a registered bundle with its manifest's metrics instead of the manifest."""
        rec = self.bundle(version)
        if rec is None:
            return None
        m = rec.pop("manifest")
        rec["metrics"] = m.get("metrics", {})
        return rec

    def bundles(self, system: Any) -> list[dict[str, Any]]:
        """Every registered bundle of a system, oldest first (version, kind, parent, created …)."""
        name = system_name(system)
        with self.db.read() as conn:
            rows = conn.execute(select(T_BUNDLES).where(T_BUNDLES.c.system == name)
                                .order_by(T_BUNDLES.c.registered_ns, T_BUNDLES.c.version)).mappings().all()
        return [{k: r[k] for k in ("version", "kind", "digest", "created_at", "parent", "registered_by")}
                | {"registered_at": iso(r["registered_ns"])} for r in rows]

    def load_bundle(self, version: str, system: Any = None) -> Bundle:
        """Load a registered bundle from the store, verified: its files and manifest digest, the
        digest recorded at registration, and (with ``system``) its fit to the system."""
        with self.db.read() as conn:
            digest = conn.execute(select(T_BUNDLES.c.digest).where(T_BUNDLES.c.version == version)).scalar()
        if digest is None:
            raise RegistryError(f"Bundle {version!r} is not registered.")
        b = self.store.load(version, system)
        if b.manifest["digest"] != digest:
            raise BundleError("registry_digest", f"the stored bundle's manifest digest {b.manifest['digest'][:12]}… "
                              f"differs from the registered {digest[:12]}…", str(version))
        return b

    def registered_version(self, ref: str) -> bool:
        """Whether ``ref`` is the version of a registered bundle (not a bundle directory)."""
        return not (Path(ref) / "manifest.json").is_file() and self.bundle(ref) is not None

    def ensure_registered(self, ref: BundleRef, actor: str) -> str:
        """The version of ``ref``, registered if it is not yet — its signature already checked by
        the caller (deploy), so it is not read and verified twice. A registered version that only
        this host's files hold (stored before the registry kept bundles) is uploaded to the shared
        store (:meth:`BundleStore.share`)."""
        if isinstance(ref, str) and self.registered_version(ref):
            self.store.share(ref)
            return ref
        return str(self.register(ref, actor)["version"])

    # -- signatures ------------------------------------------------------------------------------
    def header(self, ref: BundleRef) -> tuple[str, dict[str, Any] | None, str]:
        """(manifest digest, signature document or None, where) of a bundle reference, read
        without parsing the bundle's other files."""
        if isinstance(ref, Bundle):
            return str(ref.manifest["digest"]), ref.signature, ref.version
        if not isinstance(ref, str | os.PathLike):
            raise RegistryError(f"A bundle must be a closedloop.Bundle, a directory or a version. Got {ref!r} instead.")
        p = Path(ref)
        if (p / "manifest.json").is_file():
            manifest, sig = read_header(p)
            return str(manifest["digest"]), sig, str(p)
        if isinstance(ref, str) and self.store.exists(ref):
            manifest, sig = self.store.header(ref)
            rec = self.bundle(ref)
            if rec is not None and rec["digest"] != manifest["digest"]:
                raise BundleError("registry_digest", f"the stored bundle's manifest digest {manifest['digest'][:12]}… "
                                  f"differs from the registered {rec['digest'][:12]}…", ref)
            return str(manifest["digest"]), sig, ref
        raise RegistryError(f"{str(ref)!r} is neither a bundle directory nor a bundle version in the store "
                            f"({self.store.describe()}).")

    def check_signature(self, bundle: BundleRef, *, allow_unsigned: str | None = None) -> dict[str, Any]:
        """The ``signature`` check of a bundle (a Bundle, a directory or a stored version): passed
        when it is signed by a key this registry trusts; else :class:`~closedloop.errors.BundleError`
        — or, with ``allow_unsigned`` (the reason), a failed check marked as allowed."""
        if allow_unsigned is not None and (not isinstance(allow_unsigned, str) or not allow_unsigned.strip()):
            raise RegistryError("'allow_unsigned' must be the reason for deploying an unsigned bundle (a non-empty "
                                f"string) or None. Got {allow_unsigned!r} instead.")
        digest, sig, where = self.header(bundle)
        return self.keys.verdict(digest, sig, where, allow_unsigned)

    # -- reports ---------------------------------------------------------------------------------
    def add_report(self, report: Mapping[str, Any] | str | os.PathLike[str], *, actor: str) -> dict[str, Any]:
        """Attach an evaluation report (the dict :func:`closedloop.evaluation.report.evaluate`
        returns, or its JSON file) to the bundles it evaluated; those must be registered or in the
        store. Idempotent by content. Returns ``{"id", "digest", "bundles", "gate"}``."""
        actor = check_actor(actor)
        report, versions = _read_report(report)
        for v in versions:
            self.ensure_registered(v, actor)
            rec = self.bundle(v)
            if rec is not None and rec["system"] != report["system"]:
                raise RegistryError(f"The report is for system {report['system']!r}; bundle {v!r} is for {rec['system']!r}.")
        body = dumps(report)
        digest = hashlib.sha256(body.encode()).hexdigest()
        gate = report.get("gate") if isinstance(report.get("gate"), dict) else None
        rid = self._store_report(report, body, digest, versions, gate, actor)
        return {"id": int(rid), "digest": digest, "bundles": versions,
                "gate": None if gate is None else {k: gate.get(k) for k in ("baseline", "candidate", "passed", "reasons")}}

    def _store_report(self, report: Mapping[str, Any], body: str, digest: str, versions: list[str],
                      gate: dict[str, Any] | None, actor: str) -> int:
        """The id of the report with ``digest``: found, or inserted with its bundles (a report
        added concurrently by another process is found)."""
        try:
            with self.db.write() as conn:
                found = conn.execute(select(T_REPORTS.c.id).where(T_REPORTS.c.digest == digest)).scalar()
                if found is not None:
                    return int(found)
                return self._insert_report(conn, report, body, digest, versions, gate, actor)
        except IntegrityError as exc:  # the same report added concurrently
            with self.db.read() as conn:
                again = conn.execute(select(T_REPORTS.c.id).where(T_REPORTS.c.digest == digest)).scalar()
            if again is None:  # not that race: another constraint refused the report
                raise RegistryError(f"The registry database refused the evaluation report: {exc.orig}") from exc
            return int(again)

    def _insert_report(self, conn: Connection, report: Mapping[str, Any], body: str, digest: str,
                       versions: list[str], gate: dict[str, Any] | None, actor: str) -> int:
        """Insert the report row and one row per bundle it evaluated (with the gate's verdict for
        its candidate); returns the report's id."""
        given = report.get("metadata")
        meta: dict[str, Any] = given if isinstance(given, dict) else {}
        rid = inserted_id(conn.execute(insert(T_REPORTS).values(
            system=report["system"], digest=digest, dataset_id=str(meta.get("dataset_id") or "")[:200] or None,
            created=str(meta.get("created") or "")[:40] or None, registered_ns=self.db.clock.now_ns(),
            registered_by=actor, body=body,
        )), "report")
        for pos, v in enumerate(dict.fromkeys(versions)):
            cand = gate is not None and gate.get("candidate") == v
            conn.execute(insert(T_RB).values(
                report_id=rid, bundle_version=v, position=pos,
                gate_passed=bool(gate.get("passed")) if cand and gate is not None else None,
                gate_baseline=str(gate.get("baseline")) if cand and gate is not None else None,
            ))
        return rid

    def reports(self, version: str) -> list[dict[str, Any]]:
        """The evaluation reports attached to a bundle version, newest first (whole reports)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(T_REPORTS.c.body).join(T_RB, T_RB.c.report_id == T_REPORTS.c.id)
                .where(T_RB.c.bundle_version == version).order_by(T_REPORTS.c.id.desc())
            ).scalars().all()
        return [json.loads(b) for b in rows]


def _read_report(report: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[Mapping[str, Any], list[str]]:
    """The report (read from its file when a path is given), checked: schema version 1, a system
    name, a non-empty list of bundle entries; with the bundle versions it evaluated, in order."""
    if isinstance(report, str | os.PathLike):
        try:
            report = json.loads(Path(report).read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"Cannot read the evaluation report {str(report)!r}: {exc}") from None
    if not isinstance(report, Mapping):
        raise RegistryError(f"An evaluation report must be a JSON object. Got {type(report).__name__} instead.")
    if report.get("schema_version") != 1 or not isinstance(report.get("system"), str):
        raise RegistryError(
            "An evaluation report must have 'schema_version' 1 and a 'system' name (closedloop evaluate "
            f"writes one). Got schema_version={report.get('schema_version')!r} instead."
        )
    entries = report.get("bundles")
    if not isinstance(entries, list) or not entries or not all(
        isinstance(b, dict) and isinstance(b.get("version"), str) for b in entries
    ):
        raise RegistryError("An evaluation report's 'bundles' must be a non-empty list of {'version': …} entries.")
    return report, [b["version"] for b in entries]

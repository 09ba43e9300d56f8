"""The registry: bundles, evaluation reports, the deployment state of each system and its history.

One class, :class:`Registry`, over a SQLAlchemy database (SQLite by default, PostgreSQL by URL —
the same code) and a :class:`~closedloop.registry.store.BundleStore`. See ``docs/registry.md``
for the guide; in short::

    reg = Registry.from_settings(settings).open()          # migrates an empty database to head
    reg.deploy(system, "bundles/v1", actor="alice", reason="first model")          # production
    reg.deploy(system, v2, actor="alice", reason="try v2", flight="v2", share=0.05)
    reg.promote(system, "v2", actor="alice", reason="v2 wins")
    reg.rollback("phishing", actor="bob", reason="complaints")   # the state before the last change
    reg.deployment(system)           # a closedloop.Deployment: bundles loaded and verified
    reg.revision("phishing")         # cheap: poll it to notice changes

Every change is one transaction that checks the revision it read (optimistic locking): two
racing changes leave one consistent state, and the loser gets :class:`~closedloop.errors.ConflictError`
and is recorded as a failed attempt. Refused attempts (sanity checks, bad transitions) are recorded
too. Authentication is the caller's job (the CLI and the service check an ``admin`` credential);
``actor`` is the credential's name, recorded in the history.

Rollback restores the state before the last change that has not been rolled back yet, whatever
it was; a second rollback goes one step further back. A flight the guard stopped is never
restarted by a rollback (deploy it again on purpose).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, select, text, update
from sqlalchemy.engine import Connection, CursorResult, Engine, RowMapping
from sqlalchemy.exc import IntegrityError, OperationalError

from closedloop.base.times import iso
from closedloop.errors import (
    BundleError,
    ClosedLoopError,
    ConflictError,
    RegistryError,
    SanityCheckError,
)
from closedloop.registry import db
from closedloop.registry.models import bundles as T_BUNDLES
from closedloop.registry.models import deployments as T_DEPLOY
from closedloop.registry.models import events as T_EVENTS
from closedloop.registry.models import report_bundles as T_RB
from closedloop.registry.models import reports as T_REPORTS
from closedloop.registry.models import signing_keys as T_KEYS
from closedloop.registry.state import DeploymentState, FlightState, check_flight_name, check_share
from closedloop.registry.store import BundleStore, FileBundleStore
from closedloop.runtime.bundle import Bundle, content_digest, read_header
from closedloop.runtime.clock import Clock, SystemClock
from closedloop.runtime.signing import (
    SigningKey,
    encode_public_key,
    home_key,
    key_id,
    parse_public_key,
    verify_signature,
)

__all__ = ["NOTIFY_CHANNEL", "Change", "Registry", "iso"]

#: On PostgreSQL every applied change is announced on this channel (``LISTEN closedloop_deployments``;
#: payload ``<system>:<revision>``), in the change's own transaction: listeners hear of it once it is
#: committed, never before. The serving workers listen, so a rollback reaches them at once.
NOTIFY_CHANNEL = "closedloop_deployments"

_MAX_ACTOR = 200


def _check_actor(actor: Any) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > _MAX_ACTOR:
        raise RegistryError(
            f"The 'actor' of a registry change must be the credential's name (1-{_MAX_ACTOR} characters). "
            f"Got {actor!r} instead."
        )
    return actor


def _check_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError(f"A registry change needs a 'reason' (a non-empty string). Got {reason!r} instead.")
    return reason.strip()


def _system_name(system: Any) -> str:
    name = getattr(system, "name", system)
    if not isinstance(name, str) or not name:
        raise RegistryError(f"The 'system' must be a closedloop.System or a system name. Got {system!r} instead.")
    return name


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


@dataclass(frozen=True)
class Change:
    """What one lifecycle operation did. ``changed`` is False for a no-op (e.g. the kill switch
    was on already), which is not recorded."""

    system: str
    operation: str
    before: DeploymentState
    after: DeploymentState
    message: str
    event_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    changed: bool = True

    @property
    def revision(self) -> int:
        return self.after.revision

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system, "operation": self.operation, "event_id": self.event_id,
            "revision": self.revision, "changed": self.changed, "message": self.message,
            "before": self.before.to_dict(), "after": self.after.to_dict(), "detail": self.detail,
        }


class _Lost(Exception):
    """The optimistic check failed: the state moved on (internal; becomes ConflictError)."""

    def __init__(self, seen: int | None, current: int | None) -> None:
        self.seen, self.current = seen, current


_Mutation = Callable[[Connection, DeploymentState], tuple[DeploymentState | None, dict[str, Any], int | None, str]]


class Registry:
    """Bundles, reports, deployment state and history of every system in one database.

    Parameters
    ----------
    url:
        A SQLAlchemy URL: ``sqlite:///path/registry.sqlite`` or ``postgresql://user@host/db``.
    bundles:
        The bundle store: a directory (``<home>/bundles``) or a :class:`BundleStore`.
    clock:
        Where event times come from (default: the wall clock).

    The constructor only records configuration; :meth:`open` connects (and migrates).
    """

    def __init__(self, url: str, bundles: str | os.PathLike[str] | BundleStore, *, clock: Clock | None = None) -> None:
        if not isinstance(url, str) or not url:
            raise RegistryError(f"The registry 'url' must be a non-empty string. Got {url!r} instead.")
        self.url = url
        self.store: BundleStore = bundles if isinstance(bundles, BundleStore) else FileBundleStore(bundles)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._engine: Engine | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Clock | None = None) -> Registry:
        """The registry of a project home: ``settings.registry`` (URL) and ``settings.bundles``."""
        return cls(settings.registry, settings.bundles, clock=clock)

    # -- connection ------------------------------------------------------------------------------
    def open(self, *, upgrade: bool = True) -> Registry:
        """Connect; with ``upgrade`` (default) migrate the schema to this package's head first
        (an empty database gets the whole schema), else refuse a database that is not at head."""
        if self._engine is not None:
            return self
        engine = db.connect(self.url)
        try:
            now, head = db.current(engine), db.head()
            if now != head:
                if not upgrade:
                    raise RegistryError(
                        f"The registry database is at schema revision {now!r}; this closedloop needs {head!r}. "
                        "Open it with upgrade=True to migrate (the history is kept)."
                    )
                db.upgrade(engine)
        except OperationalError as exc:
            engine.dispose()
            raise RegistryError(f"Cannot open the registry at {self._safe_url()}: {exc.orig}") from None
        except BaseException:
            engine.dispose()
            raise
        self._engine = engine
        return self

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Registry:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - only for a message
            return "<unparsable URL>"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RegistryError("The registry is not open: call Registry.open() (or use it in a 'with' block) first.")
        return self._engine

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(**{db.WRITE: True}) as conn, conn.begin():
            yield conn

    # -- bundles ---------------------------------------------------------------------------------
    def add_bundle(self, bundle: Bundle | str | os.PathLike[str], *, actor: str,
                   allow_unsigned: str | None = None) -> dict[str, Any]:
        """Register a bundle (a :class:`~closedloop.Bundle`, a bundle directory, or a version
        already in the store): check its signature, verify it, copy it into the store, record it.
        Registering the same bundle again is a no-op; a different bundle under a registered
        version is refused.

        The signature is checked first, from the manifest and ``signature.json`` alone: a bundle
        not signed by a key this registry trusts (:meth:`trust_key`) is refused before any of its
        other files is read, and nothing is copied. ``allow_unsigned`` (the reason) lets an
        unsigned bundle in for a local experiment."""
        actor = _check_actor(actor)
        if not (isinstance(bundle, str) and self._registered_version(bundle)):
            self.check_signature(bundle, allow_unsigned=allow_unsigned)
        return self._register(bundle, actor)

    def _register(self, bundle: Bundle | str | os.PathLike[str], actor: str) -> dict[str, Any]:
        """add_bundle after its signature check: verify, copy into the store, record."""
        b = self._bundle_object(bundle)
        self.store.put(b)
        m = b.manifest
        row = {
            "version": b.version, "system": b.system_name, "kind": m["intelligence"]["kind"],
            "digest": m["digest"], "created_at": str(m["created_at"])[:40], "parent": b.parent,
            "manifest": _dumps(m), "registered_ns": self.clock.now_ns(), "registered_by": actor,
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
                with self._write() as conn:
                    conn.execute(insert(T_BUNDLES).values(**row))
            except IntegrityError:
                continue  # registered meanwhile by another process: compare with it
            break
        rec = self.bundle(b.version)
        if rec is None:  # pragma: no cover - inserted above or found
            raise RegistryError(f"Bundle {b.version!r} could not be registered.")
        return rec

    def _bundle_object(self, ref: Bundle | str | os.PathLike[str]) -> Bundle:
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
        with self._read() as conn:
            r = conn.execute(select(T_BUNDLES).where(T_BUNDLES.c.version == version)).mappings().first()
        if r is None:
            return None
        out = {k: r[k] for k in ("version", "system", "kind", "digest", "created_at", "parent", "registered_by")}
        out["registered_at"] = iso(r["registered_ns"])
        out["manifest"] = json.loads(r["manifest"])
        return out

    def bundles(self, system: Any) -> list[dict[str, Any]]:
        """Every registered bundle of a system, oldest first (version, kind, parent, created …)."""
        name = _system_name(system)
        with self._read() as conn:
            rows = conn.execute(select(T_BUNDLES).where(T_BUNDLES.c.system == name)
                                .order_by(T_BUNDLES.c.registered_ns, T_BUNDLES.c.version)).mappings().all()
        return [{k: r[k] for k in ("version", "kind", "digest", "created_at", "parent", "registered_by")}
                | {"registered_at": iso(r["registered_ns"])} for r in rows]

    def load_bundle(self, version: str, system: Any = None) -> Bundle:
        """Load a registered bundle from the store, verified: its files and manifest digest, the
        digest recorded at registration, and (with ``system``) its fit to the system."""
        with self._read() as conn:
            digest = conn.execute(select(T_BUNDLES.c.digest).where(T_BUNDLES.c.version == version)).scalar()
        if digest is None:
            raise RegistryError(f"Bundle {version!r} is not registered.")
        b = self.store.load(version, system)
        if b.manifest["digest"] != digest:
            raise BundleError("registry_digest", f"the stored bundle's manifest digest {b.manifest['digest'][:12]}… "
                              f"differs from the registered {digest[:12]}…", str(version))
        return b

    def _registered_version(self, ref: str) -> bool:
        return not (Path(ref) / "manifest.json").is_file() and self.bundle(ref) is not None

    def _ensure_registered(self, ref: Bundle | str | os.PathLike[str], actor: str) -> str:
        """The version of ``ref``, registered if it is not yet — its signature already checked by
        the caller (deploy), so it is not read and verified twice."""
        if isinstance(ref, str) and self._registered_version(ref):
            return ref
        return str(self._register(ref, actor)["version"])

    # -- signing keys ----------------------------------------------------------------------------
    def trust_key(self, public_key: str, *, name: str, actor: str) -> dict[str, Any]:
        """Trust bundles signed by the Ed25519 key ``public_key`` (base64, as
        ``closedloop key show`` prints it). Trusting a trusted key again is a no-op; a revoked
        key is trusted again (the revocation is cleared, and the record says who did it)."""
        actor = _check_actor(actor)
        raw = parse_public_key(public_key)
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_ACTOR:
            raise RegistryError(f"A trusted key's 'name' must be a non-empty string of at most {_MAX_ACTOR} "
                                f"characters. Got {str(name)[:60]!r} instead.")
        kid, pub = key_id(raw), encode_public_key(raw)
        try:
            with self._write() as conn:
                row = conn.execute(select(T_KEYS).where(T_KEYS.c.key_id == kid)).mappings().first()
                now = self.clock.now_ns()
                if row is None:
                    conn.execute(insert(T_KEYS).values(key_id=kid, public_key=pub, name=name, added_ns=now,
                                                       added_by=actor, revoked_ns=None, revoked_by=None))
                elif row["revoked_ns"] is not None:
                    conn.execute(update(T_KEYS).where(T_KEYS.c.key_id == kid).values(
                        name=name, added_ns=now, added_by=actor, revoked_ns=None, revoked_by=None))
        except IntegrityError:  # trusted meanwhile by another process: the same key, fine
            pass
        return next(k for k in self.keys() if k["key_id"] == kid)

    def revoke_key(self, key: str, *, actor: str) -> dict[str, Any]:
        """Stop trusting a key (by id, ``ed25519:…``, or base64 public key): bundles it signed
        are refused by deploy from now on; what serves keeps serving."""
        actor = _check_actor(actor)
        kid = key if isinstance(key, str) and key.startswith("ed25519:") else key_id(parse_public_key(key))
        with self._write() as conn:
            res = conn.execute(update(T_KEYS).where(and_(T_KEYS.c.key_id == kid, T_KEYS.c.revoked_ns.is_(None)))
                               .values(revoked_ns=self.clock.now_ns(), revoked_by=actor))
            if res.rowcount != 1:
                raise RegistryError(f"The key to revoke must be a trusted key id or public key. Got {str(key)[:60]!r} "
                                    f"instead (trusted: {', '.join(sorted(self.trusted_keys())) or 'none'}).")
        return next(k for k in self.keys() if k["key_id"] == kid)

    def keys(self) -> list[dict[str, Any]]:
        """Every key the registry trusts or trusted: id, public key, name, who added and revoked it, when."""
        with self._read() as conn:
            rows = conn.execute(select(T_KEYS).order_by(T_KEYS.c.added_ns, T_KEYS.c.key_id)).mappings().all()
        return [{"key_id": r["key_id"], "public_key": r["public_key"], "name": r["name"],
                 "added_at": iso(r["added_ns"]), "added_by": r["added_by"],
                 "revoked_at": iso(r["revoked_ns"]), "revoked_by": r["revoked_by"]} for r in rows]

    def trusted_keys(self) -> dict[str, str]:
        """The keys deploy accepts now: key id → base64 public key."""
        with self._read() as conn:
            rows = conn.execute(select(T_KEYS.c.key_id, T_KEYS.c.public_key)
                                .where(T_KEYS.c.revoked_ns.is_(None))).all()
        return {r.key_id: r.public_key for r in rows}

    def signing_key(self, home: str | os.PathLike[str]) -> SigningKey:
        """The signing key of the project home ``home`` (created on first use, see
        :func:`closedloop.runtime.signing.home_key`), trusted by this registry when it was just created or
        when this registry has never trusted a key: a home trusts its own key from the start.
        A key found in an established registry that does not trust it is not trusted silently
        (an admin does it: ``closedloop key trust --home``)."""
        hk = home_key(home)
        if hk is None:  # pragma: no cover - home_key creates
            raise RegistryError(f"No signing key in {home}.")
        if hk.created or not self.keys():
            self.trust_key(hk.key.public_key, name=f"home {Path(home).resolve()}"[:_MAX_ACTOR], actor="closedloop")
        return hk.key

    def _header(self, ref: Bundle | str | os.PathLike[str]) -> tuple[str, dict[str, Any] | None, str]:
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

    def check_signature(self, bundle: Bundle | str | os.PathLike[str], *,
                        allow_unsigned: str | None = None) -> dict[str, Any]:
        """The ``signature`` check of a bundle (a Bundle, a directory or a stored version): passed
        when it is signed by a key this registry trusts; else :class:`~closedloop.errors.BundleError`
        — or, with ``allow_unsigned`` (the reason), a failed check marked as allowed."""
        if allow_unsigned is not None and (not isinstance(allow_unsigned, str) or not allow_unsigned.strip()):
            raise RegistryError("'allow_unsigned' must be the reason for deploying an unsigned bundle (a non-empty "
                                f"string) or None. Got {allow_unsigned!r} instead.")
        digest, sig, where = self._header(bundle)
        trusted = self.trusted_keys()
        try:
            kid = verify_signature(sig, digest, trusted, where)
        except BundleError as exc:
            if allow_unsigned is None:
                raise
            return {"name": "signature", "passed": False, "detail": exc.detail, "forced": True,
                    "allowed_unsigned": allow_unsigned}
        names = {k["key_id"]: k["name"] for k in self.keys()}
        return {"name": "signature", "passed": True, "detail": f"signed by {kid} ({names.get(kid, '?')})",
                "forced": False}

    # -- reports ---------------------------------------------------------------------------------
    def add_report(self, report: Mapping[str, Any] | str | os.PathLike[str], *, actor: str) -> dict[str, Any]:
        """Attach an evaluation report (the dict :func:`closedloop.evaluation.report.evaluate`
        returns, or its JSON file) to the bundles it evaluated; those must be registered or in the
        store. Idempotent by content. Returns ``{"id", "digest", "bundles", "gate"}``."""
        actor = _check_actor(actor)
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
        versions = [b["version"] for b in entries]
        for v in versions:
            self._ensure_registered(v, actor)
            rec = self.bundle(v)
            if rec is not None and rec["system"] != report["system"]:
                raise RegistryError(f"The report is for system {report['system']!r}; bundle {v!r} is for {rec['system']!r}.")
        body = _dumps(report)
        digest = hashlib.sha256(body.encode()).hexdigest()
        gate = report.get("gate") if isinstance(report.get("gate"), dict) else None
        given = report.get("metadata")
        meta: dict[str, Any] = given if isinstance(given, dict) else {}
        try:
            with self._write() as conn:
                found = conn.execute(select(T_REPORTS.c.id).where(T_REPORTS.c.digest == digest)).scalar()
                if found is None:
                    rid = _inserted_id(conn.execute(insert(T_REPORTS).values(
                        system=report["system"], digest=digest, dataset_id=str(meta.get("dataset_id") or "")[:200] or None,
                        created=str(meta.get("created") or "")[:40] or None, registered_ns=self.clock.now_ns(),
                        registered_by=actor, body=body,
                    )), "report")
                    for pos, v in enumerate(dict.fromkeys(versions)):
                        cand = gate is not None and gate.get("candidate") == v
                        conn.execute(insert(T_RB).values(
                            report_id=rid, bundle_version=v, position=pos,
                            gate_passed=bool(gate.get("passed")) if cand and gate is not None else None,
                            gate_baseline=str(gate.get("baseline")) if cand and gate is not None else None,
                        ))
                else:
                    rid = found
        except IntegrityError as exc:  # the same report added concurrently
            with self._read() as conn:
                again = conn.execute(select(T_REPORTS.c.id).where(T_REPORTS.c.digest == digest)).scalar()
            if again is None:  # not that race: another constraint refused the report
                raise RegistryError(f"The registry database refused the evaluation report: {exc.orig}") from exc
            rid = again
        return {"id": int(rid), "digest": digest, "bundles": versions,
                "gate": None if gate is None else {k: gate.get(k) for k in ("baseline", "candidate", "passed", "reasons")}}

    def reports(self, version: str) -> list[dict[str, Any]]:
        """The evaluation reports attached to a bundle version, newest first (whole reports)."""
        with self._read() as conn:
            rows = conn.execute(
                select(T_REPORTS.c.body).join(T_RB, T_RB.c.report_id == T_REPORTS.c.id)
                .where(T_RB.c.bundle_version == version).order_by(T_REPORTS.c.id.desc())
            ).scalars().all()
        return [json.loads(b) for b in rows]

    # -- reading the state -------------------------------------------------------------------------
    def systems(self) -> list[str]:
        """Systems with a deployment or a registered bundle."""
        with self._read() as conn:
            a = set(conn.execute(select(T_DEPLOY.c.system)).scalars())
            b = set(conn.execute(select(T_BUNDLES.c.system).distinct()).scalars())
        return sorted(a | b)

    def revision(self, system: Any) -> int:
        """The current revision of a system's deployment (0: nothing deployed). One indexed
        read: cheap enough to poll every second."""
        name = _system_name(system)
        engine = self.engine
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        # The pool's DB-API connection directly: far cheaper than a Core round trip (one
        # statement needs no explicit transaction; the pool rolls back on return).
        with engine.raw_connection() as rc:
            cur = rc.cursor()
            try:
                cur.execute(f"SELECT revision FROM deployments WHERE system = {mark}", (name,))
                row = cur.fetchone()
            finally:
                cur.close()
        return int(row[0]) if row else 0

    def state(self, system: Any) -> DeploymentState:
        """The current :class:`DeploymentState` (revision 0, nothing deployed, when there is none)."""
        name = _system_name(system)
        with self._read() as conn:
            return self._state(conn, name)

    @staticmethod
    def _state(conn: Connection, name: str) -> DeploymentState:
        raw = conn.execute(select(T_DEPLOY.c.state).where(T_DEPLOY.c.system == name)).scalar()
        return DeploymentState(name) if raw is None else DeploymentState.from_json(raw)

    def deployment(self, system: Any) -> Any:
        """The current :class:`~closedloop.Deployment` of ``system`` (a :class:`~closedloop.System`):
        every bundle loaded from the store and verified. Raises :class:`BundleError` when one
        fails verification (a serving runtime keeps what it has) and :class:`RegistryError` when
        nothing is deployed."""
        from closedloop.runtime.deployment import Deployment, Flight

        st = self.state(system)
        if st.production is None:
            raise RegistryError(f"Nothing is deployed for system {st.system!r}: deploy a production bundle first.")
        loaded = {v: self.load_bundle(v, system) for v in st.bundles()}
        return Deployment(
            production=loaded[st.production], shadows=tuple(loaded[v] for v in st.shadows),
            flights=tuple(Flight(f.name, loaded[f.bundle], f.share) for f in st.flights),
            killswitch=st.killswitch, revision=st.revision,
        )

    def refresh(self, runtime: Any) -> dict[str, Any]:
        """Hot reload: when the registry's revision differs from the one ``runtime`` serves, load
        the deployment (bundles verified) and :meth:`~closedloop.Runtime.apply` it. A bundle that
        fails to load or verify changes nothing — the runtime keeps serving what it has — and the
        error is returned. Returns ``{"applied", "revision", "serving", "error"}``."""
        system = runtime.system
        serving = runtime.deployment.revision
        rev = self.revision(system.name)
        if rev == serving or rev == 0:
            return {"applied": False, "revision": rev, "serving": serving, "error": None}
        try:
            dep = self.deployment(system)
            runtime.apply(dep)
        except ClosedLoopError as exc:
            return {"applied": False, "revision": rev, "serving": serving, "error": str(exc)}
        return {"applied": True, "revision": dep.revision, "serving": dep.revision, "error": None}

    # -- history -----------------------------------------------------------------------------------
    def history(self, system: Any, *, limit: int | None = None, attempts: bool = True) -> list[dict[str, Any]]:
        """The system's events, oldest first (the last ``limit``): every change, and with
        ``attempts`` also refused and lost attempts."""
        name = _system_name(system)
        q = select(T_EVENTS).where(T_EVENTS.c.system == name)
        if not attempts:
            q = q.where(T_EVENTS.c.status == "applied")
        q = q.order_by(T_EVENTS.c.id.desc())
        if limit is not None:
            q = q.limit(int(limit))
        with self._read() as conn:
            rows = conn.execute(q).mappings().all()
        return [_event(r) for r in reversed(rows)]

    def at(self, system: Any, when: int | _dt.datetime) -> dict[str, Any]:
        """What served at ``when`` (ns since the epoch, or an aware datetime): the state then,
        the production bundle and since when, each flight and shadow with when it started and —
        when it has stopped since — when, by whom, by which operation and why (with the guard's
        metrics when the guard stopped it)."""
        name = _system_name(system)
        t = _ns(when)
        evs = [e for e in self.history(name, attempts=False)]
        before = [e for e in evs if e["at_ns"] <= t]
        after = [e for e in evs if e["at_ns"] > t]
        state = DeploymentState.from_dict(before[-1]["after"]) if before else DeploymentState(name)

        def started(pred: Callable[[DeploymentState], bool]) -> dict[str, Any] | None:
            start = None
            for e in before:
                was = pred(DeploymentState.from_dict(e["before"])) if e["before"] else False
                now = pred(DeploymentState.from_dict(e["after"]))
                if now and not was:
                    start = e
                elif not now:
                    start = None
            return None if start is None else _brief(start)

        def stopped(pred: Callable[[DeploymentState], bool]) -> dict[str, Any] | None:
            for e in after:
                if not pred(DeploymentState.from_dict(e["after"])):
                    return _brief(e, detail=True)
            return None

        flights = []
        for f in state.flights:
            def pred(s: DeploymentState, f: FlightState = f) -> bool:
                g = s.flight(f.name)
                return g is not None and g.bundle == f.bundle
            flights.append({**f.to_dict(), "started": started(pred), "stopped": stopped(pred)})
        shadows = []
        for v in state.shadows:
            def spred(s: DeploymentState, v: str = v) -> bool:
                return v in s.shadows
            shadows.append({"bundle": v, "started": started(spred), "stopped": stopped(spred)})
        production = None
        if state.production is not None:
            def ppred(s: DeploymentState, v: str = state.production) -> bool:
                return s.production == v
            production = {"bundle": state.production, "since": started(ppred), "until": stopped(ppred)}
        return {
            "system": name, "at": iso(t), "at_ns": t, "revision": state.revision, "summary": state.describe(),
            "production": production, "flights": flights, "shadows": shadows, "killswitch": state.killswitch,
            "last_change": _brief(before[-1]) if before else None,
        }

    def status(self, system: Any, *, telemetry: Any = None, now_ns: int | None = None) -> dict[str, Any]:
        """The deployment of a system as a JSON-ready dict: revision, a one-line summary, the
        production bundle, shadows and flights with when each started, the kill switch, the
        bundles' records, the last change and attempts refused or lost since. With ``telemetry``
        (a :class:`~closedloop.telemetry.TelemetryStore` or ``(decisions, outcomes)`` tables): the
        sample-ratio-mismatch check of the flights' arms and the shadows' disagreement by action."""
        from closedloop.runtime.deployment import expected_shares

        name = _system_name(system)
        now = int(now_ns if now_ns is not None else self.clock.now_ns())
        view = self.at(name, 2**62)
        st = self.state(name)
        shares = expected_shares(st.flights) if st.flights else {}
        for f in view["flights"]:
            f["expected_share_of_units"] = shares.get(f["name"])
        hist = self.history(name, limit=50)
        applied = [e for e in hist if e["status"] == "applied"]
        since_last = [e for e in hist if applied and e["id"] > applied[-1]["id"]] if applied else hist
        out: dict[str, Any] = {
            "system": name, "revision": st.revision, "summary": st.describe(), "state": st.to_dict(),
            "production": view["production"], "shadows": view["shadows"], "flights": view["flights"],
            "killswitch": st.killswitch,
            "bundles": {v: self._brief_bundle(v) for v in st.bundles()},
            "last_change": _brief(applied[-1], detail=True) if applied else None,
            "attempts_since_last_change": [_brief(e, detail=True) | {"status": e["status"]} for e in since_last],
            "checked_at": iso(now),
        }
        if telemetry is not None and st.production is not None:
            from closedloop.registry.guard import _tables, shadow_disagreement, srm_view

            decisions, _ = _tables(telemetry)
            tv: dict[str, Any] = {"srm": srm_view(self, name, st, decisions, now), "shadow_disagreement": {}}
            shadow_starts = [s["started"]["at_ns"] for s in view["shadows"] if s["started"]]
            if shadow_starts:
                tv["shadow_disagreement"] = shadow_disagreement(decisions, name, int(min(shadow_starts)), now)
            out["telemetry"] = tv
        return out

    def _brief_bundle(self, version: str) -> dict[str, Any] | None:
        rec = self.bundle(version)
        if rec is None:
            return None
        m = rec.pop("manifest")
        rec["metrics"] = m.get("metrics", {})
        return rec

    def flight_started(self, system: Any, flight: str) -> int | None:
        """When the flight ``flight`` (with its current bundle) started, in ns; None if not running."""
        name = _system_name(system)
        now = self.at(name, 2**62)
        for f in now["flights"]:
            if f["name"] == flight and f["started"] is not None:
                return int(f["started"]["at_ns"])
        return None

    # -- lifecycle ---------------------------------------------------------------------------------
    def deploy(
        self,
        system: Any,
        bundle: Bundle | str | os.PathLike[str],
        *,
        actor: str,
        reason: str,
        shadow: bool = False,
        flight: str | None = None,
        share: float | None = None,
        force: str | None = None,
        expected_revision: int | None = None,
        allow_unsigned: str | None = None,
    ) -> Change:
        """Deploy ``bundle`` for ``system`` (a :class:`~closedloop.System`): as production (the
        default), as a shadow (``shadow=True``: scored beside production, never acted on), or in
        the flight ``flight`` with ``share`` of the units (the same name again changes its bundle
        or share). The bundle must be signed by a key this registry trusts (checked first, before
        any other file of the bundle is read; ``allow_unsigned`` — the reason, recorded — is the
        opt-out for local experiments), is registered if needed and must pass the sanity checks
        (:mod:`closedloop.registry.sanity`); ``force`` (a reason) lets it through the forceable
        ones. The state read before the checks must still be current when the change commits."""
        name = _system_name(system)
        actor, reason = _check_actor(actor), _check_reason(reason)
        if flight is not None:
            check_flight_name(flight)
            if shadow:
                raise RegistryError("Deploy a bundle as a shadow or in a flight, not both.")
            if share is None:
                raise RegistryError(f"A flight needs a 'share' of units in (0, 1]. Got none for flight {flight!r}.")
            share = check_share(share)
        elif share is not None:
            raise RegistryError(f"A 'share' needs a flight name. Got share={share!r} and no flight.")
        self._check_force(force)
        role = "shadow" if shadow else "flight" if flight is not None else "production"
        operation = f"deploy_{role}"
        try:
            signature = self.check_signature(bundle, allow_unsigned=allow_unsigned)
            version = self._ensure_registered(bundle, actor)
        except ClosedLoopError as exc:
            ref = bundle.version if isinstance(bundle, Bundle) else str(bundle)
            self._record(name, operation, actor, reason, "refused", {"error": str(exc), "bundle": ref})
            raise
        seen = self.state(name)
        if expected_revision is not None and seen.revision != expected_revision:
            msg = self._conflict_message(name, operation, expected_revision, seen.revision)
            self._record(name, operation, actor, reason, "conflict", {"bundle": version, "error": msg}, seen)
            raise ConflictError(msg, seen.revision)

        def transition(st: DeploymentState) -> DeploymentState:
            return _deploy_transition(st, role, version, flight, share)

        try:
            transition(seen)
        except RegistryError as exc:
            self._record(name, operation, actor, reason, "refused", {"bundle": version, "error": str(exc)}, seen)
            raise
        checks = [signature] + self._sanity(system, version, seen.production, need_gate=role != "shadow", force=force,
                                            name=name, operation=operation, actor=actor, reason=reason, seen=seen)
        detail: dict[str, Any] = {"bundle": version, "role": role, "checks": checks, "forced": force}
        if allow_unsigned is not None and not signature["passed"]:
            detail["allowed_unsigned"] = allow_unsigned
        if flight is not None:
            detail.update(flight=flight, share=share)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState, dict[str, Any], int | None, str]:
            new = transition(st)
            what = {"production": f"deployed {version} to production",
                    "shadow": f"deployed {version} as a shadow",
                    "flight": f"deployed {version} in flight {flight!r} with {share * 100 if share else 0:.6g}% of units"}
            return new, detail, None, what[role]

        return self._commit(name, operation, actor, reason, mutate, expected=seen.revision)

    def promote(self, system: Any, name: str, *, actor: str, reason: str, force: str | None = None,
                expected_revision: int | None = None) -> Change:
        """Make the bundle of flight ``name`` (or the shadow of version ``name``) production; the
        flight (or shadow) ends. Its sanity checks run again, the gate included."""
        sname = _system_name(system)
        actor, reason = _check_actor(actor), _check_reason(reason)
        self._check_force(force)
        seen = self.state(sname)
        if expected_revision is not None and seen.revision != expected_revision:
            msg = self._conflict_message(sname, "promote", expected_revision, seen.revision)
            self._record(sname, "promote", actor, reason, "conflict", {"name": name, "error": msg}, seen)
            raise ConflictError(msg, seen.revision)
        try:
            version = _promote_transition(seen, name).production
        except RegistryError as exc:
            self._record(sname, "promote", actor, reason, "refused", {"name": name, "error": str(exc)}, seen)
            raise
        version_ = str(version)
        checks = self._sanity(system, version_, seen.production, need_gate=True, force=force, name=sname,
                              operation="promote", actor=actor, reason=reason, seen=seen)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState, dict[str, Any], int | None, str]:
            new = _promote_transition(st, name)
            return new, {"name": name, "bundle": version_, "previous_production": st.production,
                         "checks": checks, "forced": force}, None, f"promoted {name} → production {version_}"

        return self._commit(sname, "promote", actor, reason, mutate, expected=seen.revision)

    def stop(self, system: Any, name: str, *, actor: str, reason: str) -> Change:
        """End the flight ``name``, or the shadow of version ``name``."""
        sname = _system_name(system)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState, dict[str, Any], int | None, str]:
            f = st.flight(name)
            if f is not None:
                return (st.with_(flights=tuple(g for g in st.flights if g.name != name)),
                        {"flight": f.to_dict()}, None, f"stopped flight {name!r} ({f.bundle})")
            if name in st.shadows:
                return (st.with_(shadows=tuple(v for v in st.shadows if v != name)),
                        {"shadow": name}, None, f"stopped shadow {name}")
            raise RegistryError(f"System {sname!r} runs no flight or shadow named {name!r}. Running: "
                                f"flights {[g.name for g in st.flights]}, shadows {list(st.shadows)}.")

        return self._commit(sname, "stop", actor, reason, mutate)

    def killswitch(self, system: Any, on: bool, *, actor: str, reason: str) -> Change:
        """Turn the kill switch on (every decision gets the system's default action, the
        intelligence is skipped) or off. A no-op when it is that way already (not recorded)."""
        sname = _system_name(system)
        on = bool(on)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState | None, dict[str, Any], int | None, str]:
            if st.production is None:
                raise RegistryError(f"Nothing is deployed for system {sname!r}; there is no kill switch to turn.")
            if st.killswitch == on:
                return None, {}, None, f"the kill switch is {'on' if on else 'off'} already"
            return st.with_(killswitch=on), {"killswitch": on}, None, f"kill switch {'ON' if on else 'off'}"

        return self._commit(sname, "killswitch_on" if on else "killswitch_off", actor, reason, mutate)

    def rollback(self, system: Any, *, actor: str, reason: str) -> Change:
        """Restore the state before the last change not rolled back yet, whatever it was (a
        deploy, a promotion, the kill switch …). Again: one step further back. The change's
        message says which change was undone and which revision's state is back."""
        sname = _system_name(system)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState, dict[str, Any], int | None, str]:
            target = conn.execute(
                select(T_EVENTS).where(and_(T_EVENTS.c.system == sname, T_EVENTS.c.status == "applied",
                                            T_EVENTS.c.undoable.is_(True), T_EVENTS.c.undone_by.is_(None)))
                .order_by(T_EVENTS.c.id.desc()).limit(1)
            ).mappings().first()
            if target is None:
                raise RegistryError(f"Nothing to roll back for system {sname!r}: no change is left to undo.")
            back = DeploymentState.from_json(target["before"]) if target["before"] else DeploymentState(sname)
            if back.production is None:
                raise RegistryError(
                    f"Change #{target['id']} ({target['operation']}) was the first deployment of {sname!r}; rolling it "
                    "back would leave nothing serving. Turn the kill switch on instead."
                )
            dropped = []
            stops = conn.execute(
                select(T_EVENTS.c.detail).where(and_(T_EVENTS.c.system == sname, T_EVENTS.c.status == "applied",
                                                     T_EVENTS.c.operation == "guard_stop", T_EVENTS.c.id > target["id"]))
            ).scalars().all()
            stopped = {(d["flight"]["name"], d["flight"]["bundle"]) for d in map(json.loads, stops) if "flight" in d}
            if stopped:
                keep = tuple(f for f in back.flights if (f.name, f.bundle) not in stopped)
                dropped = [f.to_dict() for f in back.flights if (f.name, f.bundle) in stopped]
                back = back.with_(flights=keep)
            trusted = {r.key_id: r.public_key for r in conn.execute(
                select(T_KEYS.c.key_id, T_KEYS.c.public_key).where(T_KEYS.c.revoked_ns.is_(None))).all()}
            unsigned = []
            for v in back.bundles():
                try:
                    b = self.store.load(v)
                except BundleError as exc:
                    raise RegistryError(f"Cannot roll back to revision {target['revision_before']}: its bundle {v!r} "
                                        f"fails verification in the store ({exc}).") from exc
                try:
                    verify_signature(b.signature, str(b.manifest["digest"]), trusted, v)
                except BundleError as exc:  # in the history already: it may serve again, with a warning
                    unsigned.append({"bundle": v, "warning": exc.detail})
            detail = {"undid": int(target["id"]), "undid_operation": target["operation"],
                      "undid_actor": target["actor"], "undid_reason": target["reason"],
                      "restored_revision": target["revision_before"], "dropped_flights": dropped}
            if unsigned:
                detail["unsigned"] = unsigned
            switch = ""
            if back.killswitch != st.killswitch:  # said aloud: undoing 'kill switch off' turns it back ON
                detail["killswitch"] = {"before": st.killswitch, "after": back.killswitch}
                switch = ("; the kill switch is ON again: every decision gets the system's default action "
                          "('closedloop killswitch off --reason …' serves the intelligence again)"
                          if back.killswitch else "; the kill switch is off again: the intelligence decides again")
            note = (f" without flight(s) {', '.join(d['name'] for d in dropped)} that the guard stopped"
                    if dropped else "")
            if unsigned:
                note += (f" (warning: {', '.join(u['bundle'] for u in unsigned)} not signed by a trusted key; "
                         "restored because it is in the history)")
            msg = (f"rolled back change #{target['id']} ({target['operation']} by {target['actor']}: "
                   f"{target['reason']}); restored the state of revision {target['revision_before']}{note}: "
                   f"{back.describe()}{switch}")
            return back, detail, int(target["id"]), msg

        return self._commit(sname, "rollback", actor, reason, mutate, undoable=False)

    def guard_stop(self, system: Any, flight: str, *, actor: str, reason: str, detail: Mapping[str, Any]) -> Change:
        """Stop ``flight`` because a guard metric breached (the automatic rollback): production
        and everything else stay; the event records ``detail`` (metric, both values, test). When
        the flight's start was the last change, that change counts as rolled back, so a manual
        rollback then goes one step further back. A rollback never restarts this flight."""
        sname = _system_name(system)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState, dict[str, Any], int | None, str]:
            f = st.flight(flight)
            if f is None:
                raise RegistryError(f"System {sname!r} runs no flight named {flight!r}; nothing to stop.")
            new = st.with_(flights=tuple(g for g in st.flights if g.name != flight))
            last = conn.execute(
                select(T_EVENTS).where(and_(T_EVENTS.c.system == sname, T_EVENTS.c.status == "applied",
                                            T_EVENTS.c.undoable.is_(True), T_EVENTS.c.undone_by.is_(None)))
                .order_by(T_EVENTS.c.id.desc()).limit(1)
            ).mappings().first()
            undo = None
            if last is not None and last["before"] and DeploymentState.from_json(last["before"]).content() == new.content():
                undo = int(last["id"])
            d = {"flight": f.to_dict(), **dict(detail), "undid": undo,
                 "restored_revision": last["revision_before"] if undo is not None and last is not None else None}
            msg = f"the guard stopped flight {flight!r} ({f.bundle}): {reason}; now {new.describe()}"
            return new, d, undo, msg

        return self._commit(sname, "guard_stop", actor, reason, mutate, undoable=False)

    # -- internals ---------------------------------------------------------------------------------
    @staticmethod
    def _check_force(force: Any) -> None:
        if force is not None and (not isinstance(force, str) or not force.strip()):
            raise RegistryError(f"'force' must be the reason for forcing (a non-empty string) or None. Got {force!r} instead.")

    def _sanity(self, system: Any, version: str, production: str | None, *, need_gate: bool, force: str | None,
                name: str, operation: str, actor: str, reason: str, seen: DeploymentState) -> list[dict[str, Any]]:
        from closedloop.registry.sanity import run_checks

        if not hasattr(system, "schema"):
            raise RegistryError(f"Deploying needs the closedloop.System itself (to check the bundle). Got {system!r} instead.")
        _, results = run_checks(system, lambda: self.load_bundle(version, system), self.reports(version),
                                production=production, need_gate=need_gate, force=force)
        checks = [c.to_dict() for c in results]
        failed = [c for c in results if not c.passed and not c.forced]
        if failed:
            names = ", ".join(c.name for c in failed)
            why = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            forceable = all(c.forceable for c in failed)
            hint = " (--force with a reason overrides these)" if forceable and not force else ""
            self._record(name, operation, actor, reason, "refused",
                         {"bundle": version, "checks": checks, "forced": force, "error": f"failed {names}"}, seen)
            raise SanityCheckError(f"Bundle {version} failed sanity check(s) {names}{hint}: {why}", checks)
        return checks

    def _conflict_message(self, name: str, operation: str, seen: int | None, current: int | None) -> str:
        last = self.history(name, limit=1, attempts=False)
        by = ""
        if last:
            e = last[-1]
            by = f" ({e['operation']} by {e['actor']} at {e['at']}: {e['reason']})"
        return (f"The deployment of {name!r} changed while this {operation} was prepared: revision {seen} was read, "
                f"revision {current} is current{by}. Nothing was changed; check the status and run it again.")

    def _record(self, name: str, operation: str, actor: Any, reason: Any, status: str, detail: dict[str, Any],
                seen: DeploymentState | None = None) -> None:
        """Record a refused or lost attempt (its own transaction: the attempt's was rolled back)."""
        actor_s = actor if isinstance(actor, str) and actor else "?"
        reason_s = reason if isinstance(reason, str) else ""
        with self._write() as conn:
            cur = self._state(conn, name)
            conn.execute(insert(T_EVENTS).values(
                system=name, at_ns=self.clock.now_ns(), actor=actor_s[:_MAX_ACTOR], operation=operation,
                reason=reason_s, status=status, revision_before=(seen or cur).revision, revision_after=None,
                before=(seen or cur).to_json(), after=None, detail=_dumps(detail), undoable=False, undone_by=None,
            ))

    def _commit(self, name: str, operation: str, actor: str, reason: str, mutate: _Mutation, *,
                expected: int | None = None, undoable: bool = True) -> Change:
        actor, reason = _check_actor(actor), _check_reason(reason)
        try:
            with self._write() as conn:
                row = conn.execute(select(T_DEPLOY.c.revision, T_DEPLOY.c.state)
                                   .where(T_DEPLOY.c.system == name)).first()
                cur = DeploymentState(name) if row is None else DeploymentState.from_json(row.state)
                if expected is not None and cur.revision != expected:
                    raise _Lost(expected, cur.revision)
                new, detail, undo, message = mutate(conn, cur)
                if new is None:
                    return Change(name, operation, cur, cur, message, None, detail, changed=False)
                new = new.with_(revision=cur.revision + 1, system=name)
                now = self.clock.now_ns()
                if row is None:
                    conn.execute(insert(T_DEPLOY).values(system=name, revision=new.revision, state=new.to_json(),
                                                         updated_ns=now))
                else:
                    res = conn.execute(update(T_DEPLOY).where(and_(T_DEPLOY.c.system == name,
                                                                   T_DEPLOY.c.revision == cur.revision))
                                       .values(revision=new.revision, state=new.to_json(), updated_ns=now))
                    if res.rowcount != 1:
                        raise _Lost(cur.revision, None)
                eid = _inserted_id(conn.execute(insert(T_EVENTS).values(
                    system=name, at_ns=now, actor=actor, operation=operation, reason=reason, status="applied",
                    revision_before=cur.revision, revision_after=new.revision, before=cur.to_json(),
                    after=new.to_json(), detail=_dumps({**detail, "message": message}), undoable=undoable,
                    undone_by=None,
                )), "event")
                if undo is not None:
                    conn.execute(update(T_EVENTS).where(T_EVENTS.c.id == undo).values(undone_by=eid))
                if conn.dialect.name == "postgresql":  # delivered at commit: serving workers reload at once
                    conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                                 {"channel": NOTIFY_CHANNEL, "payload": f"{name}:{new.revision}"})
        except (_Lost, IntegrityError) as exc:
            seen = exc.seen if isinstance(exc, _Lost) else expected
            now_rev = self.revision(name)
            msg = self._conflict_message(name, operation, seen if seen is not None else now_rev - 1, now_rev)
            self._record(name, operation, actor, reason, "conflict", {"error": msg})
            raise ConflictError(msg, now_rev) from None
        except RegistryError as exc:
            if not isinstance(exc, ConflictError | SanityCheckError):
                self._record(name, operation, actor, reason, "refused", {"error": str(exc)})
            raise
        return Change(name, operation, cur, new, message, eid, detail)


def _deploy_transition(st: DeploymentState, role: str, version: str, flight: str | None,
                       share: float | None) -> DeploymentState:
    if role == "production":
        if st.production == version:
            raise RegistryError(f"{version} is production already.")
        return st.with_(production=version,
                        shadows=tuple(v for v in st.shadows if v != version),
                        flights=tuple(f for f in st.flights if f.bundle != version))
    if st.production is None:
        raise RegistryError(f"Nothing is deployed for system {st.system!r}: deploy a production bundle before "
                            f"a {role}.")
    if version == st.production:
        raise RegistryError(f"{version} is production already; a {role} must be another bundle.")
    if role == "shadow":
        if version in st.shadows:
            raise RegistryError(f"{version} is a shadow already.")
        return st.with_(shadows=(*st.shadows, version))
    flight_ = str(flight)
    new = FlightState(flight_, version, float(share or 0.0))
    if st.flight(flight_) is not None:
        if st.flight(flight_) == new:
            raise RegistryError(f"Flight {flight!r} runs {version} with that share already.")
        return st.with_(flights=tuple(new if f.name == flight else f for f in st.flights))
    return st.with_(flights=(*st.flights, new))


def _promote_transition(st: DeploymentState, name: str) -> DeploymentState:
    if st.production is None:
        raise RegistryError(f"Nothing is deployed for system {st.system!r}; there is nothing to promote into.")
    f = st.flight(name)
    if f is not None:
        return st.with_(production=f.bundle, flights=tuple(g for g in st.flights if g.name != name),
                        shadows=tuple(v for v in st.shadows if v != f.bundle))
    if name in st.shadows:
        return st.with_(production=name, shadows=tuple(v for v in st.shadows if v != name),
                        flights=tuple(g for g in st.flights if g.bundle != name))
    raise RegistryError(f"System {st.system!r} runs no flight named {name!r} and no shadow of that version. Running: "
                        f"flights {[g.name for g in st.flights]}, shadows {list(st.shadows)}.")


def _ns(when: int | _dt.datetime) -> int:
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            raise RegistryError(f"A time must be timezone-aware (or ns since the epoch). Got {when!r} instead.")
        return int(when.timestamp() * 1e6) * 1000
    if isinstance(when, bool) or not isinstance(when, int):
        raise RegistryError(f"A time must be ns since the epoch or an aware datetime. Got {when!r} instead.")
    return when


def _inserted_id(result: CursorResult[Any], table: str) -> int:
    """The id the database gave the one row ``result`` inserted."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RegistryError(f"The registry database gave the new {table} row no id (an autoincrement key is required).")
    return int(key[0])


def _event(r: RowMapping) -> dict[str, Any]:
    return {
        "id": int(r["id"]), "system": r["system"], "at": iso(r["at_ns"]), "at_ns": int(r["at_ns"]),
        "actor": r["actor"], "operation": r["operation"], "reason": r["reason"], "status": r["status"],
        "revision_before": r["revision_before"], "revision_after": r["revision_after"],
        "before": json.loads(r["before"]) if r["before"] else None,
        "after": json.loads(r["after"]) if r["after"] else None,
        "detail": json.loads(r["detail"]), "undone_by": r["undone_by"],
    }


def _brief(e: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    out = {k: e[k] for k in ("id", "at", "at_ns", "actor", "operation", "reason", "revision_after")}
    if detail:
        d = dict(e["detail"])
        d.pop("checks", None)
        out["detail"] = d
    return out

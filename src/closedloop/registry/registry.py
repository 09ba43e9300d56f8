"""The registry: bundles, evaluation reports, the deployment state of each system and its history.

:class:`Registry` is the one entry point — a small facade over a SQLAlchemy database (SQLite by
default, PostgreSQL by URL — the same code) and a :class:`~closedloop.registry.store.BundleStore`.
See ``docs/registry.md`` for the guide; in short::

    reg = Registry.from_settings(settings).open()          # migrates an empty database to head
    reg.deploy(system, "bundles/v1", actor="alice", reason="first model")          # production
    reg.deploy(system, v2, actor="alice", reason="try v2", flight="v2", share=0.05)
    reg.promote(system, "v2", actor="alice", reason="v2 wins")
    reg.rollback("phishing", actor="bob", reason="complaints")   # the state before the last change
    reg.deployment(system)           # a closedloop.Deployment: bundles loaded and verified
    reg.revision("phishing")         # cheap: poll it to notice changes

Its parts share one :class:`~closedloop.registry.db.Database` (the engine, the clock, the read and
write transactions), and each method delegates to one of them:

* ``reg.catalog`` — :class:`~closedloop.registry.catalog.Catalog`: bundles (registered, stored,
  loaded verified, their signature check) and evaluation reports;
* ``reg.keyring`` — :class:`~closedloop.registry.keys.Keys`: the trusted signing keys;
* ``reg.lifecycle`` — :class:`~closedloop.registry.lifecycle.Lifecycle`: what serves, and deploy,
  promote, stop, the kill switch, rollback and the guard's stop, each committed by its
  :class:`~closedloop.registry.journal.Journal` (optimistic locking; refused and lost attempts recorded);
* ``reg.timeline`` — :class:`~closedloop.registry.history.History`: the history, what served at a
  time, the status.

Authentication is the caller's job (the CLI and the service check an ``admin`` credential);
``actor`` is the credential's name, recorded in the history.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from closedloop.base.times import iso
from closedloop.errors import RegistryError
from closedloop.registry.catalog import Catalog
from closedloop.registry.db import Database
from closedloop.registry.history import History
from closedloop.registry.journal import NOTIFY_CHANNEL, Change
from closedloop.registry.keys import Keys
from closedloop.registry.lifecycle import Lifecycle
from closedloop.registry.state import DeploymentState
from closedloop.registry.store import BundleStore
from closedloop.registry.store_db import default_bundle_store
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.clock import Clock, SystemClock
from closedloop.runtime.signing import SigningKey

__all__ = ["NOTIFY_CHANNEL", "Change", "Registry", "iso"]

BundleRef = Bundle | str | os.PathLike[str]


class Registry:
    """Bundles, reports, deployment state and history of every system in one database.

    Parameters
    ----------
    url:
        A SQLAlchemy URL: ``sqlite:///path/registry.sqlite`` or ``postgresql://user@host/db``.
    bundles:
        The bundle store: a :class:`BundleStore`, or a directory (``<home>/bundles``): its
        :class:`~closedloop.registry.store.FileBundleStore` — with a PostgreSQL registry, which
        several hosts may share, as the cache of the registry database's bundles
        (:func:`~closedloop.registry.store_db.default_bundle_store`).
    clock:
        Where event times come from (default: the wall clock).

    The constructor only records configuration; :meth:`open` connects (and migrates).
    """

    def __init__(self, url: str, bundles: str | os.PathLike[str] | BundleStore, *, clock: Clock | None = None) -> None:
        if not isinstance(url, str) or not url:
            raise RegistryError(f"The registry 'url' must be a non-empty string. Got {url!r} instead.")
        self.db = Database(url, clock if clock is not None else SystemClock())
        self.keyring = Keys(self.db)
        self.catalog = Catalog(self.db, bundles if isinstance(bundles, BundleStore) else default_bundle_store(self.db, bundles),
                               self.keyring)
        self.timeline = History(self.db, self.catalog)
        self.lifecycle = Lifecycle(self.db, self.catalog, self.timeline)

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Clock | None = None) -> Registry:
        """The registry of a project home: ``settings.registry`` (URL) and ``settings.bundles``."""
        return cls(settings.registry, settings.bundles, clock=clock)

    # -- connection ------------------------------------------------------------------------------
    def open(self, *, upgrade: bool = True) -> Registry:
        """Connect; with ``upgrade`` (default) migrate the schema to this package's head first
        (an empty database gets the whole schema), else refuse a database that is not at head."""
        self.db.open(migrate=upgrade)
        return self

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @property
    def clock(self) -> Clock:
        return self.db.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.db.clock = clock

    @property
    def store(self) -> BundleStore:
        return self.catalog.store

    @store.setter
    def store(self, store: BundleStore) -> None:
        self.catalog.store = store

    # -- catalog: bundles and reports (closedloop.registry.catalog) -------------------------------
    def add_bundle(self, bundle: BundleRef, *, actor: str, allow_unsigned: str | None = None) -> dict[str, Any]:
        """Register a bundle, its signature checked first (see :meth:`Catalog.add_bundle`)."""
        return self.catalog.add_bundle(bundle, actor=actor, allow_unsigned=allow_unsigned)

    def bundle(self, version: str) -> dict[str, Any] | None:
        """The record of a registered bundle (without its manifest), or None."""
        return self.catalog.bundle(version)

    def bundles(self, system: Any) -> list[dict[str, Any]]:
        """Every registered bundle of a system, oldest first."""
        return self.catalog.bundles(system)

    def load_bundle(self, version: str, system: Any = None) -> Bundle:
        """Load a registered bundle from the store, verified (against its registered digest too)."""
        return self.catalog.load_bundle(version, system)

    def check_signature(self, bundle: BundleRef, *, allow_unsigned: str | None = None) -> dict[str, Any]:
        """The ``signature`` check of a bundle (see :meth:`Catalog.check_signature`)."""
        return self.catalog.check_signature(bundle, allow_unsigned=allow_unsigned)

    def add_report(self, report: Mapping[str, Any] | str | os.PathLike[str], *, actor: str) -> dict[str, Any]:
        """Attach an evaluation report to the bundles it evaluated (idempotent by content)."""
        return self.catalog.add_report(report, actor=actor)

    def reports(self, version: str) -> list[dict[str, Any]]:
        """The evaluation reports attached to a bundle version, newest first."""
        return self.catalog.reports(version)

    # -- signing keys (closedloop.registry.keys) ----------------------------------------------------
    def trust_key(self, public_key: str, *, name: str, actor: str) -> dict[str, Any]:
        """Trust bundles signed by the Ed25519 key ``public_key`` (base64)."""
        return self.keyring.trust_key(public_key, name=name, actor=actor)

    def revoke_key(self, key: str, *, actor: str) -> dict[str, Any]:
        """Stop trusting a key (by id or base64 public key)."""
        return self.keyring.revoke_key(key, actor=actor)

    def keys(self) -> list[dict[str, Any]]:
        """Every key the registry trusts or trusted."""
        return self.keyring.keys()

    def trusted_keys(self) -> dict[str, str]:
        """The keys deploy accepts now: key id → base64 public key."""
        return self.keyring.trusted_keys()

    def signing_key(self, home: str | os.PathLike[str]) -> SigningKey:
        """The signing key of a project home (see :meth:`Keys.signing_key`)."""
        return self.keyring.signing_key(home)

    # -- what serves and the changes (closedloop.registry.lifecycle) ------------------------------
    def systems(self) -> list[str]:
        """Systems with a deployment or a registered bundle."""
        return self.lifecycle.systems()

    def revision(self, system: Any) -> int:
        """The current revision of a system's deployment (0: nothing deployed); cheap to poll."""
        return self.lifecycle.revision(system)

    def state(self, system: Any) -> DeploymentState:
        """The current :class:`DeploymentState` (revision 0, nothing deployed, when there is none)."""
        return self.lifecycle.state(system)

    def deployment(self, system: Any) -> Any:
        """The current :class:`~closedloop.Deployment` of ``system``: every bundle loaded and verified."""
        return self.lifecycle.deployment(system)

    def refresh(self, runtime: Any) -> dict[str, Any]:
        """Hot reload of ``runtime`` when the revision moved (see :meth:`Lifecycle.refresh`)."""
        return self.lifecycle.refresh(runtime)

    def deploy(self, system: Any, bundle: BundleRef, *, actor: str, reason: str, shadow: bool = False,
               flight: str | None = None, share: float | None = None, force: str | None = None,
               expected_revision: int | None = None, allow_unsigned: str | None = None) -> Change:
        """Deploy ``bundle`` as production, a shadow or in a flight (see :meth:`Lifecycle.deploy`)."""
        return self.lifecycle.deploy(system, bundle, actor=actor, reason=reason, shadow=shadow, flight=flight, share=share,
                                     force=force, expected_revision=expected_revision, allow_unsigned=allow_unsigned)

    def promote(self, system: Any, name: str, *, actor: str, reason: str, force: str | None = None,
                expected_revision: int | None = None) -> Change:
        """Make the bundle of flight ``name`` (or the shadow ``name``) production; its checks run again."""
        return self.lifecycle.promote(system, name, actor=actor, reason=reason, force=force,
                                      expected_revision=expected_revision)

    def stop(self, system: Any, name: str, *, actor: str, reason: str) -> Change:
        """End the flight ``name``, or the shadow of version ``name``."""
        return self.lifecycle.stop(system, name, actor=actor, reason=reason)

    def killswitch(self, system: Any, on: bool, *, actor: str, reason: str) -> Change:
        """Turn the kill switch on or off (a no-op, not recorded, when it is that way already)."""
        return self.lifecycle.killswitch(system, on, actor=actor, reason=reason)

    def rollback(self, system: Any, *, actor: str, reason: str) -> Change:
        """Restore the state before the last change not rolled back yet (again: one step further back)."""
        return self.lifecycle.rollback(system, actor=actor, reason=reason)

    def guard_stop(self, system: Any, flight: str, *, actor: str, reason: str, detail: Mapping[str, Any]) -> Change:
        """Stop ``flight`` because a guard metric breached (see :meth:`Lifecycle.guard_stop`)."""
        return self.lifecycle.guard_stop(system, flight, actor=actor, reason=reason, detail=detail)

    # -- history (closedloop.registry.history) ------------------------------------------------------
    def history(self, system: Any, *, limit: int | None = None, attempts: bool = True) -> list[dict[str, Any]]:
        """The system's events, oldest first (the last ``limit``); with ``attempts`` refused and lost ones too."""
        return self.timeline.history(system, limit=limit, attempts=attempts)

    def at(self, system: Any, when: int | _dt.datetime) -> dict[str, Any]:
        """What served at ``when`` (see :meth:`History.at`)."""
        return self.timeline.at(system, when)

    def status(self, system: Any, *, telemetry: Any = None, now_ns: int | None = None) -> dict[str, Any]:
        """The deployment of a system as a JSON-ready dict (see :meth:`History.status`)."""
        return self.timeline.status(system, telemetry=telemetry, now_ns=now_ns)

    def flight_started(self, system: Any, flight: str) -> int | None:
        """When the flight ``flight`` (with its current bundle) started, in ns; None if not running."""
        return self.timeline.flight_started(system, flight)

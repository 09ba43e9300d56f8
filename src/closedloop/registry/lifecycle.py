"""The lifecycle of a system's deployment: what serves (the state, its revision, the loaded
:class:`~closedloop.Deployment`, hot reload) and the changes to it — deploy (production, shadow,
flight), promote, stop, the kill switch, rollback and the guard's stop.

Every change is one transaction that checks the revision it read (:class:`~closedloop.registry.journal.Journal`):
two racing changes leave one consistent state, and the loser gets :class:`~closedloop.errors.ConflictError`
and is recorded as a failed attempt. Refused attempts (sanity checks, bad transitions) are
recorded too. Rollback restores the state before the last change that has not been rolled back
yet, whatever it was; a second rollback goes one step further back. A flight the guard stopped
is never restarted by a rollback (deploy it again on purpose).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection, RowMapping

from closedloop.errors import BundleError, ClosedLoopError, ConflictError, RegistryError, SanityCheckError
from closedloop.registry.args import check_actor, check_force, check_reason, system_name
from closedloop.registry.catalog import Catalog
from closedloop.registry.db import Database
from closedloop.registry.history import History
from closedloop.registry.journal import Change, Journal
from closedloop.registry.keys import trusted_in
from closedloop.registry.models import bundles as T_BUNDLES
from closedloop.registry.models import deployments as T_DEPLOY
from closedloop.registry.models import events as T_EVENTS
from closedloop.registry.rows import read_revision, read_state
from closedloop.registry.state import DeploymentState, FlightState, check_flight_name, check_share
from closedloop.registry.transitions import deploy_transition, promote_transition
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.signing import verify_signature

__all__ = ["Lifecycle"]

_Step = tuple[DeploymentState, dict[str, Any], int | None, str]


class Lifecycle:
    """The deployments of one registry database: read, and changed through the ``journal``."""

    def __init__(self, db: Database, catalog: Catalog, history: History) -> None:
        self.db = db
        self.catalog = catalog
        self.journal = Journal(db, history)

    # -- what serves -------------------------------------------------------------------------------
    def systems(self) -> list[str]:
        """Systems with a deployment or a registered bundle."""
        with self.db.read() as conn:
            a = set(conn.execute(select(T_DEPLOY.c.system)).scalars())
            b = set(conn.execute(select(T_BUNDLES.c.system).distinct()).scalars())
        return sorted(a | b)

    def revision(self, system: Any) -> int:
        """The current revision of a system's deployment (0: nothing deployed). One indexed
        read: cheap enough to poll every second."""
        return read_revision(self.db.engine, system_name(system))

    def state(self, system: Any) -> DeploymentState:
        """The current :class:`DeploymentState` (revision 0, nothing deployed, when there is none)."""
        name = system_name(system)
        with self.db.read() as conn:
            return read_state(conn, name)

    def deployment(self, system: Any) -> Any:
        """The current :class:`~closedloop.Deployment` of ``system`` (a :class:`~closedloop.System`):
        every bundle loaded from the store and verified. Raises :class:`BundleError` when one
        fails verification (a serving runtime keeps what it has) and :class:`RegistryError` when
        nothing is deployed."""
        from closedloop.runtime.deployment import Deployment, Flight

        st = self.state(system)
        if st.production is None:
            raise RegistryError(f"Nothing is deployed for system {st.system!r}: deploy a production bundle first.")
        loaded = {v: self.catalog.load_bundle(v, system) for v in st.bundles()}
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

    # -- changes -----------------------------------------------------------------------------------
    def deploy(self, system: Any, bundle: Bundle | str | os.PathLike[str], *, actor: str, reason: str,
               shadow: bool = False, flight: str | None = None, share: float | None = None, force: str | None = None,
               expected_revision: int | None = None, allow_unsigned: str | None = None) -> Change:
        """Deploy ``bundle`` for ``system`` (a :class:`~closedloop.System`): as production (the
        default), as a shadow (``shadow=True``: scored beside production, never acted on), or in
        the flight ``flight`` with ``share`` of the units (the same name again changes its bundle
        or share). The bundle must be signed by a key this registry trusts (checked first, before
        any other file of the bundle is read; ``allow_unsigned`` — the reason, recorded — is the
        opt-out for local experiments), is registered if needed and must pass the sanity checks
        (:mod:`closedloop.registry.sanity`); ``force`` (a reason) lets it through the forceable
        ones. The state read before the checks must still be current when the change commits."""
        name = system_name(system)
        actor, reason = check_actor(actor), check_reason(reason)
        role, share = _deploy_role(shadow, flight, share)
        check_force(force)
        operation = f"deploy_{role}"
        signature, version = self._signed_and_registered(name, operation, bundle, actor, reason, allow_unsigned)
        seen = self.state(name)
        self._expect(name, operation, actor, reason, expected_revision, seen, {"bundle": version})
        try:
            deploy_transition(seen, role, version, flight, share)
        except RegistryError as exc:
            self.journal.record(name, operation, actor, reason, "refused", {"bundle": version, "error": str(exc)}, seen)
            raise
        checks = [signature] + self._sanity(system, version, seen.production, need_gate=role != "shadow", force=force,
                                            name=name, operation=operation, actor=actor, reason=reason, seen=seen)
        detail: dict[str, Any] = {"bundle": version, "role": role, "checks": checks, "forced": force}
        if allow_unsigned is not None and not signature["passed"]:
            detail["allowed_unsigned"] = allow_unsigned
        if flight is not None:
            detail.update(flight=flight, share=share)
        what = {"production": f"deployed {version} to production",
                "shadow": f"deployed {version} as a shadow",
                "flight": f"deployed {version} in flight {flight!r} with {share * 100 if share else 0:.6g}% of units"}

        def mutate(conn: Connection, st: DeploymentState) -> _Step:
            return deploy_transition(st, role, version, flight, share), detail, None, what[role]

        return self.journal.commit(name, operation, actor, reason, mutate, expected=seen.revision)

    def _signed_and_registered(self, name: str, operation: str, bundle: Bundle | str | os.PathLike[str], actor: str,
                               reason: str, allow_unsigned: str | None) -> tuple[dict[str, Any], str]:
        """A deploy's signature check and the bundle's registered version; a refusal is recorded."""
        try:
            signature = self.catalog.check_signature(bundle, allow_unsigned=allow_unsigned)
            return signature, self.catalog.ensure_registered(bundle, actor)
        except ClosedLoopError as exc:
            ref = bundle.version if isinstance(bundle, Bundle) else str(bundle)
            self.journal.record(name, operation, actor, reason, "refused", {"error": str(exc), "bundle": ref})
            raise

    def _expect(self, name: str, operation: str, actor: str, reason: str, expected: int | None,
                seen: DeploymentState, about: dict[str, Any]) -> None:
        """With ``expected`` (the revision the caller saw): a state at another revision is a
        conflict, recorded with ``about`` and raised."""
        if expected is not None and seen.revision != expected:
            msg = self.journal.conflict_message(name, operation, expected, seen.revision)
            self.journal.record(name, operation, actor, reason, "conflict", {**about, "error": msg}, seen)
            raise ConflictError(msg, seen.revision)

    def promote(self, system: Any, name: str, *, actor: str, reason: str, force: str | None = None,
                expected_revision: int | None = None) -> Change:
        """Make the bundle of flight ``name`` (or the shadow of version ``name``) production; the
        flight (or shadow) ends. Its sanity checks run again, the gate included."""
        sname = system_name(system)
        actor, reason = check_actor(actor), check_reason(reason)
        check_force(force)
        seen = self.state(sname)
        self._expect(sname, "promote", actor, reason, expected_revision, seen, {"name": name})
        try:
            version = promote_transition(seen, name).production
        except RegistryError as exc:
            self.journal.record(sname, "promote", actor, reason, "refused", {"name": name, "error": str(exc)}, seen)
            raise
        version_ = str(version)
        checks = self._sanity(system, version_, seen.production, need_gate=True, force=force, name=sname,
                              operation="promote", actor=actor, reason=reason, seen=seen)

        def mutate(conn: Connection, st: DeploymentState) -> _Step:
            new = promote_transition(st, name)
            return new, {"name": name, "bundle": version_, "previous_production": st.production,
                         "checks": checks, "forced": force}, None, f"promoted {name} → production {version_}"

        return self.journal.commit(sname, "promote", actor, reason, mutate, expected=seen.revision)

    def stop(self, system: Any, name: str, *, actor: str, reason: str) -> Change:
        """End the flight ``name``, or the shadow of version ``name``."""
        sname = system_name(system)

        def mutate(conn: Connection, st: DeploymentState) -> _Step:
            f = st.flight(name)
            if f is not None:
                return (st.with_(flights=tuple(g for g in st.flights if g.name != name)),
                        {"flight": f.to_dict()}, None, f"stopped flight {name!r} ({f.bundle})")
            if name in st.shadows:
                return (st.with_(shadows=tuple(v for v in st.shadows if v != name)),
                        {"shadow": name}, None, f"stopped shadow {name}")
            raise RegistryError(f"System {sname!r} runs no flight or shadow named {name!r}. Running: "
                                f"flights {[g.name for g in st.flights]}, shadows {list(st.shadows)}.")

        return self.journal.commit(sname, "stop", actor, reason, mutate)

    def killswitch(self, system: Any, on: bool, *, actor: str, reason: str) -> Change:
        """Turn the kill switch on (every decision gets the system's default action, the
        intelligence is skipped) or off. A no-op when it is that way already (not recorded)."""
        sname = system_name(system)
        on = bool(on)

        def mutate(conn: Connection, st: DeploymentState) -> tuple[DeploymentState | None, dict[str, Any], int | None, str]:
            if st.production is None:
                raise RegistryError(f"Nothing is deployed for system {sname!r}; there is no kill switch to turn.")
            if st.killswitch == on:
                return None, {}, None, f"the kill switch is {'on' if on else 'off'} already"
            return st.with_(killswitch=on), {"killswitch": on}, None, f"kill switch {'ON' if on else 'off'}"

        return self.journal.commit(sname, "killswitch_on" if on else "killswitch_off", actor, reason, mutate)

    def rollback(self, system: Any, *, actor: str, reason: str) -> Change:
        """Restore the state before the last change not rolled back yet, whatever it was (a
        deploy, a promotion, the kill switch …). Again: one step further back. The change's
        message says which change was undone and which revision's state is back."""
        sname = system_name(system)

        def mutate(conn: Connection, st: DeploymentState) -> _Step:
            target = _undo_target(conn, sname)
            if target is None:
                raise RegistryError(f"Nothing to roll back for system {sname!r}: no change is left to undo.")
            back, dropped = _without_guard_stops(conn, sname, target, _restored_state(target, sname))
            unsigned = self._unsigned(conn, back, target)
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
            return back, detail, int(target["id"]), _rollback_message(target, back, dropped, unsigned) + switch

        return self.journal.commit(sname, "rollback", actor, reason, mutate, undoable=False)

    def _unsigned(self, conn: Connection, back: DeploymentState, target: RowMapping) -> list[dict[str, Any]]:
        """The bundles of the state a rollback restores that no trusted key signed (they may serve
        again: they are in the history); a bundle that fails verification in the store refuses it."""
        trusted = trusted_in(conn)
        unsigned = []
        for v in back.bundles():
            try:
                b = self.catalog.store.load(v)
            except BundleError as exc:
                raise RegistryError(f"Cannot roll back to revision {target['revision_before']}: its bundle {v!r} "
                                    f"fails verification in the store ({exc}).") from exc
            try:
                verify_signature(b.signature, str(b.manifest["digest"]), trusted, v)
            except BundleError as exc:  # in the history already: it may serve again, with a warning
                unsigned.append({"bundle": v, "warning": exc.detail})
        return unsigned

    def guard_stop(self, system: Any, flight: str, *, actor: str, reason: str, detail: Mapping[str, Any]) -> Change:
        """Stop ``flight`` because a guard metric breached (the automatic rollback): production
        and everything else stay; the event records ``detail`` (metric, both values, test). When
        the flight's start was the last change, that change counts as rolled back, so a manual
        rollback then goes one step further back. A rollback never restarts this flight."""
        sname = system_name(system)

        def mutate(conn: Connection, st: DeploymentState) -> _Step:
            f = st.flight(flight)
            if f is None:
                raise RegistryError(f"System {sname!r} runs no flight named {flight!r}; nothing to stop.")
            new = st.with_(flights=tuple(g for g in st.flights if g.name != flight))
            last = _undo_target(conn, sname)
            undo = None
            if last is not None and last["before"] and DeploymentState.from_json(last["before"]).content() == new.content():
                undo = int(last["id"])
            d = {"flight": f.to_dict(), **dict(detail), "undid": undo,
                 "restored_revision": last["revision_before"] if undo is not None and last is not None else None}
            msg = f"the guard stopped flight {flight!r} ({f.bundle}): {reason}; now {new.describe()}"
            return new, d, undo, msg

        return self.journal.commit(sname, "guard_stop", actor, reason, mutate, undoable=False)

    def _sanity(self, system: Any, version: str, production: str | None, *, need_gate: bool, force: str | None,
                name: str, operation: str, actor: str, reason: str, seen: DeploymentState) -> list[dict[str, Any]]:
        """The sanity checks of ``version`` before it serves (:mod:`closedloop.registry.sanity`);
        a failure not forced is recorded and raised as :class:`~closedloop.errors.SanityCheckError`."""
        from closedloop.registry.sanity import run_checks

        if not hasattr(system, "schema"):
            raise RegistryError(f"Deploying needs the closedloop.System itself (to check the bundle). Got {system!r} instead.")
        _, results = run_checks(system, lambda: self.catalog.load_bundle(version, system), self.catalog.reports(version),
                                production=production, need_gate=need_gate, force=force)
        checks = [c.to_dict() for c in results]
        failed = [c for c in results if not c.passed and not c.forced]
        if failed:
            names = ", ".join(c.name for c in failed)
            why = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            forceable = all(c.forceable for c in failed)
            hint = " (--force with a reason overrides these)" if forceable and not force else ""
            self.journal.record(name, operation, actor, reason, "refused",
                                {"bundle": version, "checks": checks, "forced": force, "error": f"failed {names}"}, seen)
            raise SanityCheckError(f"Bundle {version} failed sanity check(s) {names}{hint}: {why}", checks)
        return checks


# -- the stages of deploy and rollback ----------------------------------------------------------------
def _deploy_role(shadow: bool, flight: str | None, share: float | None) -> tuple[str, float | None]:
    """The role a deploy's arguments ask for (``production``, ``shadow`` or ``flight``) and the
    flight's share, checked."""
    if flight is not None:
        check_flight_name(flight)
        if shadow:
            raise RegistryError("Deploy a bundle as a shadow or in a flight, not both.")
        if share is None:
            raise RegistryError(f"A flight needs a 'share' of units in (0, 1]. Got none for flight {flight!r}.")
        share = check_share(share)
    elif share is not None:
        raise RegistryError(f"A 'share' needs a flight name. Got share={share!r} and no flight.")
    return ("shadow" if shadow else "flight" if flight is not None else "production"), share


def _undo_target(conn: Connection, name: str) -> RowMapping | None:
    """The last applied change of ``name`` that can be undone and has not been."""
    return conn.execute(
        select(T_EVENTS).where(and_(T_EVENTS.c.system == name, T_EVENTS.c.status == "applied",
                                    T_EVENTS.c.undoable.is_(True), T_EVENTS.c.undone_by.is_(None)))
        .order_by(T_EVENTS.c.id.desc()).limit(1)
    ).mappings().first()


def _restored_state(target: RowMapping, name: str) -> DeploymentState:
    """The state before the change ``target`` — refused when that leaves nothing serving."""
    back = DeploymentState.from_json(target["before"]) if target["before"] else DeploymentState(name)
    if back.production is None:
        raise RegistryError(
            f"Change #{target['id']} ({target['operation']}) was the first deployment of {name!r}; rolling it "
            "back would leave nothing serving. Turn the kill switch on instead."
        )
    return back


def _without_guard_stops(conn: Connection, name: str, target: RowMapping,
                         back: DeploymentState) -> tuple[DeploymentState, list[dict[str, Any]]]:
    """``back`` without the flights the guard stopped since ``target`` (never restarted by a
    rollback), and those flights."""
    stops = conn.execute(
        select(T_EVENTS.c.detail).where(and_(T_EVENTS.c.system == name, T_EVENTS.c.status == "applied",
                                             T_EVENTS.c.operation == "guard_stop", T_EVENTS.c.id > target["id"]))
    ).scalars().all()
    stopped = {(d["flight"]["name"], d["flight"]["bundle"]) for d in map(json.loads, stops) if "flight" in d}
    if not stopped:
        return back, []
    keep: tuple[FlightState, ...] = tuple(f for f in back.flights if (f.name, f.bundle) not in stopped)
    dropped = [f.to_dict() for f in back.flights if (f.name, f.bundle) in stopped]
    return back.with_(flights=keep), dropped


def _rollback_message(target: RowMapping, back: DeploymentState, dropped: list[dict[str, Any]],
                      unsigned: list[dict[str, Any]]) -> str:
    """What a rollback says: the change undone, the revision restored, the flights left out and
    the unsigned bundles back."""
    note = f" without flight(s) {', '.join(d['name'] for d in dropped)} that the guard stopped" if dropped else ""
    if unsigned:
        note += (f" (warning: {', '.join(u['bundle'] for u in unsigned)} not signed by a trusted key; "
                 "restored because it is in the history)")
    return (f"rolled back change #{target['id']} ({target['operation']} by {target['actor']}: "
            f"{target['reason']}); restored the state of revision {target['revision_before']}{note}: "
            f"{back.describe()}")

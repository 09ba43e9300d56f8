"""How a lifecycle change is committed and every attempt recorded.

:meth:`Journal.commit` runs one change in one write transaction: it reads the state and its
revision, lets the operation compute the new state (a *mutation*), writes it with
``UPDATE deployments … WHERE revision = <the revision read>`` (optimistic locking), inserts the
history event, marks the change it undid, and on PostgreSQL announces the new revision on
:data:`NOTIFY_CHANNEL`. A change that lost the race becomes :class:`~closedloop.errors.ConflictError`
and is recorded as a failed attempt; a refused one is recorded too (:meth:`Journal.record`, in a
transaction of its own: the attempt's was rolled back). :class:`Change` is what a change did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from closedloop.errors import ConflictError, RegistryError, SanityCheckError
from closedloop.registry.args import MAX_ACTOR, check_actor, check_reason
from closedloop.registry.db import Database
from closedloop.registry.history import History
from closedloop.registry.models import deployments as T_DEPLOY
from closedloop.registry.models import events as T_EVENTS
from closedloop.registry.rows import dumps, inserted_id, read_revision, read_state
from closedloop.registry.state import DeploymentState

__all__ = ["NOTIFY_CHANNEL", "Change", "Journal", "Mutation"]

#: On PostgreSQL every applied change is announced on this channel (``LISTEN closedloop_deployments``;
#: payload ``<system>:<revision>``), in the change's own transaction: listeners hear of it once it is
#: committed, never before. The serving workers listen, so a rollback reaches them at once.
NOTIFY_CHANNEL = "closedloop_deployments"


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


#: An operation's step inside the change's transaction: from the current state, the new state
#: (None: a no-op), the event's detail, the id of the change it undoes (or None) and the message.
Mutation = Callable[[Connection, DeploymentState], tuple[DeploymentState | None, dict[str, Any], int | None, str]]


class Journal:
    """Commits the lifecycle changes of one registry database and records refused and lost
    attempts; ``history`` names the change a conflict lost to."""

    def __init__(self, db: Database, history: History) -> None:
        self.db = db
        self.history = history

    def conflict_message(self, name: str, operation: str, seen: int | None, current: int | None) -> str:
        """Why ``operation`` lost: the revision it read, the current one and the last change."""
        last = self.history.history(name, limit=1, attempts=False)
        by = ""
        if last:
            e = last[-1]
            by = f" ({e['operation']} by {e['actor']} at {e['at']}: {e['reason']})"
        return (f"The deployment of {name!r} changed while this {operation} was prepared: revision {seen} was read, "
                f"revision {current} is current{by}. Nothing was changed; check the status and run it again.")

    def record(self, name: str, operation: str, actor: Any, reason: Any, status: str, detail: dict[str, Any],
               seen: DeploymentState | None = None) -> None:
        """Record a refused or lost attempt (its own transaction: the attempt's was rolled back)."""
        actor_s = actor if isinstance(actor, str) and actor else "?"
        reason_s = reason if isinstance(reason, str) else ""
        with self.db.write() as conn:
            cur = read_state(conn, name)
            conn.execute(insert(T_EVENTS).values(
                system=name, at_ns=self.db.clock.now_ns(), actor=actor_s[:MAX_ACTOR], operation=operation,
                reason=reason_s, status=status, revision_before=(seen or cur).revision, revision_after=None,
                before=(seen or cur).to_json(), after=None, detail=dumps(detail), undoable=False, undone_by=None,
            ))

    def commit(self, name: str, operation: str, actor: str, reason: str, mutate: Mutation, *,
               expected: int | None = None, undoable: bool = True) -> Change:
        """Run ``mutate`` on the current state of ``name`` and commit its new state and event, the
        state read still current (and at revision ``expected`` when given); a lost race becomes
        :class:`~closedloop.errors.ConflictError` and any other refusal is recorded and raised."""
        actor, reason = check_actor(actor), check_reason(reason)
        try:
            with self.db.write() as conn:
                row = conn.execute(select(T_DEPLOY.c.revision, T_DEPLOY.c.state)
                                   .where(T_DEPLOY.c.system == name)).first()
                cur = DeploymentState(name) if row is None else DeploymentState.from_json(row.state)
                if expected is not None and cur.revision != expected:
                    raise _Lost(expected, cur.revision)
                new, detail, undo, message = mutate(conn, cur)
                if new is None:
                    return Change(name, operation, cur, cur, message, None, detail, changed=False)
                new = new.with_(revision=cur.revision + 1, system=name)
                eid = self._write_change(conn, name, operation, actor, reason, cur, new, row is None,
                                         {**detail, "message": message}, undo, undoable)
        except (_Lost, IntegrityError) as exc:
            seen = exc.seen if isinstance(exc, _Lost) else expected
            now_rev = read_revision(self.db.engine, name)
            msg = self.conflict_message(name, operation, seen if seen is not None else now_rev - 1, now_rev)
            self.record(name, operation, actor, reason, "conflict", {"error": msg})
            raise ConflictError(msg, now_rev) from None
        except RegistryError as exc:
            if not isinstance(exc, ConflictError | SanityCheckError):
                self.record(name, operation, actor, reason, "refused", {"error": str(exc)})
            raise
        return Change(name, operation, cur, new, message, eid, detail)

    def _write_change(self, conn: Connection, name: str, operation: str, actor: str, reason: str,
                      cur: DeploymentState, new: DeploymentState, first: bool, detail: dict[str, Any],
                      undo: int | None, undoable: bool) -> int:
        """In the change's transaction: the new state (inserted for a ``first`` deployment, else
        updated only while still at the revision read), its event, the undone change marked, the
        notification. Returns the event's id."""
        now = self.db.clock.now_ns()
        if first:
            conn.execute(insert(T_DEPLOY).values(system=name, revision=new.revision, state=new.to_json(), updated_ns=now))
        else:
            res = conn.execute(update(T_DEPLOY).where(and_(T_DEPLOY.c.system == name, T_DEPLOY.c.revision == cur.revision))
                               .values(revision=new.revision, state=new.to_json(), updated_ns=now))
            if res.rowcount != 1:
                raise _Lost(cur.revision, None)
        eid = inserted_id(conn.execute(insert(T_EVENTS).values(
            system=name, at_ns=now, actor=actor, operation=operation, reason=reason, status="applied",
            revision_before=cur.revision, revision_after=new.revision, before=cur.to_json(),
            after=new.to_json(), detail=dumps(detail), undoable=undoable, undone_by=None,
        )), "event")
        if undo is not None:
            conn.execute(update(T_EVENTS).where(T_EVENTS.c.id == undo).values(undone_by=eid))
        if conn.dialect.name == "postgresql":  # delivered at commit: serving workers reload at once
            conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                         {"channel": NOTIFY_CHANNEL, "payload": f"{name}:{new.revision}"})
        return eid

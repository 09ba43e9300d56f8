"""The registry's rows as Python values: the JSON its text columns hold, the id a database gave
an inserted row, a history event as a dict (and its brief form), and a system's stored state and
revision."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, CursorResult, Engine, RowMapping

from closedloop.base.times import iso
from closedloop.errors import RegistryError
from closedloop.registry.models import deployments as T_DEPLOY
from closedloop.registry.state import DeploymentState

__all__ = ["brief", "dumps", "event_dict", "inserted_id", "read_revision", "read_state"]


def dumps(obj: Any) -> str:
    """The canonical JSON text of a registry column (sorted keys, compact, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def inserted_id(result: CursorResult[Any], table: str) -> int:
    """The id the database gave the one row ``result`` inserted."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RegistryError(f"The registry database gave the new {table} row no id (an autoincrement key is required).")
    return int(key[0])


def event_dict(r: RowMapping) -> dict[str, Any]:
    """One ``events`` row as the history shows it (times as ISO text and ns, JSON decoded)."""
    return {
        "id": int(r["id"]), "system": r["system"], "at": iso(r["at_ns"]), "at_ns": int(r["at_ns"]),
        "actor": r["actor"], "operation": r["operation"], "reason": r["reason"], "status": r["status"],
        "revision_before": r["revision_before"], "revision_after": r["revision_after"],
        "before": json.loads(r["before"]) if r["before"] else None,
        "after": json.loads(r["after"]) if r["after"] else None,
        "detail": json.loads(r["detail"]), "undone_by": r["undone_by"],
    }


def brief(e: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """An event in brief: id, when, who, what, why, the revision it made (and with ``detail`` its
    detail without the sanity checks)."""
    out = {k: e[k] for k in ("id", "at", "at_ns", "actor", "operation", "reason", "revision_after")}
    if detail:
        d = dict(e["detail"])
        d.pop("checks", None)
        out["detail"] = d
    return out


def read_state(conn: Connection, name: str) -> DeploymentState:
    """The stored deployment state of system ``name`` (revision 0, nothing deployed, when none)."""
    raw = conn.execute(select(T_DEPLOY.c.state).where(T_DEPLOY.c.system == name)).scalar()
    return DeploymentState(name) if raw is None else DeploymentState.from_json(raw)


def read_revision(engine: Engine, name: str) -> int:
    """The stored revision of system ``name``'s deployment (0: nothing deployed). One indexed
    read through the pool's DB-API connection directly: far cheaper than a Core round trip (one
    statement needs no explicit transaction; the pool rolls back on return)."""
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    with engine.raw_connection() as rc:
        cur = rc.cursor()
        try:
            cur.execute(f"SELECT revision FROM deployments WHERE system = {mark}", (name,))
            row = cur.fetchone()
        finally:
            cur.close()
    return int(row[0]) if row else 0

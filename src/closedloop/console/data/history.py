"""The History page: every registry change and attempt of a system, newest first, a page at a
time — who, why, the operation, its status, and what served before and after — and "what served
at time T".

Each page is one indexed query (``events`` by ``(system, id)``, ``LIMIT``/``OFFSET``) plus one
count: the page's cost does not grow with the history's length beyond the count. What served is
the state the registry recorded with each event (``before`` / ``after``), summarized the way
``closedloop status`` says it (:meth:`~closedloop.registry.DeploymentState.describe`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from closedloop.console.data._common import check_page, known_system, page_of, to_time
from closedloop.registry.models import events as T_EVENTS
from closedloop.registry.rows import event_dict
from closedloop.registry.state import DeploymentState

__all__ = ["history", "served_at"]


def history(registry: Any, system: Any, *, page: int = 1, per_page: int = 50, attempts: bool = True) -> dict[str, Any]:
    """A page of the system's events, newest first (with ``attempts``, refused and lost attempts
    too): each with ``id``, ``at``, ``actor`` (who), ``reason`` (why), ``operation``, ``status``,
    the revisions, ``before`` / ``after`` (what served: summary, production, shadows, flights,
    kill switch), ``message`` (the detail's message or error), ``checks`` (sanity checks run) and
    ``undone_by`` (the rollback that undid it)."""
    name = known_system(registry, system)
    page, per_page = check_page(page, per_page)
    where = [T_EVENTS.c.system == name]
    if not attempts:
        where.append(T_EVENTS.c.status == "applied")
    count = select(func.count()).select_from(T_EVENTS).where(*where)
    rows_q = (select(T_EVENTS).where(*where).order_by(T_EVENTS.c.id.desc())
              .limit(per_page).offset((page - 1) * per_page))
    with registry.db.read() as conn:
        total = int(conn.execute(count).scalar() or 0)
        rows = conn.execute(rows_q).mappings().all()
    out = page_of([_event(event_dict(r)) for r in rows], page, per_page, total)
    out["system"] = name
    out["attempts"] = attempts
    return out


def _served(name: str, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a recorded state serves, as the page shows it (None: the event records no state)."""
    if not state:
        return None
    st = DeploymentState.from_dict({"system": name, **state})
    return {"summary": st.describe(), "revision": st.revision, "production": st.production,
            "shadows": list(st.shadows), "flights": [f.to_dict() for f in st.flights], "killswitch": st.killswitch}


def _event(e: dict[str, Any]) -> dict[str, Any]:
    detail = e["detail"] if isinstance(e["detail"], dict) else {}
    checks = [c for c in detail.get("checks", []) if isinstance(c, dict)]
    return {
        "id": e["id"], "at": e["at"], "at_ns": e["at_ns"], "actor": e["actor"], "reason": e["reason"],
        "operation": e["operation"], "status": e["status"],
        "revision_before": e["revision_before"], "revision_after": e["revision_after"],
        "before": _served(e["system"], e["before"]), "after": _served(e["system"], e["after"]),
        "message": detail.get("message") or detail.get("error"),
        "forced": detail.get("forced"), "checks": checks, "undone_by": e["undone_by"],
    }


def served_at(registry: Any, system: Any, when: Any) -> dict[str, Any]:
    """What served at ``when`` (ISO-8601 text — naive is UTC —, ns since the epoch or a
    datetime): the registry's answer (:meth:`~closedloop.registry.Registry.at`: the state then,
    production since when, each flight and shadow with when it started and — if it stopped since
    — when, by whom and why)."""
    name = known_system(registry, system)
    t = to_time(when, "when")
    return dict(registry.at(name, t))

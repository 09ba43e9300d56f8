"""The registry's history: every change and attempt of a system (:meth:`History.history`), what
served at a given time (:meth:`History.at`), and the deployment's status with when each part of
it started (:meth:`History.status`).

``at`` reads only the events it needs, newest first, through the ``events`` table's indexes
(``(system, id)`` and ``(system, at_ns)``): the last change at or before the time (the state
then), then back from it only until each bundle serving then shows when it started, and — among
the changes after the time — forward only until each shows when it stopped. The result is the
same as scanning the whole history: "before" and "after" are by each event's time, their order
is by event id (a clock that went back between two changes included).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from closedloop.base.times import iso
from closedloop.registry.args import system_name, to_ns
from closedloop.registry.catalog import Catalog
from closedloop.registry.db import Database
from closedloop.registry.models import events as T_EVENTS
from closedloop.registry.rows import brief, event_dict, read_state
from closedloop.registry.state import DeploymentState, FlightState

__all__ = ["History"]

#: A time after every change: "now, and nothing has stopped since".
FAR_FUTURE = 2**62

_Pred = Callable[[DeploymentState], bool]

#: Rows of the first page of a walk through the history; each next page is 4× larger, up to the last.
_PAGES = (32, 128, 512, 2048)

# The statements of at(), built once (parameters: system, t, below, n).
_E = T_EVENTS.c
_FIRST_TIME = select(func.min(_E.at_ns)).where(_E.system == bindparam("system"))
_LAST_ID = select(func.max(_E.id)).where(_E.system == bindparam("system"))
#: A page of the applied changes at or before t, below an id, newest first: every page is bounded
#: by an id, so the id order — not the time range — picks the index ``(system, id)``.
_PAGE_BACK = (select(_E.id, _E.before, _E.after)
              .where(_E.system == bindparam("system"), _E.id < bindparam("below"), _E.at_ns <= bindparam("t"),
                     _E.status == "applied")
              .order_by(_E.id.desc()).limit(bindparam("n")))
#: The applied changes after t — no ORDER BY (sorted by id in Python), so that the time range
#: picks the index ``(system, at_ns)``.
_AFTER = select(_E.id, _E.after).where(_E.system == bindparam("system"), _E.at_ns > bindparam("t"),
                                       _E.status == "applied")


class History:
    """The ``events`` of one registry database, read; ``catalog`` gives the bundles' records."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

    def history(self, system: Any, *, limit: int | None = None, attempts: bool = True) -> list[dict[str, Any]]:
        """The system's events, oldest first (the last ``limit``): every change, and with
        ``attempts`` also refused and lost attempts."""
        name = system_name(system)
        q = select(T_EVENTS).where(T_EVENTS.c.system == name)
        if not attempts:
            q = q.where(T_EVENTS.c.status == "applied")
        q = q.order_by(T_EVENTS.c.id.desc())
        if limit is not None:
            q = q.limit(int(limit))
        with self.db.read() as conn:
            rows = conn.execute(q).mappings().all()
        return [event_dict(r) for r in reversed(rows)]

    def at(self, system: Any, when: int | _dt.datetime) -> dict[str, Any]:
        """What served at ``when`` (ns since the epoch, or an aware datetime): the state then,
        the production bundle and since when, each flight and shadow with when it started and —
        when it has stopped since — when, by whom, by which operation and why (with the guard's
        metrics when the guard stopped it)."""
        name = system_name(system)
        t = to_ns(when)
        with self.db.read(snapshot=True) as conn:
            walk = _Walk(conn, name, t)
            last = walk.last_change()
            state = DeploymentState(name) if last is None else walk.parse(last.after)
            parts = _parts(state)
            preds = [pred for _, _, pred in parts]
            started = walk.started(preds)
            stopped = walk.stopped(preds)
            events = _events(conn, [last.id if last is not None else None, *started, *stopped])
        return _view(name, t, state, parts, events, started, stopped,
                     None if last is None else brief(events[last.id]))

    def status(self, system: Any, *, telemetry: Any = None, now_ns: int | None = None) -> dict[str, Any]:
        """The deployment of a system as a JSON-ready dict: revision, a one-line summary, the
        production bundle, shadows and flights with when each started, the kill switch, the
        bundles' records, the last change and attempts refused or lost since. With ``telemetry``
        (a :class:`~closedloop.telemetry.TelemetryStore` or ``(decisions, outcomes)`` tables): the
        sample-ratio-mismatch check of the flights' arms and the shadows' disagreement by action."""
        from closedloop.runtime.deployment import expected_shares

        name = system_name(system)
        now = int(now_ns if now_ns is not None else self.db.clock.now_ns())
        view = self.at(name, FAR_FUTURE)
        with self.db.read() as conn:
            st = read_state(conn, name)
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
            "bundles": {v: self.catalog.bundle_brief(v) for v in st.bundles()},
            "last_change": brief(applied[-1], detail=True) if applied else None,
            "attempts_since_last_change": [brief(e, detail=True) | {"status": e["status"]} for e in since_last],
            "checked_at": iso(now),
        }
        if telemetry is not None and st.production is not None:
            out["telemetry"] = self._telemetry(name, st, view, telemetry, now)
        return out

    def _telemetry(self, name: str, st: DeploymentState, view: dict[str, Any], telemetry: Any, now: int) -> dict[str, Any]:
        """The status's ``telemetry`` part: the flights' sample-ratio check and the shadows'
        disagreement since the first of them started."""
        from closedloop.registry.guard import _tables, shadow_disagreement
        from closedloop.registry.srm import srm_view

        decisions, _ = _tables(telemetry)
        tv: dict[str, Any] = {"srm": srm_view(self, name, st, decisions, now), "shadow_disagreement": {}}
        shadow_starts = [s["started"]["at_ns"] for s in view["shadows"] if s["started"]]
        if shadow_starts:
            tv["shadow_disagreement"] = shadow_disagreement(decisions, name, int(min(shadow_starts)), now)
        return tv

    def flight_started(self, system: Any, flight: str) -> int | None:
        """When the flight ``flight`` (with its current bundle) started, in ns; None if not running."""
        name = system_name(system)
        now = self.at(name, FAR_FUTURE)
        for f in now["flights"]:
            if f["name"] == flight and f["started"] is not None:
                return int(f["started"]["at_ns"])
        return None


# -- at(): the stages ---------------------------------------------------------------------------------
def _parts(state: DeploymentState) -> list[tuple[str, Any, _Pred]]:
    """What serves in ``state``, each with the test "it serves in that state": its flights
    (``("flight", FlightState, pred)``), its shadows (``("shadow", version, pred)``) and its
    production bundle (``("production", version, pred)``), in that order."""
    out: list[tuple[str, Any, _Pred]] = []
    for f in state.flights:
        def pred(s: DeploymentState, f: FlightState = f) -> bool:
            g = s.flight(f.name)
            return g is not None and g.bundle == f.bundle
        out.append(("flight", f, pred))
    for v in state.shadows:
        def spred(s: DeploymentState, v: str = v) -> bool:
            return v in s.shadows
        out.append(("shadow", v, spred))
    if state.production is not None:
        def ppred(s: DeploymentState, v: str = state.production) -> bool:
            return s.production == v
        out.append(("production", state.production, ppred))
    return out


class _Walk:
    """The applied changes of system ``name`` around the time ``t``, read page by page in one
    transaction; each stored state is decoded once."""

    def __init__(self, conn: Connection, name: str, t: int) -> None:
        self.conn, self.name, self.t = conn, name, t
        self._parsed: dict[str, DeploymentState] = {}
        self._last: Any | None = None
        self._back: Iterator[Any] | None = None

    def parse(self, text: str) -> DeploymentState:
        """The :class:`DeploymentState` a state column holds (decoded once per walk)."""
        st = self._parsed.get(text)
        if st is None:
            st = self._parsed[text] = DeploymentState.from_dict(json.loads(text))
        return st

    def _before_state(self, text: str | None) -> DeploymentState | None:
        """The state before a change (None when the change records none)."""
        if not text:
            return None
        st = self._parsed.get(text)
        if st is None:
            d = json.loads(text)
            if not d:
                return None
            st = self._parsed[text] = DeploymentState.from_dict(d)
        return st

    def _backwards(self, top: int) -> Iterator[Any]:
        """The applied changes at or before ``t`` with ids up to ``top``, newest (highest id)
        first: pages through the ``(system, id)`` index, each page larger than the last (every
        page is bounded by an id, so the id order — not the time range — picks the index)."""
        cursor = top + 1
        for size in itertools.chain(_PAGES, itertools.repeat(_PAGES[-1])):
            rows = self.conn.execute(_PAGE_BACK, {"system": self.name, "below": cursor, "t": self.t, "n": size}).all()
            yield from rows
            if len(rows) < size:
                return
            cursor = rows[-1].id

    def last_change(self) -> Any | None:
        """The last applied change at or before ``t`` (by id), or None when there is none."""
        first = self.conn.execute(_FIRST_TIME, {"system": self.name}).scalar()
        if first is None or first > self.t:  # no event at all at or before t: no walk
            return None
        top = self.conn.execute(_LAST_ID, {"system": self.name}).scalar()
        self._back = self._backwards(int(top or 0))
        self._last = next(self._back, None)
        return self._last

    def started(self, preds: Sequence[_Pred]) -> list[int | None]:
        """Per test: the id of the change at or before ``t`` that made it true last (None when
        it did not hold at some change after that one) — read back from the last change only
        until every test is settled."""
        found: list[int | None] = [None] * len(preds)
        pending = list(range(len(preds)))
        rows = self._back if self._back is not None else iter(())
        row = self._last
        while row is not None and pending:
            after, before = self.parse(row.after), self._before_state(row.before)
            still = []
            for i in pending:
                if not preds[i](after):
                    continue  # not serving after this change: it started later, or not since
                if before is None or not preds[i](before):
                    found[i] = int(row.id)
                    continue
                still.append(i)
            pending = still
            row = next(rows, None)
        return found

    def stopped(self, preds: Sequence[_Pred]) -> list[int | None]:
        """Per test: the id of the first applied change after ``t`` (by id) that it does not
        hold after, or None — the changes after ``t`` are read through the ``(system, at_ns)``
        index."""
        found: list[int | None] = [None] * len(preds)
        if not preds:
            return found
        rows = sorted(self.conn.execute(_AFTER, {"system": self.name, "t": self.t}).all(), key=lambda r: r.id)
        pending = list(range(len(preds)))
        for row in rows:
            after = self.parse(row.after)
            still = []
            for i in pending:
                if preds[i](after):
                    still.append(i)
                else:
                    found[i] = int(row.id)
            pending = still
            if not pending:
                break
        return found


def _events(conn: Connection, ids: Sequence[int | None]) -> dict[int, dict[str, Any]]:
    """The events with ids ``ids`` (Nones skipped), as the history shows them."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = conn.execute(select(T_EVENTS).where(T_EVENTS.c.id.in_(wanted))).mappings().all()
    return {int(r["id"]): event_dict(r) for r in rows}


def _view(name: str, t: int, state: DeploymentState, parts: list[tuple[str, Any, _Pred]],
          events: dict[int, dict[str, Any]], started: list[int | None], stopped: list[int | None],
          last_change: dict[str, Any] | None) -> dict[str, Any]:
    """The result of :meth:`History.at` from the state at ``t`` and when each of its parts
    started and stopped."""
    def since(i: int) -> dict[str, Any] | None:
        eid = started[i]
        return None if eid is None else brief(events[eid])

    def until(i: int) -> dict[str, Any] | None:
        eid = stopped[i]
        return None if eid is None else brief(events[eid], detail=True)

    flights, shadows, production = [], [], None
    for i, (kind, what, _) in enumerate(parts):
        if kind == "flight":
            flights.append({**what.to_dict(), "started": since(i), "stopped": until(i)})
        elif kind == "shadow":
            shadows.append({"bundle": what, "started": since(i), "stopped": until(i)})
        else:
            production = {"bundle": what, "since": since(i), "until": until(i)}
    return {
        "system": name, "at": iso(t), "at_ns": t, "revision": state.revision, "summary": state.describe(),
        "production": production, "flights": flights, "shadows": shadows, "killswitch": state.killswitch,
        "last_change": last_change,
    }

"""A seeded home of the issue's size (10,000 history events, 50 reports): the History and Reports
pages read a page, not the table — every statement they send is bounded by LIMIT (or counts)."""

from __future__ import annotations

import copy
import json

from sqlalchemy import event

from closedloop.console.data import history, reports
from closedloop.registry.models import events as T_EVENTS


def test_the_first_pages_of_a_big_home_are_bounded_queries(tmp_path, console_world, phishing):
    from closedloop.registry import Registry

    w = console_world
    with w.trust(Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles").open()) as reg:
        for b in (w.H, w.A, w.B):
            reg.add_bundle(b, actor="a")
        for i in range(50):
            r = copy.deepcopy(w.report_AB)
            r["metadata"]["seed"] = 1000 + i  # another report (its digest differs)
            reg.add_report(r, actor="a")
        st = json.dumps({"system": "phishing", "revision": 1, "production": w.H.version, "shadows": [], "flights": [],
                         "killswitch": False})
        rows = [{"system": "phishing", "at_ns": 10**18 + i, "actor": "bot", "operation": "deploy_production", "reason": f"r{i}",
                 "status": "applied", "revision_before": 1, "revision_after": 1, "before": st, "after": st, "detail": "{}",
                 "undoable": False} for i in range(10_000)]
        with reg.db.engine.begin() as conn:
            conn.execute(T_EVENTS.insert(), rows)
        sent: list[str] = []
        event.listen(reg.db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        h = history(reg, "phishing", per_page=50)
        rp = reports(reg, "phishing", per_page=20)
    assert h["total"] == 10_000 and len(h["items"]) == 50 and h["items"][0]["reason"] == "r9999"
    assert rp["total"] == 50 and len(rp["items"]) == 20
    selects = [s for s in sent if s.lstrip().upper().startswith("SELECT") and ("events" in s or "reports" in s)]
    assert selects and all("LIMIT" in s or "count(" in s.lower() or "report_bundles" in s for s in selects), selects
    assert not any("body" in s for s in selects)  # the list never reads a report's body

"""The Goals page's data: each goal's points in the chosen range with its target and level, the
events on the time axis (the registry's deployments and rollbacks, the cycles' gate stops, the
alerts), and a Vega-Lite spec per goal (line, target rule, event marks with tooltips)."""

from __future__ import annotations

import pytest

from closedloop.base.times import DAY_NS, iso
from closedloop.console.data import events, goals
from closedloop.errors import SpecError

HOUR = 3600 * 10**9


@pytest.fixture
def goal_home(tmp_path, console_world, phishing):
    """A home whose registry has real changes now, a series of a daily goal and an hourly one over
    60 days up to now, 400 cycle records six hours apart (100 days) (every 50th stopped at the gate) and alerts."""
    from closedloop.orchestration.alerts import Alert, JsonLinesAlertSink
    from closedloop.orchestration.records import CycleRecords
    from closedloop.orchestration.series import SeriesStore
    from closedloop.registry import Registry

    w = console_world
    home = tmp_path / "home"
    reg = w.trust(Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open())
    for b in (w.H, w.A):
        reg.add_bundle(b, actor="alice")
    reg.add_report(w.report_HA, actor="alice")
    reg.deploy(phishing, w.H.version, actor="alice", reason="first")
    reg.deploy(phishing, w.A.version, actor="alice", reason="A is better")
    reg.rollback("phishing", actor="bob", reason="complaints")
    now = reg.clock.now_ns()
    pts = []
    for d in range(60):
        s = now - (60 - d) * DAY_NS
        pts.append({"name": "false_blocks", "metric": "reported_false_block_per_1k", "level": "user", "cadence": "daily",
                    "window": iso(s)[:10], "start_ns": s, "end_ns": s + DAY_NS, "value": 0.1 + d / 1000, "n": 1000,
                    "target": 0.2, "direction": "at_most", "met": True, "measured_ns": s + DAY_NS})
    SeriesStore(home / "goals" / "series.jsonl").append(pts)
    recs = CycleRecords(home / "orchestration" / "cycles")
    for i in range(1, 401):
        t = now - (401 - i) * 6 * HOUR
        rec = recs.new("phishing", t, None) | {"id": i, "finished": True, "outcome": "done", "reason": "ok",
                                                "steps": {"ingest": {"status": "done", "result": {"big": "x" * 500}}}}
        if i % 50 == 0:
            rec["steps"]["gate"] = {"status": "stopped", "result": {"outcome": "gate_failed", "reason": "AUC fell"}}
            rec["outcome"], rec["reason"] = "gate_failed", f"the gate failed at cycle {i}: AUC fell"
        recs.save(rec)
    JsonLinesAlertSink(home / "orchestration" / "alerts.jsonl").send([
        Alert("feature_drift", "domain_age_log", 0.4, 0.2, "domain_age_log drifted", window="w1", at_ns=now - 2 * DAY_NS),
        Alert("mistake_spike", "reported_false_block", 3.0, 1.0, "false blocks tripled", window="w2", at_ns=now - 40 * DAY_NS),
    ])
    yield home, reg, now
    reg.close()


def test_each_goal_over_the_last_30_days_with_its_events_and_chart(goal_home, phishing):
    home, reg, now = goal_home
    out = goals(reg, home, phishing, now_ns=now)
    by = {g["name"]: g for g in out["goals"]}
    assert set(by) == {g.name for g in phishing.goals}  # every declared goal, with or without points
    fb = by["false_blocks"]
    assert (fb["level"], fb["target"], fb["direction"]) == ("user", 0.2, "at_most")
    assert 29 <= len(fb["points"]) <= 31 and all(now - 30 * DAY_NS <= p["start_ns"] <= now for p in fb["points"])
    assert fb["latest"]["value"] == pytest.approx(0.159) and by["phish_recall"]["points"] == []
    kinds = [e["kind"] for e in out["events"]]
    assert kinds.count("deployment") == 2 and kinds.count("rollback") == 1 and kinds.count("alert") == 1
    stops = [e for e in out["events"] if e["kind"] == "gate stop"]
    assert [e["detail"].split(":")[0] for e in stops] == ["cycle #300", "cycle #350", "cycle #400"]  # 30 days: cycles 281-400
    assert "AUC fell" in stops[0]["detail"]
    assert [e["at_ns"] for e in out["events"]] == sorted(e["at_ns"] for e in out["events"])
    spec = fb["spec"]
    line, target, marks = spec["layer"]
    assert line["mark"]["type"] == "line" and len(line["data"]["values"]) == len(fb["points"])
    assert target["data"]["values"] == [{"target": 0.2}] and target["mark"]["type"] == "rule"
    assert marks["mark"]["type"] == "rule" and {v["kind"] for v in marks["data"]["values"]} == set(kinds)
    assert {t["field"] for t in marks["encoding"]["tooltip"]} == {"kind", "t", "detail"}
    assert spec["title"]["text"] == "false_blocks" and "at most 0.2" in spec["title"]["subtitle"]


def test_a_chosen_range_and_bad_ranges(goal_home, phishing):
    home, reg, now = goal_home
    out = goals(reg, home, phishing, since=iso(now - 50 * DAY_NS), until=iso(now - 35 * DAY_NS))
    fb = next(g for g in out["goals"] if g["name"] == "false_blocks")
    assert 14 <= len(fb["points"]) <= 16
    assert [(e["kind"], e["what"]) for e in out["events"]] == [("alert", "mistake_spike"), ("gate stop", "gate_failed")]
    assert out["events"][1]["detail"].startswith("cycle #250:")  # cycles 201-261 ran then; no registry change
    by_name = goals(reg, home, "phishing", now_ns=now)  # a name: the goals the series holds
    assert [g["name"] for g in by_name["goals"]] == ["false_blocks"]
    with pytest.raises(SpecError, match="must start before it ends"):
        goals(reg, home, phishing, since=iso(now), until=iso(now - DAY_NS))
    with pytest.raises(SpecError, match="The 'since' must be a time"):
        events(reg, home, phishing, since="last week")


def test_the_goal_charts_draw_in_a_browser_with_the_vendored_libraries(goal_home, phishing, tmp_path):
    """Each spec compiles and draws with the report's own vega / vega-lite / vega-embed (headless
    Chromium): the line, the target rule and the event rules, with a clean console."""
    import json
    from pathlib import Path

    from selenium.webdriver.support.ui import WebDriverWait

    import closedloop.evaluation.html as html_pkg
    from support.browser import browser

    home, reg, now = goal_home
    specs = [g["spec"] for g in goals(reg, home, phishing, now_ns=now)["goals"] if g["points"]]
    assets = Path(html_pkg.__file__).parent / "assets"
    libs = "".join(f"<script>{(assets / n).read_text()}</script>" for n in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"))
    divs = "".join(f"<div id='c{i}'></div>" for i in range(len(specs)))
    page = tmp_path / "goals.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'>{libs}</head><body>{divs}<script>"
                    f"const specs = {json.dumps(specs)};"
                    "Promise.all(specs.map((s, i) => vegaEmbed('#c' + i, s, {renderer: 'svg', actions: false})))"
                    ".then(() => { window.__done = 'drawn'; }, e => { window.__done = 'failed: ' + e; });"
                    "</script></body></html>")
    driver = browser()
    try:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.__done"))
        state = driver.execute_script("""return {done: window.__done, charts: specs.map((s, i) => {
            const el = document.getElementById('c' + i);
            return {lines: el.querySelectorAll('svg g.mark-line.role-mark path').length,
                    rules: el.querySelectorAll('svg g.mark-rule.role-mark line').length};
        })};""")
        console = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    finally:
        driver.quit()
    assert state["done"] == "drawn" and console == [], (state, console)
    (fb,) = state["charts"]  # the one goal with points: its line, its target, its 7 events in 30 days
    assert fb["lines"] >= 1 and fb["rules"] == 1 + 7, fb

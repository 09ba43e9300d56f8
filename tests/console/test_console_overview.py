"""The Overview: what the registry and the home hold (serving, cycles, alerts, telemetry, goals), its
live fragment (204 while nothing changed, the new state after a change made through the Registry),
and the console mounted at /console on the decision service (``closedloop serve --console``)."""

from __future__ import annotations

import json
import re

from closedloop.console.data.overview import fingerprint, overview
from support.console_client import client, login

OVERVIEW = "/systems/phishing/overview"


def _fingerprint(html: str) -> str:
    m = re.search(r'data-fingerprint="([^"]+)"', html)
    assert m
    return m.group(1)


def test_the_live_fragment_shows_a_change_made_elsewhere(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    page = c.get(OVERVIEW).text
    assert 'hx-trigger="every 1.0s"' in page and 'id="killswitch">off<' in page
    fp = _fingerprint(page)
    live = f"/systems/phishing/overview/live?since={fp}"
    assert c.get(live).status_code == 204  # nothing changed: htmx keeps the page
    with home.registry() as reg:  # the CLI, or another console
        reg.killswitch("phishing", True, actor="bob", reason="incident")
    r = c.get(live)
    assert r.status_code == 200 and 'id="killswitch">ON<' in r.text and "<html" not in r.text
    new = _fingerprint(r.text)
    assert new != fp and c.get(f"/systems/phishing/overview/live?since={new}").status_code == 204
    with home.registry() as reg:  # a refused attempt moves no revision, but it is news too
        try:
            reg.stop("phishing", "nope", actor="bob", reason="typo")
        except Exception:
            pass
    assert c.get(f"/systems/phishing/overview/live?since={new}").status_code == 200


def _write_home_files(home):
    cycles = home.path / "orchestration" / "cycles"
    cycles.mkdir(parents=True)
    t0 = 1_800_000_000_000_000_000
    (cycles / "000001.json").write_text(json.dumps({
        "id": 1, "system": "phishing", "now_ns": t0, "finished": True, "outcome": "gate_failed",
        "reason": "the candidate failed the gate: recall too low",
        "steps": {"evaluate": {"status": "done", "result": {"gate": {"passed": False, "reasons": ["recall too low"]}}},
                  "gate": {"status": "stopped",
                           "result": {"outcome": "gate_failed", "reason": "the candidate failed the gate: recall too low"}},
                  "ingest": {"status": "done", "result": {}}},  # by name, as the cycle's record keeps them
        "alerts": [], "changes": []}))
    (cycles / "000002.json").write_text(json.dumps({
        "id": 2, "system": "phishing", "now_ns": t0 + 3600 * 10**9, "finished": True, "outcome": "shadowed", "reason": None,
        "steps": {"gate": {"status": "done", "result": {"passed": True, "baseline": "H", "candidate": "A"}}},
        "alerts": [], "changes": [{"message": "deployed A as a shadow"}]}))
    alerts = home.path / "orchestration" / "alerts.jsonl"
    alerts.write_text("".join(json.dumps({"id": str(i), "kind": k, "subject": s, "message": m, "action": "none",
                                          "window": "w", "at_ns": t0 + i, "value": 1.0, "threshold": 0.5}) + "\n"
                              for i, (k, s, m) in enumerate([("feature_drift", "url_length", "PSI 0.4 over 0.2"),
                                                             ("mistake_spike", "false_block", "Page-Hinkley fired")])) + "torn{")
    series = home.path / "goals" / "series.jsonl"
    series.parent.mkdir()
    series.write_text("".join(json.dumps({"name": "phish_recall", "metric": "recall@warn", "level": "model", "cadence": "hourly",
                                          "window": f"w{i}", "start_ns": t0 + i, "end_ns": t0 + i + 1, "value": v, "n": 100,
                                          "target": 0.9, "direction": "at_least", "met": v >= 0.9}) + "\n"
                              for i, v in enumerate([0.95, 0.85])))
    return t0


def test_overview_data_reads_the_registry_and_the_home(home):
    t0 = _write_home_files(home)
    with home.registry() as reg:
        fp0 = fingerprint(reg, home.path, "phishing")
        out = overview(reg, home.path, "phishing", t0 + 7200 * 10**9, system_obj=home.system)
        fp1 = fingerprint(reg, home.path, "phishing")
    json.dumps(out)
    s = out["serving"]
    assert s["production"]["bundle"] == home.production and s["revision"] == 2 and not s["killswitch"]
    assert [(f["name"], f["bundle"], f["share"]) for f in s["flights"]] == [("strict", home.flight_bundle, 0.1)]
    assert s["flights"][0]["since"]["at"] and s["production"]["since"]["actor"] == "alice"
    assert [c["id"] for c in out["cycles"]] == [2, 1]  # newest first
    assert out["cycles"][1]["gate"] == {"verdict": "failed", "reason": "the candidate failed the gate: recall too low"}
    assert [st["name"] for st in out["cycles"][1]["steps"]] == ["ingest", "evaluate", "gate"]  # in the order a cycle runs them
    assert out["cycles"][0]["gate"]["verdict"] == "passed" and out["cycles"][0]["changes"] == ["deployed A as a shadow"]
    assert [a["kind"] for a in out["alerts"]] == ["mistake_spike", "feature_drift"]  # newest first, the torn line skipped
    recall = next(g for lv in out["goals"] for g in lv["goals"] if g["name"] == "phish_recall")
    assert recall["value"] == 0.85 and recall["met"] is False and recall["target"] == 0.9
    assert [lv["level"] for lv in out["goals"]] == ["organizational", "leading", "user", "model"]
    assert out["telemetry"]["present"] is False and fp0 == fp1
    # without the System: the goals the series file holds
    with home.registry() as reg:
        bare = overview(reg, home.path, "phishing", t0, system_obj=None)
    assert [g["name"] for lv in bare["goals"] for g in lv["goals"]] == ["phish_recall"]


def test_the_page_shows_cycles_alerts_and_goals(console, home):
    _write_home_files(home)
    c = client(console)
    login(c, home.tokens["viewer"])
    page = c.get(OVERVIEW).text
    for text in ("#2", "gate_failed", "recall too low", "feature_drift", "Page-Hinkley fired", "phish_recall", "missed"):
        assert text in page, text


def test_the_console_mounted_on_the_service(home):
    """``closedloop serve --console``: the console at /console, cookies scoped to it, links under it,
    and the service app without middleware (its per-decision fast path stays)."""
    from closedloop.cli.console import with_console
    from closedloop.service import ServiceSettings
    from closedloop.service.app import create_app
    from closedloop.settings import Settings

    settings = ServiceSettings(project=Settings(home=home.path), system="examples.phishing.system:phishing")
    app = with_console(create_app(settings, system=home.system), settings)
    assert app.user_middleware == [] and app._fast_route is not None
    c = client(app)
    r = c.get("/console/")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    login_page = c.get("/console/login").text
    assert 'action="/console/login"' in login_page and 'href="/console/static/console.css"' in login_page
    r = login(c, home.tokens["admin"], prefix="/console")
    assert "Path=/console" in r.headers["set-cookie"] and r.headers["location"] == "/console/"
    assert c.get("/console/").headers["location"] == "/console/systems/phishing/overview"
    page = c.get("/console/systems/phishing/overview")
    assert page.status_code == 200 and home.production in page.text
    assert 'hx-get="/console/systems/phishing/overview/live' in page.text and 'href="/console/systems/phishing/goals"' in page.text
    assert 'href="/console/systems/phishing/actions/rollback"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/console/systems/phishing/actions/killswitch", data={"csrf_token": token, "on": "on", "reason": "mounted"})
    assert r.status_code == 200 and "kill switch ON" in r.text
    with home.registry() as reg:
        assert reg.state("phishing").killswitch is True
    health = c.get("/healthz")
    assert "content-security-policy" not in health.headers  # the service's own answers are untouched


def test_telemetry_health_from_the_store_files(home, console):
    """Decisions logged: a backlog of segments and a watermark; compacted: Parquet days, no backlog;
    and the live fragment sees the new data."""
    import numpy as np
    from examples.phishing.data import generate

    from closedloop import Runtime
    from closedloop.console.data.overview import telemetry_health
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

    c = client(console)
    login(c, home.tokens["viewer"])
    fp = _fingerprint(c.get(OVERVIEW).text)
    with home.registry() as reg:
        bundle = reg.load_bundle(home.production, home.system)
    tel = Telemetry(SegmentLog(home.path), system=home.system, flush_interval_ms=1)
    try:
        cols, _ = generate(200, 5, phish_rate=0.3)
        Runtime(home.system, bundle, telemetry=tel).decide_batch(
            {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in cols.items()})
        tel.flush()
    finally:
        tel.close()
    import time

    h = telemetry_health(home.path, time.time_ns())
    assert h["present"] and h["streams"]["decisions"]["segments"] >= 1 and h["backlog_bytes"] > 0
    assert h["watermark"] is not None and 0 <= h["watermark_age_s"] < 600 and h["torn_tails"] == 0
    r = c.get(f"/systems/phishing/overview/live?since={fp}")
    assert r.status_code == 200 and "segments not compacted" in r.text
    TelemetryStore(home.path).compact()
    h = telemetry_health(home.path, time.time_ns())
    assert h["backlog_segments"] == 0 and h["streams"]["decisions"]["parquet_days"] == 1 and h["watermark"] is not None


def test_a_poll_after_the_session_ended_sends_the_page_to_the_login(console, home, clock):
    c = client(console)
    login(c, home.tokens["viewer"])
    clock.advance(13 * 3600)
    r = c.get("/systems/phishing/overview/live?since=x", headers={"hx-request": "true", "hx-current-url": "http://testserver" + OVERVIEW})
    assert r.status_code == 204 and r.headers["hx-redirect"] == "/login?next=%2Fsystems%2Fphishing%2Foverview"

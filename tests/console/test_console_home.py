"""The seeded console home (tests/support/console_home.py) — small here (300 history events, 10
days, 5 reports; ``bench/console_home.py`` builds the big one) — is a real home: the registry,
the CLI, the goal series, the cycle records and the alert log read it back as they read any home,
and the same seed builds the same home."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.orchestration.alerts import JsonLinesAlertSink
from closedloop.orchestration.goals import SeriesStore, goal_status
from closedloop.orchestration.records import CycleRecords
from closedloop.registry import Registry
from closedloop.settings import Settings
from support.console_home import DAY_NS, END_NS, SERVED_NS, SYSTEM, home_summary, seed_console_home

EVENTS, DAYS, REPORTS, DECISIONS = 300, 10, 5, 2400
ENV = {"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": "", "CLOSEDLOOP_HOME": ""}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("console-home") / "home"
    info = seed_console_home(path, seed=5, history_events=EVENTS, goal_days=DAYS, reports=REPORTS, decisions=DECISIONS)
    settings = Settings(home=path)
    reg = Registry.from_settings(settings).open(upgrade=False)
    yield info, settings, reg
    reg.close()


def test_the_registry_holds_the_history_asked_for(home):
    info, _, reg = home
    hist = reg.history(SYSTEM)
    assert len(hist) == EVENTS == info.history_events
    assert [e["id"] for e in hist] == sorted(e["id"] for e in hist)
    times = [e["at_ns"] for e in hist]
    assert times == sorted(times) and info.start_ns <= times[0] and times[-1] < END_NS - SERVED_NS
    ops = Counter(e["operation"] for e in hist)
    assert {"deploy_production", "deploy_flight", "deploy_shadow", "promote", "stop", "rollback", "killswitch_on",
            "killswitch_off", "guard_stop"} <= set(ops), ops
    statuses = Counter(e["status"] for e in hist)
    assert statuses["applied"] > EVENTS / 2 and statuses["refused"] > 0, statuses
    assert {"alice", "bob", "carol", "dmitri", "loop"} <= {e["actor"] for e in hist}
    assert all(e["reason"] for e in hist)
    # the changes really changed the state: each applied event's before is the previous applied one's after
    applied = [e for e in hist if e["status"] == "applied"]
    for a, b in zip(applied, applied[1:], strict=False):
        assert b["before"] == a["after"], (a["id"], b["id"])
    assert reg.revision(SYSTEM) == applied[-1]["revision_after"] == len(applied)
    # the last rows leave something to look at: production, a flight, the kill switch off
    st = reg.state(SYSTEM)
    assert st.production is not None and st.flights and not st.killswitch


def test_what_served_at_a_time_and_the_status(home):
    info, _, reg = home
    mid = info.start_ns + (END_NS - info.start_ns) // 2
    then = reg.at(SYSTEM, mid)
    assert then["production"]["bundle"] and then["revision"] > 0
    status = reg.status(SYSTEM, now_ns=END_NS)
    assert status["production"]["bundle"] == reg.state(SYSTEM).production


def test_the_cli_reads_the_home(home):
    _, settings, reg = home
    runner = CliRunner()
    r = runner.invoke(app, ["--home", str(settings.home), "history", "--json"], env=ENV)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)) == EVENTS
    r = runner.invoke(app, ["--home", str(settings.home), "history", "--limit", "20"], env=ENV)
    assert r.exit_code == 0 and r.output.count("\n#") >= 19, r.output
    r = runner.invoke(app, ["--home", str(settings.home), "status"], env=ENV)
    assert r.exit_code == 0 and reg.state(SYSTEM).production in r.output, r.output


def test_the_last_hours_are_served_and_logged(home):
    """Decisions of the final deployment (production and its flight) after the last registry
    change, with the users' reports — what `closedloop telemetry stats` and `status` read."""
    info, settings, reg = home
    r = CliRunner().invoke(app, ["--home", str(settings.home), "telemetry", "stats"], env=ENV)
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert stats["decisions"] == DECISIONS == info.decisions
    assert stats["outcomes"] == info.outcomes > 0
    st = reg.state(SYSTEM)
    served = {b["bundle_version"] for b in stats["decisions_by_bundle_version"]}
    assert served == {st.production, *(f.bundle for f in st.flights)}
    status = reg.status(SYSTEM, now_ns=END_NS)
    assert status["last_change"]["at_ns"] < END_NS - SERVED_NS


def test_reports_are_registered_and_written(home):
    info, settings, reg = home
    bundles = [b["version"] for b in reg.bundles(SYSTEM)]
    reports = {json.dumps(r, sort_keys=True) for v in bundles for r in reg.reports(v)}
    assert len(reports) == REPORTS == len(info.reports) == len(set(info.reports))
    files = sorted(settings.reports.glob("*.json"))
    assert len(files) == REPORTS
    assert all(json.loads(f.read_text())["system"] == SYSTEM for f in files)
    # every bundle that served has a report with golden rows (the registry's parity check ran on it)
    assert all(reg.reports(v) for v in bundles)


def test_goal_series_cover_the_days_for_every_goal(home):
    from examples.phishing.system import phishing

    info, settings, _ = home
    store = SeriesStore(settings.home / "goals" / "series.jsonl")
    assert len(store.points()) == info.goal_points
    by_goal = {g.name: store.series(g.name) for g in phishing.goals}
    assert len(by_goal["false_block_rate"]) == DAYS * 24  # hourly
    assert len(by_goal["false_blocks"]) == DAYS  # daily
    assert all(by_goal[g.name] for g in phishing.goals)
    for pts in by_goal.values():
        assert all(info.start_ns < p["end_ns"] <= END_NS for p in pts)  # a week or month may begin before the range
    met = Counter(p["met"] for pts in by_goal.values() for p in pts)
    assert met[True] > met[False] > 0, met
    status = goal_status(phishing, store)
    assert {s["name"] for s in status} == {g.name for g in phishing.goals}
    assert all(s["windows_measured"] > 0 for s in status)


def test_cycles_and_alerts(home):
    info, settings, _ = home
    recs = CycleRecords(settings.home / "orchestration" / "cycles").all()
    assert len(recs) == info.cycles == DAYS
    assert [r["id"] for r in recs] == list(range(1, DAYS + 1))
    assert all(r["finished"] and r["outcome"] and r["steps"]["ingest"]["status"] == "done" for r in recs)
    assert recs[-1]["now_ns"] < END_NS and recs[-1]["now_ns"] - recs[0]["now_ns"] == (DAYS - 1) * DAY_NS
    alerts = JsonLinesAlertSink(settings.home / "orchestration" / "alerts.jsonl").read()
    assert len(alerts) == info.alerts == sum(len(r["alerts"]) for r in recs)
    assert "goal_missed" in {a["kind"] for a in alerts}
    loop = [c for r in recs for c in r["changes"]]
    assert loop and all(c["event_id"] for c in loop)
    assert home_summary(settings.home)["cycles"] == DAYS


def test_the_same_seed_builds_the_same_home(tmp_path):
    def build(name):
        path = tmp_path / name
        seed_console_home(path, seed=9, history_events=40, goal_days=2, reports=2, decisions=600)
        with Registry.from_settings(Settings(home=path)).open(upgrade=False) as reg:
            hist = [{k: e[k] for k in ("id", "at_ns", "actor", "operation", "reason", "status", "before", "after")}
                    for e in reg.history(SYSTEM)]
        series = (path / "goals" / "series.jsonl").read_text()
        cycles = [{k: v for k, v in r.items()} for r in CycleRecords(path / "orchestration" / "cycles").all()]
        from closedloop.telemetry import TelemetryStore

        dec = TelemetryStore(path).read("decisions").select(["decision_id", "action", "timestamp_ns"]).to_pylist()
        logged = sorted((d["decision_id"], d["action"], d["timestamp_ns"]) for d in dec)
        return hist, series, cycles, (path / "orchestration" / "alerts.jsonl").read_text(), logged

    assert build("a") == build("b")
    with pytest.raises(FileExistsError):
        seed_console_home(tmp_path / "a", seed=9, history_events=40, goal_days=2, reports=2, decisions=0)

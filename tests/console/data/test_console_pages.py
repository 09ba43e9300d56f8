"""The Flights, Reports and Mistakes pages' data against a real home: the guard's own figures per
flight (nothing stopped), reports paged newest first with link targets, two bundles compared, the
latest evaluation's worst mistakes by cost and the mistakes users reported, paged in the query."""

from __future__ import annotations

import pytest

from closedloop.console.data import compare, flights, manifest_diff, report, report_file, report_files, reported, reports, worst
from closedloop.errors import RegistryError, SpecError


# -- flights -------------------------------------------------------------------------------------------------
def test_each_flight_against_production_on_the_guards_metrics(real_home, phishing):
    from closedloop.registry import GuardPolicy, guard_check
    from closedloop.telemetry import TelemetryStore

    h = real_home
    rev = h.reg.state("phishing").revision
    out = flights(h.reg, h.home, phishing)
    assert h.reg.state("phishing").revision == rev  # judged, nothing stopped
    (f,) = out["flights"]
    assert (f["name"], f["bundle"], f["share"]) == ("a", h.world.A.version, 0.3)
    assert f["started"]["operation"] == "deploy_flight" and f["started"]["actor"] == "alice"
    until = f["window"]["until"]["at_ns"]
    guard = guard_check(h.reg, phishing, TelemetryStore(h.home), policy=GuardPolicy(), apply=False, now_ns=until)
    g = guard["flights"][0]
    assert f["decisions"] == g["decisions"] and f["units"] == g["units"]
    assert f["decisions"]["flight"] + f["decisions"]["production"] == 2200
    m = next(x for x in f["metrics"] if x["metric"] == "mistake_rate")
    gm = next(x for x in g["metrics"] if x["metric"] == "mistake_rate")
    assert (m["flight"], m["production"], m["p_value"], m["test"]) == (gm["flight"], gm["production"], gm["p_value"], gm["test"])
    assert m["decision"] in ("keep", "stop") and m["test"]
    assert next(x for x in f["metrics"] if x["metric"] == "latency_p99")["decision"] == "not measured"
    arms = {a["arm"]: a["units"] for a in out["srm"]["arms"]}
    assert (f["exposure"]["flight"]["units"], f["exposure"]["production"]["units"]) == (arms["a"], arms["production"])
    assert out["srm"]["verdict"] in ("ok", "mismatch")
    assert set(out["shadow_disagreement"]) == {h.world.B.version}


def test_flights_need_the_system(real_home):
    with pytest.raises(SpecError, match="needs the closedloop.System of 'phishing'"):
        flights(real_home.reg, real_home.home, "phishing")


# -- reports -------------------------------------------------------------------------------------------------
def test_reports_paged_newest_first_with_link_targets(real_home):
    h = real_home
    first = reports(h.reg, "phishing", per_page=1)
    assert first["total"] == 2 and first["pages"] == 2
    (r,) = first["items"]
    assert r["bundles"] == [h.world.A.version, h.world.B.version]
    assert r["gate"] == {"candidate": h.world.B.version, "baseline": h.world.A.version, "passed": False}
    assert r["link"] == {"kind": "registered", "id": r["id"]}
    assert report(h.reg, r["id"])["bundles"][1]["version"] == h.world.B.version
    second = reports(h.reg, "phishing", page=2, per_page=1)["items"][0]
    assert second["gate"]["passed"] is True and second["id"] < r["id"]
    with pytest.raises(RegistryError, match="No evaluation report with id 99"):
        report(h.reg, 99)
    with pytest.raises(SpecError, match="'report_id' must be"):
        report(h.reg, "1")


def test_report_files_of_the_home_listed_and_opened_in_place(tmp_path, real_home):
    from closedloop.evaluation.report import write_report

    w = real_home.world
    write_report(w.report_HA, tmp_path / "reports" / "ds-1.json")
    write_report(w.report_AB, tmp_path / "orchestration" / "cycles" / "000003" / "report.json")
    out = report_files(tmp_path, per_page=1)
    assert out["total"] == 2 and out["items"][0]["path"] == "orchestration/cycles/000003/report.json"
    assert out["items"][0]["bundles"] == [w.A.version, w.B.version] and out["items"][0]["system"] == "phishing"
    assert report_file(tmp_path, "reports/ds-1.json")["gate"]["passed"] is True
    for bad in ("../registry.sqlite", "reports/../../etc/passwd", "reports/nope.json", ""):
        with pytest.raises(SpecError, match="report 'path'"):
            report_file(tmp_path, bad)


def test_two_bundles_side_by_side(real_home):
    h = real_home
    A, B = h.world.A.version, h.world.B.version
    out = compare(h.reg, A, B)
    assert out["left"]["version"] == A and out["right"]["version"] == B
    assert out["left"]["thresholds"] is None and out["right"]["thresholds"] == {"block": 0.3, "warn": 0.2}
    assert out["left"]["metrics"]["quality"]["auc"] > 0.5 and out["right"]["metrics"]["gate"]["passed"] is False
    assert out["left"]["metrics"]["cost_per_1000"] is not None
    keys = {k for k, _, _ in out["diff"]}
    assert {"thresholds.block", "intelligence.kind", "version"} <= keys
    assert ("thresholds.block", None, 0.3) in out["diff"]
    assert out["related"] == "unrelated" and out["left"]["lineage"] == []
    with pytest.raises(RegistryError, match="Bundle 'nope' is not registered"):
        compare(h.reg, A, "nope")


def test_a_hot_fix_bundle_descends_from_production_in_the_comparison():
    left = {"version": "v1", "guardrails": [], "thresholds": {"block": 0.9}}
    right = {"version": "v2", "guardrails": [{"kind": "block_list", "values": ["x"]}], "thresholds": {"block": 0.9}}
    assert manifest_diff(left, right) == [("guardrails", [], [{"kind": "block_list", "values": ["x"]}]), ("version", "v1", "v2")]


# -- mistakes ------------------------------------------------------------------------------------------------
def test_the_worst_mistakes_of_the_latest_evaluation_by_cost(real_home, phishing):
    h = real_home
    out = worst(h.reg, phishing, per_page=5)
    assert out["report"]["bundle"] == h.world.B.version  # production (H) is not in the newest report: its candidate
    costs = [m["cost"] for m in out["items"]]
    assert costs == sorted(costs, reverse=True) and out["total"] == len(h.world.report_AB["bundles"][1]["worst"]["false_positives"]) + \
        len(h.world.report_AB["bundles"][1]["worst"]["false_negatives"])
    m = out["items"][0]
    assert m["context"]["domain"] and m["label"] in ("legit", "phish") and m["kind"] in ("false positive", "false negative")
    assert m["cost"] == phishing.costs[m["action"]][m["label"]]


def test_the_mistakes_users_reported_lately_paged_in_the_query(real_home, phishing):
    from closedloop.telemetry import TelemetryStore

    h = real_home
    outs = TelemetryStore(h.home).read("outcomes")
    n = outs.num_rows
    assert n > 20
    out = reported(h.reg, h.home, phishing, per_page=10)
    assert out["total"] == n and len(out["items"]) == 10 and out["pages"] == -(-n // 10)
    times = [i["event_ns"] for i in out["items"]]
    assert times == sorted(times, reverse=True)
    item = out["items"][0]
    assert item["found"] and item["kind"] in phishing.mistake_outcomes and item["action"] in ("block", "warn")
    assert item["context"]["user_id"] == item["unit"] and "phish" in item["scores"]
    last = reported(h.reg, h.home, phishing, page=out["pages"], per_page=10)
    assert len(last["items"]) == n - 10 * (out["pages"] - 1)
    far = reported(h.reg, h.home, phishing, now_ns=10**18)
    assert far["total"] == 0
    with pytest.raises(SpecError, match="'days'"):
        reported(h.reg, h.home, phishing, days=0)


def test_every_pages_data_is_plain_json(real_home, phishing):
    import json

    from closedloop.console.data import goals, guardrail_lists, history, lookup, served_at

    h = real_home
    outs = [history(h.reg, "phishing"), served_at(h.reg, "phishing", "2030-01-01T00:00:00"), flights(h.reg, h.home, phishing),
            reports(h.reg, "phishing"), compare(h.reg, h.world.A.version, h.world.B.version), worst(h.reg, phishing),
            reported(h.reg, h.home, phishing), lookup(h.reg, h.home, phishing, decision_id=h.live_ids[0]),
            goals(h.reg, h.home, phishing), guardrail_lists(h.reg, phishing)]
    for out in outs:
        assert json.loads(json.dumps(out)) is not None  # no numpy, no Arrow, no datetime: ready for a template and JSON


def test_a_file_that_is_not_a_report_is_listed_with_why(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "bad.json").write_text("{not json")
    (tmp_path / "reports" / "list.json").write_text("[1, 2]")
    items = report_files(tmp_path)["items"]
    assert [i["path"] for i in sorted(items, key=lambda i: i["path"])] == ["reports/bad.json", "reports/list.json"]
    assert all(i["error"].startswith("not a readable report") for i in items)
    assert report_files(tmp_path, system="phishing")["total"] == 0

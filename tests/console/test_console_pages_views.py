"""The History, Goals, Flights, Reports and Mistakes pages over a real home: a registry with bundles
H, A (a 30% flight) and B (a shadow), two registered evaluation reports and a report file, real
telemetry (a Runtime deciding, users reporting false blocks; part compacted into Parquet, part in
live segments), goal series and an alert — each page rendered for a viewer, its JSON twin, paging,
the bad inputs (a clear message, problem+json under /api/), and a logged decision replayed bitwise."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from support.console_client import client, login
from support.registry_world import build_world, served_home

S = "/systems/phishing"
DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def world_home(phishing, tmp_path_factory):
    from closedloop.service.auth import Credentials

    world = build_world(phishing, tmp_path_factory.mktemp("pages-world"))
    home = tmp_path_factory.mktemp("pages-home")
    reg, first, second = served_home(phishing, world, home, (1200, 500), (31, 32))
    reg.close()
    (home / "reports").mkdir()
    (home / "reports" / "ha.json").write_text(json.dumps(world.report_HA, default=str))
    now = first.timestamps_ns[0].as_py() if hasattr(first.timestamps_ns[0], "as_py") else int(first.timestamps_ns[0])
    points = [{"name": "phish_recall", "metric": "recall@warn", "level": "model", "cadence": "daily", "window": f"d{i}",
               "start_ns": now - (10 - i) * DAY, "end_ns": now - (9 - i) * DAY, "value": 0.85 + 0.01 * i, "n": 500,
               "target": 0.9, "direction": "at_least", "met": 0.85 + 0.01 * i >= 0.9} for i in range(10)]
    (home / "goals").mkdir()
    (home / "goals" / "series.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    (home / "orchestration").mkdir()
    (home / "orchestration" / "alerts.jsonl").write_text(json.dumps({
        "id": "1", "kind": "feature_drift", "subject": "url_length", "message": "PSI 0.4 over 0.2", "action": "none",
        "window": "w", "at_ns": now - 3 * DAY, "value": 0.4, "threshold": 0.2, "system": "phishing"}) + "\n")
    creds = Credentials(home / "credentials.json")
    tokens = {"viewer": creds.add("vera", ["viewer"]), "admin": creds.add("ada", ["admin"])}
    return {"home": home, "world": world, "tokens": tokens, "lake_ids": first.decision_ids.to_pylist(),
            "live_ids": second.decision_ids.to_pylist(), "now": now}


def _app(world_home, **kw):
    from closedloop.console import ConsoleSettings, create_console_app

    return create_console_app(ConsoleSettings(home=world_home["home"], systems=("examples.phishing.system:phishing",), **kw),
                              clock=lambda: world_home["now"] + 3_600 * 10**9)


@pytest.fixture(scope="module")
def viewer(world_home):
    c = client(_app(world_home))
    login(c, world_home["tokens"]["viewer"])
    return c


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def _no_inline_code(html: str) -> None:
    assert "<style" not in html and " style=" not in html and not re.search(r"<[^>]+\son[a-z]+=", html)
    for m in re.finditer(r"<script([^>]*)>(.*?)</script>", html, re.S):  # code from files; specs as JSON data only
        assert ("src=" in m.group(1) and not m.group(2).strip()) or 'type="application/json"' in m.group(1)


# -- history ---------------------------------------------------------------------------------------------------
def test_history_lists_every_change_with_who_why_and_what_served(viewer, world_home):
    w = world_home["world"]
    r = viewer.get(f"{S}/history")
    assert r.status_code == 200
    _no_inline_code(r.text)
    text = _text(r.text)
    assert "deploy_shadow" in text and "bob" in text and "watch B" in text and "try A on 30%" in text
    assert f"flights a ({w.A.version}, 30%)" in text  # what served after
    assert '<th scope="col">Served before</th>' in r.text and r.text.index('id="event-3"') < r.text.index('id="event-1"')
    api = viewer.get(f"/api{S}/history").json()
    assert [e["id"] for e in api["items"]] == [3, 2, 1] and api["items"][0]["actor"] == "bob"


def test_history_pages_and_what_served_at_a_time(world_home):
    c = client(_app(world_home, page_size=2))
    login(c, world_home["tokens"]["viewer"])
    first = c.get(f"{S}/history").text
    assert 'id="event-3"' in first and 'id="event-1"' not in first and "Page 1 of 2" in _text(first)
    assert f'href="{S}/history?page=2"' in first
    second = c.get(f"{S}/history?page=2").text
    assert 'id="event-1"' in second and 'id="event-3"' not in second
    r = c.get(f"{S}/history", params={"at": "2100-01-01T00:00:00Z"})
    assert r.status_code == 200 and 'id="served-at"' in r.text
    assert world_home["world"].H.version in _text(r.text.split('id="served-at"')[1]) and "watch B" in r.text
    before = c.get(f"{S}/history", params={"at": "2000-01-01"})
    assert before.status_code == 200 and "nothing deployed" in before.text
    assert 'id="applied" name="applied" value="1"' in first and '<label for="applied">' in first
    assert 'id="event-' in c.get(f"{S}/history?applied=1").text
    at = c.get(f"/api{S}/history/at", params={"when": "2100-01-01"}).json()
    assert at["production"]["bundle"] == world_home["world"].H.version and at["flights"][0]["name"] == "a"


@pytest.mark.parametrize("path, status, message", [
    (f"{S}/history?at=yesterday-ish", 422, "The 'when' must be a time"),
    (f"{S}/history?page=0", 422, "'page' must be an integer from 1"),
    (f"{S}/history?page=abc", 422, "'page' must be an integer from 1"),
    (f"{S}/goals?days=0", 422, "'days' must be a whole number"),
    (f"{S}/goals?since=not-a-time", 422, "The 'since' must be a time"),
    (f"{S}/reports/99", 404, "No evaluation report with id 99"),
    (f"{S}/reports/file?path=../registry.sqlite", 422, "must name a report file of the home"),
    (f"{S}/reports/compare?left=phishing-nope&right=phishing-nada", 404, "Bundle 'phishing-nope' is not registered"),
    (f"{S}/mistakes?days=-3", 422, "'days' must be a number of days"),
    (f"{S}/decision?id=no-such-decision", 404, "No decision with id 'no-such-decision' in the telemetry of 'phishing'"),
    (f"{S}/decision", 422, "Look up one decision"),
])
def test_bad_inputs_get_a_clear_message(viewer, path, status, message):
    r = viewer.get(path)
    assert r.status_code == status, r.text
    assert message in _text(r.text)
    assert 'class="error"' in r.text


@pytest.mark.parametrize("path, status, message", [
    (f"/api{S}/history/at?when=garbage", 422, "The 'when' must be a time"),
    (f"/api{S}/decision?id=no-such-decision", 404, "No decision with id 'no-such-decision'"),
    (f"/api{S}/reports/99", 404, "No evaluation report with id 99"),
    (f"/api{S}/goals?days=x", 422, "'days' must be"),
])
def test_the_api_answers_bad_input_with_problem_json(viewer, path, status, message):
    r = viewer.get(path)
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
    assert message in r.json()["detail"]


@pytest.mark.parametrize("page", ["history", "goals", "flights", "reports", "mistakes", "hotfix"])
def test_an_unknown_system_is_a_404_on_every_page_and_twin(viewer, page):
    r = viewer.get(f"/systems/nope/{page}")
    assert r.status_code == 404 and "No system named 'nope' in this registry" in _text(r.text)
    api = viewer.get(f"/api/systems/nope/{page}")
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"


# -- goals --------------------------------------------------------------------------------------------------------
def test_goals_chart_each_goal_with_the_events_and_the_vendored_libraries(viewer, world_home):
    r = viewer.get(f"{S}/goals?days=30")
    assert r.status_code == 200
    _no_inline_code(r.text)
    html = r.text
    assert 'id="goal-spec-' in html and 'class="vl-chart"' in html
    specs = [json.loads(unescape(m)) for m in re.findall(r'<script type="application/json" id="goal-spec-\d+">(.*?)</script>', html, re.S)]
    recall = next(s for s in specs if s["title"]["text"] == "phish_recall")
    marks = {d["kind"] for layer in recall["layer"] for d in layer["data"]["values"] if "kind" in d}
    assert {"deployment", "alert"} <= marks
    for lib in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        assert f'src="/charts/{lib}"' in html
        got = viewer.get(f"/charts/{lib}")
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/javascript") and len(got.content) > 50_000
    assert viewer.get("/charts/../../settings.py").status_code == 404
    assert 'src="/static/vendor/vega-interpreter.min.js"' in html and 'src="/static/vendor/charts.js"' in html
    assert '<label for="days">' in html and '<label for="since">' in html and '<label for="until">' in html
    week = viewer.get(f"{S}/goals?days=7").text
    assert '<option value="7" selected>' in week
    api = viewer.get(f"/api{S}/goals", params={"since": "2000-01-01", "until": "2000-01-02"}).json()
    assert api["since"].startswith("2000-01-01") and all(not g["points"] for g in api["goals"])


# -- flights ------------------------------------------------------------------------------------------------------
def test_flights_show_the_guards_metrics_srm_and_exposure(viewer, world_home):
    r = viewer.get(f"{S}/flights")
    assert r.status_code == 200
    _no_inline_code(r.text)
    text = _text(r.text)
    assert "Flight a" in text and world_home["world"].A.version in text and "30% of units" in text
    assert "mistake_rate" in text and "two-proportion z-test" in text and "Sample ratio (SRM)" in text
    assert 'hx-get="/systems/phishing/flights/live?since=' in r.text and 'hx-trigger="every 1.0s"' in r.text
    assert '<button type="button" disabled title="Only an admin may act">Stop</button>' in r.text  # a viewer
    assert "/actions/stop" not in r.text
    api = viewer.get(f"/api{S}/flights").json()
    (f,) = api["flights"]
    assert f["name"] == "a" and f["decisions"]["flight"] + f["decisions"]["production"] == 1700 and api["srm"]["verdict"]


def test_an_admin_gets_stop_and_promote_leading_to_the_confirmations(world_home):
    c = client(_app(world_home))
    login(c, world_home["tokens"]["admin"])
    html = c.get(f"{S}/flights").text
    assert f'href="{S}/actions/stop?name=a"' in html and f'href="{S}/actions/promote?name=a"' in html
    confirm = c.get(f"{S}/actions/stop?name=a")
    assert confirm.status_code == 200 and "What will change" in confirm.text


# -- reports ------------------------------------------------------------------------------------------------------
def test_reports_listed_newest_first_opened_in_place_and_compared(viewer, world_home):
    w = world_home["world"]
    r = viewer.get(f"{S}/reports")
    assert r.status_code == 200
    html = r.text
    assert html.index(f'href="{S}/reports/2"') < html.index(f'href="{S}/reports/1"')
    assert f'href="{S}/reports/file?path=reports/ha.json"' in html
    assert '<label for="left">' in html and '<label for="right">' in html
    one = viewer.get(f"{S}/reports/1")
    assert one.status_code == 200
    _no_inline_code(one.text)
    text = _text(one.text)
    assert "gate passed" in text and "auc" in text and "mistake cost per 1,000" in text and "Slices by" in text
    assert "Worst false negatives" in text and "Thresholds" in text
    assert 'id="report-spec-1"' in one.text and "<iframe" not in one.text  # the report's own specs, not its HTML
    assert 'src="/charts/vega.min.js"' in one.text
    f = viewer.get(f"{S}/reports/file", params={"path": "reports/ha.json"})
    assert f.status_code == 200 and w.A.version in f.text
    both = viewer.get(f"{S}/reports/compare", params={"left": w.H.version, "right": w.A.version})
    assert both.status_code == 200
    text = _text(both.text)
    assert "What differs in the manifests" in text and "intelligence.kind" in text and "lookup_table" in text and "logistic" in text
    assert viewer.get(f"/api{S}/reports/1").json()["gate"]["passed"] is True
    api = viewer.get(f"/api{S}/reports").json()
    assert [x["id"] for x in api["registered"]["items"]] == [2, 1] and api["files"]["items"][0]["path"] == "reports/ha.json"


def test_reports_page(world_home):
    c = client(_app(world_home, page_size=1))
    login(c, world_home["tokens"]["viewer"])
    first, second = c.get(f"{S}/reports").text, c.get(f"{S}/reports?page=2").text
    assert f'href="{S}/reports/2"' in first and f'href="{S}/reports/1"' not in first
    assert f'href="{S}/reports/1"' in second and "No report file on this page" in _text(second)


# -- mistakes and a decision ---------------------------------------------------------------------------------------
def test_mistakes_worst_and_reported_with_their_contexts(viewer, world_home):
    r = viewer.get(f"{S}/mistakes")
    assert r.status_code == 200
    _no_inline_code(r.text)
    text = _text(r.text)
    assert "Worst mistakes of the latest evaluation" in text and "false negative" in text and "domain=" in text
    assert "reported false block" in text
    assert '<label for="lookup-id">' in r.text and '<label for="lookup-unit">' in r.text
    api = viewer.get(f"/api{S}/mistakes").json()
    assert api["worst"]["items"] and api["reported"]["total"] > 0
    first = api["reported"]["items"][0]["decision_id"]
    assert f'href="{S}/decision?id={first}"' in r.text


@pytest.mark.parametrize("which", ["lake_ids", "live_ids"])
def test_a_logged_decision_replays_equal_to_the_log_bitwise(viewer, world_home, which):
    did = world_home[which][7]
    r = viewer.get(f"{S}/decision", params={"id": did})
    assert r.status_code == 200, r.text
    _no_inline_code(r.text)
    served = r.text.split('id="replay-served"')[1].split("</section>")[0]
    assert "equal to the log, bitwise" in served and "NO<" not in served
    text = _text(r.text)
    assert "The rule that decided" in text and "The context as logged" in text and "The features the intelligence saw" in text
    api = viewer.get(f"/api{S}/decision", params={"id": did}).json()
    cand = api["candidate"]["bundle"]
    assert cand != api["served"]["bundle"] and cand in r.text.split('id="replay-candidate"')[1]  # side by side
    assert api["served"]["replayed"] and api["served"]["equal"] is True
    assert api["served"]["decision"]["score_bits"] == api["decision"]["score_bits"]


def test_a_unit_is_looked_up_as_its_newest_decision(viewer, world_home):
    api = viewer.get(f"/api{S}/decision", params={"id": world_home["live_ids"][0]}).json()
    unit = api["decision"]["unit"]
    r = viewer.get(f"{S}/decision", params={"unit": unit})
    assert r.status_code == 200 and f"<dd>{unit}</dd>" in r.text and "equal to the log, bitwise" in r.text


def test_a_ranking_report_in_place_shows_its_metrics_and_off_policy_values():
    """A ranking report's bundles carry {metric: {value, ci}} and its policy values per estimator: the
    page's view shows the metrics' values and each policy's value, interval and ESS, and the paired differences."""
    from closedloop.console.pages.reports import report_view

    est = {"value": 0.2, "low": 0.19, "high": 0.21, "ess": 4376.4, "support": {"passed": True}}
    rep = {"kind": "ranking", "system": "feed", "metadata": {"k": 5},
           "bundles": [{"version": "v1", "kind": "affinity", "n": 100, "metrics": {"ndcg_at_k": {"value": 0.77, "ci": [0.76, 0.78]}}},
                       {"version": "v2", "kind": "affinity", "n": 100, "metrics": {"ndcg_at_k": {"value": 0.76, "ci": None}}}],
           "comparison": [{"candidate": "v2", "baseline": "v1", "differences": {"ndcg_at_k": {"value": -0.01, "ci": [-0.02, 0.0]}}}],
           "policy_value": {"estimators": ["dr", "snips"], "interval": "bootstrap by unit", "reward_model": "v2", "notes": [],
                            "bundles": [{"version": "v1", "estimates": {"dr": est, "snips": est}},
                                        {"version": "v2", "estimates": {"dr": {**est, "value": 0.21}, "snips": est}}],
                            "comparison": [{"candidate": "v2", "baseline": "v1",
                                            "differences": {"dr": {"value": 0.01, "low": -0.003, "high": 0.02}}}]}}
    view = report_view(rep)
    assert [b["quality"] for b in view["bundles"]] == [{"ndcg_at_k": 0.77}, {"ndcg_at_k": 0.76}]
    pol = view["policy"]
    assert pol["estimators"] == ["dr", "snips"] and [b["version"] for b in pol["bundles"]] == ["v1", "v2"]
    assert pol["bundles"][1]["estimates"]["dr"]["value"] == 0.21
    assert pol["comparison"][0]["differences"]["dr"] == {"value": 0.01, "low": -0.003, "high": 0.02}
    assert pol["comparison"][0]["differences"]["snips"] == {}  # an estimator the comparison lacks: shown as —
    assert report_view({"bundles": []})["policy"] is None  # a classification report has none

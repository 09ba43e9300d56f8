"""The demo's engine on a small world, through the same code as ``make demo``: the counts reconcile
from the world to telemetry, to the datasets the loop trained on, to the goal series, to the
report; the same seed gives the same table (in-process and with the static arms in a worker);
the safety net's story is told from what the loop recorded."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from closedloop.telemetry import TelemetryStore

SMALL = {"days": 10, "shared_days": 5, "visits_per_day": 3000, "users": 1200, "fault_day": 6, "measure_from": 7}


def _settings(**kw):
    from examples.phishing.loop_demo import DemoSettings

    return DemoSettings(seed=3, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from examples.phishing.loop_demo import run_demo

    return run_demo(_settings(), tmp_path_factory.mktemp("demo") / "home", parallel=False)


def _table(run):
    s = run.summary()
    s.pop("seconds")
    return s


def test_the_arms_share_the_first_days_then_differ(small_run):
    from examples.phishing.loop_demo import ARMS

    run = small_run
    for arm in ARMS:
        assert [r["day"] for r in run.arms[arm]] == list(range(SMALL["days"]))
    shared = SMALL["shared_days"]
    assert run.arms["heuristic"][:shared] == run.arms["frozen"][:shared] == run.arms["loop"][:shared]
    # the same visit stream: every arm saw the same page loads on every day, whatever it decided
    # (unprotected users aside: a false block turns protection off, which differs by policy)
    for day in range(SMALL["days"]):
        assert len({run.arms[a][day]["visits"] for a in ARMS}) == 1
    later = [run.arms[a][shared:] for a in ARMS]
    assert later[0] != later[1] and later[1] != later[2]
    assert run.counts["frozen_bundle"] is not None


def test_counts_reconcile_telemetry_datasets_goals_report(small_run, tmp_path):
    from examples.phishing.loop_demo import DAY_NS
    from examples.phishing.loop_report import render_report

    run = small_run
    store = TelemetryStore(run.home)
    decisions = store.read("decisions")
    # every loop-arm decision is in telemetry, once
    assert decisions.num_rows == sum(r["decided"] for r in run.arms["loop"])
    assert len(set(decisions["decision_id"].to_pylist())) == decisions.num_rows
    assert run.counts["telemetry"]["logged"] == decisions.num_rows
    day0 = run.settings.world_config().day_start_ns(0)
    ts = decisions["timestamp_ns"].to_numpy()
    per_day = {d: int(((ts >= day0 + d * DAY_NS) & (ts < day0 + (d + 1) * DAY_NS)).sum()) for d in range(SMALL["days"])}
    assert per_day == {r["day"]: r["decided"] for r in run.arms["loop"]}

    # each dataset the loop trained on holds exactly the telemetry decisions of its time range
    trained = [c for c in run.cycles if "dataset" in c]
    assert trained, [(c["day"], c["outcome"], c["reason"]) for c in run.cycles]
    for c in trained:
        path = run.home / "orchestration" / "cycles" / f"{c['id']:06d}" / "dataset"
        man = json.loads((path / "manifest.json").read_text())
        since, until = man["since_ns"], man["until_ns"]
        in_range = int(((ts >= since) & (ts < until)).sum())
        counts = c["dataset"]["counts"]["decisions"]
        assert counts["in_range"] == in_range
        assert counts["rows"] + counts["open"] == in_range
        assert pq.read_metadata(path / "data.parquet").num_rows == counts["rows"]

    # the daily share of blocks is measured from the same decisions the world counted
    blocks = [p for p in run.goals if p["name"] == "false_blocks"]
    assert blocks
    for p in blocks:
        d = (p["start_ns"] - day0) // DAY_NS
        assert p["n"] == run.arms["loop"][d]["decided"], p

    # the report carries the same series: arms by day, goal points, the table's figures
    page = render_report([run])
    charts = json.loads(re.search(r'<script type="application/json" id="cl-charts">(.*?)</script>', page, re.S)
                        .group(1))
    series = {c["spec"]["title"]["text"]: c["spec"] for c in charts}
    allowed = series["phishing visits allowed per 1,000 visits"]["layer"][0]["data"]["values"]
    for row in allowed:
        r = run.arms[row["policy"]][row["day"]]
        assert row["value"] == pytest.approx(1000.0 * r["phish_allowed"] / max(r["decided"], 1), abs=1e-4)
    assert len(allowed) == 3 * SMALL["days"]
    goal_specs = [s for t, s in series.items() if t.startswith("goal false_blocks ")]
    assert len(goal_specs) == 1
    values = [v["value"] for v in goal_specs[0]["layer"][0]["data"]["values"]]
    assert values == [p["value"] for p in sorted(blocks, key=lambda p: p["start_ns"]) if p["value"] is not None]
    summ = run.summary()
    for arm in ("heuristic", "frozen", "loop"):
        assert f"{summ['arms'][arm]['phish_allowed_per_1k']:,.3f}" in page
    # self-contained: no network, only the inlined scripts
    assert "https://" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S).replace(
        "https://vega.github.io/schema/vega-lite/v5.json", "")
    assert "Content-Security-Policy" in page


def test_the_safety_net_story_comes_from_the_loop_records(small_run):
    run = small_run
    f = run.fault
    assert f is not None and f["day"] == SMALL["fault_day"]
    assert f["event"]["labels_corrupted"] > 0
    for c in f["candidates"]:
        assert c["day"] > SMALL["fault_day"]
        rec = next(x for x in run.cycles if x["day"] == c["day"])
        assert rec["candidate"]["version"] == c["candidate"]
    # quarantined sources come from the loop's own abuse verdicts, with reasons
    verdicts = {s["source"]: s for s in run.abuse.get("sources", [])}
    for q in run.abuse["quarantined"]:
        assert verdicts[q]["verdict"] == "quarantined" and "analysts" in verdicts[q]["reason"]


def test_a_seeded_run_is_reproducible_and_the_worker_changes_nothing(small_run, tmp_path):
    from examples.phishing.loop_demo import run_demo

    again = run_demo(_settings(), tmp_path / "again", parallel=True)
    assert again.arms == small_run.arms
    assert _table(again) == _table(small_run)
    assert [(c["day"], c["outcome"]) for c in again.cycles] == [(c["day"], c["outcome"]) for c in small_run.cycles]


def test_settings_are_validated():
    from closedloop import SpecError

    with pytest.raises(SpecError, match="'shared_days'"):
        _settings(shared_days=10)
    with pytest.raises(SpecError, match="'fault_day'"):
        _settings(fault_day=1)
    with pytest.raises(SpecError, match="'days'"):
        _settings(days=0)
    with pytest.raises(SpecError, match="'cycles_per_day' of DemoSettings must divide 'slices'"):
        _settings(cycles_per_day=5)
    with pytest.raises(SpecError, match="needs cycle_every 1"):
        _settings(cycles_per_day=2, cycle_every=2)


def test_the_demo_home_must_be_fresh(tmp_path):
    from examples.phishing.loop_demo import run_demo

    from closedloop import SpecError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(SpecError, match="empty or new"):
        run_demo(_settings(), tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_demo_cli_prints_the_table_and_writes_the_report(tmp_path, capsys):
    from examples.phishing import demo

    report = tmp_path / "r.html"
    argv = ["--days", "6", "--shared-days", "4", "--visits", "2000", "--users", "800", "--fault-day", "-1",
            "--measure-from", "5", "--home", str(tmp_path / "homes"), "--report", str(report), "--seed", "4"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert [s["seed"] for s in last["seeds"]] == [4]
    assert "frozen" in out and "loop" in out and "heuristic" in out
    assert report.is_file() and "phishing visits allowed per 1,000 visits" in report.read_text()
    assert (tmp_path / "homes" / "seed-4" / "demo-run.json").is_file()
    # a rerun replaces its own earlier home
    assert demo.main(argv) == 0


def test_the_report_draws_every_chart_offline_in_a_browser(small_run, tmp_path):
    from examples.phishing.loop_report import write_report
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    from support.browser import browser

    path = write_report([small_run], tmp_path / "demo.html")
    driver = browser()
    try:
        driver.get(path.resolve().as_uri())
        try:
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script("return document.documentElement.getAttribute('data-charts')"))
        except TimeoutException:
            pass
        state = driver.execute_script("""
            return {drawn: document.documentElement.getAttribute("data-charts"),
                    charts: [...document.querySelectorAll("div.chart")].map(el => ({
                      title: el.dataset.chart,
                      marks: el.querySelectorAll("svg g.role-mark path, svg g.role-mark line").length})),
                    resources: performance.getEntriesByType("resource").map(e => e.name)};""")
    finally:
        driver.quit()
    assert state["drawn"] == "drawn", state
    assert len(state["charts"]) == 2 + 7  # two arm charts, one per goal
    assert all(c["marks"] > 0 for c in state["charts"]), state["charts"]
    assert state["resources"] == []  # nothing fetched: the page is self-contained


def test_the_demo_guard_tolerates_noise_and_stops_a_misbehaving_flight(phishing):
    """The demo's guard (one more reported false block per 1,000 decisions tolerated) lets through
    the difference that stopped five of seed 1's flights without a tolerance, and still stops a
    flight that blocks legitimate pages at a few per 1,000 — what a broken bundle does."""
    from examples.phishing.loop_demo import demo_plan, loop_system

    from closedloop.registry.guard import _metric

    pol = demo_plan(loop_system(phishing)).rollout.guard
    assert pol.mistakes == ("reported_false_block",)
    seed1 = _metric("mistake_rate", 6, 9640, 4, 38360, pol.mistake_tolerance, pol)
    assert not seed1["breach"]
    assert _metric("mistake_rate", 6, 9640, 4, 38360, 0.0, pol)["breach"]  # the same counts, no tolerance
    broken = _metric("mistake_rate", 35, 9640, 4, 38360, pol.mistake_tolerance, pol)
    assert broken["breach"] and broken["p_value"] < pol.alpha

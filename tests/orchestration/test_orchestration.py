"""Goals, windows, drift, mistake spikes, abuse, alerts and selective labels (closedloop.orchestration)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from closedloop import (
    BestAction,
    Bundle,
    EpsilonGreedy,
    F,
    Float,
    LabelPolicy,
    ManualClock,
    OutcomeRule,
    Runtime,
    SpecError,
    Str,
    System,
    Thresholds,
)
from closedloop.datasets import build_dataset
from closedloop.orchestration import (
    AbusePolicy,
    Alert,
    Cycle,
    GoalTracker,
    JsonLinesAlertSink,
    LoopPlan,
    Measure,
    MistakeSpikes,
    Rollout,
    SeriesStore,
    WebhookAlertSink,
    deliver,
    goal_status,
    parse_metric,
    psi,
    window_at,
    windows_between,
)
from closedloop.orchestration.drift import DriftMonitor
from closedloop.runtime.ids import DecisionIds
from closedloop.telemetry import SegmentLog, Telemetry
from support.orchestration import (
    DAY,
    START,
    Synth,
    compacted,
    first_bundle,
    make_system,
    open_runtime,
    synth_days,
)


# -- windows -------------------------------------------------------------------------------------------
def test_cadence_windows_are_utc_calendar_windows() -> None:
    t = START + 13 * 3600 * 10**9 + 5  # Monday 2026-01-05 13:00:00
    assert window_at("hourly", t).key == "2026-01-05T13"
    assert window_at("daily", t).key == "2026-01-05"
    w = window_at("weekly", START + 6 * DAY)
    assert w.key == "2026-W02" and w.start_ns == START and w.end_ns == START + 7 * DAY
    m = window_at("monthly", START)
    assert m.key == "2026-01" and m.end_ns - m.start_ns == 31 * DAY
    q = window_at("quarterly", START)
    assert q.key == "2026-Q1" and q.end_ns - q.start_ns == 90 * DAY
    days = list(windows_between("daily", START + 1, START + 3 * DAY))
    assert [d.key for d in days] == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert all(a.end_ns == b.start_ns for a, b in zip(days, days[1:], strict=False))
    with pytest.raises(SpecError, match="cadence must be one of"):
        window_at("yearly", START)


# -- the metric grammar --------------------------------------------------------------------------------
def test_metric_grammar_parses_and_refuses_with_the_rule() -> None:
    s = make_system()
    assert parse_metric("false_positive_rate@block", s).kind == "classify"
    assert parse_metric("recall@warn", s).action == "warn"
    m = parse_metric("reported_phish_per_1k", s)
    assert (m.kind, m.name, m.action, m.scale) == ("rate", "reported_phish", None, 1000.0)
    m = parse_metric("rate:chose:continue@warn", s)
    assert (m.kind, m.name, m.action) == ("rate", "chose:continue", "warn")
    assert parse_metric("share:block", s).kind == "share"
    assert parse_metric("labeled:phish_per_1k@allow", s).name == "phish"
    assert parse_metric("cost_per_1k", s).kind == "cost"
    assert parse_metric("mine", s, {"mine": lambda inp: 1.0}).kind == "custom"
    with pytest.raises(SpecError, match="not one of the system's actions"):
        parse_metric("recall@quarantine", s)
    with pytest.raises(SpecError, match="names class 'spam'"):
        parse_metric("labeled:spam_per_1k", s)
    with pytest.raises(SpecError, match="not in the grammar"):
        parse_metric("share_of_users_with_protection_on", s)
    with pytest.raises(SpecError, match="not in the grammar"):  # a goal telemetry cannot measure is refused
        GoalTracker(make_system(goals=[__import__("closedloop").Goal("x", "user", "happiness", 1.0)]))


def test_the_phishing_example_goals_are_measurable_at_four_levels() -> None:
    from examples.phishing.system import phishing

    GoalTracker(phishing)  # every goal parses
    assert {g.level for g in phishing.goals} == {"model", "user", "leading", "organizational"}
    cad = {g.level: g.cadence for g in phishing.goals}
    assert cad["model"] == "hourly" and cad["user"] == "daily" and cad["leading"] == "weekly"
    assert {g.cadence for g in phishing.goals if g.level == "organizational"} <= {"monthly", "quarterly"}
    assert phishing.label_policy.default_for("block") is None  # blocking hides the outcome


# -- goals from telemetry ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_home(tmp_path_factory: pytest.TempPathFactory):
    """Eight simulated days of the synthetic system, decided by the first bundle."""
    home = tmp_path_factory.mktemp("synth")
    system, synth, store = synth_days(home, 8, per_day=1500, seed=11)
    return home, system, synth, store


def test_goals_are_measured_per_settled_window_reconcile_with_telemetry_and_are_idempotent(synth_home, tmp_path) -> None:
    home, system, synth, store = synth_home
    tracker = GoalTracker(system, rate_settle=timedelta(days=1))
    series = SeriesStore(tmp_path / "series.jsonl")
    now = START + 8 * DAY
    kw = {"decision_files": store.decision_files(), "outcome_files": store.outcome_files(), "now_ns": now}
    pts = tracker.measure(series, **kw)
    by = {}
    for p in pts:
        by.setdefault(p["name"], []).append(p)
    # settling: labels need the 2-day window closed, rates 1 day, share only the window's end
    assert [p["window"] for p in by["fpr_block"]][-1] == "2026-01-10"  # ends day 6; +2 days = now
    assert [p["window"] for p in by["reports"]][-1] == "2026-01-11"
    assert len(by["fpr_block"]) == 6 and len(by["reports"]) == 7
    assert "blocked_share" not in by  # the month has not ended
    assert [p["window"] for p in by["click_through"]] == ["2026-W02"]
    # reconcile: the per-window denominators are the decisions the world made that day
    for p, c in zip(by["reports"], synth.counts, strict=False):
        assert p["n"] == c["decisions"]
    # recall@warn against the ground truth: the labeled positives are the phishing pages that revealed
    # themselves (reports, analysts); every one of them that was warned or blocked counts
    assert all(0.0 <= p["value"] <= 1.0 for p in by["recall_warn"])
    assert all(p["met"] == (p["value"] <= 0.05) for p in by["fpr_block"])
    # idempotent: the same measurement again appends nothing, a later one only the new windows
    assert tracker.measure(series, **kw) == []
    later = tracker.measure(series, **{**kw, "now_ns": now + DAY})
    assert {(p["name"], p["window"]) for p in later} == {("fpr_block", "2026-01-11"), ("recall_warn", "2026-01-11"),
                                                         ("reports", "2026-01-12")}
    keys = [(p["name"], p["window"]) for p in series.points()]
    assert len(keys) == len(set(keys))
    # a torn last line (a crash mid-append) is skipped, and the next append still lands whole
    with open(series.path, "ab") as fh:
        fh.write(b'{"name": "torn", "win')
    n = len(series.points())
    series.append([{"name": "x", "window": "w", "start_ns": 0}])
    assert len(series.points()) == n + 1
    status = {g["name"]: g for g in goal_status(system, series)}
    assert status["reports"]["window"] == "2026-01-12" and status["blocked_share"]["value"] is None


def test_share_and_rate_metrics_match_a_direct_count(synth_home, tmp_path) -> None:
    home, system, synth, store = synth_home
    tracker = GoalTracker(system, rate_settle=timedelta(days=1))
    day0 = START
    t = pq.read_table(store.decision_files()[0]).to_pydict()
    o = pq.ParquetDataset([str(f) for f in store.outcome_files()]).read().to_pydict()
    in0 = [i for i, ts in enumerate(t["timestamp_ns"]) if day0 <= ts < day0 + DAY]
    acts = [t["action"][i] for i in in0]
    ids0 = {t["decision_id"][i]: t["action"][i] for i in in0}
    warned = [d for d, a in ids0.items() if a == "warn"]
    cont = {d for d, k in zip(o["decision_id"], o["kind"], strict=True) if k == "chose:continue" and d in ids0}
    ms = [Measure("share", "share:block", "daily"), Measure("ct", "rate:chose:continue@warn", "daily"),
          Measure("mine", "mine", "daily")]
    seen = []
    tracker = GoalTracker(system, rate_settle=timedelta(days=1), metrics={"mine": lambda inp: seen.append(inp) or (
        inp.decisions.num_rows / 1000.0, inp.decisions.num_rows)})
    pts = tracker.measure(SeriesStore(tmp_path / "s.jsonl"), decision_files=store.decision_files(),
                          outcome_files=store.outcome_files(), now_ns=START + 3 * DAY, measures=ms)
    p = {(x["name"], x["window"]): x for x in pts}
    assert p[("share", "2026-01-05")]["value"] == pytest.approx(acts.count("block") / len(acts))
    assert p[("ct", "2026-01-05")]["value"] == pytest.approx(len(cont) / len(warned))
    assert p[("mine", "2026-01-05")]["value"] == pytest.approx(len(acts) / 1000.0)
    assert seen[0].labeled.num_rows > 0 and seen[0].window.key == "2026-01-05"


# -- selective labels and inverse propensity ---------------------------------------------------------------
def _band_system(policy: LabelPolicy, epsilon: float) -> System:
    return System(
        "band",
        context=[Str("user_id"), Float("s")],
        unit="user_id",
        features={"s": F.col("s")},
        actions=["allow", "warn", "block"],
        experience=Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow",
                              explore=EpsilonGreedy(epsilon, 0.6, 1.0)),
        labels=("legit", "phish"),
        label_policy=policy,
    )


def test_ips_weights_make_the_band_phish_rate_unbiased_where_the_naive_estimate_is_not(tmp_path: Path) -> None:
    """Scores in [0.6, 1]: warn band [0.6, 0.9), block band [0.9, 1]; the truth P(phish | s) = s.
    A block hides the outcome; 6% of band decisions explore (uniform over allow/warn/block, so
    4% are shown as allow or warn). Shown pages reveal the truth: a phishing page is reported."""
    rules = [OutcomeRule("reported_phish", label="phish")]
    selective = LabelPolicy(timedelta(days=1), rules, default="legit", action_defaults={"block": None})
    system = _band_system(selective, 0.06)
    from closedloop import LinearModel

    bundle = Bundle.build(system, LinearModel({"s": 1.0}, 0.0, output="phish"))  # the score is s itself
    rng = np.random.default_rng(7)
    n = 40_000
    s = np.round(rng.uniform(0.6, 1.0, n), 4)
    phish = rng.random(n) < s
    home = tmp_path / "h"
    tel = Telemetry(SegmentLog(home), system=system, clock=ManualClock(START + DAY).now_ns)
    rt = Runtime(system, bundle, telemetry=tel, ids=DecisionIds(1))
    ts = START + np.sort(rng.integers(0, 3600 * 10**9, n))
    b = rt.decide_batch({"user_id": [f"u{i}" for i in range(n)], "s": s.tolist()}, timestamps_ns=ts)
    ids, act = b.decision_ids.to_pylist(), np.asarray(b.action, dtype=object)
    for i in np.flatnonzero(phish & (act != "block")):
        tel.log_outcome(ids[i], kind="reported_phish", event_ns=int(ts[i]) + 10**9, source="user")
    tel.close()
    store = compacted(home)
    truth_block = float(s[s >= 0.9].mean())  # E[P(phish) | block band]
    truth_band = float(s.mean())

    def estimate(policy: LabelPolicy, out: str, band: tuple[float, float], weighted: bool) -> tuple[float, float]:
        """The (weighted) phish rate of the band's labeled rows and its standard error."""
        m = build_dataset(_band_system(policy, 0.06), decision_files=store.decision_files(),
                          outcome_files=store.outcome_files(), since_ns=START, until_ns=START + DAY,
                          cutoff_ns=START + 3 * DAY, out=tmp_path / out)
        t = pq.read_table(m.data_path).to_pydict()
        sc = np.array([x[0] for x in t["scores"]])
        y = np.array([np.nan if v is None else v for v in t["label_value"]], dtype=float)
        w = np.array(t["weight"]) if weighted else np.ones(len(y))
        sel = (sc >= band[0]) & (sc <= band[1]) & ~np.isnan(y)
        est = float((w[sel] * y[sel]).sum() / w[sel].sum())
        return est, float(np.sqrt((w[sel] ** 2 * (y[sel] - est) ** 2).sum()) / w[sel].sum())

    ips_block, se_block = estimate(selective, "ips", (0.9, 1.0), True)
    ips_band, se_band = estimate(selective, "ips2", (0.6, 1.0), True)
    naive_band, se_naive = estimate(selective, "naive", (0.6, 1.0), False)  # labeled rows, unweighted
    old = LabelPolicy(timedelta(days=1), rules, default="legit")  # no action defaults: blocked = legit
    naive_old, _ = estimate(old, "old", (0.9, 1.0), False)
    assert abs(ips_block - truth_block) < 3 * se_block, (ips_block, truth_block, se_block)
    assert abs(ips_band - truth_band) < 3 * se_band, (ips_band, truth_band, se_band)
    assert abs(naive_band - truth_band) > 6 * se_naive, (naive_band, truth_band, se_naive)  # the warn band outweighs the block band
    assert naive_old < truth_block - 0.5  # "blocked means legit" hides almost all phishing
    # the weight is 1 / (sample_prob × propensity): explored rows weigh 1/(ε/3)
    t = pq.read_table(tmp_path / "ips" / "data.parquet", columns=["propensity", "weight", "action", "label"]).to_pydict()
    assert {round(w * p, 9) for w, p in zip(t["weight"], t["propensity"], strict=True)} == {1.0}
    assert max(t["weight"]) == pytest.approx(3 / 0.06)
    assert all(lab is None for a, lab in zip(t["action"], t["label"], strict=True) if a == "block")


def test_excluded_sources_and_source_weights_in_the_dataset(synth_home, tmp_path) -> None:
    home, system, synth, store = synth_home
    kw = {"decision_files": store.decision_files(), "outcome_files": store.outcome_files(), "since_ns": START,
          "until_ns": START + 6 * DAY, "cutoff_ns": START + 8 * DAY}
    full = build_dataset(system, out=tmp_path / "a", **kw)
    ex = build_dataset(system, out=tmp_path / "b", exclude_sources=["user:mallory"], **kw)
    wt = build_dataset(system, out=tmp_path / "c", source_weights={"user:mallory": 0.25}, **kw)
    mallory = sum(1 for f in store.outcome_files() for s in pq.read_table(f, columns=["source", "event_ns"])
                  .to_pydict()["source"] if s == "user:mallory")
    assert mallory > 0 and ex.counts["outcomes"]["excluded_source"] == mallory
    assert ex.counts["outcomes"]["read"] == full.counts["outcomes"]["read"] - mallory
    assert ex.content["sources"] == {"excluded": ["user:mallory"], "weights": {}}
    a = pq.read_table(full.data_path, columns=["decision_id", "label", "weight"]).to_pydict()
    b = dict(zip(*pq.read_table(ex.data_path, columns=["decision_id", "label"]).to_pydict().values(), strict=True))
    ct = pq.read_table(wt.data_path, columns=["decision_id", "weight", "propensity"]).to_pydict()
    c = {d: w * p for d, w, p in zip(ct["decision_id"], ct["weight"], ct["propensity"], strict=True)}
    # mallory's false-block reports label phishing pages legit; without them they are unlabeled (blocked)
    flipped = [d for d, lab in zip(a["decision_id"], a["label"], strict=True) if lab == "legit" and b[d] is None]
    assert flipped and all(synth.truth[d] for d in flipped)
    assert sorted({round(c[d], 6) for d in flipped}) == [0.25]
    with pytest.raises(Exception, match="must be a number in \\[0, 1\\]"):
        build_dataset(system, out=tmp_path / "d", source_weights={"x": 2.0}, **kw)


def test_label_policy_action_defaults_are_validated() -> None:
    with pytest.raises(SpecError, match="must be keyed by the actions"):
        make_system(action_defaults={"quarantine": None})
    with pytest.raises(SpecError, match="must be a class in"):
        make_system(action_defaults={"block": "spam"})
    p = make_system().label_policy
    assert p.default_for("block") is None and p.default_for("allow") == "legit"
    assert p.describe()["action_defaults"] == {"block": None}
    assert "action_defaults" not in make_system(action_defaults={}).label_policy.describe()


def test_a_loop_plan_needs_a_thresholds_experience() -> None:
    base = make_system()
    other = System(
        "synth", context=base.schema.fields, unit=base.unit, features={"x": F.col("x"), "z": F.col("z")},
        actions=list(base.actions), experience=BestAction(), labels=base.labels, label_policy=base.label_policy,
    )
    with pytest.raises(SpecError, match="needs a system with a Thresholds experience, or a Ranking with rewards .*; .synth. has Best"):
        LoopPlan(other, thresholds="system")


# -- drift and spikes --------------------------------------------------------------------------------------
def test_psi_is_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 20_000), rng.normal(0, 1, 20_000)
    assert psi(a, b) < 0.01
    assert psi(a, rng.normal(1.0, 1, 20_000)) > 0.25
    cat_a = rng.integers(0, 2, 10_000).astype(float)
    assert psi(cat_a, np.zeros(10_000)) > 1.0  # a category that vanished
    assert psi(np.r_[a, [np.nan] * 100], np.r_[b, [np.nan] * 2000]) > 0.05  # NaN is a bin of its own
    with pytest.raises(SpecError, match="needs values in both windows"):
        psi(a, [])


def test_drift_monitor_flags_the_shifted_feature(tmp_path: Path) -> None:
    home = tmp_path / "h"
    system = make_system()
    rt = open_runtime(home, system, first_bundle(system))
    synth = Synth(home, system, per_day=1200, seed=2, shift_day=4, phish_share=0.3)
    for _ in range(5):
        synth.run_day(rt)
    rt.telemetry.close()
    store = compacted(home)
    mon = DriftMonitor(reference=timedelta(days=3), feature_threshold=0.1, score_threshold=0.1, min_rows=500)
    calm, rep0 = mon.check(system, decision_files=store.decision_files(), now_ns=START + 4 * DAY)
    assert calm == [] and max(rep0["features"].values()) < 0.05
    alerts, rep = mon.check(system, decision_files=store.decision_files(), now_ns=START + 5 * DAY)
    assert "z" in {a.subject for a in alerts if a.kind == "feature_drift"}
    assert rep["features"]["z"] > 0.1 and rep["rows"] == {"reference": 3600, "current": 1200}
    assert rep["score"]["bundle_version"] == first_bundle(system).version
    assert all(a.threshold == 0.1 and a.action == "retrain" for a in alerts)


def test_mistake_spikes_use_rivers_detectors_on_the_rate_series(synth_home, tmp_path) -> None:
    home, system, synth, store = synth_home
    tracker = GoalTracker(system, rate_settle=timedelta(days=1))
    series = SeriesStore(tmp_path / "m.jsonl")
    # a series with a jump, written as measured points: the detector replays it
    vals = [10, 11, 9, 10, 12, 10, 11, 35, 36, 34]
    series.append([{"name": "mistakes:reported_phish_per_1k", "window": f"w{i}", "start_ns": i, "value": v}
                   for i, v in enumerate(vals)])
    spikes = MistakeSpikes(["reported_phish_per_1k"], threshold=20.0, min_instances=5)
    alerts, rep = spikes.check(system, tracker, series, decision_files=[], outcome_files=[], now_ns=START)
    assert [a.window for a in alerts] == ["w7"] and alerts[0].kind == "mistake_spike" and alerts[0].threshold == 20.0
    quiet = SeriesStore(tmp_path / "q.jsonl")
    quiet.append([{"name": "mistakes:reported_phish_per_1k", "window": f"w{i}", "start_ns": i, "value": v}
                  for i, v in enumerate([10, 11, 9, 10, 12, 10, 11, 10, 9, 11])])
    assert spikes.check(system, tracker, quiet, decision_files=[], outcome_files=[], now_ns=START)[0] == []
    down = SeriesStore(tmp_path / "d.jsonl")
    down.append([{"name": "mistakes:reported_phish_per_1k", "window": f"w{i}", "start_ns": i, "value": v}
                 for i, v in enumerate([30] * 8 + [5] * 6)])
    adwin = MistakeSpikes(["reported_phish_per_1k"], detector="adwin", delta=0.01, min_instances=3)
    assert adwin.check(system, tracker, down, decision_files=[], outcome_files=[], now_ns=START)[0] == []  # a fall is no spike
    up = SeriesStore(tmp_path / "u.jsonl")
    up.append([{"name": "mistakes:reported_phish_per_1k", "window": f"w{i}", "start_ns": i, "value": v}
               for i, v in enumerate([5] * 8 + [30] * 12)])
    hits = adwin.check(system, tracker, up, decision_files=[], outcome_files=[], now_ns=START)[0]
    assert hits and hits[0].window in {f"w{i}" for i in range(8, 20)}
    # from telemetry: the series is measured first (settled windows only)
    a, rep = spikes.check(system, tracker, SeriesStore(tmp_path / "t.jsonl"), decision_files=store.decision_files(),
                          outcome_files=store.outcome_files(), now_ns=START + 8 * DAY)
    assert rep["reported_phish_per_1k"]["values"] == 7


# -- abuse -------------------------------------------------------------------------------------------------
def test_abusive_source_is_quarantined_and_honest_ones_are_not(synth_home) -> None:
    home, system, synth, store = synth_home
    rep = AbusePolicy(min_count=20).check(system, outcome_files=store.outcome_files(), now_ns=START + 8 * DAY)
    by = {s["source"]: s for s in rep.sources}
    assert rep.quarantined == ["user:mallory"]
    m = by["user:mallory"]
    assert m["verdict"] == "quarantined" and m["n"] >= 20 and m["share"] > 0.9 and m["p_value"] < 1e-6
    assert "disagrees with the analysts on" in m["reason"] and "binomial p" in m["reason"]
    assert by["user"]["verdict"] == "trusted"
    assert not any(s.startswith("analyst") for s in by)  # the reference is not judged
    few = AbusePolicy(min_count=10_000).check(system, outcome_files=store.outcome_files(), now_ns=START + 8 * DAY)
    assert few.quarantined == [] and "fewer than the 10000 needed" in {s["source"]: s for s in few.sources}["user:mallory"]["reason"]
    mid = AbusePolicy(min_count=20, quarantine_above=0.99, downweight_above=0.3).check(
        system, outcome_files=store.outcome_files(), now_ns=START + 8 * DAY)
    if by["user:mallory"]["share"] <= 0.99:
        assert mid.weights == {"user:mallory": pytest.approx(1 - by["user:mallory"]["share"])}
    with pytest.raises(SpecError, match="downweight_above ≤ quarantine_above"):
        AbusePolicy(downweight_above=0.6, quarantine_above=0.5)


# -- alerts ------------------------------------------------------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    fail_first = 0
    received: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hook():
    _Hook.received, _Hook.fail_first = [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/alerts", _Hook
    srv.shutdown()
    srv.server_close()


def test_alerts_go_to_a_json_lines_log_and_a_webhook_with_retries(hook, tmp_path: Path) -> None:
    url, handler = hook
    a = Alert("feature_drift", "z", 0.4, 0.25, "feature 'z' drifted", "retrain", "2026-01-05", START)
    b = Alert("abuse", "user:mallory", 1.0, 0.5, "quarantined", "quarantine", "quarantined", START)
    assert a.id == Alert("feature_drift", "z", 0.9, 0.25, "other words", "retrain", "2026-01-05").id  # by what and when
    log = JsonLinesAlertSink(tmp_path / "alerts.jsonl")
    handler.fail_first = 2
    failures = deliver([a, b], [WebhookAlertSink(url, retries=2, backoff=0.01), log])
    assert failures == []
    assert [x["subject"] for x in handler.received[0]["alerts"]] == ["z", "user:mallory"]
    assert [x["id"] for x in log.read()] == [a.id, b.id]
    handler.fail_first = 5  # more failures than retries: reported, the other sinks still get it
    failures = deliver([a], [WebhookAlertSink(url, retries=1, backoff=0.01), log])
    assert len(failures) == 1 and "HTTP 503" in failures[0]["error"] and failures[0]["sink"].startswith("webhook:")
    assert len(log.read()) == 3
    dead = WebhookAlertSink("http://127.0.0.1:9/none", timeout=0.5, retries=0)
    assert "ConnectError" in deliver([a], [dead])[0]["error"]  # nothing listens: reported, not raised
    with pytest.raises(SpecError, match="http\\(s\\) URL"):
        WebhookAlertSink("ftp://x")
    with pytest.raises(SpecError, match="'action' of an Alert"):
        Alert("x", "y", 1.0, 1.0, "m", action="panic")


# -- the guard's automatic rollback through the cycle -----------------------------------------------------
def test_a_bad_candidate_that_passes_a_lax_gate_is_stopped_by_the_flights_guard(tmp_path: Path) -> None:
    from closedloop.evaluation.report import Gate
    from closedloop.registry import GuardPolicy, Registry

    home = tmp_path / "home"
    system = make_system()
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    # a heuristic that blocks pages with a low x — legitimate ones — behind a gate that lets anything by
    plan = LoopPlan(system, heuristic=first_bundle(system), model="heuristic", params={"rules": [["x", "<", 0.0, 1.0]]},
                    thresholds="system", gate=Gate(max_auc_drop=1.0, cost_must_not_rise=False, goals_must_hold=False),
                    train_window=timedelta(days=5), evaluate_bootstrap=0, drift=None,
                    rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=2),
                                    guard=GuardPolicy(min_decisions=100)))
    cycle = Cycle(plan, home, reg, clock=clock)
    sink = JsonLinesAlertSink(home / "orchestration" / "alerts.jsonl")
    assert cycle.run_once()["outcome"] == "bootstrapped"
    synth = Synth(home, system, per_day=1500, seed=9)
    rt = open_runtime(home, system, reg.load_bundle(reg.state("synth").production, system))
    outcomes = []
    try:
        for day in range(7):
            rt.apply(reg.deployment(system))
            synth.run_day(rt)
            clock.set_ns(START + (day + 1) * DAY)
            rec = cycle.run_once()
            outcomes.append(rec["outcome"])
            if rec["outcome"] == "shadow_retired":
                break
    finally:
        rt.telemetry.close()
    assert outcomes[-4:] == ["shadow", "flight", "rolled_back", "shadow_retired"], outcomes
    hist = reg.history("synth", attempts=False)
    stop = [h for h in hist if h["operation"] == "guard_stop"]
    assert len(stop) == 1 and "mistake_rate" in stop[0]["reason"]
    st = reg.state("synth")
    assert st.production == first_bundle(system).version and not st.flights and not st.shadows
    rb = [a for a in sink.read() if a["kind"] == "rollback"]
    assert len(rb) == 1 and "the guard stopped flight 'candidate'" in rb[0]["message"]
    status = cycle.status()
    assert status["rollout"]["stage"] == "rolled_back" and status["rollout"]["ended"] == "guard breach"
    reg.close()


def test_the_phishing_example_declares_its_loop() -> None:
    from examples.phishing.loop import plan
    from examples.phishing.system import phishing

    assert isinstance(plan, LoopPlan) and plan.system is phishing
    assert plan.heuristic_bundle().intelligence.kind == "lookup_table"
    assert plan.describe()["rollout"]["flight_share"] == 0.2
    json.dumps(plan.describe())

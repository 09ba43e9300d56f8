"""evaluate on a ranking system's per-slot reward dataset: each bundle's scores of the logged
candidates, through the runtime, measured against what was rewarded."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, LogisticModel
from closedloop.datasets.importer import import_dataset
from closedloop.errors import DatasetError, SpecError
from closedloop.evaluation.html import render_html
from closedloop.evaluation.ranking_metrics import per_decision
from closedloop.evaluation.report import evaluate, write_report
from closedloop.system.splits import Split

LOGGED = {"action": "item", "position": "slot", "reward": "click", "propensity": "p", "decision": "impression",
          "unit": "user_id", "time": "ts"}


def _log(n_dec: int, slots: int = 5, seed: int = 0, perfect: bool = False) -> pa.Table:
    """A feed log: ``n_dec`` impressions of ``slots`` items; an item's click probability grows with
    its ctr (``perfect``: the ctr is the click itself); its age tells nothing."""
    rng = np.random.default_rng(seed)
    n = n_dec * slots
    ctr = rng.uniform(0.0, 0.8, n)
    click = (rng.random(n) < 0.02 + 0.9 * ctr).astype(np.float64)
    if perfect:
        ctr = click.copy()
    dec = np.repeat(np.arange(n_dec), slots)
    return pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 2}" for d in dec],
        "hour": rng.integers(0, 24, n_dec)[dec], "country": ["fr"] * n,
        "item": [f"it{d}-{j}" for d, j in zip(dec, np.tile(np.arange(slots), n_dec), strict=True)],
        "slot": np.tile(np.arange(1, slots + 1), n_dec), "click": click, "p": np.full(n, 0.5),
        "ts": 10**18 + dec * 10**9, "category": ["news"] * n, "item_ctr": ctr,
        "age_hours": rng.exponential(20.0, n), "is_new": [False] * n,
    })


def _dataset(tmp_path, table: pa.Table, name: str = "ds"):
    from examples.feed.system import feed

    pq.write_table(table, tmp_path / f"{name}.parquet")
    return import_dataset(tmp_path / f"{name}.parquet", feed, **LOGGED, out=tmp_path / name)


def _bundles():
    from examples.feed.system import feed, model

    good = Bundle.build(feed, model, version="informative")
    noise = Bundle.build(feed, LogisticModel({"age_log": 1.0}, intercept=-3.0, output="score"), version="noise")
    return feed, good, noise


def test_informative_scores_rank_better_than_noise_beyond_the_intervals(tmp_path):
    feed, good, noise = _bundles()
    m = _dataset(tmp_path, _log(2000))
    rep = evaluate(feed, [noise, good], m.path, bootstrap=200, seed=1)
    json.dumps(rep, allow_nan=False)
    assert rep["kind"] == "ranking" and rep["system"] == "feed" and rep["metadata"]["k"] == 5
    b_noise, b_good = rep["bundles"]
    for name in ("ndcg_at_k", "auc", "mrr", "row_auc"):
        g, z = b_good["metrics"][name], b_noise["metrics"][name]
        assert g["ci"][0] > z["ci"][1], (name, g, z)  # non-overlapping intervals
        assert g["ci"][0] <= g["value"] <= g["ci"][1]
    assert abs(b_noise["metrics"]["auc"]["value"] - 0.5) < 0.05
    d = rep["comparison"][0]
    assert (d["baseline"], d["candidate"]) == ("noise", "informative")
    assert d["differences"]["auc"]["ci"][0] > 0 and d["differences"]["ndcg_at_k"]["ci"][0] > 0
    assert d["differences"]["auc"]["value"] == pytest.approx(b_good["metrics"]["auc"]["value"] - b_noise["metrics"]["auc"]["value"])
    # Counts: the test side of the system's split (by unit), every slot of a decision on one side.
    ds = rep["dataset"]
    assert ds["rows"] == 5 * ds["decisions"] == rep["rows"]["n"] == b_good["n"]
    assert ds["candidates_per_decision"] == {"5": ds["decisions"]} and 0 < ds["decisions"] < 2000
    assert b_good["metrics"]["auc"]["n_decisions"] == ds["decisions_with_rewarded_and_not"]
    assert b_good["metrics"]["ndcg_at_k"]["n_decisions"] == ds["decisions_ranked"] <= ds["decisions_with_a_reward"]
    assert b_good["metrics"]["hit_rate_at_k"] == {"value": None, "ci": None, "n_decisions": 0}  # 5 slots, k = 5
    # Both scores are probabilities: log loss and calibration; the informative one is better calibrated.
    assert b_good["probability"] and b_good["calibration"]["ece"] < b_noise["calibration"]["ece"]
    assert sum(r["n"] for r in b_good["calibration"]["bins"]) == ds["rows"]
    assert b_good["metrics"]["log_loss"]["ci"][1] < b_noise["metrics"]["log_loss"]["ci"][0]
    # The logging policy's own reward per decision, with its interval.
    logged = rep["logged"]["reward_per_decision"]
    assert logged["n_decisions"] == ds["decisions"] and logged["ci"][0] < logged["value"] < logged["ci"][1]
    assert rep["logged"]["reward_per_slot"]["value"] * 5 == pytest.approx(logged["value"])


def test_every_figure_is_the_mean_over_all_rows_with_split_all(tmp_path):
    feed, good, _ = _bundles()
    m = _dataset(tmp_path, _log(300))
    rep = evaluate(feed, [good], m.path, split="all", bootstrap=0)
    assert rep["dataset"]["decisions"] == 300 and rep["rows"]["n"] == 1500 and rep["comparison"] is None
    assert rep["metadata"]["side"] == "all" and rep["bundles"][0]["metrics"]["auc"]["ci"] is None
    clicks = pq.read_table(tmp_path / "ds.parquet")["click"].to_numpy()
    assert rep["logged"]["reward_per_decision"]["value"] == pytest.approx(clicks.sum() / 300)
    assert rep["rows"]["positives"] == int(clicks.sum()) == rep["logged"]["rewarded_rows"]


def test_perfect_scores_give_ndcg_mrr_and_auc_of_one(tmp_path):
    from examples.feed.system import feed

    m = _dataset(tmp_path, _log(200, perfect=True))
    perfect = Bundle.build(feed, LogisticModel({"ctr": 20.0}, intercept=-10.0, output="score"), version="perfect")
    rep = evaluate(feed, [perfect], m.path, split="all", bootstrap=50)
    f = rep["bundles"][0]["metrics"]
    for name in ("ndcg_at_k", "mrr", "hit_rate_at_1", "auc", "row_auc"):
        assert f[name]["value"] == pytest.approx(1.0), name
        assert f[name]["ci"] == pytest.approx([1.0, 1.0]), name


def test_per_decision_figures_by_hand():
    # decision 0: scores 3,2,1 with rewards 0,1,0 → the rewarded one is second
    # decision 1: one candidate (no ranking to measure); decision 2: tied scores, both rewarded or not
    scores = np.array([3.0, 2.0, 1.0, 5.0, 1.0, 1.0, np.nan])
    reward = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    offsets = np.array([0, 3, 4, 7])
    v = per_decision(scores, reward, offsets, k=2, tie=np.zeros(7))
    ndcg, mrr, hit1, hitk, auc, logged = v.T
    assert ndcg[0] == pytest.approx((1 / np.log2(3)) / 1.0) and mrr[0] == 0.5 and hit1[0] == 0.0
    assert hitk[0] == 1.0 and auc[0] == 0.5  # the rewarded one beats the 1.0 and loses to the 3.0
    assert np.isnan(ndcg[1]) and np.isnan(mrr[1]) and np.isnan(auc[1]) and logged[1] == 1.0
    # decision 2: rewarded [1.0 (tie), NaN] vs not [1.0 (tie)]: NaN ranks last; AUC = (0.5 + 0) / 2
    assert auc[2] == pytest.approx(0.25) and logged[2] == 2.0
    # every candidate rewarded alike (rewards per decision): any order is as good, nothing to measure
    v = per_decision(np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.array([0, 2]), k=2, tie=np.zeros(2))
    assert np.isnan(v[0, :5]).all() and v[0, 5] == 2.0


def test_refusals_name_the_rule(tmp_path, phishing):
    feed, good, _ = _bundles()
    m = _dataset(tmp_path, _log(50))
    from closedloop.evaluation.gate import Gate

    with pytest.raises(SpecError, match="'gate' parameter of evaluate must be a closedloop Gate or None. Got 'strict'"):
        evaluate(feed, [good], m.path, gate="strict")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="'gate' parameter of evaluate judges a ranking candidate by its policy value"):
        evaluate(feed, [good], m.path, gate=Gate(), policy_value=False)
    with pytest.raises(SpecError, match="'weights' parameter of evaluate must be False"):
        evaluate(feed, [good], m.path, weights=True)
    with pytest.raises(SpecError, match="'bootstrap' parameter of evaluate must be an integer ≥ 0. Got -1"):
        evaluate(feed, [good], m.path, bootstrap=-1)
    with pytest.raises(SpecError, match="'split' parameter of evaluate"):
        evaluate(feed, [good], m.path, split="half")
    with pytest.raises(DatasetError, match="leaves no evaluation rows"):
        evaluate(feed, [good], m.path, split=Split(by="time", time_cutoff_ns=2 * 10**18))
    labeled = _log(20).drop_columns(["impression", "slot", "p", "item"]).append_column("label", pa.array(["clicked", "skipped"] * 50))
    pq.write_table(labeled.append_column("item_id", pa.array([f"x{i}" for i in range(100)])), tmp_path / "labeled.parquet")
    lm = import_dataset(tmp_path / "labeled.parquet", feed, label="label", unit="user_id", out=tmp_path / "labeled")
    with pytest.raises(DatasetError, match=r"per-slot reward dataset .* has labeled rows \(one per decision, a label each\) instead"):
        evaluate(feed, [good], lm.path)


def test_a_decision_repeating_a_candidate_is_left_out_and_counted(tmp_path):
    feed, good, _ = _bundles()
    t = _log(40).to_pydict()
    t["item"][1] = t["item"][0]  # impression i0 shows the same item twice
    m = _dataset(tmp_path, pa.table(t))
    rep = evaluate(feed, [good], m.path, split="all", bootstrap=0)
    assert rep["dataset"]["excluded"] == {"decisions_repeating_a_candidate": 1, "rows_repeating_a_candidate": 5}
    assert rep["dataset"]["decisions"] == 39 and rep["rows"]["n"] == 195
    assert any("repeat a candidate id" in n for n in rep["metadata"]["notes"])


def test_the_html_page_renders_a_ranking_section(tmp_path):
    feed, good, noise = _bundles()
    m = _dataset(tmp_path, _log(200))
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=20)
    page = render_html(json.loads(json.dumps(rep)))
    assert "<h2>Ranking quality</h2>" in page and "NDCG@5" in page and "informative" in page
    assert "logging policy" in page and "Calibration" in page
    write_report(rep, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["kind"] == "ranking"


def test_a_reward_dataset_from_telemetry_is_scored_with_the_numbers_the_runtime_logged(tmp_path):
    """Decisions logged through Runtime and Telemetry → build_reward_dataset → evaluate: every slot's
    score is bitwise the score the runtime computed for that candidate when it decided."""
    from datetime import timedelta

    from examples.feed import system as feed_module
    from examples.feed.data import columnar, generate

    from closedloop import Reward, RewardPolicy, Runtime, System
    from closedloop.datasets.slots import build_reward_dataset
    from closedloop.evaluation.ranking_report import _scores
    from closedloop.evaluation.ranking_rows import slot_rows
    from closedloop.experience.experiences import Ranking
    from closedloop.experience.exploration import Softmax
    from closedloop.runtime.clock import ManualClock
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

    t0, sec = 1_700_000_000 * 10**9, 10**9
    f = feed_module
    system = System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                    features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
                    rewards=RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=10),
                                         per="slot", default=0.0))
    bundle = Bundle.build(system, f.model, version="logged")
    clock = ManualClock(t0)
    tel = Telemetry(SegmentLog(tmp_path / "home"), system=system, clock=clock.now_ns)
    rt = Runtime(system, bundle, telemetry=tel, clock=clock)
    req, cand = columnar(generate(200, 6, seed=2))
    decided = list(rt.decide_batch(req, candidates=cand, timestamps_ns=[t0 + i * sec for i in range(200)]))
    rng = np.random.default_rng(0)
    for d in decided:
        for j, cid in enumerate(d.ranking):
            if rng.random() < 0.3:
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + sec, source="app", candidate=cid)
            if rng.random() < 0.1:
                tel.log_outcome(d.decision_id, kind="buy", value=2.5, event_ns=d.timestamp_ns + sec, source="app", slot=j + 1)
    tel.close()
    store = TelemetryStore(tmp_path / "home")
    store.compact()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=t0, until_ns=t0 + 10**6 * sec, cutoff_ns=t0 + 10**5 * sec, out=tmp_path / "ds")
    rows = slot_rows(system, m.path, "all")
    s = _scores(system, bundle, rows)
    logged = {(d.decision_id, c): sc for d in decided for c, sc in zip(d.candidates, d.scores, strict=True)}
    shown = {d.decision_id: d.ranking for d in decided}
    pairs = [(did, shown[did][p - 1]) for did, lo, hi in zip(rows.decision_ids, rows.offsets[:-1], rows.offsets[1:], strict=True)
             for p in rows.position[lo:hi].tolist()]
    assert s.tolist() == [logged[p] for p in pairs]
    rep = evaluate(system, [bundle], m.path, split="all", bootstrap=30)
    assert rep["dataset"]["decisions"] == m.counts["decisions"] == 200 and rep["rows"]["n"] == m.counts["slots"]["rows"] == 600
    b = rep["bundles"][0]
    assert not b["probability"] and b["calibration"] is None and b["metrics"]["log_loss"]["value"] is None  # rewards 2.5 too
    assert b["metrics"]["ndcg_at_k"]["n_decisions"] == rep["dataset"]["decisions_ranked"] > 0
    assert rep["logged"]["reward_per_decision"]["value"] == pytest.approx(m.counts["rewards"]["sum"] / 200)


def test_a_bundle_against_itself_differs_by_exactly_zero_and_a_seed_repeats_the_report(tmp_path):
    feed, good, _ = _bundles()
    m = _dataset(tmp_path, _log(300))
    rep = evaluate(feed, [good, good], m.path, split="all", bootstrap=40, seed=5)
    for name, f in rep["comparison"][0]["differences"].items():
        if name != "hit_rate_at_k":
            assert f["value"] == 0.0 and f["ci"] == [0.0, 0.0], name  # paired: the same draws on both sides
    again = evaluate(feed, [good, good], m.path, split="all", bootstrap=40, seed=5)
    assert again["bundles"] == rep["bundles"] and again["logged"] == rep["logged"]
    other = evaluate(feed, [good], m.path, split="all", bootstrap=40, seed=6)
    assert other["bundles"][0]["metrics"]["auc"]["ci"] != rep["bundles"][0]["metrics"]["auc"]["ci"]

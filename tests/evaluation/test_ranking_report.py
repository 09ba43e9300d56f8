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
    assert b_good["metrics"]["ndcg_at_k"]["n_decisions"] == ds["decisions_with_a_reward"]
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


def test_refusals_name_the_rule(tmp_path, phishing):
    feed, good, _ = _bundles()
    m = _dataset(tmp_path, _log(50))
    from closedloop.evaluation.gate import Gate

    with pytest.raises(SpecError, match="'gate' parameter of evaluate"):
        evaluate(feed, [good], m.path, gate=Gate())
    with pytest.raises(SpecError, match="'weights' parameter of evaluate must be False"):
        evaluate(feed, [good], m.path, weights=True)
    with pytest.raises(SpecError, match="'bootstrap' parameter of evaluate must be an integer ≥ 0. Got -1"):
        evaluate(feed, [good], m.path, bootstrap=-1)
    with pytest.raises(SpecError, match="'split' parameter of evaluate"):
        evaluate(feed, [good], m.path, split="half")
    with pytest.raises(DatasetError, match="leaves no evaluation rows"):
        evaluate(feed, [good], m.path, split=Split(by="time", time_cutoff_ns=2 * 10**18))


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

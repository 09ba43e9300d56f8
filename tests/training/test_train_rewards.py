"""A ranking system's reward model trained on a per-slot reward dataset: a seeded synthetic feed log
(uniformly random slates of 5 among 12 items whose click probability falls with the item's age and
grows with its ctr, times the slot's examination) imported as a reward dataset; the trained bundle ranks the held-out decisions
better than a noise bundle, decides the same through ``decide`` and ``decide_batch`` (bitwise), and
the refusals name what is wrong."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from examples.feed import system as feed_module
from examples.feed.data import columnar, generate

from closedloop import Bundle, LogisticModel, Runtime
from closedloop.datasets.importer import import_dataset
from closedloop.errors import IntelligenceError, SpecError
from closedloop.evaluation.report import evaluate
from closedloop.training import train
from support.pages import import_pages

FEED = feed_module.feed
ITEMS, SHOWN = 12, 5
CTR = np.linspace(0.02, 0.6, ITEMS)
AGE = np.random.default_rng(11).permutation(np.linspace(0.5, 60.0, ITEMS))
EXAMINATION = np.array([1.0, 0.7, 0.5, 0.35, 0.25])  # a slot further down is seen less: the order matters


def click_probability(ctr: np.ndarray, age: np.ndarray) -> np.ndarray:
    """The log's true click probability: the item's ctr, halved every 15 hours of age."""
    return ctr * 0.5 ** (age / 15.0)


def _log(tmp, n_dec: int = 3000, seed: int = 5, reward_scale: float = 1.0, propensity: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    shown = np.argsort(rng.random((n_dec, ITEMS)), axis=1)[:, :SHOWN].ravel()
    dec, slot = np.repeat(np.arange(n_dec), SHOWN), np.tile(np.arange(SHOWN), n_dec)
    click = (rng.random(dec.size) < click_probability(CTR[shown], AGE[shown]) * EXAMINATION[slot]).astype(np.float64) * reward_scale
    p = np.full(dec.size, 1.0 / ITEMS) if propensity is None else propensity[shown]
    table = pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 3}" for d in dec], "hour": rng.integers(0, 24, n_dec)[dec],
        "country": ["fr"] * dec.size, "item": [f"it{i}" for i in shown], "slot": slot + 1, "click": click, "p": p,
        "ts": 10**18 + dec * 10**9, "category": ["tech"] * dec.size, "item_ctr": CTR[shown], "age_hours": AGE[shown],
        "is_new": [False] * dec.size,
    })
    pq.write_table(table, tmp / "log.parquet")
    return import_dataset(tmp / "log.parquet", FEED, action="item", position="slot", reward="click", propensity="p",
                          decision="impression", unit="user_id", time="ts", out=tmp / "ds")


@pytest.fixture(scope="module")
def rewards(tmp_path_factory):
    return _log(tmp_path_factory.mktemp("reward-train"))


@pytest.fixture(scope="module")
def trained(rewards):
    return train(FEED, rewards.path, model="logistic")


NOISE = Bundle.build(FEED, LogisticModel({"age_log": 1.0}, intercept=-3.0, output="score"), version="noise")


def test_the_trained_reward_model_ranks_held_out_decisions_better_than_noise(rewards, trained):
    report = evaluate(FEED, [NOISE, trained.bundle], rewards.path, bootstrap=50, seed=1)  # the system's split: test side
    noise, fitted = (b["metrics"] for b in report["bundles"])
    assert fitted["ndcg_at_k"]["value"] > noise["ndcg_at_k"]["value"] + 0.05
    assert fitted["auc"]["value"] > 0.65 > noise["auc"]["value"]
    values = [b["estimates"]["snips"]["value"] for b in report["policy_value"]["bundles"]]
    assert values[1] > values[0]
    assert report["gate"]["passed"]


def test_the_bundle_scores_the_experiences_score_and_records_its_reward_rows(rewards, trained):
    lin, held = trained.metrics["lineage"], trained.metrics["heldout"]
    assert trained.model.outputs == ("score",)
    assert lin["dataset_kind"] == "reward" and lin["dataset_id"] == rewards.id
    assert lin["reward_rows"] == {"label": "reward > 0", "read": 15000, "rows": 15000, "without_reward": 0,
                                  "invalid_candidate": 0}
    assert held["n"] + trained.metrics["train"]["n"] == 15000 and 0 < held["n"] < 15000
    assert held["auc"] > 0.7 and 0 < held["log_loss"] < 0.5
    # the model learned the log's direction: at the same age a higher ctr scores higher, at the same ctr a fresher item
    item = {"category": "tech", "is_new": False}
    cands = [{**item, "item_id": "old", "item_ctr": 0.3, "age_hours": 50.0},
             {**item, "item_id": "fresh", "item_ctr": 0.3, "age_hours": 2.0},
             {**item, "item_id": "good", "item_ctr": 0.5, "age_hours": 50.0}]
    s = Runtime(FEED, trained.bundle).decide({"user_id": "u", "hour": 9, "candidates": cands}, decision_id="x", timestamp_ns=1).scores
    assert s[1] > s[0] and s[2] > s[0]


def test_decide_and_decide_batch_agree_bitwise_with_the_trained_bundle(trained):
    ctxs = generate(120, np.random.default_rng(3).integers(0, 9, size=120).tolist(), seed=3)
    ids, ts = [f"d{i:04d}" for i in range(len(ctxs))], [10**18 + i for i in range(len(ctxs))]
    singles = [Runtime(FEED, trained.bundle).decide(c, decision_id=d, timestamp_ns=t) for c, d, t in zip(ctxs, ids, ts, strict=True)]
    req, cand = columnar(ctxs)
    batch = Runtime(FEED, trained.bundle).decide_batch(req, candidates=cand, decision_ids=ids, timestamps_ns=ts)
    assert len(batch) == len(singles) and any(d.candidates for d in singles)
    for i, d in enumerate(singles):
        b = batch[i]
        assert d.to_dict() == b.to_dict()
        assert np.asarray(d.scores).tobytes() == np.asarray(b.scores).tobytes()
        assert np.asarray(d.slot_propensities).tobytes() == np.asarray(b.slot_propensities).tobytes()


def test_lightgbm_trains_a_reward_model_too(rewards, tmp_path):
    run = train(FEED, rewards.path, model="lightgbm", params={"num_boost_round": 40})
    assert run.metrics["lineage"]["dataset_kind"] == "reward" and run.metrics["heldout"]["auc"] > 0.7
    loaded = Bundle.load(run.bundle.save(tmp_path / "b"), FEED)
    ctx = generate(1, [6], seed=9)[0]
    assert Runtime(FEED, loaded).decide(ctx, decision_id="x", timestamp_ns=1).scores == \
        Runtime(FEED, run.bundle).decide(ctx, decision_id="x", timestamp_ns=1).scores


def test_weights_fit_the_inverse_propensity_weights(tmp_path):
    prop = np.linspace(0.05, 0.3, ITEMS)  # the logger showed some items more often than others
    ds = _log(tmp_path, n_dec=1500, propensity=prop)
    plain = train(FEED, ds.path)
    weighted = train(FEED, ds.path, weights=True)
    assert not plain.metrics["lineage"]["fitted_with_weights"] and weighted.metrics["lineage"]["fitted_with_weights"]
    assert weighted.metrics["lineage"]["weighted_rows"]
    assert weighted.model.weights != plain.model.weights


def test_a_non_binary_reward_is_refused_naming_the_rule(tmp_path):
    ds = _log(tmp_path, n_dec=200, reward_scale=2.5)
    with pytest.raises(IntelligenceError, match=r"'reward' of dataset .* must be 0 or 1 .*label = reward > 0.*Got 2\.5 instead"):
        train(FEED, ds.path)


def test_calibration_of_a_reward_model_is_refused(rewards):
    with pytest.raises(SpecError, match=r"'calibrate' parameter of train must be None for a per-slot reward dataset"):
        train(FEED, rewards.path, calibrate="platt")


def test_a_reward_dataset_for_a_thresholds_system_is_refused(phishing, rewards):
    with pytest.raises(IntelligenceError, match=r"per-slot reward dataset .* only for a ranking system .*'phishing' has"):
        train(phishing, rewards.path)


def test_a_labeled_dataset_still_trains_as_before(phishing, tmp_path):
    from examples.phishing.data import generate as pages

    cols, labels = pages(600, 7, phish_rate=0.3)
    ds = import_pages(phishing, cols, labels, tmp_path)
    run = train(phishing, ds.path)
    assert run.metrics["lineage"]["dataset_kind"] == "labeled" and "reward_rows" not in run.metrics["lineage"]
    assert run.metrics["heldout"]["auc"] > 0.8


def test_rows_without_a_reward_or_with_an_invalid_candidate_are_left_out_and_counted(rewards, tmp_path):
    import shutil

    shutil.copytree(rewards.path, tmp_path / "ds")
    data = tmp_path / "ds" / "data.parquet"
    table = pq.read_table(data)
    reward = table["reward"].to_pylist()
    reward[3] = None
    cands = table["candidate_json"].to_pylist()
    cands[7] = cands[7].replace('"category":"tech"', '"category":"weather"')  # not one of the schema's choices
    table = table.set_column(table.schema.get_field_index("reward"), "reward", pa.array(reward, pa.float64()))
    table = table.set_column(table.schema.get_field_index("candidate_json"), "candidate_json", pa.array(cands, pa.string()))
    pq.write_table(table, data)
    run = train(FEED, tmp_path / "ds")
    assert run.metrics["lineage"]["reward_rows"] == {"label": "reward > 0", "read": 15000, "rows": 14998, "without_reward": 1,
                                                     "invalid_candidate": 1}
    assert run.metrics["train"]["n"] + run.metrics["heldout"]["n"] == 14998


def test_rows_decoded_once_fit_the_same_model_twice_and_are_left_as_they_were(rewards, trained):
    from closedloop.training.rewards import load_reward_rows

    shared, _ = load_reward_rows(FEED, rewards.path)
    table, cols, y = shared.rows[0], shared.rows[1], shared.rows[2].copy()
    first = train(FEED, rewards.path, model="logistic", loaded=shared)  # the cycle's candidate
    second = train(FEED, rewards.path, model="logistic", loaded=shared)  # the click model of its DR estimate
    for run in (first, second):
        fa: dict[str, bytes] = {}
        fb: dict[str, bytes] = {}
        assert run.bundle.intelligence.to_dict(fa) == trained.bundle.intelligence.to_dict(fb) and fa == fb
        assert run.metrics["heldout"] == trained.metrics["heldout"]
        assert run.metrics["lineage"]["reward_rows"] == trained.metrics["lineage"]["reward_rows"]
        assert run.scores.keys() == trained.scores.keys()
        assert all(np.array_equal(a, b) for k in trained.scores for a, b in zip(run.scores[k], trained.scores[k], strict=True))
    assert shared.rows[0] is table and shared.rows[1] is cols and np.array_equal(shared.rows[2], y)


def test_each_distinct_context_is_decoded_once_with_the_same_values(rewards):
    from closedloop.datasets.dataset import decode_contexts
    from closedloop.training.rewards import _contexts

    col = pq.read_table(rewards.path / "data.parquet", columns=["context_json"])["context_json"]
    once, each = _contexts(FEED, col), decode_contexts(col, FEED)
    assert once.n == each.n == len(col)
    for f in FEED.schema.fields:
        assert once.pylist(f.name) == each.pylist(f.name), f.name


def test_candidates_decoded_by_the_cycle_before_are_taken_from_it_with_the_same_rows(rewards, tmp_path):
    from closedloop.training.rewards import load_reward_rows

    other = _log(tmp_path, n_dec=1000, seed=6)  # the same items: the same candidate texts, other decisions
    data = other.path / "data.parquet"
    table = pq.read_table(data)
    cands = table["candidate_json"].to_pylist()
    cands[7] = cands[7].replace('"category":"tech"', '"category":"weather"')  # refused: not one of the choices
    cands[9] = cands[9].replace('"category":"tech"', '"category":"news"')  # a text the dataset before never had
    pq.write_table(table.set_column(table.schema.get_field_index("candidate_json"), "candidate_json", pa.array(cands)), data)
    _, before = load_reward_rows(FEED, rewards.path)
    plain, memo = load_reward_rows(FEED, other.path)
    for previous in (before, memo):  # a memo without, then with, the refused text
        reused, _ = load_reward_rows(FEED, other.path, previous=previous)
        assert reused.rows[0].equals(plain.rows[0]) and np.array_equal(reused.rows[2], plain.rows[2])
        assert reused.rows[3] == plain.rows[3] and plain.rows[3]["invalid_candidate"] == 1
        assert reused.rows[1].n == plain.rows[1].n == 4999
        for f in FEED.features.schema.fields:
            assert reused.rows[1].pylist(f.name) == plain.rows[1].pylist(f.name), f.name
    fa: dict[str, bytes] = {}
    fb: dict[str, bytes] = {}
    again = train(FEED, other.path, model="logistic", loaded=load_reward_rows(FEED, other.path, previous=before)[0])
    assert again.bundle.intelligence.to_dict(fa) == train(FEED, other.path, model="logistic").bundle.intelligence.to_dict(fb)
    assert fa == fb

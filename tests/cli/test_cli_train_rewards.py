"""``closedloop train`` on a per-slot reward dataset: a ranking system's reward model, saved as a
bundle whose lineage says it was fitted on rewards; a reward dataset for a Thresholds system is
refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from examples.feed.system import feed
from typer.testing import CliRunner

from closedloop import Bundle, Runtime
from closedloop.cli.main import app
from closedloop.datasets.importer import import_dataset

SYSTEM = "examples.feed.system:feed"


def _rewards(tmp):
    """1,000 random slates of 5 among 10 items; a click's probability is the item's ctr, lower for an older item."""
    rng = np.random.default_rng(2)
    n_dec, items = 1000, 10
    ctr, age = np.linspace(0.02, 0.6, items), rng.permutation(np.linspace(1.0, 60.0, items))
    shown = np.argsort(rng.random((n_dec, items)), axis=1)[:, :5].ravel()
    dec, slot = np.repeat(np.arange(n_dec), 5), np.tile(np.arange(5), n_dec)
    table = pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 2}" for d in dec], "hour": rng.integers(0, 24, n_dec)[dec],
        "item": [f"it{i}" for i in shown], "slot": slot + 1, "p": np.full(dec.size, 0.1),
        "click": (rng.random(dec.size) < ctr[shown] * 0.5 ** (age[shown] / 15.0)).astype(np.float64),
        "ts": 10**18 + dec * 10**9, "category": ["tech"] * dec.size, "item_ctr": ctr[shown], "age_hours": age[shown],
    })
    pq.write_table(table, tmp / "log.parquet")
    return import_dataset(tmp / "log.parquet", feed, action="item", position="slot", reward="click", propensity="p",
                          decision="impression", unit="user_id", time="ts", out=tmp / "ds")


def test_closedloop_train_fits_a_ranking_reward_model_on_a_reward_dataset(tmp_path):
    ds = _rewards(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["--home", str(tmp_path / "home"), "train", "--system", SYSTEM, "--dataset", str(ds.path),
                            "--model", "logistic", "--weights", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    bundle = Bundle.load(out["path"], feed)
    lin = bundle.metrics["lineage"]
    assert lin["dataset_kind"] == "reward" and lin["dataset_id"] == ds.id and lin["fitted_with_weights"]
    assert lin["reward_rows"]["rows"] == 5000 and bundle.metrics["heldout"]["auc"] > 0.65
    cands = [{"item_id": "a", "category": "tech", "item_ctr": 0.5, "age_hours": 2.0},
             {"item_id": "b", "category": "tech", "item_ctr": 0.05, "age_hours": 50.0}]
    d = Runtime(feed, bundle).decide({"user_id": "u", "hour": 3, "candidates": cands}, decision_id="x", timestamp_ns=1)
    assert d.scores[0] > d.scores[1]


def test_closedloop_train_refuses_a_reward_dataset_for_a_thresholds_system(tmp_path):
    ds = _rewards(tmp_path)
    r = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "train", "--system", "examples.phishing.system:phishing",
                                 "--dataset", str(ds.path)])
    assert r.exit_code != 0
    assert "per-slot reward dataset" in r.output and "only for a ranking system" in r.output


def test_closedloop_train_objective_imitate_trains_an_apprentice_and_needs_candidate_sets(tmp_path):
    from support.apprentice import contexts, log_dataset
    from support.bandit_system import system, world

    m = log_dataset(world, system, Bundle.build(system, world.heuristic()), contexts(world, 1500, seed=3), tmp_path / "log", seed=3)
    r = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "train", "--system", "support.bandit_system:system",
                                 "--dataset", str(m.path), "--objective", "imitate", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["metrics"]["lineage"]["objective"] == "imitate" and out["metrics"]["apprentice"]["agreement"] > 0.5
    ds = _rewards(tmp_path)  # an imported log keeps no candidate sets: nothing to imitate over
    r = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "train", "--system", SYSTEM, "--dataset", str(ds.path),
                                 "--objective", "imitate"])
    assert r.exit_code != 0 and "whole candidate set" in r.output
    r = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "train", "--system", SYSTEM, "--dataset", str(ds.path),
                                 "--objective", "copy"])
    assert r.exit_code != 0 and "'objective' parameter of train must be one of ['reward', 'imitate', 'dr']" in r.output

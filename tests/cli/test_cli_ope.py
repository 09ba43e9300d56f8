"""``closedloop ope``: a candidate bundle (or a saved action distribution) estimated on a per-slot
reward dataset — IPS and SNIPS alone, the reward-model estimators with ``--reward-model``; a bad
``.npy`` refused with the field, the rule and the value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from closedloop import Bundle, LogisticModel
from closedloop.cli.main import app
from closedloop.datasets.importer import import_dataset
from closedloop.evaluation.ope_policy import logged_feedback, target_action_dist

# The estimators' package (closedloop.evaluation.ope) is built on another branch: without it the command
# refuses to run, and these tests have nothing to check.
runner = CliRunner()
SYSTEM = "examples.feed.system:feed"
LOGGED = {"action": "item", "position": "slot", "reward": "click", "propensity": "p", "decision": "impression",
          "unit": "user_id", "time": "ts"}
CATEGORIES = ("news", "sports", "local", "tech", "culture", "fun")


def _log(n_dec: int = 60, items: int = 7, seed: int = 0) -> pa.Table:
    """``n_dec`` impressions of the feed showing 5 of ``items`` items, clicks more likely on a high ctr."""
    rng = np.random.default_rng(seed)
    shown = np.concatenate([rng.permutation(items)[:5] for _ in range(n_dec)])
    dec = np.repeat(np.arange(n_dec), 5)
    ctr = 0.05 + 0.1 * shown
    return pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 3}" for d in dec],
        "hour": rng.integers(0, 24, n_dec)[dec], "country": ["fr"] * dec.size,
        "item": [f"it{j}" for j in shown], "slot": np.tile(np.arange(1, 6), n_dec),
        "click": (rng.random(dec.size) < ctr).astype(np.float64), "p": np.full(dec.size, 0.3),
        "ts": 10**18 + dec * 10**9, "category": [CATEGORIES[j % 6] for j in shown], "item_ctr": ctr.tolist(),
        "age_hours": (1.0 + 3.0 * shown).tolist(), "is_new": [bool(j % 2) for j in shown],
    })


@pytest.fixture
def setup(tmp_path: Path):
    from examples.feed.system import feed, model

    pq.write_table(_log(), tmp_path / "log.parquet")
    m = import_dataset(tmp_path / "log.parquet", feed, **LOGGED, out=tmp_path / "ds")
    bundle = Bundle.build(feed, model, version="candidate")
    h = tmp_path / "home"
    return feed, m.path, bundle, bundle.save(h / "bundles" / bundle.version), h


def _ope(h: Path, ds: Path, *extra: str):
    return runner.invoke(app, ["--home", str(h), "ope", "--system", SYSTEM, "--dataset", str(ds), "--bootstrap", "50", *extra])


def test_a_bundle_without_a_reward_model_gets_ips_and_snips_and_the_note(setup):
    import closedloop.evaluation.ope as ope_api

    feed, ds, bundle, bpath, h = setup
    r = _ope(h, ds, "--bundle", str(bpath), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["system"], out["target"], out["rows"], out["actions"], out["len_list"]) == ("feed", "bundle candidate", 300, 7, 5)
    assert [e["name"] for e in out["estimates"]] == ["ips", "snips"] and "only ips and snips ran" in out["note"]
    res = target_action_dist(feed, bundle, ds)
    fb = logged_feedback(feed, ds, res.actions)
    ips = ope_api.ips(fb.reward, fb.action, fb.pscore, res.action_dist, position=fb.position)
    assert out["estimates"][0]["value"] == pytest.approx(ips, rel=1e-12)
    assert out["estimates"][0]["interval"] == "bootstrap by unit" and out["estimates"][0]["n"] == 300
    assert out["logged_reward_per_row"] == pytest.approx(fb.reward.mean())
    text = _ope(h, ds, "--bundle", str(bpath))
    assert text.exit_code == 0 and "note: no reward model" in text.stdout
    lines = text.stdout.splitlines()
    assert lines[1].split()[:2] == ["ips", f"{out['estimates'][0]['value']:.6g}"] and "support ok" in lines[1]
    assert lines[2].split()[0] == "snips"


def test_a_saved_action_dist_gives_the_bundles_numbers_and_a_reward_model_adds_dm_and_dr(setup, tmp_path):
    feed, ds, bundle, bpath, h = setup
    np.save(tmp_path / "target.npy", target_action_dist(feed, bundle, ds).action_dist)
    a = json.loads(_ope(h, ds, "--bundle", str(bpath), "--json").stdout)
    b = json.loads(_ope(h, ds, "--action-dist", str(tmp_path / "target.npy"), "--json").stdout)
    assert b["target"] == "file target.npy" and [e["value"] for e in b["estimates"]] == [e["value"] for e in a["estimates"]]
    r = _ope(h, ds, "--bundle", str(bpath), "--reward-model", str(bpath), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {e["name"] for e in out["estimates"]} >= {"ips", "snips", "dm", "dr", "sndr", "switch_dr"} and out["note"] is None


def test_a_target_equal_to_the_logging_policy_estimates_the_logged_reward(setup, tmp_path):
    """Logged propensities that are the target's own marginals: every IPS weight is 1."""
    feed, ds, bundle, bpath, h = setup
    res = target_action_dist(feed, bundle, ds)
    fb = logged_feedback(feed, ds, res.actions)
    table = _log()
    table = table.set_column(table.column_names.index("p"), "p", pa.array(res.action_dist[np.arange(300), fb.action, fb.position]))
    pq.write_table(table, tmp_path / "onpolicy.parquet")
    m = import_dataset(tmp_path / "onpolicy.parquet", feed, **LOGGED, out=tmp_path / "onpolicy")
    out = json.loads(_ope(h, m.path, "--bundle", str(bpath), "--json").stdout)
    for e in out["estimates"]:
        assert e["value"] == pytest.approx(out["logged_reward_per_row"], rel=1e-9) and e["ess"] == pytest.approx(300)


def test_a_bad_action_dist_file_is_refused_with_field_rule_and_value(setup, tmp_path):
    feed, ds, bundle, bpath, h = setup
    good = target_action_dist(feed, bundle, ds).action_dist
    cases = {
        "shape.npy": (good[:, :, :3], r"'action_dist' of ope must be of shape \(n_rows, n_actions, len_list\) = \(300, 7, 5\)"),
        "sums.npy": (good * 0.9, r"summing to 1 over actions for every round and position\. Got '0\.9 at round 0, position 0'"),
        "negative.npy": (good - good.max(), r"must be in \[0, 1\]"),
    }
    for name, (arr, msg) in cases.items():
        np.save(tmp_path / name, arr)
        r = _ope(h, ds, "--action-dist", str(tmp_path / name))
        assert r.exit_code == 2 and re.search(msg, " ".join(r.output.split())), (name, r.output)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = _ope(h, ds, "--action-dist", str(tmp_path / "objects.npy"))
    assert r.exit_code == 2 and "not pickled" in " ".join(r.output.split())
    for args in ([], ["--bundle", str(bpath), "--action-dist", str(tmp_path / "sums.npy")]):
        r = _ope(h, ds, *args)
        assert r.exit_code == 2 and "exactly one target" in " ".join(r.output.split())


def test_reward_predictions_of_the_wrong_shape_are_refused_and_another_bundle_serves_as_a_reward_model(setup, tmp_path):
    feed, ds, bundle, bpath, h = setup
    np.save(tmp_path / "pred.npy", np.zeros((300, 7, 4)))
    r = _ope(h, ds, "--bundle", str(bpath), "--reward-model", str(tmp_path / "pred.npy"))
    assert r.exit_code == 2 and "'estimated_rewards_by_reg_model' of ope must be of shape" in " ".join(r.output.split())
    other = Bundle.build(feed, LogisticModel({"ctr": 1.0}, intercept=0.0, output="score"), version="other")
    opath = other.save(h / "bundles" / "other")
    r = _ope(h, ds, "--bundle", str(bpath), "--reward-model", str(opath), "--json")
    assert r.exit_code == 0, r.output
    dm = next(e for e in json.loads(r.stdout)["estimates"] if e["name"] == "dm")
    assert 0.0 < dm["value"] < 1.0


def test_without_the_estimators_package_the_command_says_so(setup, monkeypatch):
    import sys

    feed, ds, bundle, bpath, h = setup
    monkeypatch.setitem(sys.modules, "closedloop.evaluation.ope", None)  # an import of it now fails
    r = _ope(h, ds, "--bundle", str(bpath))
    assert r.exit_code == 2 and "closedloop.evaluation.ope is not available" in " ".join(r.output.split())


OBD_MEN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "obd" / "random" / "men"


@pytest.mark.skipif(not (OBD_MEN / "men.csv").is_file(), reason=f"the Open Bandit Dataset sample is not at {OBD_MEN}")
def test_the_obd_sample_estimates_a_greedy_bundle_over_its_34_items(tmp_path):
    from examples.obd.system import men

    m = import_dataset(OBD_MEN / "men.csv", men, action="item_id", position="position", reward="click",
                       propensity="propensity_score", time="timestamp", candidates=OBD_MEN / "item_context.csv", out=tmp_path / "ds")
    b = Bundle.build(men, LogisticModel({"item_feature_0": 0.3, "affinity_total": 0.0}, intercept=-5.0, output="click"),
                     version="logistic")
    p = b.save(tmp_path / "home" / "bundles" / "logistic")
    r = runner.invoke(app, ["--home", str(tmp_path / "home"), "ope", "--system", "examples.obd.system:men", "--dataset",
                            str(m.path), "--bundle", str(p), "--candidates", str(OBD_MEN / "item_context.csv"),
                            "--bootstrap", "50", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["rows"], out["actions"], out["len_list"]) == (10_000, 34, 3)
    table = pq.read_table(m.data_path)
    ips = next(e for e in out["estimates"] if e["name"] == "ips")
    # uniform logging (1/34): IPS is 34 × the clicks on rows whose item the greedy slate shows at that row's slot, per row
    res = target_action_dist(men, b, m.path, candidates=OBD_MEN / "item_context.csv")
    fb = logged_feedback(men, m.path, res.actions)
    hit = res.action_dist[np.arange(10_000), fb.action, fb.position]
    assert set(np.unique(hit)) <= {0.0, 1.0}
    assert ips["value"] == pytest.approx(34 * float((table["reward"].to_numpy() * hit).sum()) / 10_000, rel=1e-9)

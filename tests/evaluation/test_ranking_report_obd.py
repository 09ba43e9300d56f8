"""The Open Bandit Dataset's sample end to end: imported, evaluated with a heuristic and a logistic
over the item features (nothing trained), through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, LogisticModel
from closedloop.datasets.importer import import_dataset
from closedloop.evaluation.report import evaluate
from closedloop.intelligence.heuristics import Rule, ScoringRules
from closedloop.system.splits import split

OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "obd"
MEN = OBD / "random" / "men"

pytestmark = pytest.mark.skipif(not (MEN / "men.csv").is_file(), reason=f"the Open Bandit Dataset sample is not at {OBD}")

IMPORT = {"action": "item_id", "position": "position", "reward": "click", "propensity": "propensity_score",
          "time": "timestamp"}


def _bundles():
    from examples.obd.system import men

    heuristic = Bundle.build(men, ScoringRules([Rule("item_feature_0", ">", 0.0, 0.01)], base=0.002, output="click"),
                             version="heuristic")
    logistic = Bundle.build(men, LogisticModel({"item_feature_0": 0.3, "affinity_total": 0.0}, intercept=-5.0, output="click"),
                            version="logistic")
    return men, heuristic, logistic


def test_obd_sample_evaluates_and_the_counts_are_the_datasets(tmp_path):
    men, heuristic, logistic = _bundles()
    m = import_dataset(MEN / "men.csv", men, **IMPORT, candidates=MEN / "item_context.csv", out=tmp_path / "ds")
    rep = evaluate(men, [heuristic, logistic], m.path, bootstrap=50, seed=3)
    json.dumps(rep, allow_nan=False)
    table = pq.read_table(m.data_path)
    _, test = split(table.select(["unit", "timestamp_ns"]), men.split)
    clicks = table["reward"].to_numpy()[test]
    ds = rep["dataset"]
    assert ds["rows"] == rep["rows"]["n"] == test.size == ds["decisions"] == ds["units"]  # no impression id, no user id
    assert 0 < test.size < m.counts["slots"]["rows"] == 10_000
    assert rep["rows"]["positives"] == int((clicks > 0).sum()) == ds["decisions_with_a_reward"] > 0
    assert ds["candidates_per_decision"] == {"1": test.size} and ds["decisions_with_rewarded_and_not"] == 0
    assert ds["excluded"] == {"decisions_repeating_a_candidate": 0, "rows_repeating_a_candidate": 0}
    assert rep["logged"]["reward_per_decision"]["value"] == pytest.approx(clicks.mean())
    assert rep["logged"]["reward_per_decision"]["n_decisions"] == test.size
    assert any("one logged candidate" in n for n in rep["metadata"]["notes"])
    for b in rep["bundles"]:
        assert b["n"] == test.size and b["probability"]
        f = b["metrics"]
        for name in ("ndcg_at_k", "mrr", "hit_rate_at_1", "auc"):  # no ranking within a one-slot decision
            assert f[name] == {"value": None, "ci": None, "n_decisions": 0}
        assert f["row_auc"]["n_rows"] == f["log_loss"]["n_rows"] == test.size
        assert 0.0 < f["row_auc"]["value"] < 1.0 and f["log_loss"]["value"] > 0
        lo, hi = f["log_loss"]["ci"]
        assert lo <= f["log_loss"]["value"] <= hi
        assert sum(r["n"] for r in b["calibration"]["bins"]) == test.size
    d = rep["comparison"][0]["differences"]
    assert d["row_auc"]["value"] == pytest.approx(rep["bundles"][1]["metrics"]["row_auc"]["value"]
                                                  - rep["bundles"][0]["metrics"]["row_auc"]["value"])
    assert d["row_auc"]["ci"] is not None and d["log_loss"]["ci"] is not None


def test_the_cli_evaluates_the_imported_sample_and_prints_the_figures(tmp_path):
    from typer.testing import CliRunner

    from closedloop.cli.main import app

    _, heuristic, logistic = _bundles()
    home = tmp_path / "home"
    r = CliRunner().invoke(app, [
        "--home", str(home), "dataset", "import", str(MEN / "men.csv"), "--system", "examples.obd.system:men",
        "--action", "item_id", "--position", "position", "--reward", "click", "--propensity", "propensity_score",
        "--time", "timestamp", "--candidates", str(MEN / "item_context.csv"),
    ])
    assert r.exit_code == 0, r.output
    ds_id = json.loads(r.stdout)["id"]
    paths = [heuristic.save(tmp_path / "h"), logistic.save(tmp_path / "l")]
    r = CliRunner().invoke(app, [
        "--home", str(home), "evaluate", "--system", "examples.obd.system:men", "--dataset", ds_id,
        "--bundle", str(paths[0]), "--bundle", str(paths[1]), "--bootstrap", "20", "--out", str(tmp_path / "r.json"),
    ])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "r.json").read_text())
    assert out["kind"] == "ranking" and out["decisions"] == report["dataset"]["decisions"] > 0
    # one logged candidate per decision: both policies show it first, the same value — the gate does not refuse
    assert out["gate"] == "pass" and report["policy_value"]["comparison"][0]["differences"]["snips"]["value"] == 0.0
    assert report["policy_value"]["excluded"]["rows_at_a_slot_beyond_the_decisions_candidates"] > 0
    assert [b["version"] for b in out["bundles"]] == ["heuristic", "logistic"]
    assert out["bundles"][1]["row_auc"] == {k: report["bundles"][1]["metrics"]["row_auc"][k] for k in ("value", "ci")}
    assert out["comparison"][0]["candidate"] == "logistic" and "log_loss" in out["comparison"][0]
    page = Path(out["html"]).read_text()
    assert "Ranking quality" in page and "heuristic" in page
    assert np.isclose(out["logged_reward_per_decision"]["value"], report["logged"]["reward_per_decision"]["value"])

"""closedloop.training.train / closedloop train: candidate bundles with lineage."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest
import typer
from typer.testing import CliRunner

from closedloop import Bundle
from closedloop.datasets import load_dataset
from closedloop.errors import SpecError
from closedloop.training import parse_params, train
from closedloop.training.train import code_version
from support.pages import import_pages


@pytest.fixture(scope="module")
def dataset(phishing, tmp_path_factory):
    from examples.phishing.data import generate

    root = tmp_path_factory.mktemp("train")
    cols, labels = generate(2000, 7, phish_rate=0.3)
    return import_pages(phishing, cols, labels, root)


def _roundtrip(run, phishing, tmp_path):
    loaded = Bundle.load(run.bundle.save(tmp_path / run.bundle.version), phishing)
    assert loaded.version == run.bundle.version
    return loaded


def test_logistic_has_lineage_and_heldout_auc(phishing, dataset, tmp_path):
    run = train(phishing, dataset.path, model="logistic", params={"C": 0.5}, parent="phishing-parent")
    loaded = _roundtrip(run, phishing, tmp_path)
    lin = loaded.metrics["lineage"]
    assert lin["dataset_id"] == dataset.id
    assert lin["code_version"] == code_version()
    assert lin["params"] == {"C": 0.5}
    assert lin["model"] == "logistic"
    assert lin["parent"] == "phishing-parent" and loaded.parent == "phishing-parent"
    assert lin["split"] == phishing.split.describe()
    assert lin["dataset_time_range"] == [dataset.content["since_ns"], dataset.content["until_ns"]]
    assert loaded.metrics["heldout"]["auc"] > 0.85
    assert loaded.metrics["heldout"]["n"] + loaded.metrics["train"]["n"] == 2000


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("lightgbm", {"num_leaves": 7, "num_boost_round": 20}),
        ("sklearn:sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20, "random_state": 0}),
        ("heuristic", {"rules": [["ip_in_url", ">", 0.5, 0.45], ["young_domain", ">", 0.5, 0.3]]}),
    ],
)
def test_other_models(phishing, dataset, tmp_path, model, params):
    run = train(phishing, dataset.path, model=model, params=params)
    loaded = _roundtrip(run, phishing, tmp_path)
    assert loaded.metrics["lineage"]["model"] == model
    assert loaded.metrics["lineage"]["params"] == json.loads(json.dumps(params))
    assert loaded.metrics["heldout"]["auc"] > 0.6


def test_calibrate_uses_a_slice_of_train(phishing, dataset, tmp_path):
    plain = train(phishing, dataset.path, model="logistic")
    run = train(phishing, dataset.path, model="logistic", calibrate="isotonic")
    loaded = _roundtrip(run, phishing, tmp_path)
    cal = loaded.metrics["lineage"]["calibration"]
    assert cal["method"] == "isotonic" and cal["rows"] > 0
    assert loaded.intelligence.kind == "calibrated"
    # the test side is the same; the base is fitted on fewer rows
    assert loaded.metrics["heldout"]["n"] == plain.metrics["heldout"]["n"]
    assert loaded.metrics["train"]["n"] + cal["rows"] == plain.metrics["train"]["n"]
    # TrainRun.scores: the calibration rows too, scored exactly as a caller rescoring them would
    rows, S = run.scores["calibration"]
    assert rows.size == cal["rows"] and "calibration" not in plain.scores
    table, cols = load_dataset(dataset.path, phishing)
    labeled = np.flatnonzero(np.asarray(pc.is_valid(table["label_value"]), dtype=bool))
    again = cols.take(labeled[rows])
    scorer = run.model.bind(phishing.features)
    assert np.array_equal(S, np.asarray(scorer.batch(phishing.features.batch(again), again), dtype=np.float64))


def test_refusals_name_the_value(phishing, dataset):
    with pytest.raises(SpecError, match="os.path"):
        train(phishing, dataset.path, model="sklearn:os.path:join")
    with pytest.raises(SpecError, match="'xgboost'"):
        train(phishing, dataset.path, model="xgboost")
    with pytest.raises(SpecError, match="rules"):
        train(phishing, dataset.path, model="heuristic")
    with pytest.raises(SpecError, match="sigmoid"):
        train(phishing, dataset.path, calibrate="sigmoid")


def test_parse_params():
    assert parse_params(["a=1", "b=0.5", "c=true", "d=False", "e=gbdt", "f=none"]) == {
        "a": 1, "b": 0.5, "c": True, "d": False, "e": "gbdt", "f": None,
    }
    with pytest.raises(SpecError, match="name=value"):
        parse_params(["oops"])


def test_cli_train(phishing, dataset, tmp_path):
    from closedloop.cli.train import train as train_cmd
    from closedloop.settings import Settings

    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = Settings(home=tmp_path / "home")

    app.command()(train_cmd)
    ds_home = tmp_path / "home" / "datasets"
    ds_home.mkdir(parents=True)
    import shutil

    shutil.copytree(dataset.path, ds_home / dataset.id)
    res = CliRunner().invoke(
        app,
        ["train", "--system", "examples.phishing.system:phishing", "--dataset", dataset.id,
         "--model", "lightgbm", "--param", "num_leaves=7", "--param", "num_boost_round=10"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["path"] == str(tmp_path / "home" / "bundles" / out["version"])
    loaded = Bundle.load(out["path"], phishing)
    assert loaded.metrics["lineage"]["params"] == {"num_leaves": 7, "num_boost_round": 10}
    assert loaded.metrics["lineage"]["dataset_id"] == dataset.id


def test_weights_opt_in_and_unit_weights_keep_the_unweighted_fit(phishing, dataset):
    plain = train(phishing, dataset.path, model="logistic")
    opted = train(phishing, dataset.path, model="logistic", weights=True)
    # An imported corpus has weight 1 everywhere: opting in changes nothing, bit for bit.
    assert plain.model.weights == opted.model.weights
    assert plain.metrics["lineage"]["fitted_with_weights"] is False
    assert opted.metrics["lineage"]["fitted_with_weights"] is False

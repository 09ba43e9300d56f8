"""River's shipped Phishing dataset (1,250 real pages, 9 features) as a small
system of its own — import, train a heuristic, a logistic and a LightGBM bundle, evaluate them
side by side through the runtime, write the report — and the report's AUC, log loss, precision
and recall equal what scikit-learn computes from the trained models themselves on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm
import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from closedloop import Bundle
from closedloop.evaluation import split
from examples import river_phishing as rp

REL = 1e-9


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    return rp.run(tmp_path_factory.mktemp("river"), bootstrap=50)


def test_river_ships_the_data_in_its_wheel():
    import river
    from river import datasets
    from river.datasets import base

    ds = datasets.Phishing()
    # a file dataset inside the installed package, not a remote one fetched on first use
    assert isinstance(ds, base.FileDataset) and not isinstance(ds, base.RemoteDataset)
    assert ds.path.is_file() and ds.path.is_relative_to(Path(river.__file__).parent)
    assert ds.n_samples == 1250 and ds.n_features == 9
    rows = rp.rows()
    assert len(rows) == 1250 and set(rows[0][0]) == set(rp.FEATURES)


def _test_rows(flow):
    """The file rows the report evaluates: the test side of the system's split of the dataset."""
    table = pq.read_table(flow["dataset"].path / "data.parquet")
    _, test = split(table, rp.system.split)
    return np.asarray([int(i) for i in table["decision_id"].take(test).to_pylist()])


def _own_probabilities(flow, rows):
    """Each trained model's probabilities on the River rows, computed by the model's own code
    (scikit-learn from the logistic weights, LightGBM's Booster from the bundle's model text, the
    rules by hand) — not through closedloop's runtime."""
    data = rp.rows()
    X = np.asarray([[data[i][0][f] for f in rp.FEATURES] for i in rows], dtype=np.float64)
    y = np.asarray([int(data[i][1]) for i in rows])
    out = {}
    logistic = flow["runs"]["logistic"].model
    lr = LogisticRegression()
    lr.classes_ = np.array([0, 1])
    lr.coef_ = np.asarray([[logistic.weights[f] for f in rp.FEATURES]])
    lr.intercept_ = np.asarray([logistic.intercept])
    out["logistic"] = lr.predict_proba(X)[:, 1]
    model = flow["runs"]["lightgbm"].model
    booster = lightgbm.Booster(model_str=model.model_text)
    assert model.feature_names == rp.FEATURES and booster.num_feature() == len(rp.FEATURES)
    out["lightgbm"] = booster.predict(X)
    points = np.zeros(len(rows))
    for feature, op, value, pts in rp.HEURISTIC_RULES:
        assert op == "<"
        points += pts * (X[:, rp.FEATURES.index(feature)] < value)
    out["heuristic"] = np.clip(points, 0.0, 1.0)
    return y, out


def test_report_equals_sklearn_on_the_models_own_predictions(flow):
    rep = flow["report"]
    rows = _test_rows(flow)
    y, probs = _own_probabilities(flow, rows)
    assert rep["rows"]["n"] == rows.size == y.size and rep["rows"]["positives"] == int(y.sum())
    assert 200 < rows.size < 300  # about a fifth of 1,250 pages
    assert [b["kind"] for b in rep["bundles"]] == ["scoring_rules", "logistic", "lightgbm"]
    for name, entry in zip(("heuristic", "logistic", "lightgbm"), rep["bundles"], strict=True):
        p = probs[name]
        q = entry["quality"]
        op = entry["operating_point"]
        assert op == 0.5
        assert q["auc"] == pytest.approx(skm.roc_auc_score(y, p), rel=REL), name
        assert q["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=REL), name
        assert q["precision"] == pytest.approx(skm.precision_score(y, p >= op, zero_division=0), rel=REL), name
        assert q["recall"] == pytest.approx(skm.recall_score(y, p >= op), rel=REL), name
        assert q["brier"] == pytest.approx(skm.brier_score_loss(y, p), rel=REL), name
        # each slice (https, age_of_domain) too
        data = rp.rows()
        for field in rp.system.slices:
            vals = np.asarray([data[i][0][field] for i in rows])
            for s in entry["slices"][field]:
                m = vals == float(s["value"])
                assert s["n"] == int(m.sum())
                if s["auc"] is not None:
                    assert s["auc"] == pytest.approx(skm.roc_auc_score(y[m], p[m]), rel=REL)
    # the models learned something real, and differently
    aucs = [b["quality"]["auc"] for b in rep["bundles"]]
    assert min(aucs) > 0.9 and len(set(aucs)) == 3


def test_side_by_side_and_written(flow):
    rep = flow["report"]
    assert json.loads(flow["path"].read_text()) == rep
    md = rep["metadata"]
    assert md["unit_stand_in"] is True and md["time_stand_in"] is True
    assert any("row index stands in for the unit" in n for n in md["notes"])
    assert any("row index stands in for the time" in n for n in md["notes"])
    versions = [b["version"] for b in rep["bundles"]]
    assert [(c["baseline"], c["candidate"]) for c in rep["comparison"]] == [(versions[0], v) for v in versions[1:]]
    for c, b in zip(rep["comparison"], rep["bundles"][1:], strict=True):
        assert c["auc_diff"] == pytest.approx(b["quality"]["auc"] - rep["bundles"][0]["quality"]["auc"], rel=REL)
        lo, hi = c["auc_diff_ci"]
        assert lo <= c["auc_diff"] <= hi
    assert rep["gate"]["candidate"] == versions[-1] and isinstance(rep["gate"]["passed"], bool)
    # the bundles saved and loaded back score the same: the report's golden rows replay
    from closedloop import Runtime

    for run, entry in zip(flow["runs"].values(), rep["bundles"], strict=True):
        loaded = Bundle.load(run.bundle.save(flow["path"].parent / "bundles" / run.bundle.version), rp.system)
        g = entry["golden"]
        batch = Runtime(rp.system, loaded).decide_batch(
            {f.name: [row["context"][f.name] for row in g] for f in rp.system.schema.fields})
        assert batch.scores("phish").tolist() == [row["scores"]["phish"] for row in g]

"""closedloop.evaluation.report / closedloop evaluate: the JSON evaluation report."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from sklearn import metrics as skm
from typer.testing import CliRunner

from closedloop import Runtime
from closedloop.datasets.dataset import load_dataset
from closedloop.errors import BundleError, DatasetError
from closedloop.evaluation import report as R
from closedloop.evaluation.report import Gate, evaluate
from closedloop.system.splits import split as split_rows
from closedloop.training import train
from support.pages import import_pages

RULES = {"rules": [["ip_in_url", ">", 0.5, 0.5], ["brand_not_in_domain", ">", 0.5, 0.4]]}


def _dataset(system, root, seed, flip_browser=None, flip_rate=0.3):
    from examples.phishing.data import generate

    cols, labels = generate(3000, seed, phish_rate=0.3)
    labels = labels.copy()
    if flip_browser is not None:
        rng = np.random.default_rng(seed + 100)
        hit = (np.asarray(list(cols["browser"]), dtype=object) == flip_browser) & (rng.random(labels.size) < flip_rate)
        labels[hit] = 1 - labels[hit]
    return import_pages(system, cols, labels, root)


@pytest.fixture(scope="module")
def setup(phishing, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    ds = _dataset(phishing, root / "clean", 11)
    logistic = train(phishing, ds.path, model="logistic").bundle
    heuristic = train(phishing, ds.path, model="heuristic", params=RULES).bundle
    rep = evaluate(phishing, [logistic, heuristic], ds.path, bootstrap=40)
    return {"root": root, "ds": ds, "logistic": logistic, "heuristic": heuristic, "report": rep}


def _runtime_scores(system, bundle, ds_path):
    table, cols = load_dataset(ds_path, system)
    labeled = np.flatnonzero(np.asarray(table["label_value"].is_valid()))
    table, cols = table.take(labeled), cols.take(labeled)
    _, test = split_rows(table, system.split)
    table, cols = table.take(test), cols.take(test)
    batch = Runtime(system, bundle).decide_batch(
        {f.name: cols.pylist(f.name) for f in system.schema.fields},
        decision_ids=table["decision_id"].to_pylist(), timestamps_ns=table["timestamp_ns"].to_numpy(),
    )
    y = table["label_value"].to_numpy().astype(np.int64)
    return y, batch.scores("phish"), batch


def test_quality_equals_sklearn_on_runtime_scores(phishing, setup):
    rep = setup["report"]
    assert rep["schema_version"] == 1 and rep["system"] == phishing.name
    for b, entry in zip((setup["logistic"], setup["heuristic"]), rep["bundles"], strict=True):
        y, s, _ = _runtime_scores(phishing, b, setup["ds"].path)
        q = entry["quality"]
        assert entry["n"] == y.size == rep["rows"]["n"]
        assert q["auc"] == pytest.approx(skm.roc_auc_score(y, s), rel=1e-9)
        assert q["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(s, 1e-15, 1 - 1e-15)), rel=1e-9)
        assert q["brier"] == pytest.approx(skm.brier_score_loss(y, s), rel=1e-9)
        pred = s >= entry["operating_point"]
        assert entry["operating_point"] == min(entry["thresholds"].values())
        assert q["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0), rel=1e-9)
        assert q["recall"] == pytest.approx(skm.recall_score(y, pred), rel=1e-9)
        assert q["f1"] == pytest.approx(skm.f1_score(y, pred), rel=1e-9)
    assert rep["bundles"][0]["kind"] == "logistic" and rep["bundles"][1]["kind"] == "scoring_rules"


def test_report_is_json_and_complete(phishing, setup):
    rep = setup["report"]
    again = json.loads(json.dumps(rep, allow_nan=False))
    assert again == rep
    md = rep["metadata"]
    assert md["dataset_id"] == setup["ds"].id and md["split"] == phishing.split.describe()
    assert md["unit_stand_in"] is True and md["time_stand_in"] is True and md["created"]
    b = rep["bundles"][0]
    assert len(b["curves"]["roc"]["x"]) <= 200 and len(b["curves"]["pr"]["x"]) <= 200
    assert 0 <= b["calibration"]["ece"] <= 1 and len(b["calibration"]["reliability"]["counts"]) == 10
    conf = b["mistakes"]["confusion"]
    assert list(conf) == ["block", "warn", "allow"]
    assert sum(sum(v.values()) for v in conf.values()) == b["n"]
    assert b["mistakes"]["best_cost_per_1000"] <= b["mistakes"]["cost_per_1000"] + 1e-9
    # slices partition the rows
    for field in phishing.slices:
        assert sum(r["n"] for r in b["slices"][field]) == b["n"]
    # worst mistakes: the most confident ones, with contexts
    fps = b["worst"]["false_positives"]
    assert fps and all(m["label"] == "legit" and m["score"] >= b["operating_point"] for m in fps)
    assert [m["score"] for m in fps] == sorted((m["score"] for m in fps), reverse=True)
    fns = b["worst"]["false_negatives"]
    assert all(m["label"] == "phish" and m["score"] < b["operating_point"] for m in fns)
    assert set(fps[0]["context"]) == {f.name for f in phishing.schema.fields}
    # golden rows replay through the runtime to the same scores
    g = b["golden"]
    assert len(g) == 50
    batch = Runtime(phishing, setup["logistic"]).decide_batch(
        {f.name: [row["context"][f.name] for row in g] for f in phishing.schema.fields},
        decision_ids=[row["decision_id"] for row in g], timestamps_ns=[row["timestamp_ns"] for row in g],
    )
    assert np.allclose(batch.scores("phish"), [row["scores"]["phish"] for row in g], rtol=1e-12)
    assert list(batch.action) == [row["action"] for row in g]


def test_comparison_and_gate(phishing, setup):
    rep = setup["report"]
    (c,) = rep["comparison"]
    assert c["baseline"] == setup["logistic"].version and c["candidate"] == setup["heuristic"].version
    q = [b["quality"]["auc"] for b in rep["bundles"]]
    assert c["auc_diff"] == pytest.approx(q[1] - q[0])
    assert c["auc_diff_ci"][0] <= c["auc_diff"] <= c["auc_diff_ci"][1] < 0
    assert c["cost_diff_ci"][0] > 0
    assert rep["heuristic_note"] is None  # the model is clearly better here
    assert rep["gate"]["passed"] is False and rep["gate"]["reasons"]
    assert any("AUC" in r for r in rep["gate"]["reasons"]) and any("cost" in r for r in rep["gate"]["reasons"])
    same = evaluate(phishing, [setup["logistic"], setup["logistic"]], setup["ds"].path, bootstrap=10, golden=5)
    assert same["gate"]["passed"] is True and same["gate"]["reasons"] == []
    lax = Gate(max_auc_drop=1.0, min_slice_n=10, cost_must_not_rise=False)
    loose = evaluate(phishing, [setup["logistic"], setup["heuristic"]], setup["ds"].path, bootstrap=10, gate=lax)
    assert loose["gate"]["passed"] is True and loose["gate"]["rule"]["min_slice_n"] == 10
    single = evaluate(phishing, [setup["logistic"]], setup["ds"].path, bootstrap=10)
    assert single["gate"] is None and single["comparison"] is None


def test_heuristic_within_noise_is_said_plainly(phishing, setup, monkeypatch):
    # treat the logistic model as "the heuristic": the rules are then a model no better than it
    monkeypatch.setattr(R, "HEURISTIC_KINDS", frozenset({"logistic"}))
    rep = evaluate(phishing, [setup["logistic"], setup["heuristic"]], setup["ds"].path, bootstrap=20, golden=0)
    assert rep["heuristic_note"].startswith("the heuristic solves this: consider not using machine learning here")


def test_planted_bad_slice_is_flagged_clean_is_not(phishing, setup):
    clean = evaluate(phishing, [setup["logistic"]], setup["ds"].path, split="all", bootstrap=20, golden=0)
    for rows in clean["bundles"][0]["slices"].values():
        assert not any(r["significantly_worse"] for r in rows)
    bad = _dataset(phishing, setup["root"] / "bad", 12, flip_browser="chrome")
    rep = evaluate(phishing, [setup["logistic"]], bad.path, split="all", bootstrap=20, golden=0)
    flagged = {(f, r["value"]) for f, rows in rep["bundles"][0]["slices"].items() for r in rows
               if r["significantly_worse"]}
    assert ("browser", "chrome") in flagged
    chrome = next(r for r in rep["bundles"][0]["slices"]["browser"] if r["value"] == "chrome")
    assert chrome["auc_ci"][0] <= chrome["auc"] <= chrome["auc_ci"][1]


def _rewrite_labels(ds, dest, values):
    shutil.copytree(ds.path, dest)
    t = pq.read_table(dest / "data.parquet")
    i = t.column_names.index("label_value")
    t = t.set_column(i, "label_value", pa.array(values, type=t.schema.field("label_value").type))
    pq.write_table(t, dest / "data.parquet")
    return dest


def test_errors_name_the_problem(phishing, setup, tmp_path):
    ds, b = setup["ds"], setup["logistic"]
    n = pq.read_table(ds.path / "data.parquet").num_rows
    none = _rewrite_labels(ds, tmp_path / "none", [None] * n)
    with pytest.raises(DatasetError, match="labeled rows"):
        evaluate(phishing, [b], none)
    one = _rewrite_labels(ds, tmp_path / "one", [0] * n)
    with pytest.raises(DatasetError, match="both classes"):
        evaluate(phishing, [b], one)
    missing = copy.copy(phishing)
    missing.slices = ("browser", "os_version")
    with pytest.raises(DatasetError, match="os_version"):
        evaluate(missing, [b], ds.path)
    other = copy.copy(phishing)
    other.name = "not-phishing"
    with pytest.raises(BundleError, match="not-phishing"):
        evaluate(other, [b], ds.path)


def test_cli_writes_the_report(phishing, setup, tmp_path):
    from closedloop.cli.evaluate import evaluate as evaluate_cmd
    from closedloop.settings import Settings

    home = tmp_path / "home"
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = Settings(home=home)

    app.command()(evaluate_cmd)
    shutil.copytree(setup["ds"].path, home / "datasets" / setup["ds"].id)
    setup["logistic"].save(home / "bundles" / setup["logistic"].version)
    hpath = setup["heuristic"].save(tmp_path / "h")
    res = CliRunner().invoke(
        app,
        ["evaluate", "--system", "examples.phishing.system:phishing", "--bundle", setup["logistic"].version,
         "--bundle", str(hpath), "--dataset", setup["ds"].id, "--bootstrap", "10"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["gate"] == "fail" and out["gate_reasons"]
    assert [b["version"] for b in out["bundles"]] == [setup["logistic"].version, setup["heuristic"].version]
    written = json.loads(open(out["path"]).read())
    assert out["path"].startswith(str(home / "reports" / setup["ds"].id))
    assert written["bundles"][0]["quality"]["auc"] == out["bundles"][0]["auc"]
    res = CliRunner().invoke(
        app, ["evaluate", "--system", "examples.phishing.system:phishing", "--bundle", "nope",
              "--dataset", setup["ds"].id],
    )
    assert res.exit_code != 0 and "nope" in res.output

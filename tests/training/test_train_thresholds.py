"""`closedloop train --thresholds cost` / `train(thresholds="cost")`: the loop's cost-minimizing
thresholds from the command line, through the one code path the cycle also takes."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import numpy as np
import pyarrow.compute as pc
import pytest
import typer
from typer.testing import CliRunner

from closedloop import Bundle
from closedloop.datasets import load_dataset
from closedloop.errors import SpecError
from closedloop.evaluation import metrics as M
from closedloop.training import train
from support.pages import import_pages


@pytest.fixture(scope="module")
def imbalanced(phishing, tmp_path_factory):
    """4,000 page loads, 12 % phishing: at the system's fixed thresholds (warn 0.6, block 0.9) a
    calibrated model lets most phishing through, which costs 100 a page."""
    from examples.phishing.data import generate

    root = tmp_path_factory.mktemp("imbalanced")
    cols, labels = generate(4000, 23, phish_rate=0.12)
    return import_pages(phishing, cols, labels, root)


def _test_cost(phishing, path, run, thresholds):
    """Expected cost per 1,000 on the run's test side (rows neither the fit nor the thresholds saw)."""
    rows, S = run.scores["test"]
    table, _ = load_dataset(path, phishing)
    labeled = table.filter(pc.is_valid(table["label_value"]))
    y = np.asarray(labeled["label_value"].to_numpy(zero_copy_only=False), dtype=np.int64)[rows]
    th = phishing.experience.with_levels(thresholds)
    return M.expected_cost(M.confusion_at_thresholds(y, S[:, 0], th, labels=phishing.labels), phishing.costs)


def test_cost_thresholds_lower_the_heldout_cost_of_an_imbalanced_problem(phishing, imbalanced):
    fixed = train(phishing, imbalanced.path, model="logistic", calibrate="platt")
    cost = train(phishing, imbalanced.path, model="logistic", calibrate="platt", thresholds="cost")
    # the same model (thresholds are chosen after the fit), other thresholds
    assert np.array_equal(fixed.scores["test"][1], cost.scores["test"][1])
    assert fixed.bundle.thresholds is None  # the system's own
    chosen = cost.bundle.thresholds
    assert chosen is not None and chosen != dict(phishing.experience.levels)
    lin = cost.metrics["lineage"]["thresholds"]
    assert lin["rule"] == "cost" and lin["rows"] == "calibration"
    assert lin["n"] == cost.metrics["lineage"]["calibration"]["rows"] and lin["values"] == chosen
    assert fixed.metrics["lineage"]["thresholds"] == {"rule": "system"}
    # measured on the test side, which neither the fit nor the thresholds saw
    c_fixed = _test_cost(phishing, imbalanced.path, fixed, dict(phishing.experience.levels))
    c_cost = _test_cost(phishing, imbalanced.path, cost, chosen)
    assert c_cost < 0.8 * c_fixed, (c_cost, c_fixed, chosen)
    # without calibration the fitted rows choose them (the test side is never used)
    plain = train(phishing, imbalanced.path, model="logistic", thresholds="cost")
    assert plain.metrics["lineage"]["thresholds"]["rows"] == "fit"
    assert plain.metrics["lineage"]["thresholds"]["n"] == plain.metrics["train"]["n"]


def test_thresholds_rule_is_checked_by_name(phishing, imbalanced):
    with pytest.raises(SpecError, match=r"'thresholds' parameter of train must be one of \['system', 'cost'\]"):
        train(phishing, imbalanced.path, thresholds="best")
    nocost = _without_costs(phishing)
    with pytest.raises(SpecError, match="mistake costs"):
        train(nocost, imbalanced.path, thresholds="cost")


def _without_costs(system):
    import copy

    s = copy.copy(system)
    s.costs = {}
    return s


def test_cycle_and_cli_choose_the_same_thresholds(phishing, imbalanced, tmp_path):
    """The loop's train step and `closedloop train --thresholds cost` on the same dataset and model:
    the same thresholds, bit for bit (one code path)."""
    from closedloop.cli.train import train as train_cmd
    from closedloop.orchestration import Cycle, LoopPlan
    from closedloop.orchestration.steps import Train
    from closedloop.registry import Registry
    from closedloop.settings import Settings

    home = tmp_path / "home"
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = Settings(home=home)

    app.command()(train_cmd)
    (home / "datasets").mkdir(parents=True)
    shutil.copytree(imbalanced.path, home / "datasets" / imbalanced.id)
    params = ["--param", "num_leaves=7", "--param", "num_boost_round=30"]
    res = CliRunner().invoke(app, ["train", "--system", "examples.phishing.system:phishing", "--dataset",
                                   imbalanced.id, "--model", "lightgbm", *params, "--calibrate", "platt",
                                   "--thresholds", "cost"])
    assert res.exit_code == 0, res.output
    cli = Bundle.load(json.loads(res.stdout.strip().splitlines()[-1])["path"], phishing)

    plan = LoopPlan(phishing, model="lightgbm", params={"num_leaves": 7, "num_boost_round": 30}, calibrate="platt",
                    thresholds="cost", train_window=timedelta(days=7))
    reg = Registry(f"sqlite:///{home}/loop.sqlite", home / "loop-bundles").open()
    try:
        cycle = Cycle(plan, home, reg)
        ds = home / "datasets" / imbalanced.id
        rec = {"id": 1, "now_ns": 0, "steps": {"plan": {"result": {"train": True, "tighten": False, "why": "test"}},
                                               "dataset": {"result": {"id": imbalanced.id, "path": str(ds), "counts": {}}}}}
        out = Train().run(cycle.context(rec))
    finally:
        reg.close()
    assert out.thresholds == cli.thresholds
    assert cli.thresholds is not None and cli.thresholds != dict(phishing.experience.levels)
    assert cli.metrics["lineage"]["thresholds"]["values"] == cli.thresholds

"""train(model="lightgbm"): regularized defaults sized to the data — LightGBM's own
defaults memorize a few thousand noisy rows (train AUC near 1, held-out far below)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.training import train
from closedloop.training.train import lightgbm_defaults
from support.pages import import_pages

#: LightGBM's own defaults, given explicitly: what train used before the sized defaults
LIGHTGBM_OWN = {"num_leaves": 31, "min_data_in_leaf": 20, "min_sum_hessian_in_leaf": 1e-3, "lambda_l2": 0.0,
                "learning_rate": 0.1}


@pytest.fixture(scope="module")
def noisy(phishing, tmp_path_factory):
    """4,000 page loads, 12 % phishing, 40 % of the labels redrawn at the base rate (noise)."""
    from examples.phishing.data import generate

    root = tmp_path_factory.mktemp("noisy")
    cols, labels = generate(4000, 11, phish_rate=0.12)
    labels = labels.copy()
    rng = np.random.default_rng(12)
    redraw = rng.random(labels.size) < 0.4
    labels[redraw] = (rng.random(int(redraw.sum())) < 0.12).astype(np.int64)
    return import_pages(phishing, cols, labels, root)


def test_sized_defaults_overfit_less_on_4k_noisy_rows(phishing, noisy):
    old = train(phishing, noisy.path, model="lightgbm", params=LIGHTGBM_OWN)
    new = train(phishing, noisy.path, model="lightgbm")
    gap_old = old.metrics["train"]["auc"] - old.metrics["heldout"]["auc"]
    gap_new = new.metrics["train"]["auc"] - new.metrics["heldout"]["auc"]
    assert gap_old > 0.15  # the problem: memorized
    assert gap_new < 0.5 * gap_old, (gap_new, gap_old)
    assert new.metrics["heldout"]["auc"] >= old.metrics["heldout"]["auc"] - 0.005
    # the choice is visible in the bundle: the params as given, and the sized ones
    lin = new.bundle.metrics["lineage"]
    assert lin["params"] == {} and old.bundle.metrics["lineage"]["defaults"] == {}
    assert set(lin["defaults"]) == {"num_leaves", "min_data_in_leaf", "min_sum_hessian_in_leaf", "lambda_l2",
                                    "learning_rate"}
    assert 5 <= lin["defaults"]["num_leaves"] < 31


def test_sizes_follow_the_smaller_class_and_end_at_lightgbm_own():
    tiny = lightgbm_defaults({}, np.r_[np.ones(100), np.zeros(5000)])
    assert tiny == {"num_leaves": 5, "min_data_in_leaf": 40, "min_sum_hessian_in_leaf": 1.0, "lambda_l2": 2.0,
                    "learning_rate": 0.05}
    mid = lightgbm_defaults({}, np.r_[np.ones(2000), np.zeros(50_000)])
    assert 5 < mid["num_leaves"] < 31 and 1e-3 < mid["min_sum_hessian_in_leaf"] < 1.0
    # the positives are the majority: the smaller class is what counts
    assert lightgbm_defaults({}, np.r_[np.zeros(2000), np.ones(50_000)]) == mid
    big = lightgbm_defaults({}, np.r_[np.ones(10_000), np.zeros(40_000)])
    assert big == LIGHTGBM_OWN


def test_a_value_given_under_any_alias_is_kept():
    y = np.r_[np.ones(300), np.zeros(3000)]
    got = lightgbm_defaults({"min_child_samples": 5, "reg_lambda": 0.0, "max_leaves": 63, "min_child_weight": 0.0},
                            y)
    assert got == {"learning_rate": 0.05}
    # learning rate × rounds is one choice: rounds given, the learning rate is the caller's too
    assert "learning_rate" not in lightgbm_defaults({"num_boost_round": 60}, y)
    assert "learning_rate" not in lightgbm_defaults({"n_estimators": 60}, y)
    # the demo's own params leave nothing to size (its figures do not move)
    demo = {"num_leaves": 15, "num_boost_round": 60, "min_data_in_leaf": 100, "lambda_l2": 1.0,
            "min_sum_hessian_in_leaf": 1.0, "num_threads": 1}
    assert lightgbm_defaults(demo, y) == {}


def test_aliases_are_lightgbm_own():
    from lightgbm.basic import _ConfigAliases

    from closedloop.training.train import _LGBM_ALIASES

    for name, names in _LGBM_ALIASES.items():
        assert set(names) == set(_ConfigAliases.get(name)), name

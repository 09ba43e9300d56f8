"""The evaluation and training modules after the split: every name still importable
where it was, as the very object its new module defines, and the named stages on their own."""

from __future__ import annotations

import numpy as np

from closedloop.evaluation import costs, html, intervals, measuring, metrics, ordering, partition, quality, significance, slicing
from closedloop.evaluation import report as R
from closedloop.evaluation.gate import Gate
from closedloop.evaluation.html import text as html_text
from closedloop.training import fitting
from closedloop.training.train import _LGBM_ALIASES, lightgbm_defaults


def test_metrics_names_are_the_family_modules_objects():
    assert metrics.auc is quality.auc and metrics.Ranked is ordering.Ranked and metrics.Curve is ordering.Curve
    assert metrics.Partition is partition.Partition and metrics.best_thresholds is costs.best_thresholds
    assert metrics.poisson_bootstrap is significance.poisson_bootstrap and metrics._dot is not None
    assert metrics._best_from_groups is costs._best_from_groups
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None, name


def test_report_html_and_train_names_stay_where_they_were():
    assert R.Gate is Gate and R.SliceField is slicing.SliceField and R.NOT_RECORDED == slicing.NOT_RECORDED
    assert R.measure is measuring.measure and R.Measured is measuring.Measured
    assert R.paired_intervals is intervals.paired_intervals and R._poisson1 is intervals._poisson1
    assert html.MAX_TEXT == html_text.MAX_TEXT and html._thin is html_text._thin
    assert lightgbm_defaults is fitting.lightgbm_defaults and _LGBM_ALIASES is fitting._LGBM_ALIASES


def test_unit_codes_keep_small_integers_and_rank_the_rest():
    small = np.array([3, 0, 3, 7])
    assert partition._unit_codes(small).tolist() == [3, 0, 3, 7]
    assert partition._unit_codes(np.array(["b", "a", "b", "c"])).tolist() == [1, 0, 1, 2]
    assert partition._unit_codes(np.array([10**9, 5, 10**9])).tolist() == [1, 0, 1]


def test_auc_intervals_stages_give_delong_without_clusters():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.4).astype(int)
    s = rng.random(400) + 0.3 * y
    codes = rng.integers(0, 3, 400)
    part = metrics.Partition(metrics.Ranked.of(y, s), codes, 3)
    lo, hi = part.auc_intervals(np.arange(400))  # one row per unit: DeLong's variance
    a_in, _ = part.aucs()
    assert np.all(lo < a_in) and np.all(a_in < hi)
    x, yy, rpart, is_pos = part._placement_shares()
    # a positive's placements summed over its part, over the part's positives, is the part's AUC
    for j in range(3):
        sel = (rpart == j) & is_pos
        assert np.isclose(x[sel].sum() / sel.sum(), a_in[j])
        assert np.all(yy[sel] == 0)


def test_pairs_put_the_first_bundle_first_then_heuristic_model_pairs():
    reports = [{"kind": "logistic"}, {"kind": "scoring_rules"}, {"kind": "lightgbm"}]
    heur, models, pairs = R._pairs(reports)
    assert heur == [1] and models == [0, 2]
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2)]


def test_heuristic_note_names_the_first_model_within_the_noise():
    class B:
        def __init__(self, v):
            self.version = v

    bundles = [B("m1"), B("h"), B("m2")]
    # (heuristic, model) differences are model − heuristic: "beat" is a model better beyond the noise
    beat = {"auc_diff": 0.1, "auc_diff_ci": [0.05, 0.2], "cost_diff": None, "cost_diff_ci": None}
    noise = {"auc_diff": 0.001, "auc_diff_ci": [-0.01, 0.02], "cost_diff": None, "cost_diff_ci": None}
    assert R._heuristic_note(bundles, [1], [0, 2], {(1, 0): beat, (1, 2): beat}) is None
    note = R._heuristic_note(bundles, [1], [0, 2], {(1, 0): beat, (1, 2): noise})
    assert note is not None and note.startswith(R.HEURISTIC_NOTE) and "model m2" in note

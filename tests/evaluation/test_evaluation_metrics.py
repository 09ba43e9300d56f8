"""closedloop.evaluation.metrics: equal to scikit-learn, invariant to row order, optimal
thresholds by brute force, Benjamini–Hochberg by hand, bad input refused by name."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from closedloop.errors import EvaluationError
from closedloop.evaluation import metrics as M
from closedloop.experience.experiences import Thresholds

REL = 1e-9


def _data(n: int = 2000, seed: int = 0, ties: int = 50):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # few distinct values → many ties; probabilities kept off the clip region
    p = np.clip(np.round(0.3 * y + 0.7 * rng.random(n), 2) * 0.98 + 0.01, 0.01, 0.99)
    s = np.round(rng.normal(y, 1.0) * ties) / ties
    w = rng.exponential(1.0, n) + 0.01
    return y, p, s, w


@pytest.mark.parametrize("weighted", [False, True])
def test_equal_to_sklearn(weighted):
    y, p, s, w = _data()
    sw = w if weighted else None
    assert M.auc(y, s, weights=sw) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=sw), rel=REL)
    assert M.auc(y, p, weights=sw) == pytest.approx(skm.roc_auc_score(y, p, sample_weight=sw), rel=REL)
    assert M.log_loss(y, p, weights=sw) == pytest.approx(skm.log_loss(y, p, sample_weight=sw), rel=REL)
    assert M.brier(y, p, weights=sw) == pytest.approx(skm.brier_score_loss(y, p, sample_weight=sw), rel=REL)
    pred = (p >= 0.5).astype(int)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(
        y, pred, average="binary", sample_weight=sw, zero_division=0)
    assert M.precision_recall_f1(y, pred, weights=sw) == pytest.approx((prec, rec, f1), rel=REL)


@pytest.mark.parametrize("weighted", [False, True])
def test_curves_match_sklearn(weighted):
    y, _, s, w = _data(n=3000)
    sw = w if weighted else None
    fpr, tpr, thr = skm.roc_curve(y, s, sample_weight=sw, drop_intermediate=False)
    c = M.roc_curve(y, s, weights=sw)
    assert len(c.x) <= 200 and len(np.unique(s)) > 200
    assert (c.x[0], c.y[0]) == (0.0, 0.0) and c.x[-1] == pytest.approx(1.0) and c.y[-1] == pytest.approx(1.0)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and c.thresholds[-1] == thr[-1]
    lookup = {t: (a, b) for t, a, b in zip(thr[1:], fpr[1:], tpr[1:], strict=True)}
    for x, yv, t in zip(c.x[1:], c.y[1:], c.thresholds[1:], strict=True):
        assert lookup[t] == pytest.approx((x, yv), rel=REL)
    full = M.roc_curve(y, s, weights=sw, max_points=10**6)
    assert len(full.x) == len(fpr)
    np.testing.assert_allclose(full.x, fpr, rtol=REL)
    np.testing.assert_allclose(full.y, tpr, rtol=REL)

    prec, rec, pthr = skm.precision_recall_curve(y, s, sample_weight=sw, drop_intermediate=False)
    pr = M.pr_curve(y, s, weights=sw, max_points=10**6)
    np.testing.assert_allclose(pr.x, rec[:-1][::-1], rtol=REL)
    np.testing.assert_allclose(pr.y, prec[:-1][::-1], rtol=REL)
    np.testing.assert_array_equal(pr.thresholds, pthr[::-1])
    assert len(M.pr_curve(y, s, weights=sw).x) <= 200


def test_reliability_and_ece():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.95, 1.0, 0.52, 0.55])
    r = M.reliability(y, p, bins=2)
    np.testing.assert_allclose(r.centers, [0.25, 0.75])
    np.testing.assert_allclose(r.counts, [2, 4])
    np.testing.assert_allclose(r.mean_predicted, [0.1, (0.95 + 1.0 + 0.52 + 0.55) / 4])
    np.testing.assert_allclose(r.observed, [0.5, 0.75])
    expected = (2 * abs(0.5 - 0.1) + 4 * abs(0.75 - (0.95 + 1.0 + 0.52 + 0.55) / 4)) / 6
    assert M.ece(y, p, bins=2) == pytest.approx(expected)
    r10 = M.reliability(y, p)
    assert np.isnan(r10.observed[2]) and r10.counts[2] == 0
    # matches scikit-learn's calibration_curve on the non-empty bins
    from sklearn.calibration import calibration_curve
    yy, pp, _, _ = _data()
    prob_true, prob_pred = calibration_curve(yy, pp, n_bins=10)
    r = M.reliability(yy, pp)
    full = r.counts > 0
    np.testing.assert_allclose(r.observed[full], prob_true, rtol=REL)
    np.testing.assert_allclose(r.mean_predicted[full], prob_pred, rtol=REL)


TH = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow")
COSTS = {"allow": {"phish": 100.0}, "warn": {"legit": 1.0, "phish": 5.0}, "block": {"legit": 20.0}}
LABELS = ("legit", "phish")


def test_confusion_follows_the_runtime_and_costs():
    y = np.array([1, 0, 1, 0, 1, 0, 0])
    s = np.array([0.95, 0.9, 0.6, 0.7, 0.1, np.nan, 0.59])
    counts = M.confusion_at_thresholds(y, s, TH, labels=LABELS)
    assert list(counts) == ["block", "warn", "allow"]
    assert counts == {"block": {"legit": 1.0, "phish": 1.0}, "warn": {"legit": 1.0, "phish": 1.0},
                      "allow": {"legit": 2.0, "phish": 1.0}}
    # the runtime's own chooser makes the same choices
    action, _ = TH.bind(["phish"]).batch(s[:, None])
    names = np.array(TH.actions)[action]
    for a in TH.actions:
        assert counts[a]["phish"] + counts[a]["legit"] == (names == a).sum()
    cost = 1 * 20 + 1 * 1 + 1 * 5 + 1 * 100
    assert M.expected_cost(counts, COSTS) == pytest.approx(1000 * cost / 7)


def _candidates(s, k):
    """Every distinct cut: each distinct score, each midpoint between neighbours (where an empty
    level can sit), and k values beyond either end."""
    u = np.unique(s)
    mids = (u[1:] + u[:-1]) / 2
    return [*u, *mids, *(u[-1] + i for i in range(1, k + 1)), *(u[0] - i for i in range(1, k + 1))]


def _cost_of(y, s, th, levels, w=None):
    return M.expected_cost(M.confusion_at_thresholds(y, s, th.with_levels(levels), weights=w, labels=LABELS), COSTS)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_best_thresholds_optimal_by_brute_force(data):
    n = data.draw(st.integers(2, 14))
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    s = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 0.8, 1.0]), min_size=n, max_size=n)))
    w = np.array(data.draw(st.lists(st.floats(0.1, 5.0), min_size=n, max_size=n)))
    best = M.best_thresholds(y, s, TH, COSTS, weights=w, labels=LABELS)
    assert list(best) == ["block", "warn"] and best["block"] > best["warn"]
    got = _cost_of(y, s, TH, best, w)
    cands = _candidates(s, 2)
    brute = min(_cost_of(y, s, TH, {"block": a, "warn": b}, w)
                for a, b in itertools.combinations(sorted(cands, reverse=True), 2))
    assert got == pytest.approx(brute, rel=1e-9, abs=1e-9)
    # one level
    one = Thresholds("phish", {"block": 0.5}, otherwise="allow")
    b1 = M.best_thresholds(y, s, one, COSTS, weights=w, labels=LABELS)
    c1 = M.expected_cost(M.confusion_at_thresholds(y, s, one.with_levels(b1), weights=w, labels=LABELS), COSTS)
    brute1 = min(M.expected_cost(M.confusion_at_thresholds(y, s, one.with_levels({"block": t}), weights=w,
                                                           labels=LABELS), COSTS) for t in cands)
    assert c1 == pytest.approx(brute1, rel=1e-9, abs=1e-9)


def test_best_thresholds_three_levels_brute_force():
    rng = np.random.default_rng(3)
    th = Thresholds("p", {"a": 0.9, "b": 0.6, "c": 0.3}, otherwise="d")
    costs = {"a": {"negative": 9.0}, "b": {"negative": 3.0, "positive": 2.0},
             "c": {"negative": 1.0, "positive": 6.0}, "d": {"positive": 12.0}}
    for _ in range(5):
        y = rng.integers(0, 2, 25)
        s = np.round(rng.random(25) * 8) / 8
        best = M.best_thresholds(y, s, th, costs)
        vals = list(best.values())
        assert vals == sorted(vals, reverse=True) and len(set(vals)) == 3

        def cost(levels, y=y, s=s):
            return M.expected_cost(M.confusion_at_thresholds(y, s, th.with_levels(levels)), costs)

        cands = sorted(_candidates(s, 3), reverse=True)
        brute = min(cost(dict(zip("abc", c, strict=True))) for c in itertools.combinations(cands, 3))
        assert cost(best) == pytest.approx(brute, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_metrics_invariant_to_row_order(seed):
    y, p, s, w = _data(n=300, seed=seed % 7, ties=5)
    perm = np.random.default_rng(seed).permutation(y.size)
    for fn, a in ((M.auc, s), (M.log_loss, p), (M.brier, p), (M.ece, p)):
        assert fn(y[perm], a[perm], weights=w[perm]) == pytest.approx(fn(y, a, weights=w), rel=1e-12)
    assert M.precision_recall_f1(y[perm], (p >= 0.5)[perm]) == M.precision_recall_f1(y, p >= 0.5)
    c1 = M.confusion_at_thresholds(y, s, TH, weights=w, labels=LABELS)
    c2 = M.confusion_at_thresholds(y[perm], s[perm], TH, weights=w[perm], labels=LABELS)
    for a in c1:
        assert c1[a] == pytest.approx(c2[a], rel=1e-12)
    assert M.best_thresholds(y, s, TH, COSTS, labels=LABELS) == M.best_thresholds(
        y[perm], s[perm], TH, COSTS, labels=LABELS)
    assert M.slice_vs_rest(y, s, s > 0.5, "error") == pytest.approx(
        M.slice_vs_rest(y[perm], s[perm], (s > 0.5)[perm], "error"), rel=1e-12)


def test_benjamini_hochberg_by_hand():
    # m = 6, alpha = 0.05: critical values k·0.05/6 = .0083 .0167 .025 .0333 .0417 .05
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.041]
    # sorted: .005 .01 .03 .04 .041 .2 ; largest k with p(k) ≤ crit: k=5 (.041 ≤ .0417)
    np.testing.assert_array_equal(M.benjamini_hochberg(p), [True, True, True, True, False, True])
    np.testing.assert_array_equal(M.benjamini_hochberg([0.02, 0.04, 0.9]), [False, False, False])
    np.testing.assert_array_equal(M.benjamini_hochberg([0.02, 0.04, 0.9], alpha=0.1), [True, True, False])
    assert M.benjamini_hochberg([]).shape == (0,)


def test_poisson_bootstrap_covers_and_respects_units():
    y, p, s, w = _data(n=1000)
    point = M.auc(y, s)
    lo, hi = M.poisson_bootstrap(M.auc, y, s, n=100, seed=1)
    assert lo < point < hi and hi - lo < 0.1
    assert M.poisson_bootstrap(M.auc, y, s, n=100, seed=1) == (lo, hi)
    # AUC's sort-once fast path equals the generic path
    generic = M.poisson_bootstrap(lambda a, b, weights: M.auc(a, b, weights=weights), y, s, n=100, seed=1)
    assert generic == pytest.approx((lo, hi), rel=1e-12)
    # one unit per 50 rows sharing a unit-level effect: the unit bootstrap is wider
    units = np.arange(1000) // 50
    y2 = (np.random.default_rng(0).random(20)[units] < 0.5).astype(int)
    lo_r, hi_r = M.poisson_bootstrap(M.brier, y2, p, n=200, seed=0)
    lo_u, hi_u = M.poisson_bootstrap(M.brier, y2, p, units=units, n=200, seed=0)
    assert hi_u - lo_u > hi_r - lo_r


def test_slice_vs_rest_flags_a_worse_slice():
    rng = np.random.default_rng(5)
    n = 4000
    y = rng.integers(0, 2, n)
    s = rng.normal(y * 2.0, 1.0)
    bad = np.arange(n) < 500
    s_bad = np.where(bad, rng.normal(y * 0.3, 1.0), s)
    assert M.slice_vs_rest(y, s_bad, bad, "auc") < 1e-6
    assert M.slice_vs_rest(y, s_bad, bad, "error", threshold=1.0) < 1e-6
    assert M.slice_vs_rest(y, s, bad, "auc") > 0.01
    assert M.slice_vs_rest(y, s_bad, ~bad, "auc") > 0.99  # the rest is not worse than the bad slice
    pvals = [M.slice_vs_rest(y, s, rng.random(n) < 0.2, "error", threshold=1.0) for _ in range(10)]
    assert not M.benjamini_hochberg(pvals).any()


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: M.auc([], []), "y"),
        (lambda: M.auc([0, 1], [0.1, np.nan]), "s"),
        (lambda: M.auc([0, 2], [0.1, 0.2]), "y"),
        (lambda: M.auc([1, 1], [0.1, 0.2]), "y"),
        (lambda: M.auc([0, 1], [0.1, 0.2], weights=[1, -1]), "weights"),
        (lambda: M.auc([0, 1], [0.1, 0.2, 0.3]), "s"),
        (lambda: M.log_loss([0, 1], [0.1, 1.2]), "p"),
        (lambda: M.brier([0, 1], [0.1, np.nan]), "p"),
        (lambda: M.precision_recall_f1([0, 1], [0, 3]), "predicted_positive"),
        (lambda: M.roc_curve([0, 0], [0.1, 0.2]), "y"),
        (lambda: M.pr_curve([0, 0], [0.1, 0.2]), "y"),
        (lambda: M.reliability([0, 1], [0.1, 0.2], bins=0), "bins"),
        (lambda: M.confusion_at_thresholds([0, 1], [0.1, 0.2], {"block": 0.5}), "thresholds"),
        (lambda: M.expected_cost({"allow": {"phish": 1}}, {"allow": {"phish": -1}}), "costs"),
        (lambda: M.best_thresholds([0, 1], [np.nan, np.nan], TH, COSTS, labels=LABELS), "s"),
        (lambda: M.benjamini_hochberg([0.1, 1.5]), "pvalues"),
        (lambda: M.slice_vs_rest([0, 1], [0.1, 0.2], [True, True]), "slice_mask"),
        (lambda: M.slice_vs_rest([0, 1], [0.1, 0.2], [True, False], metric="f1"), "metric"),
        (lambda: M.poisson_bootstrap(M.auc, [0, 1], [0.1, 0.2], n=5), "n"),
    ],
)
def test_bad_input_is_named(call, param):
    with pytest.raises(EvaluationError) as info:
        call()
    assert info.value.param == param
    assert f"'{param}'" in str(info.value) and "Got" in str(info.value)


def test_fast_on_a_million_rows():
    rng = np.random.default_rng(0)
    n = 1_000_000
    y = rng.integers(0, 2, n)
    p = rng.random(n)
    start = time.process_time()  # CPU time: what the metrics cost, whatever else the machine runs
    M.auc(y, p)
    M.log_loss(y, p)
    M.brier(y, p)
    M.roc_curve(y, p)
    M.ece(y, p)
    M.confusion_at_thresholds(y, p, TH)
    M.best_thresholds(y, p, TH, COSTS, labels=LABELS)
    assert time.process_time() - start < 5.0  # ≈ 0.5 s

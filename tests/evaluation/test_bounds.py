"""Goals as constraints on thresholds: the constrained search is the exact optimum among the
thresholds that keep every bound (checked against brute force), falls back to the cost optimum —
and says so — when none does, and reads its bounds from a system's goals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from closedloop.errors import EvaluationError
from closedloop.evaluation.bounds import RateBound, goal_bounds
from closedloop.evaluation.costs import best_thresholds, confusion_at_thresholds, constrained_thresholds, expected_cost
from closedloop.experience.experiences import Thresholds

TH = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow")
COSTS = {"allow": {"phish": 100.0}, "warn": {"legit": 1.0, "phish": 5.0}, "block": {"legit": 20.0}}
LABELS = ("legit", "phish")


def _rate(b: RateBound, y, s, w, values) -> float:
    flagged = s >= values[b.action]
    p, n = w[y == 1].sum(), w[y == 0].sum()
    fp, tp = w[flagged & (y == 0)].sum(), w[flagged & (y == 1)].sum()
    return {"false_positive_rate": fp / n, "recall": tp / p, "false_negative_rate": 1 - tp / p,
            "precision": tp / (tp + fp) if tp + fp else np.nan}[b.metric]


def _keeps(b, r) -> bool:
    return bool(np.isnan(r) or (r <= b.target if b.direction == "at_most" else r >= b.target))


def _brute(y, s, w, bounds):
    """The cheapest (block, warn) among every pair of cut points that keeps every bound."""
    u = np.unique(s)
    cands = list(u) + [u[-1] + 1.0]
    best = None
    for tb, tw in itertools.product(cands, cands):
        if not tb > tw:
            continue
        v = {"block": float(tb), "warn": float(tw)}
        if all(_keeps(b, _rate(b, y, s, w, v)) for b in bounds):
            c = expected_cost(confusion_at_thresholds(y, s, TH.with_levels(v), weights=w, labels=LABELS), COSTS)
            best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_bounded_search_is_the_exact_optimum_of_the_thresholds_that_keep_every_bound(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = (rng.random(n) < 0.3).astype(np.int64)
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 2)
    w = rng.choice([1.0, 2.0, 5.0], n)
    bounds = [RateBound("false_positive_rate", "block", 0.05, "at_most", "fb"),
              RateBound("recall", "warn", 0.8, "at_least", "rec")]
    values, report = constrained_thresholds(y, s, TH, COSTS, bounds, weights=w, labels=LABELS)
    want = _brute(y, s, w, bounds)
    if want is None:
        assert not any(r["feasible"] for r in report)
        assert values == best_thresholds(y, s, TH, COSTS, weights=w, labels=LABELS)  # the cost optimum
    else:
        assert all(r["feasible"] and r["kept"] for r in report)
        got = expected_cost(confusion_at_thresholds(y, s, TH.with_levels(values), weights=w, labels=LABELS), COSTS)
        assert got == pytest.approx(want)
        best = best_thresholds(y, s, TH, COSTS, weights=w, labels=LABELS)
        at_best = expected_cost(confusion_at_thresholds(y, s, TH.with_levels(best), weights=w, labels=LABELS), COSTS)
        for b, r in zip(bounds, report, strict=True):
            assert r["value"] == pytest.approx(_rate(b, y, s, w, values))
            # what keeping the bounds costs: both figures, and the goal's figure at the cost optimum
            assert r["cost_per_1k"] == pytest.approx(got) and r["cost_optimum_per_1k"] == pytest.approx(at_best)
            assert r["cost_optimum_per_1k"] <= r["cost_per_1k"] + 1e-9
            assert r["at_cost_optimum"] == pytest.approx(_rate(b, y, s, w, best))


def test_a_bound_no_threshold_can_keep_leaves_the_cost_optimum_and_says_so():
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0])
    s = np.array([0.9, 0.9, 0.8, 0.8, 0.2, 0.7, 0.6, 0.1])
    # recall ≥ 0.99 at 'warn' and no false positive at 'warn' at once: impossible on these rows
    bounds = [RateBound("recall", "warn", 0.99, "at_least", "rec"),
              RateBound("false_positive_rate", "warn", 0.0, "at_most", "fp")]
    values, report = constrained_thresholds(y, s, TH, COSTS, bounds, labels=LABELS)
    assert values == best_thresholds(y, s, TH, COSTS, labels=LABELS)
    assert [r["feasible"] for r in report] == [False, False]
    assert report[0]["goal"] == "rec" and report[0]["metric"] == "recall@warn" and report[0]["n"] == 4.0
    assert report[0]["cost_per_1k"] == report[0]["cost_optimum_per_1k"] > 0  # infeasible: the one figure
    assert report[0]["at_cost_optimum"] == report[0]["value"]


def test_no_bounds_is_the_plain_cost_optimum_and_bad_bounds_are_refused():
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.2).astype(np.int64)
    s = rng.random(200)
    assert constrained_thresholds(y, s, TH, COSTS, [], labels=LABELS) == (best_thresholds(y, s, TH, COSTS, labels=LABELS), [])
    with pytest.raises(EvaluationError, match="bounds.*one of the levels.*recall@allow"):
        constrained_thresholds(y, s, TH, COSTS, [RateBound("recall", "allow", 0.5, "at_least")], labels=LABELS)
    with pytest.raises(EvaluationError, match="metric"):
        RateBound("auc", "block", 0.5, "at_least")
    with pytest.raises(EvaluationError, match="target.*a rate in \\[0, 1\\]"):
        RateBound("recall", "block", 1.5, "at_least")


def test_the_phishing_systems_goals_bound_its_thresholds():
    from examples.phishing.system import phishing

    got = {(b.name, b.metric, b.action, b.target, b.direction) for b in goal_bounds(phishing)}
    assert got == {("false_block_rate", "false_positive_rate", "block", 0.001, "at_most"),
                   ("phish_recall", "recall", "warn", 0.9, "at_least")}


def test_goal_figures_read_a_confusion_table_at_each_operating_point():
    from closedloop.evaluation.bounds import goal_figures

    conf = {"block": {"legit": 2.0, "phish": 50.0}, "warn": {"legit": 10.0, "phish": 30.0},
            "allow": {"legit": 988.0, "phish": 20.0}}
    bounds = [RateBound("false_positive_rate", "block", 0.001, "at_most", "fb"),
              RateBound("recall", "warn", 0.9, "at_least", "rec")]
    fb, rec = goal_figures(bounds, conf, TH, LABELS)
    assert fb["value"] == pytest.approx(2 / 1000) and fb["n"] == 1000.0 and fb["met"] is False
    assert rec["value"] == pytest.approx(80 / 100) and rec["n"] == 100.0 and rec["met"] is False
    assert fb["ci"][0] < 0.002 < fb["ci"][1]


def _bundle(version, goals):
    return {"version": version, "quality": {"auc": 0.9}, "slices": {}, "mistakes": {"cost_per_1000": 10.0},
            "goals": goals}


def _goal(value, ci, met):
    return {"goal": "fb", "metric": "false_positive_rate@block", "target": 0.001, "direction": "at_most",
            "value": value, "ci": ci, "n": 10_000.0, "met": met}


def test_the_gate_refuses_a_candidate_that_breaks_a_goal_production_meets_beyond_the_noise():
    from closedloop.evaluation.gate import Gate

    base = _bundle("prod", [_goal(0.0008, [0.0004, 0.0015], True)])
    noisy = _bundle("cand", [_goal(0.0011, [0.0006, 0.0019], False)])  # past the target, within the noise
    broken = _bundle("cand", [_goal(0.003, [0.002, 0.0042], False)])
    assert Gate().check(base, noisy)["passed"]
    v = Gate().check(base, broken)
    assert not v["passed"] and "goal fb" in v["reasons"][0] and "breaks the target the baseline meets" in v["reasons"][0]
    assert Gate(goals_must_hold=False).check(base, broken)["passed"]
    # a goal production misses too is not the candidate's to keep (the goal-health alert says so)
    assert Gate().check(_bundle("prod", [_goal(0.004, [0.003, 0.005], False)]), broken)["passed"]

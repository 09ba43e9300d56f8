"""The evaluation report says what each threshold means: a cost-minimizing threshold
of 1.85 on a probability is "never: above every score", not a bug — in the JSON and the HTML."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from closedloop import Thresholds
from closedloop.evaluation import metrics as M
from closedloop.evaluation import render_html
from closedloop.evaluation.report import evaluate, measure
from closedloop.training import train
from support.pages import import_pages

TH = Thresholds("p", {"block": 0.9, "warn": 0.6}, otherwise="allow")
LABELS = ("legit", "phish")
#: blocking a legitimate page costs so much that no band of scores is worth blocking
NEVER_BLOCK = {"allow": {"phish": 100.0}, "warn": {"legit": 2.0, "phish": 10.0}, "block": {"legit": 1000.0, "phish": 20.0}}


def _data(n=4000, seed=3):
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.01, 0.93, n)
    y = (rng.random(n) < 0.5 * s).astype(np.int64)  # even the top scores are half legitimate
    return y, s


def test_a_threshold_above_every_score_is_said_to_mean_never():
    y, s = _data()
    body, _ = measure(y, s, TH, labels=LABELS, costs=NEVER_BLOCK)
    m = body["mistakes"]
    best = m["best_thresholds"]
    lo, hi = float(s.min()), float(s.max())
    assert body["score_range"] == {"min": lo, "max": hi, "probability": True}
    # the number: the highest score plus the scores' span — above 1 on a probability
    assert best["block"] == pytest.approx(hi + (hi - lo)) and best["block"] > 1.0
    said = m["best_thresholds_meaning"]
    assert said["block"].startswith("never: ") and f"{hi:.4g}" in said["block"] and "lowers the cost" in said["block"]
    taken = sum(m["best_confusion"]["warn"].values()) / y.size
    assert said["warn"] == f"score ≥ {best['warn']:.4g} ({taken:.1%} of the rows)"
    assert sum(m["best_confusion"]["block"].values()) == 0
    # the experience's own thresholds, in words too
    assert m["thresholds_meaning"]["block"].startswith("score ≥ 0.9 (")


def test_always_and_an_empty_band_and_raw_scores():
    rng = np.random.default_rng(5)
    s = rng.normal(0.0, 3.0, 3000)  # a raw score, not a probability
    y = (rng.random(s.size) < 1 / (1 + np.exp(-s))).astype(np.int64)
    body, _ = measure(y, s, TH, labels=LABELS, costs={"allow": {"phish": 100.0}, "warn": {"phish": 1.0},
                                                      "block": {"legit": 50.0}})
    assert body["score_range"]["probability"] is False
    said = body["mistakes"]["best_thresholds_meaning"]
    assert said["warn"].startswith("always: ") and "'warn' for every row the 'block' threshold leaves" in said["warn"]
    # a level squeezed to an empty band between two scores: never, though its number is in range
    th = TH.with_levels({"block": 0.5, "warn": 0.49})
    z = np.array([0.1, 0.2, 0.5, 0.7])
    counts = M.confusion_at_thresholds(np.array([0, 0, 1, 1]), z, th, labels=LABELS)
    words = M.explain_thresholds(th, {"block": 0.5, "warn": 0.49}, 0.1, 0.7, counts)
    assert words["block"] == "score ≥ 0.5 (50.0% of the rows)"
    assert words["warn"].startswith("never: no score falls between 0.49 and the 'block' threshold")


@pytest.fixture(scope="module")
def never_report(phishing, tmp_path_factory):
    from examples.phishing.data import generate

    root = tmp_path_factory.mktemp("never")
    cols, labels = generate(2000, 9, phish_rate=0.3)
    labels = labels.copy()
    flip = np.random.default_rng(1).random(labels.size) < 0.25  # noisy labels: no score band is pure
    labels[flip] = 1 - labels[flip]
    ds = import_pages(phishing, cols, labels, root)
    system = copy.copy(phishing)
    system.costs = NEVER_BLOCK
    bundle = train(system, ds.path, model="logistic").bundle
    return evaluate(system, [bundle], ds.path, bootstrap=0, golden=2)


def test_report_json_and_html_explain_best_thresholds(never_report):
    b = never_report["bundles"][0]
    m = b["mistakes"]
    assert m["best_thresholds"]["block"] > b["score_range"]["max"]
    assert m["best_thresholds_meaning"]["block"].startswith("never: ")
    page = render_html(never_report)
    assert "what it means" in page and m["best_thresholds_meaning"]["block"].replace("'", "&#x27;") in page
    assert "is not a probability above 1: it means the action is never taken" in page
    assert "scores of these rows range from" in page and "(probabilities)" in page

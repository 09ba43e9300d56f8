"""The goals' bootstrap intervals: a Poisson bootstrap by unit of each bounded rate, whose point
estimate is the confusion table's, which widens where a few heavy rows carry the rate (where a
Wilson interval over the weighted count does not), and which the report's goals and the gate use."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import Runtime
from closedloop.datasets.dataset import load_dataset
from closedloop.errors import EvaluationError
from closedloop.evaluation import bounds as B
from closedloop.evaluation.bounds import RateBound, bootstrap_rates, goal_figures, goal_intervals, unit_sums
from closedloop.evaluation.costs import confusion_at_thresholds
from closedloop.evaluation.gate import Gate
from closedloop.experience.experiences import Thresholds
from support.pages import import_pages

TH = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow")
LABELS = ("legit", "phish")
BOUNDS = [RateBound("false_positive_rate", "block", 0.01, "at_most", "fb"),
          RateBound("recall", "warn", 0.8, "at_least", "rec"),
          RateBound("precision", "warn", 0.5, "at_least", "prec"),
          RateBound("false_negative_rate", "block", 0.5, "at_most", "miss")]
#: two bounds whose rates are far from 0 and 1 on :func:`_rows`
MIDDLE = [RateBound("false_positive_rate", "warn", 0.2, "at_most", "fw"), BOUNDS[1]]


def _rows(n, seed, weights=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    s = np.clip(rng.normal(0.4 + 0.35 * y, 0.2), 0, 1)
    w = rng.choice([1.0, 2.0, 10.0], n) if weights else None
    return y, s, w


def _figures(y, s, w, bounds=BOUNDS):
    return goal_figures(bounds, confusion_at_thresholds(y, s, TH, weights=w, labels=LABELS), TH, LABELS)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_point_estimate_is_the_confusion_tables_and_the_interval_holds_it(weighted):
    y, s, w = _rows(3000, 1, weighted)
    s[:5] = np.nan  # a NaN score is never flagged, in the confusion table as here
    got = goal_intervals(BOUNDS, y, s, TH, weights=w, resamples=300, seed=2)
    for g, f in zip(got, _figures(y, s, w), strict=True):
        assert g["value"] == pytest.approx(f["value"], rel=1e-12)
        lo, hi = g["ci"]
        assert lo <= g["value"] <= hi and lo < hi


def test_the_interval_narrows_with_more_rows():
    widths = []
    for n in (500, 5000, 50_000):
        y, s, w = _rows(n, 3, True)
        got = goal_intervals(MIDDLE, y, s, TH, weights=w, resamples=200, seed=0)
        widths.append([g["ci"][1] - g["ci"][0] for g in got])
    w500, w5k, w50k = np.array(widths)
    assert (w5k < 0.6 * w500).all() and (w50k < 0.6 * w5k).all()


def test_rows_of_one_unit_move_together():
    y, s, _ = _rows(2000, 4)
    # each unit is ten rows with the same label and score: the same counts, a tenth of the draws
    yy, ss = np.repeat(y[:200], 10), np.repeat(s[:200], 10)
    units = np.repeat(np.arange(200), 10)
    grouped = goal_intervals(MIDDLE, yy, ss, TH, units=units, n_units=200, resamples=300, seed=1)
    rows_alone = goal_intervals(MIDDLE, yy, ss, TH, resamples=300, seed=1)
    for g, a in zip(grouped, rows_alone, strict=True):
        assert g["value"] == pytest.approx(a["value"])
        assert g["ci"][1] - g["ci"][0] > 2.0 * (a["ci"][1] - a["ci"][0])


def _heavy_rows():
    """20,000 legitimate pages of weight 1 and two of weight 30 — both blocked, the only false
    blocks: a weighted false-block rate of 60 / 20,060 ≈ 0.003, carried by two rows."""
    y = np.zeros(20_002, dtype=np.int64)
    y[:500] = 1
    s = np.full(y.size, 0.1)
    s[:500] = 0.95
    s[-2:] = 0.95
    w = np.ones(y.size)
    w[-2:] = 30.0
    return y, s, w


def test_heavy_weights_on_a_few_rows_widen_the_interval_where_wilson_does_not():
    y, s, w = _heavy_rows()
    fb = [RateBound("false_positive_rate", "block", 0.001, "at_most", "fb")]
    (wil,) = _figures(y, s, w, fb)
    (boot,) = goal_intervals(fb, y, s, TH, weights=w, resamples=400, seed=0)
    assert boot["value"] == pytest.approx(wil["value"]) == pytest.approx(60 / 19_560)
    assert wil["ci"][0] > 0.001  # Wilson over the weighted count: a break beyond the noise
    assert boot["ci"][0] <= 0.001 < boot["ci"][1]  # two rows: no draw of them at all is likely (e^-2)
    assert boot["ci"][1] - boot["ci"][0] > 3 * (wil["ci"][1] - wil["ci"][0])
    # the gate: a baseline that meets the target; the candidate's Wilson figure would be refused
    base = {"version": "prod", "quality": {"auc": 0.9}, "slices": {}, "mistakes": {"cost_per_1000": None},
            "goals": [{**wil, "value": 0.0005, "ci": [0.0002, 0.0009], "met": True}]}

    def cand(ci):
        return {**base, "version": "cand", "goals": [{**wil, "ci": ci, "met": False}]}

    assert not Gate().check(base, cand(wil["ci"]))["passed"]
    assert Gate().check(base, cand(boot["ci"]))["passed"]


def test_the_bootstrap_is_deterministic_for_a_seed_and_does_not_depend_on_the_chunks(monkeypatch):
    y, s, w = _rows(4000, 5, True)
    units = np.arange(y.size) // 3
    n_units = int(units.max()) + 1
    one = goal_intervals(BOUNDS, y, s, TH, weights=w, units=units, n_units=n_units, resamples=50, seed=7)
    assert goal_intervals(BOUNDS, y, s, TH, weights=w, units=units, n_units=n_units, resamples=50, seed=7) == one
    other = goal_intervals(BOUNDS, y, s, TH, weights=w, units=units, n_units=n_units, resamples=50, seed=8)
    assert [g["ci"] for g in other] != [g["ci"] for g in one]
    monkeypatch.setattr(B, "_DRAWS_AT_ONCE", 3 * n_units)  # three resamples at a time, the last chunk short
    chunked = goal_intervals(BOUNDS, y, s, TH, weights=w, units=units, n_units=n_units, resamples=50, seed=7)
    for c, g in zip(chunked, one, strict=True):
        assert c["ci"] == pytest.approx(g["ci"], rel=1e-12)


def test_bundles_share_the_draws_and_undefined_rates_have_no_interval():
    y, s, _ = _rows(1000, 6)
    a = unit_sums(BOUNDS, y, s, TH)
    b = unit_sums(BOUNDS, y, np.clip(s + 0.05, 0, 1), TH)
    both = bootstrap_rates(BOUNDS, [a, b], resamples=100, seed=3)
    assert both[0] == bootstrap_rates(BOUNDS, [a], resamples=100, seed=3)[0]
    assert both[1] == bootstrap_rates(BOUNDS, [b], resamples=100, seed=3)[0]
    # no positive flagged at warn or above: precision is undefined, and so is its interval
    (prec,) = goal_intervals([BOUNDS[2]], y, np.where(y == 1, 0.1, s), TH, resamples=50)
    assert prec["value"] is not None
    (none,) = goal_intervals([BOUNDS[2]], y, np.zeros(y.size), TH, resamples=50)
    assert none == {"value": None, "ci": None}
    # one positive, flagged: the resamples that draw it zero times (about e^-1) have no recall and
    # are skipped, the others all say 1
    y1 = np.zeros(1000, dtype=np.int64)
    y1[0] = 1
    (rec,) = goal_intervals([BOUNDS[1]], y1, np.ones(1000), TH, resamples=200, seed=0)
    assert rec == {"value": 1.0, "ci": [1.0, 1.0]}


def test_bad_input_is_refused_by_name():
    y, s, _ = _rows(100, 0)
    with pytest.raises(EvaluationError, match="'units'.*integers as long as the labels"):
        goal_intervals(BOUNDS, y, s, TH, units=np.zeros(5, dtype=np.int64), n_units=1)
    with pytest.raises(EvaluationError, match="'units'.*unit codes in \\[0, 3\\).*Got 7"):
        goal_intervals(BOUNDS, y, s, TH, units=np.r_[np.zeros(99, dtype=np.int64), 7], n_units=3)
    with pytest.raises(EvaluationError, match="'n_units'"):
        goal_intervals(BOUNDS, y, s, TH, units=np.zeros(100, dtype=np.int64))
    with pytest.raises(EvaluationError, match="'resamples'.*integer ≥ 1.*Got 0"):
        goal_intervals(BOUNDS, y, s, TH, resamples=0)
    with pytest.raises(EvaluationError, match="'level'"):
        goal_intervals(BOUNDS, y, s, TH, level=95)
    with pytest.raises(EvaluationError, match="'bounds'.*one of the levels.*recall@allow"):
        goal_intervals([RateBound("recall", "allow", 0.5, "at_least")], y, s, TH)
    with pytest.raises(EvaluationError, match="'sums'"):
        bootstrap_rates(BOUNDS, [unit_sums(BOUNDS, y, s, TH), unit_sums(BOUNDS[:1], y, s, TH)], resamples=5, seed=0)


# -- in the report, and the gate on it ------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    from examples.phishing.data import generate

    from closedloop.training import train

    root = tmp_path_factory.mktemp("goal_intervals")
    cols, labels = generate(4000, 21, phish_rate=0.3)
    ds = import_pages(phishing, cols, labels, root)
    model = train(phishing, ds.path, model="logistic").bundle
    table, ctx = load_dataset(ds.path, phishing)
    labeled = np.flatnonzero(np.asarray(table["label_value"].is_valid()))
    table, ctx = table.take(labeled), ctx.take(labeled)
    batch = Runtime(phishing, model).decide_batch({f.name: ctx.pylist(f.name) for f in phishing.schema.fields},
                                                  decision_ids=table["decision_id"].to_pylist(),
                                                  timestamps_ns=table["timestamp_ns"].to_numpy())
    units = np.asarray(table["unit"].cast(pa.string()).combine_chunks().dictionary_encode().indices, dtype=np.int64)
    y = table["label_value"].to_numpy().astype(np.int64)
    # the same rows with audit-like weights: most 1, a few 5 or 20
    shutil.copytree(ds.path, root / "weighted")
    data_w = pq.read_table(root / "weighted" / "data.parquet")
    heavy = np.random.default_rng(0).choice([1.0, 5.0, 20.0], data_w.num_rows, p=[0.9, 0.07, 0.03])
    data_w = data_w.set_column(data_w.column_names.index("weight"), "weight", pa.array(heavy))
    pq.write_table(data_w, root / "weighted" / "data.parquet")
    w = np.asarray(load_dataset(root / "weighted", phishing)[0]["weight"].to_numpy())[labeled]
    return {"ds": ds, "weighted": root / "weighted", "model": model, "y": y, "w": w,
            "s": np.asarray(batch.scores("phish"), dtype=np.float64), "units": units}


def _with_warn(phishing, model, warn):
    from closedloop.runtime.bundle import Bundle

    return Bundle.build(phishing, model.intelligence, thresholds={"block": 0.99, "warn": float(warn)})


def test_the_reports_goals_carry_the_bootstrap_interval_of_the_same_rows(phishing, world):
    from closedloop.evaluation.report import GOAL_RESAMPLES, evaluate

    model = world["model"]
    th = model.experience(phishing)
    bounds = B.goal_bounds(phishing)
    # the goals are audit-weighted whether or not the report's other figures are (weights=)
    for boot, resamples, weighted, report_weights in ((30, 30, False, False), (0, GOAL_RESAMPLES, False, False),
                                                      (30, 30, True, True), (30, 30, True, False)):
        rep = evaluate(phishing, [model], world["weighted"] if weighted else world["ds"].path, split="all",
                       bootstrap=boot, seed=4, golden=0, worst=0, weights=report_weights)
        goals = rep["bundles"][0]["goals"]
        want = goal_intervals(bounds, world["y"], world["s"], th, weights=world["w"] if weighted else None,
                              units=world["units"], n_units=int(world["units"].max()) + 1, resamples=resamples, seed=4)
        if weighted:
            assert all(g["weighted"] for g in goals)
            neg = float(world["w"][world["y"] == 0].sum())
            assert {g["goal"]: g for g in goals}["false_block_rate"]["n"] == pytest.approx(neg)
        assert [g["goal"] for g in goals] == [b.name for b in bounds]
        for g, x in zip(goals, want, strict=True):
            assert g["interval"] == "bootstrap" and g["value"] == pytest.approx(x["value"], rel=1e-12)
            assert g["ci"] == pytest.approx(x["ci"], rel=1e-9)
            assert set(g) >= {"value", "ci", "n", "met", "target", "direction", "metric"}


def test_the_gate_refuses_a_whole_interval_past_a_goal_and_passes_one_that_straddles_it(phishing, world):
    from closedloop.evaluation.report import evaluate

    y, s = world["y"], world["s"]
    pos = np.sort(s[y == 1])
    at_recall = {r: pos[int(round((1.0 - r) * pos.size))] for r in (0.97, 0.895, 0.6)}
    base = _with_warn(phishing, world["model"], at_recall[0.97])
    lax = Gate(max_auc_drop=1.0, cost_must_not_rise=False)

    def verdict(warn):
        rep = evaluate(phishing, [base, _with_warn(phishing, world["model"], warn)], world["ds"].path, split="all",
                       bootstrap=100, golden=0, worst=0, gate=lax)
        rec = {g["goal"]: g for g in rep["bundles"][1]["goals"]}["phish_recall"]
        assert {g["goal"]: g for g in rep["bundles"][0]["goals"]}["phish_recall"]["met"] is True
        return rep["gate"], rec

    gate, rec = verdict(at_recall[0.6])
    assert rec["ci"][1] < 0.9 and not gate["passed"]
    assert any("goal phish_recall" in r and "breaks the target the baseline meets" in r for r in gate["reasons"])
    gate, rec = verdict(at_recall[0.895])
    assert rec["value"] < 0.9 < rec["ci"][1] and rec["met"] is False  # below the target, within the noise
    assert gate["passed"], gate["reasons"]

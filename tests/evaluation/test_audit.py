"""A label policy's audit (``LabelPolicy(audit=...)``), weighted evaluation, and thresholds chosen
on rows the model was not fitted on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import (
    Bundle,
    F,
    Float,
    LabelPolicy,
    LinearModel,
    ManualClock,
    OutcomeRule,
    Runtime,
    SpecError,
    Str,
    System,
    Thresholds,
)
from closedloop.datasets import build_dataset
from closedloop.evaluation import Split
from closedloop.evaluation.report import measure
from closedloop.orchestration import LoopPlan
from closedloop.runtime.ids import DecisionIds
from closedloop.telemetry import SegmentLog, Telemetry
from closedloop.training.train import training_rows
from support.orchestration import DAY, START, compacted, make_system

RULES = [OutcomeRule("analyst_label", label=None, aggregate="latest"), OutcomeRule("reported_phish", label="phish")]


def _system(audit: str | None) -> System:
    return System(
        "audited",
        context=[Str("user_id"), Float("s")],
        unit="user_id",
        features={"s": F.col("s")},
        actions=["allow", "warn"],
        experience=Thresholds("phish", {"warn": 0.5}, otherwise="allow"),
        labels=("legit", "phish"),
        label_policy=LabelPolicy(timedelta(days=1), RULES, default="legit", action_defaults={"warn": None},
                                 audit=audit),
    )


def test_the_audit_alone_labels_a_hidden_band_and_stands_for_it(tmp_path: Path) -> None:
    """Warned pages hide their outcome: a warned user who clicks through a phishing page (30 %)
    may report it, one who goes back says nothing. Reports alone make the warn band look like
    phishing only; an unweighted audit under-represents the band. The audit — analysts labeling
    a random 20 % of warnings, weighted by warnings / audited warnings — gets both right."""
    rng = np.random.default_rng(3)
    n = 30_000
    s = np.round(rng.uniform(0.0, 1.0, n), 4)
    phish = rng.random(n) < s * 0.6  # P(phish | s) = 0.6 s
    home = tmp_path / "h"
    sys_plain = _system(None)
    tel = Telemetry(SegmentLog(home), system=sys_plain, clock=ManualClock(START + DAY).now_ns)
    rt = Runtime(sys_plain, Bundle.build(sys_plain, LinearModel({"s": 1.0}, 0.0, output="phish")), telemetry=tel,
                 ids=DecisionIds(1))
    ts = START + np.sort(rng.integers(0, 3600 * 10**9, n))
    b = rt.decide_batch({"user_id": [f"u{i}" for i in range(n)], "s": s.tolist()}, timestamps_ns=ts)
    ids, act = b.decision_ids.to_pylist(), np.asarray(b.action, dtype=object)
    warned = act == "warn"
    audited = warned & (rng.random(n) < 0.2)
    reported = phish & warned & (rng.random(n) < 0.3)
    for i in np.flatnonzero(audited):
        tel.log_outcome(ids[i], kind="analyst_label", value=float(phish[i]), event_ns=int(ts[i]) + 10**9, source="analyst")
    for i in np.flatnonzero(reported):
        tel.log_outcome(ids[i], kind="reported_phish", event_ns=int(ts[i]) + 2 * 10**9, source="user")
    tel.close()
    store = compacted(home)

    def build(audit: str | None, out: str) -> tuple[dict[str, list], object]:
        m = build_dataset(_system(audit), decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                          since_ns=START, until_ns=START + DAY, cutoff_ns=START + 3 * DAY, out=tmp_path / out)
        return pq.read_table(m.data_path).to_pydict(), m

    truth = float(phish[warned].mean())
    t, m = build("analyst_label", "audit")
    plain, m0 = build(None, "plain")
    assert "audit" not in m0.content and m.content["audit"]["kind"] == "analyst_label"
    band = m.content["audit"]["actions"]["warn"]
    assert band == {"decisions": int(warned.sum()), "audited": int(audited.sum()),
                    "weight": pytest.approx(warned.sum() / audited.sum())}
    pos = {d: i for i, d in enumerate(ids)}
    rows = np.array([pos[d] for d in t["decision_id"]])
    lab = np.array([np.nan if v is None else v for v in t["label_value"]], dtype=float)
    w = np.array(t["weight"])
    in_band = warned[rows]
    # in the hidden band only audited decisions are labeled — reports alone no longer label
    assert np.array_equal(~np.isnan(lab[in_band]), audited[rows][in_band])
    assert np.all(w[in_band & ~np.isnan(lab)] == pytest.approx(warned.sum() / audited.sum()))
    assert np.all(w[~in_band] == 1.0)  # the allowed rows keep their labels (default legit) and weights
    sel = in_band & ~np.isnan(lab)
    est = float((w[sel] * lab[sel]).sum() / w[sel].sum())
    se = float(np.sqrt(lab[sel].var() / sel.sum()))
    assert abs(est - truth) < 3 * se, (est, truth, se)
    # without the audit, every report labels its row: the band looks far more phishing than it is
    lab0 = np.array([np.nan if v is None else v for v in plain["label_value"]], dtype=float)
    rows0 = np.array([pos[d] for d in plain["decision_id"]])
    sel0 = warned[rows0] & ~np.isnan(lab0)
    assert float(lab0[sel0].mean()) > truth + 6 * se
    # the band's share of the labeled population: weighted, it is the band's share of the decisions
    labeled = ~np.isnan(lab)
    assert float(w[labeled & in_band].sum() / w[labeled].sum()) == pytest.approx(warned.mean(), rel=1e-9)
    # evaluation on that population: weights=True weighs each labeled row by the dataset's weight
    from closedloop.evaluation.report import evaluate

    sysa = _system("analyst_label")
    lo = Bundle.build(sysa, LinearModel({"s": 1.0}, 0.0, output="phish"), thresholds={"warn": 0.3})
    hi = Bundle.build(sysa, LinearModel({"s": 1.0}, 0.0, output="phish"), thresholds={"warn": 0.7})
    rep_w = evaluate(sysa, [lo, hi], m.path, split="all", bootstrap=0, weights=True)
    rep_u = evaluate(sysa, [lo, hi], m.path, split="all", bootstrap=0)
    assert rep_w["metadata"]["weighted"] is True and rep_u["metadata"]["weighted"] is False
    for rep, ww in ((rep_w, w), (rep_u, np.ones_like(w))):
        for b, t in zip(rep["bundles"], (0.3, 0.7), strict=True):
            warn = s[rows] >= t
            warned_legit = (ww * (labeled & warn & (lab == 0))).sum()
            assert b["mistakes"]["confusion"]["warn"]["legit"] == pytest.approx(warned_legit, rel=1e-9)


def test_label_policy_audit_is_validated_and_described() -> None:
    with pytest.raises(SpecError, match="'audit' must be the outcome kind of one of its rules"):
        LabelPolicy(timedelta(days=1), RULES, audit="analyst")
    p = _system("analyst_label").label_policy
    assert p.describe()["audit"] == "analyst_label"
    assert "audit" not in _system(None).label_policy.describe()  # a policy without it keeps its description


def test_weighted_measure_equals_repeating_rows() -> None:
    """A row of weight k counts as k rows: AUC, precision, recall, confusion and cost agree with
    the unweighted figures on the rows repeated."""
    rng = np.random.default_rng(0)
    n = 500
    y = (rng.random(n) < 0.3).astype(np.int64)
    s = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0, 1), 3)
    k = rng.integers(1, 4, n)
    th = Thresholds("p", {"block": 0.8, "warn": 0.5}, otherwise="allow")
    costs = {"allow": {"pos": 50.0}, "warn": {"neg": 1.0, "pos": 5.0}, "block": {"neg": 20.0}}
    a, _ = measure(y, s, th, labels=("neg", "pos"), costs=costs, weights=k.astype(float))
    b, _ = measure(np.repeat(y, k), np.repeat(s, k), th, labels=("neg", "pos"), costs=costs)
    for key in ("auc", "precision", "recall", "f1", "log_loss", "brier"):
        assert a["quality"][key] == pytest.approx(b["quality"][key], rel=1e-9), key
    assert a["mistakes"]["cost_per_1000"] == pytest.approx(b["mistakes"]["cost_per_1000"], rel=1e-9)
    assert a["mistakes"]["confusion"] == b["mistakes"]["confusion"]  # integer weights: exact sums
    assert a["mistakes"]["best_thresholds"] == b["mistakes"]["best_thresholds"]


def test_calibration_rows_are_held_out_of_the_fit_and_of_the_test_side() -> None:
    n = 4000
    table = pa.table({"unit": [f"u{i % 700}" for i in range(n)], "timestamp_ns": list(range(n))})
    sp = Split("unit", 0.2, seed=5)
    fit, cal, test = training_rows(table, sp, True)
    plain_fit, none, plain_test = training_rows(table, sp, False)
    assert none.size == 0 and np.array_equal(test, plain_test)
    assert np.array_equal(np.sort(np.r_[fit, cal]), plain_fit)  # the train side, split in two
    units = np.asarray(table["unit"].to_pylist())
    assert not set(units[fit]) & set(units[cal]) and not set(units[cal]) & set(units[test])
    assert 0.1 < cal.size / plain_fit.size < 0.3


def test_loop_plan_weights_flags_are_validated() -> None:
    system = make_system()
    assert LoopPlan(system, evaluate_weights=True).describe()["evaluate_weights"] is True
    with pytest.raises(SpecError, match="'evaluate_weights' parameter of LoopPlan must be True or False"):
        LoopPlan(system, evaluate_weights=1)
    assert LoopPlan(system, early_labels=True).describe()["early_labels"] is True
    assert "early_labels" not in LoopPlan(system).describe()  # a plan without it describes as before
    with pytest.raises(SpecError, match="'early_labels' parameter of LoopPlan must be True or False. Got 'y'"):
        LoopPlan(system, early_labels="y")

"""Doubly robust (and direct-method) policy learning on the bandit world, judged by the TRUE value of
the learned policies (the world knows every click probability), and by the off-policy gate: a
policy trained on rewards shifted by one slot (a broken pipeline) is refused, one trained on the
right rewards passes. The logs go through a real Runtime and Telemetry (seeded decision ids) and
build_reward_dataset."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, Runtime
from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE
from closedloop.datasets.slots import build_reward_dataset
from closedloop.errors import DatasetError, IntelligenceError, SpecError
from closedloop.evaluation.gate import Gate
from closedloop.evaluation.report import evaluate
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.ids import DecisionIds
from closedloop.system.splits import split as split_rows
from closedloop.system.splits import unit_is_test
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.training.policy import train_policy
from closedloop.training.pseudo_rewards import (
    PolicyRows,
    check_click_rewards,
    policy_rows,
    pseudo_rewards,
    reward_predictions,
    slot_table,
)
from closedloop.world.bandit import CATEGORIES, BanditWorld

T0 = 1_700_000_000 * 10**9
S = 10**9


def _logged(home, world, system, contexts, seed=1):
    """The heuristic decides ``contexts`` through a Runtime logging to Telemetry; the world clicks →
    the reward dataset built from that telemetry."""
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home / "tel"), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, world.heuristic()), telemetry=tel, clock=clock, ids=DecisionIds(seed=seed))
    world.log(rt, contexts, tel, t0_ns=T0, seed=seed)
    tel.close()
    store = TelemetryStore(home / "tel")
    store.compact()
    n = len(contexts)
    return build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                since_ns=T0, until_ns=T0 + (n + 10) * S, cutoff_ns=T0 + (n + 10**4) * S, out=home / "ds")


def _value(world, system, intelligence, contexts):
    """The true expected clicks per decision of ranking greedily by ``intelligence``."""
    greedy = world.system(k=system.experience.k, features="misspecified" if "north_news" not in system.features.index
                          else "full")
    return world.true_value(greedy, Bundle.build(greedy, intelligence), contexts)


@pytest.fixture(scope="module")
def k1(tmp_path_factory):
    """Two worlds, each logged by its skewed heuristic (Softmax(0.05) over its quality score)."""
    out = {}
    for seed in (0, 4):
        world = BanditWorld(seed=seed)
        system = world.system(k=1, features="misspecified", explore=Softmax(0.05))
        m = _logged(tmp_path_factory.mktemp(f"k1-{seed}"), world, system, world.contexts(5000, seed=1))
        out[seed] = (world, system, m)
    return out


@pytest.mark.parametrize("seed", [0, 4])
def test_dr_and_dm_policies_beat_the_skewed_logger_by_their_true_value(k1, seed):
    world, system, m = k1[seed]
    ctxs = world.contexts(2000, seed=99)
    logger = world.true_value(system, Bundle.build(system, world.heuristic()), ctxs)
    heuristic = _value(world, system, world.heuristic(), ctxs)
    dm = _value(world, system, train_policy(system, m.path, objective="dm").model, ctxs)
    dr = _value(world, system, train_policy(system, m.path, objective="dr").model, ctxs)
    oracle = float(np.mean([world.click_probability(c).max() for c in ctxs]))
    assert dr > logger + 0.05 and dm > logger + 0.05  # both learn far past the policy that logged them
    assert dr > heuristic + 0.01 and dm > heuristic + 0.01  # and past the heuristic without its exploration
    # in this world the logger selects on quality, a feature both models see: DM's fit is not
    # selection-biased, and DR (unbiased, noisier) matches it — within 0.005, here at or above it
    assert dr >= dm - 0.005
    assert max(dr, dm) < oracle  # the misspecified features cannot see a segment's taste


def test_dr_corrects_a_miscalibrated_reward_model_it_is_given(k1):
    """The heuristic's score as r̂ (far above the true click rates): ranking by it is the heuristic;
    DR's residuals, weighted by the logged propensities, correct it where the log has evidence."""
    world, system, m = k1[4]
    ctxs = world.contexts(2000, seed=99)
    given = Bundle.build(system, world.heuristic())
    run = train_policy(system, m.path, reward_model=given)
    assert run.metrics["lineage"]["reward_model"] == {"source": "given", "version": given.version, "cross_fitted": False}
    dr, dm = _value(world, system, run.model, ctxs), _value(world, system, world.heuristic(), ctxs)  # DM: rank by r̂
    logger = world.true_value(system, given, ctxs)
    assert dr > dm + 0.01 and dm > logger + 0.01  # with a misspecified reward model DR beats DM, and both the logger


def test_the_run_carries_lineage_metrics_and_a_bundle_the_runtime_serves_alike(k1, tmp_path):
    world, system, m = k1[0]
    run = train_policy(system, m.path, objective="dr", clip=5.0, parent="v0")
    lin = run.metrics["lineage"]
    assert (lin["objective"], lin["dataset_kind"], lin["dataset_id"], lin["parent"]) == ("dr", "reward", m.id, "v0")
    # the train side of the system's split, exactly: the decisions of its slot rows
    table = pq.read_table(m.path / "data.parquet", columns=["decision_id", "unit", "timestamp_ns"])
    train_idx, _ = split_rows(table, system.split)
    n_train = len(set(table["decision_id"].take(pa.array(train_idx)).to_pylist()))
    assert lin["candidate_sets"]["decisions"] == lin["candidate_sets"]["decisions_read"] == n_train
    assert lin["pseudo_rewards"]["rows"] == 10 * n_train and lin["pseudo_rewards"]["shown"] == n_train
    assert lin["pseudo_rewards"]["clip"] == 5.0 and lin["pseudo_rewards"]["clipped"] > 0
    rm = lin["reward_model"]
    assert rm["cross_fitted"] and rm["folds"] == 2 and sum(rm["fold_rows"]) == 10 * n_train and min(rm["fold_rows"]) > 0
    assert run.metrics["train"]["auc"] > 0.6 and run.metrics["heldout"]["auc"] > 0.6 and run.metrics["heldout"]["n"] > 0
    dm = train_policy(system, m.path, objective="dm")
    assert dm.metrics["lineage"]["objective"] == "dm" and dm.metrics["lineage"]["dataset_kind"] == "reward"
    # saved and loaded (JSON weights, no code), it decides the same one by one and in a batch, bitwise
    run.bundle.save(tmp_path / "b")
    rt = Runtime(system, Bundle.load(tmp_path / "b"))
    ctxs = world.contexts(50, seed=7)
    one = [rt.decide(c, decision_id=f"{i:032x}", timestamp_ns=T0) for i, c in enumerate(ctxs)]
    req = {f: [c[f] for c in ctxs] for f in ("user_id", "segment", "hour")}
    flat = [x for c in ctxs for x in c["candidates"]]
    cand = {f: [x[f] for x in flat] for f in ("item_id", "category", "quality", "age_hours")}
    cand["request"] = np.repeat(np.arange(len(ctxs)), world.n_candidates)
    batch = rt.decide_batch(req, candidates=cand, decision_ids=[f"{i:032x}" for i in range(len(ctxs))],
                            timestamps_ns=[T0] * len(ctxs))
    for i, d in enumerate(one):
        assert d.ranking == batch[i].ranking and d.scores == batch[i].scores


def test_a_lightgbm_policy_learns_too(k1):
    world, system, m = k1[4]
    ctxs = world.contexts(2000, seed=99)
    run = train_policy(system, m.path, model="lightgbm")
    assert run.metrics["lineage"]["policy_model"]["objective"] == "regression" and run.bundle.intelligence.kind == "lightgbm"
    assert _value(world, system, run.model, ctxs) > world.true_value(system, Bundle.build(system, world.heuristic()), ctxs) + 0.05


def test_cross_fitting_a_candidates_reward_prediction_comes_from_the_other_folds_units(k1):
    """Flip the rewards of one fold's shown slots: that fold's r̂ (fitted on the other fold) does not
    move by a bit; the other fold's does."""
    _, system, m = k1[0]
    rows = policy_rows(system, m.path, slot_table(m.path, None), m.id)

    def predictions(r):
        return reward_predictions(system, r, model="logistic", params={}, reward_model=None,
                                  y_shown=check_click_rewards(r, m.id), seed=3)[0]

    fold = unit_is_test(pa.array(rows.units.tolist(), pa.string()), 0.5, 3)
    before = predictions(rows)
    after = predictions(replace(rows, reward=np.where(fold & rows.shown, 1.0 - rows.reward, rows.reward)))
    assert 0 < fold.sum() < fold.size
    assert np.array_equal(before[fold], after[fold]) and np.abs(before[~fold] - after[~fold]).max() > 0.05


def test_what_load_dataset_returned_is_used_as_read(k1):
    from closedloop.datasets.dataset import load_dataset

    _, system, m = k1[0]
    a = train_policy(system, m.path)
    b = train_policy(system, m.path, loaded=load_dataset(m.path, system))
    assert a.bundle.intelligence.to_dict({}) == b.bundle.intelligence.to_dict({})


def test_the_pseudo_reward_corrects_shown_candidates_by_their_clipped_inverse_propensity():
    rows = PolicyRows(cols=None, X=np.zeros((4, 1)), units=np.array(["a"] * 4, dtype=object),
                      shown=np.array([True, False, True, True]), reward=np.array([1.0, np.nan, 0.0, 1.0]),
                      propensity=np.array([0.5, np.nan, 0.01, 1.0]), counts={})
    r_hat = np.array([0.2, 0.3, 0.4, 0.5])
    gamma, fig = pseudo_rewards(rows, r_hat, clip=20.0)
    assert gamma.tolist() == [0.2 + 2.0 * 0.8, 0.3, 0.4 + 20.0 * -0.4, 0.5 + 0.5]
    assert (fig["rows"], fig["shown"], fig["clipped"], fig["clip"]) == (4, 3, 1, 20.0)
    assert pseudo_rewards(rows, r_hat, clip=1.0)[0].tolist() == [1.0, 0.3, 0.0, 1.0]  # clip 1: the shown reward itself


# -- the gate refuses a policy learned from a broken pipeline ----------------------------------------
def _catalogue_contexts(world, n, seed, items=30):
    """``world``'s requests, each with 10 of a catalogue of ``items`` recurring items (so an item is
    logged at every slot across decisions: the policy value's support check has evidence)."""
    rng = np.random.default_rng([seed, 77])
    catalogue = [{"item_id": f"it{i}", "category": CATEGORIES[i % len(CATEGORIES)], "quality": float(rng.beta(2.0, 2.5)),
                  "age_hours": float(rng.exponential(12.0))} for i in range(items)]
    return [{**c, "candidates": [dict(catalogue[j]) for j in rng.choice(items, size=world.n_candidates, replace=False)]}
            for c in world.contexts(n, seed=seed)]


def _shifted_by_one_slot(src, dst):
    """A copy of the reward dataset whose slot j carries slot j + 1's reward (the last slot: 0)."""
    shutil.copytree(src, dst)
    t = pq.read_table(dst / "data.parquet")
    by = dict(zip(zip(t["decision_id"].to_pylist(), t["position"].to_pylist(), strict=True), t["reward"].to_pylist(),
                  strict=True))
    shifted = [by.get((d, p + 1), 0.0) for d, p in zip(t["decision_id"].to_pylist(), t["position"].to_pylist(), strict=True)]
    assert shifted != t["reward"].to_pylist()
    pq.write_table(t.set_column(t.column_names.index("reward"), "reward", pa.array(shifted, pa.float64())), dst / "data.parquet")


def test_a_policy_trained_on_rewards_shifted_by_one_slot_is_refused_by_the_gate(tmp_path):
    """3 slots of 6 candidates. The report's policy value ranks each decision's whole logged candidate
    set: the broken policy's whole 95% interval against production is below 0, the right one's above."""
    world = BanditWorld(seed=0, n_candidates=6)
    system = world.system(k=3, features="full", explore=Softmax(0.1))
    m = _logged(tmp_path / "log", world, system, _catalogue_contexts(world, 5000, seed=1))
    _shifted_by_one_slot(m.path, tmp_path / "shifted")
    production = Bundle.build(system, world.heuristic(), version="heuristic")
    run = train_policy(system, m.path)
    right, broken = run.bundle, train_policy(system, tmp_path / "shifted").bundle
    figures = run.metrics["lineage"]["pseudo_rewards"]
    assert figures["shown"] == 3 * run.metrics["lineage"]["candidate_sets"]["decisions"] and figures["rows"] == 2 * figures["shown"]
    ctxs = _catalogue_contexts(world, 2000, seed=5)
    truth = {b.version: world.true_value(system, b, ctxs) for b in (production, right, broken)}
    assert truth[right.version] > truth[production.version] > truth[broken.version]
    gate = Gate(policy_estimator="snips")
    passed = evaluate(system, [production, right], m.path, gate=gate, bootstrap=100, seed=1)["gate"]
    refused = evaluate(system, [production, broken], m.path, gate=gate, bootstrap=100, seed=1)["gate"]
    assert passed["passed"] and passed["reasons"] == [] and passed["ci"][0] > 0
    assert not refused["passed"] and refused["estimator"] == "snips" and refused["ci"][1] < 0 < passed["difference"]
    assert any(r.startswith("the candidate's policy value by snips is -") for r in refused["reasons"])


# -- refusals -----------------------------------------------------------------------------------------
def test_bad_arguments_are_refused_naming_them(k1):
    world, system, m = k1[0]
    with pytest.raises(SpecError, match=r"'objective' parameter of train_policy must be one of \['dr', 'dm'\]. Got 'ips'"):
        train_policy(system, m.path, objective="ips")
    with pytest.raises(SpecError, match=r"'model' parameter of train_policy must be one of .*Got 'sklearn:x:y'"):
        train_policy(system, m.path, model="sklearn:x:y")
    with pytest.raises(SpecError, match=r"'clip' parameter of train_policy must be a finite number ≥ 1 .*Got 0.5"):
        train_policy(system, m.path, clip=0.5)
    with pytest.raises(SpecError, match=r"'params' parameter of train_policy must be a mapping. Got \['C'\]"):
        train_policy(system, m.path, params=["C"])
    with pytest.raises(SpecError, match=r"'reward_model' parameter of train_policy applies to objective 'dr'"):
        train_policy(system, m.path, objective="dm", reward_model=Bundle.build(system, world.heuristic()))
    with pytest.raises(SpecError, match=r"'reward_model' parameter of train_policy must be a Bundle whose intelligence "
                                        r"outputs 'score' \(the predicted reward\). Got 'model.json'"):
        train_policy(system, m.path, reward_model="model.json")


def test_a_system_without_candidates_is_refused():
    from closedloop import Float, Str, System, Thresholds
    from closedloop.context import features as F

    s = System("t", context=[Str("uid"), Float("x")], unit="uid", features={"x": F.col("x")}, actions=["no", "yes"],
               experience=Thresholds("p", {"yes": 0.5}, otherwise="no"), labels=("neg", "pos"))
    with pytest.raises(SpecError, match=r"train_policy learns a ranking policy: the 'system' must have candidates"):
        train_policy(s, "nowhere")


def _copy(m, tmp_path):
    shutil.copytree(m.path, tmp_path / "ds")
    return tmp_path / "ds", pq.read_table(tmp_path / "ds" / "data.parquet")


def test_a_dataset_without_candidate_sets_is_refused_naming_the_file(k1, tmp_path):
    _, system, m = k1[0]
    ds, _ = _copy(m, tmp_path)
    (ds / CANDIDATE_SETS_FILE).unlink()
    with pytest.raises(DatasetError, match=r"needs each decision's whole candidate set.* no candidate_sets.parquet instead"):
        train_policy(system, ds)
    assert train_policy(system, ds, objective="dm").metrics["lineage"]["objective"] == "dm"  # DM needs the shown slots only


def test_a_non_finite_or_graded_reward_is_refused_naming_it(k1, tmp_path):
    _, system, m = k1[0]
    ds, t = _copy(m, tmp_path)
    r = t["reward"].to_pylist()
    r[0] = float("inf")
    pq.write_table(t.set_column(t.column_names.index("reward"), "reward", pa.array(r, pa.float64())), ds / "data.parquet")
    first = t["decision_id"][0].as_py()
    with pytest.raises(IntelligenceError, match=rf"'reward' of dataset .* must be finite to learn a policy. Got inf instead "
                                                rf"\(decision '{first}', slot 1; 1 such slots\)"):
        train_policy(system, ds, split=_all_train())
    r[0] = 2.5
    pq.write_table(t.set_column(t.column_names.index("reward"), "reward", pa.array(r, pa.float64())), ds / "data.parquet")
    with pytest.raises(IntelligenceError, match=r"must be 0 or 1 for the reward model fitted here .* Got 2.5 instead"):
        train_policy(system, ds, split=_all_train())


def _all_train():
    from closedloop.system.splits import Split

    return Split("unit", 0.01, seed=123)


def test_decisions_without_a_reward_or_a_propensity_are_left_out_and_counted(k1, tmp_path):
    """k = 1: a decision without a reward has no slot row to split (train leaves such rows out before
    its split too); one whose shown slot has no propensity in (0, 1] is read and left out, counted."""
    _, system, m = k1[0]
    ds, t = _copy(m, tmp_path)
    r, p = t["reward"].to_pylist(), t["propensity"].to_pylist()
    r[0], p[1], p[2] = None, 0.0, None
    t = t.set_column(t.column_names.index("reward"), "reward", pa.array(r, pa.float64()))
    t = t.set_column(t.column_names.index("propensity"), "propensity", pa.array(p, pa.float64()))
    pq.write_table(t, ds / "data.parquet")
    sp = _all_train()
    rewarded = t.filter(pa.array([x is not None for x in r]))
    train_idx, _ = split_rows(rewarded, sp)
    on_train = set(rewarded["decision_id"].take(pa.array(train_idx)).to_pylist())
    no_propensity = [i for i in (1, 2) if t["decision_id"][i].as_py() in on_train]
    counts = train_policy(system, ds, split=sp).metrics["lineage"]["candidate_sets"]
    assert t["decision_id"][0].as_py() not in on_train and len(no_propensity) == 2
    assert counts == {"decisions_read": len(on_train), "decisions": len(on_train) - 2, "without_propensity": 2}

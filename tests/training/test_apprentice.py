"""Apprentice mode in the bandit world: a candidate trained to imitate the heuristic that logged the
data ranks like it on held-out requests (and a bundle that ranks by something unrelated does not);
a candidate later trained on the rewards of the same logs beats the apprentice by the ranking
report's policy value (the gate passes it against the apprentice as production) and by the truth."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, LogisticModel
from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, read_candidate_sets
from closedloop.errors import DatasetError, IntelligenceError, SpecError
from closedloop.evaluation.agreement import log_agreement
from closedloop.evaluation.gate import Gate
from closedloop.evaluation.report import evaluate
from closedloop.experience.exploration import Softmax
from closedloop.training import train
from closedloop.training.apprentice import LABEL_RULE, imitation_rows, train_apprentice
from closedloop.training.train import training_rows
from closedloop.world.bandit import BanditWorld
from support.apprentice import contexts, log_dataset

N = 6  # candidates per request, all shown (k = N): the ranking report values a ranking of the logged slate


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apprentice")
    world = BanditWorld(seed=1, n_candidates=N)
    system = world.system(k=N, explore=Softmax(0.07))  # the heuristic, exploring lightly
    heuristic = Bundle.build(system, world.heuristic())
    m = log_dataset(world, system, heuristic, contexts(world, 6000, seed=1), tmp / "log", seed=1)
    run = train_apprentice(system, m.path)
    return world, system, heuristic, m, run, tmp


def _unrelated(system):
    """A bundle that ranks by age: independent of the quality the heuristic ranks by."""
    return Bundle.build(system, LogisticModel({"age": 0.1}, intercept=0.0, output="score"), version="by-age")


def test_an_apprentice_ranks_like_the_heuristic_on_held_out_requests_and_an_unrelated_bundle_does_not(logged):
    world, system, heuristic, _, run, tmp = logged
    # held-out requests the heuristic decided greedily: its own first choices, no draw
    greedy = log_dataset(world, world.system(k=N), heuristic, contexts(world, 1500, seed=7), tmp / "greedy", seed=7)
    mine = log_agreement(system, run.bundle, greedy.path, split="all")
    assert mine["n"] == 1500 and mine["agreement"] >= 0.9 and mine["interval"][0] >= 0.85, mine
    assert log_agreement(system, heuristic, greedy.path, split="all")["agreement"] == 1.0
    other = log_agreement(system, _unrelated(system), greedy.path, split="all")
    assert abs(other["agreement"] - 1 / N) < 0.05 and other["interval"][1] < 0.3, other
    assert mine["interval"][0] > other["interval"][1]


def test_on_the_explored_log_the_apprentice_reaches_the_heuristics_own_ceiling(logged):
    _, system, heuristic, m, run, _ = logged
    got = run.metrics["apprentice"]
    again = log_agreement(system, run.bundle, m.path)  # through the runtime, the same held-out side
    assert (got["agreement"], got["n"], got["interval"]) == (again["agreement"], again["n"], again["interval"])
    ceiling = log_agreement(system, heuristic, m.path)["agreement"]  # the logger's draw kept its top candidate
    assert 0.6 < ceiling < 0.9 and abs(got["agreement"] - ceiling) < 0.03, (got, ceiling)
    assert got["interval"][0] < got["agreement"] < got["interval"][1] and got["units"] > 50


def test_each_shown_slot_is_one_choice_among_the_candidates_not_shown_above_it(logged):
    _, system, _, m, run, _ = logged
    lineage = run.metrics["lineage"]
    assert lineage["objective"] == "imitate" and lineage["dataset_kind"] == "reward" and lineage["dataset_id"] == m.id
    rows = pq.read_table(m.data_path)
    fit_rows = training_rows(rows, system.split, False)[0]
    sets = read_candidate_sets(system, m.path, rows=rows.take(fit_rows))
    idx, y, counts = imitation_rows(system, sets)
    d = sets.n_decisions
    assert lineage["imitation_rows"] == {"label": LABEL_RULE, **counts, "excluded": {}}
    assert counts == {"decisions": d, "choices": N * d, "rows": d * N * (N + 1) // 2, "slots_missing": 0}
    # the same rows read by hand: for each decision and slot j, its candidates not shown above j, the one at j labeled 1
    expect = Counter()
    for k in range(d):
        for c in range(sets.offsets[k], sets.offsets[k + 1]):
            for j in range(1, N + 1):
                if sets.slot[c] == 0 or sets.slot[c] >= j:
                    expect[(c, int(sets.slot[c] == j))] += 1
    assert Counter(zip(idx.tolist(), y.tolist(), strict=True)) == expect
    assert run.metrics["train"]["n"] == counts["rows"] and run.metrics["heldout"]["auc"] > 0.6
    again = train_apprentice(system, m.path, loaded=rows)  # the slot rows the caller has: the same fit
    assert again.metrics["apprentice"] == run.metrics["apprentice"] and again.metrics["heldout"] == run.metrics["heldout"]


def test_a_reward_trained_candidate_beats_the_apprentice_by_the_policy_value_and_by_the_truth(logged):
    world, system, heuristic, m, run, _ = logged
    rewarded = train(system, m.path)  # the reward model of the same logs, ranked greedily by the runtime
    rep = evaluate(system, [run.bundle, rewarded.bundle], m.path, bootstrap=100, seed=1, gate=Gate(policy_estimator="snips"))
    g = rep["gate"]
    assert g["passed"] and g["reasons"] == [] and g["ci"][0] > 0.0, g
    back = evaluate(system, [rewarded.bundle, run.bundle], m.path, bootstrap=100, seed=1, gate=Gate(policy_estimator="snips"))
    assert not back["gate"]["passed"]
    greedy = world.system(k=N)
    fresh = contexts(world, 3000, seed=9)
    truth = {name: world.true_value(greedy, b, fresh) for name, b in
             (("heuristic", heuristic), ("apprentice", run.bundle), ("rewarded", rewarded.bundle))}
    assert abs(truth["apprentice"] - truth["heuristic"]) < 0.01, truth
    assert truth["rewarded"] > truth["apprentice"] + 0.03, truth


def test_choosing_one_of_ten_the_apprentice_learns_the_heuristics_first_choice(tmp_path):
    world = BanditWorld(seed=4)  # 10 candidates per request, one shown
    system = world.system(k=1, explore=Softmax(0.05))
    heuristic = Bundle.build(system, world.heuristic())
    m = log_dataset(world, system, heuristic, contexts(world, 3000, seed=2), tmp_path / "log", seed=2)
    greedy = log_dataset(world, world.system(k=1), heuristic, contexts(world, 1000, seed=8), tmp_path / "greedy", seed=8)
    run = train_apprentice(system, m.path, loaded=pq.read_table(m.data_path))
    counts = run.metrics["lineage"]["imitation_rows"]
    assert counts["rows"] == 10 * counts["decisions"] and counts["choices"] == counts["decisions"] > 2000
    mine = log_agreement(system, run.bundle, greedy.path, split="all")
    assert mine["n"] == 1000 and mine["agreement"] >= 0.9 and mine["top_k_overlap"] == mine["agreement"], mine
    assert abs(log_agreement(system, _unrelated(system), greedy.path, split="all")["agreement"] - 0.1) < 0.05
    # trees score in steps: candidates of close quality tie and go to the lower index, so a lower share
    trees = train_apprentice(system, m.path, model="lightgbm")
    assert trees.metrics["lineage"]["model"] == "lightgbm" and trees.metrics["lineage"]["defaults"]["num_leaves"] >= 5
    assert log_agreement(system, trees.bundle, greedy.path, split="all")["agreement"] >= 0.85


def test_refusals_name_the_parameter(logged, tmp_path, phishing):
    import shutil

    world, system, _, m, _, _ = logged
    with pytest.raises(SpecError, match=r"'model' parameter of train_apprentice must be a model that is fitted.*'heuristic'"):
        train_apprentice(system, m.path, model="heuristic")
    with pytest.raises(SpecError, match=r"'model' parameter of train must be one of"):
        train_apprentice(system, m.path, model="forest")
    with pytest.raises(SpecError, match=r"'params' parameter of train_apprentice must be a mapping"):
        train_apprentice(system, m.path, params=[("C", 1.0)])
    with pytest.raises(SpecError, match=r"'system' parameter of train_apprentice must be a closedloop.System"):
        train_apprentice("bandit", m.path)
    with pytest.raises(SpecError, match=r"'system' parameter of train_apprentice must be a ranking system.*Got System 'phishing'"):
        train_apprentice(phishing, m.path)
    with pytest.raises(SpecError, match=r"'split' parameter of log_agreement must be a closedloop Split, 'all' or None"):
        log_agreement(system, Bundle.build(system, world.heuristic()), m.path, split=0.2)
    shutil.copytree(m.path, tmp_path / "ds")
    (tmp_path / "ds" / CANDIDATE_SETS_FILE).unlink()
    with pytest.raises(DatasetError, match=r"whole candidate set.*no candidate_sets\.parquet"):
        train_apprentice(system, tmp_path / "ds")
    one = contexts(world, 40, seed=3)
    for c in one:
        c["candidates"] = c["candidates"][:1]  # one candidate: nothing to choose between
    single = log_dataset(world, system, Bundle.build(system, world.heuristic()), one, tmp_path / "one", seed=3)
    with pytest.raises(IntelligenceError, match=r"needs logged choices among several candidates"):
        train_apprentice(system, single.path)

"""The ranking report's policy value ranks each decision's whole logged candidate set when the
dataset keeps it: with k = 1 (choose one of N) the estimates tell bundles apart, and they agree
with the bandit world's true values."""

from __future__ import annotations

import shutil

import pytest

from closedloop import Bundle, LogisticModel, Runtime
from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE
from closedloop.datasets.slots import build_reward_dataset
from closedloop.evaluation.report import evaluate
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.bandit import BanditWorld

T0 = 1_700_000_000 * 10**9


def _logged(tmp, k: int, n: int = 6000, explore=Softmax(0.1)):  # noqa: B008
    world = BanditWorld(seed=7, n_candidates=8)
    system = world.system(k=k, explore=explore)
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(tmp / "home"), system=system, clock=clock.now_ns)
    heuristic = Bundle.build(system, world.heuristic(), version="heuristic")
    world.log(Runtime(system, heuristic, telemetry=tel, clock=clock), world.contexts(n, seed=1), tel, t0_ns=T0, seed=1)
    tel.close()
    store = TelemetryStore(tmp / "home")
    store.compact()
    build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                         since_ns=T0, until_ns=T0 + 10**15, cutoff_ns=T0 + 10**15, out=tmp / "ds")
    return world, system, heuristic, tmp / "ds"


@pytest.fixture(scope="module")
def one_of_n(tmp_path_factory):
    return _logged(tmp_path_factory.mktemp("sets-k1"), k=1)


def _affinity_bundle(world, system):
    """A bundle that knows the quality step and the segments' taste (most of the truth)."""
    return Bundle.build(system, LogisticModel({"quality": 1.6, "age": -0.04, **{
        f"{s}_{c}": float(world.affinity[i, j]) for i, s in enumerate(("north", "south", "east", "west"))
        for j, c in enumerate(("news", "sports", "music", "games", "food", "travel"))}}, intercept=-2.2, output="score"),
        version="informed")


def test_choosing_one_of_n_is_valued_over_the_whole_set_and_agrees_with_the_truth(one_of_n):
    world, system, heuristic, ds = one_of_n
    informed = _affinity_bundle(world, system)
    report = evaluate(system, [heuristic, informed], ds, bootstrap=100, seed=1)
    value = report["policy_value"]
    assert value["candidates"] == "each decision's whole logged candidate set"
    assert not any("one logged candidate" in n for n in value["notes"])
    h, c = (b["estimates"]["snips"] for b in value["bundles"])
    assert abs(h["value"] - value["logged"]["value"]) < 1e-12  # the logger valued on its own log: weights of 1
    assert h["support"]["share"] == 0.0 and c["support"]["passed"]  # a softmax logger gives every candidate mass
    contexts = world.contexts(3000, seed=99)
    truth_h, truth_c = (world.true_value(system, b, contexts) for b in (heuristic, informed))
    assert h["low"] - 0.01 <= truth_h <= h["high"] + 0.01, (h, truth_h)
    assert c["low"] - 0.01 <= truth_c <= c["high"] + 0.01, (c, truth_c)
    diff = value["comparison"][0]["differences"]["snips"]
    assert diff["low"] <= truth_c - truth_h <= diff["high"], (diff, truth_c - truth_h)
    assert value["bundles"][0]["estimates"]["snips"]["value"] != value["bundles"][1]["estimates"]["snips"]["value"]


def test_without_candidate_sets_the_logged_slots_are_re_ranked_and_it_says_so(one_of_n, tmp_path):
    world, system, heuristic, src = one_of_n
    shutil.copytree(src, tmp_path / "ds")
    (tmp_path / "ds" / CANDIDATE_SETS_FILE).unlink()
    value = evaluate(system, [heuristic, _affinity_bundle(world, system)], tmp_path / "ds", bootstrap=0)["policy_value"]
    assert value["candidates"] == "the logged slots of each decision"
    assert any("one logged candidate" in n for n in value["notes"])
    h, c = (b["estimates"]["snips"]["value"] for b in value["bundles"])
    assert h == c  # every policy shows the one logged candidate


def test_a_ranking_of_two_slots_is_valued_over_the_whole_set(tmp_path):
    world, system, heuristic, _ = _logged(tmp_path, k=2, n=4000)
    informed = _affinity_bundle(world, system)
    value = evaluate(system, [heuristic, informed], tmp_path / "ds", bootstrap=50, seed=2)["policy_value"]
    assert value["candidates"] == "each decision's whole logged candidate set"
    h, c = (b["estimates"]["snips"]["value"] for b in value["bundles"])
    assert c > h


def test_a_greedy_logger_gives_no_support_where_the_candidate_differs(tmp_path):
    world, system, heuristic, ds = _logged(tmp_path, k=1, n=2000, explore=None)
    report = evaluate(system, [heuristic, _affinity_bundle(world, system)], ds, bootstrap=0)
    sup = report["policy_value"]["bundles"][1]["estimates"]["snips"]["support"]
    assert not sup["passed"] and sup["share"] > 0.3 and "the logger gave a probability below" in sup["detail"]
    assert not report["gate"]["passed"] and "support" in " ".join(report["gate"]["reasons"])


def test_the_report_reads_its_own_decisions_sets_as_reading_every_set_gives_them(tmp_path):
    from closedloop.datasets.candidate_sets import read_candidate_sets
    from closedloop.evaluation.ranking_rows import slot_rows
    from closedloop.evaluation.ranking_sets import report_slots

    _, system, _, ds = _logged(tmp_path, k=2, n=1500)
    rows = slot_rows(system, ds, None, None)  # the report's decisions: the test side
    every = read_candidate_sets(system, ds)
    mine = read_candidate_sets(system, ds, rows=report_slots(ds, rows.decision_ids))
    assert 0 < mine.n_decisions == len(rows.decision_ids) < every.n_decisions
    where = {d: i for i, d in enumerate(every.decision_ids)}

    def cands(sets, i):
        a, b = int(sets.offsets[i]), int(sets.offsets[i + 1])
        fields = {n: [sets.candidates[n][j] for j in range(a, b)] for n in sets.candidates if n != "request"}
        return (sets.candidate_ids[a:b], sets.slot[a:b].tolist(), sets.reward[a:b].tolist(), sets.propensity[a:b].tolist(),
                sets.logged_scores[a:b].tolist(), {n: [x.as_py() if hasattr(x, "as_py") else x for x in v] for n, v in fields.items()})

    from closedloop.evaluation.ranking_value import _propensities

    read, shared = _propensities(rows), _propensities(rows, report_slots(ds, rows.decision_ids))
    assert read is not None and shared is not None and read.tobytes() == shared.tobytes()  # the propensities from the same rows
    for i, d in enumerate(mine.decision_ids):
        j = where[d]
        assert mine.units[i] == every.units[j] and mine.timestamps_ns[i] == every.timestamps_ns[j]
        assert {n: mine.requests[n][i] for n in mine.requests} == {n: every.requests[n][j] for n in every.requests}
        assert repr(cands(mine, i)) == repr(cands(every, j))


def test_three_slots_are_valued_at_their_truth_with_the_loggers_marginals(tmp_path):
    """The runtime logs each slot's propensity given the slots before it; the estimators divide the
    target's marginal by the logger's marginal, recomputed from the logged scores. With the logged
    conditionals IPS valued the logger itself at 0.226 clicks per slot against a truth of 0.271."""
    world, system, heuristic, ds = _logged(tmp_path, k=3, n=6000)
    informed = _affinity_bundle(world, system)
    value = evaluate(system, [heuristic, informed], ds, bootstrap=100, seed=1)["policy_value"]
    contexts = world.contexts(6000, seed=99)
    for part, bundle in zip(value["bundles"], (heuristic, informed), strict=True):
        truth = world.true_value(system, bundle, contexts) / 3  # every decision shows 3 of its 8 candidates
        for name in ("ips", "snips"):
            e = part["estimates"][name]
            assert e["low"] - 0.005 <= truth <= e["high"] + 0.005, (bundle.version, name, e, truth)
    h = value["bundles"][0]["estimates"]
    assert abs(h["ips"]["value"] - h["snips"]["value"]) < 1e-12  # the logger on its own log: every weight 1


def test_the_logged_side_read_beforehand_gives_the_report_read_at_once(tmp_path):
    """``logged_side`` (what a cycle reads while its candidate trains) passed to the report gives
    the report that reads it itself, figure for figure; one read for another seed or dataset is refused."""
    from closedloop.errors import SpecError
    from closedloop.evaluation.ranking_report import logged_side

    world, system, heuristic, ds = _logged(tmp_path, k=2, n=2000)
    bundles = [heuristic, _affinity_bundle(world, system)]
    side = logged_side(system, ds, seed=4)
    assert side.sets is not None and side.sets.marginal.size == side.rows.reward.size
    at_once = evaluate(system, bundles, ds, bootstrap=30, seed=4, reward_model=bundles[1])
    before = evaluate(system, bundles, ds, bootstrap=30, seed=4, reward_model=bundles[1], logged=side)
    at_once["metadata"].pop("created"), before["metadata"].pop("created")
    assert before == at_once and before["policy_value"]["propensities"]["logger_marginals"] > 0
    with pytest.raises(SpecError, match=r"'logged' parameter of evaluate must be what logged_side returned for the same "
                                        r"dataset, split and seed \(.*, None, 5\)\. Got \(.*, None, 4\) instead"):
        evaluate(system, bundles, ds, bootstrap=0, seed=5, logged=side)
    with pytest.raises(SpecError, match=r"'logged' parameter of evaluate must be .* Got 'side' instead"):
        evaluate(system, bundles, ds, bootstrap=0, seed=4, logged="side")

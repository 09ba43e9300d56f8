"""A candidate bundle's exact action distribution on logged decisions: equal to a brute-force
enumeration of every ranking with ``slot_probabilities``, agreeing with the runtime's own draws, 0/1
at the runtime's greedy slate, and on the Open Bandit Dataset sample the shape obp expects."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import chi2

from closedloop import Bundle, LogisticModel, Ranking, System
from closedloop.datasets.importer import import_dataset
from closedloop.errors import DatasetError, EvaluationError, SpecError
from closedloop.evaluation.ope_policy import logged_feedback, marginals, reward_predictions, target_action_dist
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB
from closedloop.experience.ranking_policy import slot_probabilities
from closedloop.runtime.runtime import Runtime

OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "obd"
MEN = OBD / "random" / "men"
LOGGED = {"action": "item", "position": "slot", "reward": "click", "propensity": "p", "decision": "impression",
          "unit": "user_id", "time": "ts"}
CATEGORIES = ("news", "sports", "local", "tech", "culture", "fun")
POLICIES = [None, Softmax(0.5), Softmax(0.05), EpsilonGreedy(0.3), EpsilonGreedy(0.2, low=0.0, high=0.5), SquareCB(20.0), SquareCB(0.5)]


def _brute(scores: list[float], k: int, explore) -> np.ndarray:
    """P(candidate c at slot j): every ordered slate's probability (``slot_probabilities``' product), summed."""
    n = len(scores)
    out = np.zeros((n, k))
    for slate in itertools.permutations(range(n), min(k, n)):
        p = float(np.prod(slot_probabilities(scores, list(slate), explore)))
        for j, c in enumerate(slate):
            out[c, j] += p
    return out


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("explore", POLICIES, ids=repr)
def test_marginals_equal_a_brute_force_enumeration_of_every_ranking(explore, k):
    rng = np.random.default_rng(7)
    rows = [rng.normal(0, 1, 5).round(1) for _ in range(20)]  # rounded: ties
    rows += [np.array([0.3, np.nan, 0.1, 0.3, -1.0]), np.array([np.inf, 0.2, np.inf, np.nan, 1.0]),
             np.array([-np.inf, np.nan, -np.inf, np.nan, np.nan]), np.array([0.6, 0.7, 0.1, 0.4, 0.45])]
    counts = np.array([5, 4, 3, 2, 1] * 4 + [5, 5, 5, 5])
    S = np.full((len(rows), 5), np.nan)
    for i, r in enumerate(rows):
        S[i] = r
    M = marginals(S, counts, k, explore)
    assert M.shape == (len(rows), 5, k)
    for i, r in enumerate(rows):
        want = _brute(list(r[: counts[i]]), k, explore)
        np.testing.assert_allclose(M[i, : counts[i], : want.shape[1]], want, rtol=1e-12, atol=1e-15, err_msg=f"row {i}")
        assert (M[i, counts[i]:] == 0).all()  # padding is no candidate
        shown = min(k, counts[i])
        np.testing.assert_allclose(M[i].sum(axis=0)[:shown], 1.0, rtol=1e-12)
        assert (M[i].sum(axis=0)[shown:] == 0).all()  # fewer candidates than slots: nothing shown there


def test_the_enumeration_bound_is_refused_with_its_reason():
    with pytest.raises(EvaluationError, match=r"'len_list'.*N × C\(N, len_list − 1\) ≤ 4194304.*Got '6 \(30 × C\(30, 5\) = 4275180\)'"):
        marginals(np.zeros((2, 30)), np.array([30, 30]), 6, Softmax(1.0))
    assert marginals(np.zeros((2, 30)), np.array([30, 30]), 6, None).shape == (2, 30, 6)  # greedy: no enumeration


# -- through the runtime on a logged dataset ------------------------------------------------------------
def _system(k: int, explore) -> System:
    from examples.feed.system import candidates, features, feed, request

    return System("feed", context=request, candidates=candidates, candidate_id="item_id", unit="user_id", features=features,
                  experience=Ranking("score", k=k, explore=explore), labels=feed.labels, label_policy=feed.label_policy)


def _log(n_dec: int, slots: int, items: int, seed: int = 0) -> pa.Table:
    """``n_dec`` impressions showing ``slots`` of ``items`` catalogue items (a random subset each)."""
    rng = np.random.default_rng(seed)
    shown = np.concatenate([rng.permutation(items)[:slots] for _ in range(n_dec)])
    dec = np.repeat(np.arange(n_dec), slots)
    return pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 2}" for d in dec],
        "hour": rng.integers(0, 24, n_dec)[dec], "country": ["fr"] * dec.size,
        "item": [f"it{j}" for j in shown], "slot": np.tile(np.arange(1, slots + 1), n_dec),
        "click": (rng.random(dec.size) < 0.2).astype(np.float64), "p": np.full(dec.size, 0.5),
        "ts": 10**18 + dec * 10**9,
        "category": [CATEGORIES[j % 6] for j in shown], "item_ctr": (0.05 + 0.1 * shown).tolist(),
        "age_hours": (1.0 + 3.0 * shown).tolist(), "is_new": [bool(j % 2) for j in shown],
    })


def _catalogue(items: int) -> dict[str, list]:
    return {"item_id": [f"it{j}" for j in range(items)], "category": [CATEGORIES[j % 6] for j in range(items)],
            "item_ctr": [0.05 + 0.1 * j for j in range(items)], "age_hours": [1.0 + 3.0 * j for j in range(items)],
            "is_new": [bool(j % 2) for j in range(items)]}


def _dataset(tmp_path, system, table: pa.Table):
    pq.write_table(table, tmp_path / "log.parquet")
    return import_dataset(tmp_path / "log.parquet", system, **LOGGED, out=tmp_path / "ds")


def _bundle(system) -> Bundle:
    from examples.feed.system import model

    return Bundle.build(system, model, version="candidate")


def _one_request(table: pa.Table, decision: str, catalogue: dict[str, list], n: int):
    """Decision ``decision``'s request and the catalogue's candidates, replicated ``n`` times."""
    row = table.filter(pa.compute.equal(table["impression"], decision)).slice(0, 1).to_pylist()[0]
    requests = {f: [row[f]] * n for f in ("user_id", "country", "hour")}
    c = len(catalogue["item_id"])
    cands = {f: v * n for f, v in catalogue.items()}
    cands["request"] = np.repeat(np.arange(n), c)
    return requests, cands


@pytest.mark.parametrize("explore", [Softmax(0.05), EpsilonGreedy(0.4), SquareCB(30.0)], ids=repr)
def test_marginals_agree_with_the_runtimes_own_draws(tmp_path, explore):
    system = _system(3, explore)
    table = _log(6, 3, 6)
    m = _dataset(tmp_path, system, table)
    cat = _catalogue(6)
    res = target_action_dist(system, _bundle(system), m.path, candidates=cat)
    assert res.action_dist.shape == (18, 6, 3) and res.actions == [f"it{j}" for j in range(6)] and res.positions == [1, 2, 3]
    np.testing.assert_allclose(res.action_dist.sum(axis=1), 1.0, rtol=1e-12)
    n = 20_000
    requests, cands = _one_request(table, "i2", cat, n)
    rb = Runtime(system, _bundle(system)).decide_batch(requests, candidates=cands, decision_ids=[f"mc-{i}" for i in range(n)],
                                                      timestamps_ns=np.full(n, 10**18))
    shown = np.asarray(rb.ranked).reshape(n, 3)  # positions within each request's candidates = catalogue order
    row = table["impression"].to_pylist().index("i2")
    for j in range(3):
        observed = np.bincount(shown[:, j], minlength=6)
        expected = n * res.action_dist[row, :, j]
        assert observed[expected == 0].sum() == 0
        keep = expected > 0
        stat = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
        assert stat < chi2.ppf(1 - 1e-6, keep.sum() - 1), (j, observed, expected)
    # a wrong distribution fails the same test: the slot-0 marginal used for slot 2
    wrong = n * res.action_dist[row, :, 0]
    obs2 = np.bincount(shown[:, 2], minlength=6)
    assert float(((obs2 - wrong) ** 2 / np.maximum(wrong, 1e-9)).sum()) > chi2.ppf(1 - 1e-6, 5)


def test_greedy_is_zero_one_at_the_runtimes_slate(tmp_path):
    system = _system(5, None)
    table = _log(40, 5, 5, seed=3)
    m = _dataset(tmp_path, system, table)
    bundle = _bundle(system)
    res = target_action_dist(system, bundle, m.path)  # each decision's own logged candidates
    assert res.action_dist.shape == (200, 5, 5)
    assert set(np.unique(res.action_dist)) == {0.0, 1.0}
    rows = table.to_pylist()
    decisions = list(dict.fromkeys(r["impression"] for r in rows))
    requests = {f: [next(r[f] for r in rows if r["impression"] == d) for d in decisions] for f in ("user_id", "country", "hour")}
    cands = {f: [r[f] for r in rows] for f in ("category", "item_ctr", "age_hours", "is_new")}
    cands["item_id"] = [r["item"] for r in rows]
    cands["request"] = np.repeat(np.arange(len(decisions)), 5)
    rb = Runtime(system, bundle).decide_batch(requests, candidates=cands, decision_ids=decisions,
                                              timestamps_ns=np.full(len(decisions), 10**18))
    for i, d in enumerate(decisions):
        slate = [rb.candidate_ids[rb.offsets[i] + p] for p in rb.ranked[rb.rank_offsets[i]:rb.rank_offsets[i + 1]]]
        for r in np.flatnonzero(np.array([x["impression"] for x in rows]) == d):
            assert [res.actions[a] for a in res.action_dist[r].argmax(axis=0)] == slate
    # the logged feedback lines up with the rows, and a reward model's predictions are the bundle's scores
    fb = logged_feedback(system, m.path, res.actions)
    assert fb.action.tolist() == [res.actions.index(r["item"]) for r in rows]
    assert fb.position.tolist() == [r["slot"] - 1 for r in rows] and np.allclose(fb.pscore, 0.5)
    assert fb.slate_id.tolist() == [decisions.index(r["impression"]) for r in rows]
    pred = reward_predictions(system, bundle, m.path, actions=res.actions)
    assert pred.shape == (200, 5, 5) and np.allclose(pred[:, :, 0], pred[:, :, 4])
    got = pred[np.arange(200), fb.action, 0]
    np.testing.assert_array_equal(got, [rb.scores[rb.offsets[decisions.index(r["impression"])] + r["slot"] - 1] for r in rows])


def test_softmax_on_logged_candidates_sums_to_one_and_missing_candidates_are_zero(tmp_path):
    system = _system(3, Softmax(0.5))
    m = _dataset(tmp_path, system, _log(30, 3, 8, seed=1))
    res = target_action_dist(system, _bundle(system), m.path)
    assert res.action_dist.shape == (90, 8, 3)
    np.testing.assert_allclose(res.action_dist.sum(axis=1), 1.0, rtol=1e-12)
    fb = logged_feedback(system, m.path, res.actions)
    for i in range(90):  # only the decision's three logged items can be shown
        own = set(fb.action[fb.slate_id == fb.slate_id[i]].tolist())
        assert set(np.flatnonzero(res.action_dist[i].sum(axis=1) > 0).tolist()) == own
    with pytest.raises(SpecError, match="'actions' parameter of target_action_dist must hold every candidate id"):
        target_action_dist(system, _bundle(system), m.path, actions=res.actions[:-1])
    with pytest.raises(DatasetError, match="one row per 'item_id'"):
        target_action_dist(system, _bundle(system), m.path, candidates={"item_id": ["it1", "it1"]})


@pytest.mark.skipif(not (MEN / "men.csv").is_file(), reason=f"the Open Bandit Dataset sample is not at {OBD}")
@pytest.mark.parametrize("explore", [None, Softmax(0.1)], ids=repr)
def test_obd_men_action_dist_has_obps_shape(tmp_path, explore):
    from examples.obd.system import candidates, features, men, request

    system = men if explore is None else System(
        "obd-men", context=request, candidates=candidates, candidate_id="item_id", unit="user_id", features=features,
        experience=Ranking("click", k=3, explore=explore), rewards=men.rewards)
    m = import_dataset(MEN / "men.csv", system, action="item_id", position="position", reward="click",
                       propensity="propensity_score", time="timestamp", candidates=MEN / "item_context.csv", out=tmp_path / "ds")
    bundle = Bundle.build(system, LogisticModel({"item_feature_0": 0.3, "affinity_total": 0.01}, intercept=-5.0, output="click"))
    res = target_action_dist(system, bundle, m.path, candidates=MEN / "item_context.csv")
    assert res.action_dist.shape == (10_000, 34, 3) and res.actions == [str(i) for i in range(34)]
    np.testing.assert_allclose(res.action_dist.sum(axis=1), 1.0, rtol=1e-12)
    if explore is None:
        assert set(np.unique(res.action_dist)) == {0.0, 1.0}
    else:
        assert (res.action_dist > 0).all()
    fb = logged_feedback(system, m.path, res.actions)
    raw = pq.read_table(m.data_path)
    assert fb.action.tolist() == [int(a) for a in raw["action"].to_pylist()]  # obp's action ids are the item ids
    assert fb.position.tolist() == [p - 1 for p in raw["position"].to_pylist()]

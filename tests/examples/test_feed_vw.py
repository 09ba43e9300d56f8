"""Vowpal Wabbit's contextual bandit (examples/feed/vw.py), the feed demo's external baseline, learns
online in the bandit world: from the first slot's clicks alone its rankings' true value rises well
above a uniform-random ranking to the quality heuristic's or better; seeded runs repeat exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from closedloop import Bundle
from closedloop.errors import SpecError
from closedloop.world.bandit import _EXAMINATION, BanditWorld

pytest.importorskip("vowpalwabbit", reason="vowpalwabbit is not installed (it comes with the dev extra: pip install -e '.[dev]')")

from examples.feed.vw import VWPolicy, run_online  # noqa: E402

SESSIONS = 20_000


@pytest.fixture(scope="module")
def world():
    return BanditWorld(seed=3, n_candidates=10)


@pytest.mark.parametrize("k", [1, 3])
def test_vw_learns_from_first_slot_clicks_to_the_heuristic_or_better(world, k):
    system = world.system(k=k)
    contexts = world.contexts(SESSIONS, seed=1)
    policy = VWPolicy(system, seed=1)
    rankings, clicks = run_online(policy, contexts, world.click_probability, seed=2)
    assert all(len(r) == k and len(set(r)) == k for r in rankings)
    late = contexts[-5000:]
    uniform = float(np.mean([world.click_probability(c).mean() for c in late])) * sum(_EXAMINATION[:k])
    heuristic = world.true_value(system, Bundle.build(system, world.heuristic()), late)
    first = float(world.expected_clicks(contexts[:1000], rankings[:1000]).mean())
    last = float(world.expected_clicks(late, rankings[-5000:]).mean())
    assert last > first + 0.05, (first, last)  # it learns
    assert last > uniform + 0.2, (last, uniform)  # well above a uniform-random ranking
    assert last > heuristic - 0.04, (last, heuristic)  # near the heuristic or better (with ε = 0.05 exploring)
    assert 0.3 < clicks.mean() < 0.6
    policy.close()


def test_seeded_runs_repeat_exactly_and_another_seed_differs(world):
    system = world.system(k=3)
    contexts = world.contexts(2000, seed=5)
    runs = []
    for seed in (7, 7, 8):
        policy = VWPolicy(system, seed=seed)
        sessions = policy.sessions(contexts)
        decided = []
        for s in sessions[:1500]:
            d = policy.decide(s)
            policy.learn(d, float(world.click_probability(contexts[len(decided)])[d.chosen] > 0.5))
            decided.append(d)
        runs.append([(d.ranking, d.pmf, d.scores, d.probability) for d in decided])
        policy.close()
    assert runs[0] == runs[1]
    assert [r[0] for r in runs[0]] != [r[0] for r in runs[2]]



def _workspace_decide_and_learn(policy, session, reward):
    """The reference path: VW's Python API (``Workspace.parse`` / ``predict`` / ``learn``), with the
    same ranking rule and label as VWPolicy.decide and learn."""
    vw = policy._vw
    examples = vw.parse([session.shared, *session.actions])
    try:
        pmf = [float(p) for p in vw.predict(examples)]
        scores = [float(e.get_partial_prediction()) for e in examples[1:]]
    finally:
        vw.finish_example(examples)
    cum = np.cumsum(pmf)
    chosen = min(int(np.searchsorted(cum, policy._rng.random() * cum[-1], side="right")), len(pmf) - 1)
    rest = sorted((i for i in range(len(pmf)) if i != chosen), key=scores.__getitem__)
    ranking = [session.ids[chosen], *(session.ids[i] for i in rest[: policy.k - 1])]
    actions = list(session.actions)
    actions[chosen] = f"{chosen}:{0.0 - float(reward(chosen))!r}:{pmf[chosen]!r} {actions[chosen]}"
    vw.learn([session.shared, *actions])
    return ranking, pmf, scores


def test_the_native_calls_give_the_workspace_apis_bits(world, tmp_path):
    """VWPolicy.decide / learn call VW's native parse, predict and learn without the Python Example
    wrappers: the same rankings, pmfs, scores and learned model, byte for byte, as VW's Python API."""
    system = world.system(k=3)
    contexts = world.contexts(600, seed=11)
    runs, models = [], []
    for native in (True, False):
        policy = VWPolicy(system, seed=4)
        got = []
        for ctx, s in zip(contexts, policy.sessions(contexts), strict=True):
            def reward(j, ctx=ctx):
                return float(world.click_probability(ctx)[j] > 0.5)
            if native:
                d = policy.decide(s)
                policy.learn(d, reward(d.chosen))
                got.append((d.ranking, d.pmf, d.scores))
            else:
                got.append(_workspace_decide_and_learn(policy, s, reward))
        policy._vw.save(str(tmp_path / f"{native}.vw"))
        models.append((tmp_path / f"{native}.vw").read_bytes())
        runs.append(got)
        policy.close()
    assert runs[0] == runs[1]
    assert models[0] == models[1] and len(models[0]) > 1000
    assert len({tuple(r[0]) for r in runs[0]}) > 10  # it ranked, and learned, differently across sessions

def test_a_click_lowers_the_chosen_candidates_cost_until_vw_prefers_it(world):
    system = world.system(k=3)
    policy = VWPolicy(system, seed=0)
    session = policy.sessions(world.contexts(1, seed=9))[0]
    d = policy.decide(session)
    j = 1 + int(np.argmax(d.scores[1:]))  # not VW's first choice among ties
    n = len(session.ids)
    for _ in range(30):
        d = policy.decide(session)
        policy.learn(dataclasses.replace(d, chosen=j, probability=d.pmf[j]), 1.0)  # cost −1 on candidate j
    after = policy.decide(session)
    assert int(np.argmin(after.scores)) == j and after.scores[j] < -0.5
    assert after.pmf[j] == pytest.approx(0.95 + 0.05 / n, abs=1e-6)  # VW's default ε = 0.05
    assert after.ranking[1:] == [session.ids[i] for i in sorted(set(range(n)) - {after.chosen}, key=after.scores.__getitem__)][:2]
    unclicked = VWPolicy(system, seed=0)
    for _ in range(30):
        d = unclicked.decide(session)
        unclicked.learn(dataclasses.replace(d, chosen=j, probability=d.pmf[j]), 0.0)
    assert int(np.argmin(unclicked.decide(session).scores)) != j


def test_the_label_carries_the_decisions_probability(world):
    session_of = VWPolicy(world.system(k=1), seed=0).sessions(world.contexts(1, seed=9))[0]
    after = []
    for probability in (0.9, 0.1):  # inverse propensity: a rarer choice's click weighs more
        policy = VWPolicy(world.system(k=1), seed=0)
        d = policy.decide(session_of)
        policy.learn(dataclasses.replace(d, chosen=2, probability=probability), 1.0)
        after.append(policy.decide(session_of).scores[2])
    assert after[1] < after[0] < 0.0, after


def test_the_lines_carry_the_systems_features_and_settings_say_what_vw_runs(world):
    system = world.system(k=1)
    ctx = world.contexts(1, seed=4)[0]
    policy = VWPolicy(system, seed=1)
    s = policy.sessions([ctx])[0]
    seg = ctx["segment"]
    assert ctx["hour"] != 0 and s.shared == f"shared |u segment={seg} hour:{ctx['hour']}"
    assert s.ids == [c["item_id"] for c in ctx["candidates"]]
    for line, c in zip(s.actions, ctx["candidates"], strict=True):
        tokens = dict((t.split(":") + ["1"])[:2] for t in line.removeprefix("|i ").split())
        expected = {"quality": c["quality"], "age": c["age_hours"], f"cat_{c['category']}": 1.0, f"{seg}_{c['category']}": 1.0}
        assert {k: float(v) for k, v in tokens.items()} == {k: v for k, v in expected.items() if v != 0.0}
    got = policy.settings()
    assert got["arguments"] == "--cb_explore_adf --cb_type dr -q ui --random_seed 1 --quiet"
    assert "--cb_type dr" in got["resolved"] and "--quadratic ui" in got["resolved"] and "epsilon" not in got["arguments"]
    assert got["shared"] == {"namespace": "u", "fields": {"segment": "name=value", "hour": "name:value"}}  # the unit is left out
    assert got["actions"]["namespace"] == "i" and got["actions"]["features"] == list(system.features.names)
    assert got["vowpalwabbit"].startswith("9.") and got["k"] == 1
    only = VWPolicy(system, shared=())  # the System's features and nothing else
    assert only.sessions([ctx])[0].shared == "shared |u " and only.sessions([ctx])[0].actions == s.actions
    assert only.settings()["shared"]["fields"] == {}


def test_bad_parameters_are_refused_naming_them(world):
    from examples.feed.system import feed

    system = world.system(k=1)
    with pytest.raises(SpecError, match=r"The 'k' parameter of VWPolicy must be an int ≥ 1. Got 0 instead"):
        VWPolicy(system, k=0)
    with pytest.raises(SpecError, match=r"The 'shared' parameter of VWPolicy must name request fields of 'bandit'.*Got 'country'"):
        VWPolicy(system, shared=["country"])
    with pytest.raises(SpecError, match=r"'interactions' of VWPolicy must be pairs.*Got 'uix'"):
        VWPolicy(system, interactions=["uix"])
    with pytest.raises(SpecError, match=r"contexts\[0\] of VWPolicy.sessions must be a mapping with a non-empty 'candidates'"):
        VWPolicy(system).sessions([{"user_id": "u1", "segment": "north", "hour": 3, "candidates": []}])
    assert VWPolicy(feed, seed=0).k == 5  # the System's Ranking k by default


def test_sessions_of_tables_are_the_sessions_of_mappings():
    """VWArm featurizes a feed day from its request and candidate tables (VWPolicy.sessions_of): the
    same ids, shared lines and action lines, character for character, as VWPolicy.sessions of the
    day's requests as mappings — and each action line is the System's nonzero features of its row
    as _token writes them."""
    from examples.feed.demo_arms import _contexts
    from examples.feed.vw import _token

    from closedloop.world.feed import FeedWorld
    from closedloop.world.feed_config import FeedConfig

    w = FeedWorld(FeedConfig.load(overrides={"world": {"sessions_per_day": 400}, "users": {"count": 300}}), seed=2)
    system = w.system(k=5)
    policy = VWPolicy(system, seed=1)
    w.day(0)
    day = w.day(1)
    got = policy.sessions_of(day.requests(), day.candidates())
    contexts = _contexts(day)
    assert got == policy.sessions(contexts) and len(got) == day.n > 300
    X = policy._features(contexts)
    lines = [a for s in got for a in s.actions]
    names = list(system.features.names)
    assert lines == ["|i " + " ".join(_token(n, float(v)) for n, v in zip(names, row, strict=True) if v != 0) for row in X.tolist()]
    assert any(":" in a for a in lines) and any(" cat_" in a for a in lines)  # values and indicators both written
    with pytest.raises(SpecError, match=r"'candidates' of VWPolicy.sessions_of must carry a 'request' column"):
        policy.sessions_of(day.requests(), day.candidates().drop_columns(["request"]))

"""``link="unit_time"``: an outcome without a decision id, with its unit, candidate and event time,
pays the slot of the latest decision of its unit that showed that candidate at or before the event
— point in time (a decision ingested after the cut-off does not exist), ties on time to the
greatest decision id, the window checked; what cannot be linked is counted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop import Bundle, Reward, RewardPolicy, Runtime, System
from closedloop.datasets.dataset import load_dataset
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9
MIN = 60 * S
LATE = T0 + 10**5 * S  # when the second writer's decision was ingested


def _feed(per: str = "slot") -> System:
    f = feed_module
    return System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                  features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
                  rewards=RewardPolicy([Reward("click")], window=timedelta(minutes=10), per=per, link="unit_time"))


def _ctx(user: str, items: str, seed: int) -> dict:
    """A request of ``user`` with three candidates named by the letters of ``items`` (all shown: k=3)."""
    c = generate(1, 3, seed=seed)[0]
    c["user_id"] = user
    for cand, name in zip(c["candidates"], items, strict=True):
        cand["item_id"] = name
    return c


def _logged(home, system):
    """Decisions of three users and clicks linked by unit + candidate + time (one by decision id);
    a fourth decision of u1 ingested late, by another writer. Returns the decisions by name."""
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, feed_module.model), telemetry=tel, clock=clock)
    d = {
        "d1": rt.decide(_ctx("u1", "ABC", 1), timestamp_ns=T0),
        "d2": rt.decide(_ctx("u1", "CDE", 2), timestamp_ns=T0 + 60 * S),
        "d3": rt.decide(_ctx("u2", "ABC", 3), timestamp_ns=T0 + 10 * S),
        "d4": rt.decide(_ctx("u3", "XYZ", 4), timestamp_ns=T0 + 200 * S),
        "d5": rt.decide(_ctx("u3", "XYZ", 5), timestamp_ns=T0 + 200 * S),
    }

    def click(unit, cand, at, **kw):
        tel.log_outcome(unit=unit, kind="click", event_ns=T0 + at, source="app", candidate=cand, **kw)

    click("u1", "C", 90 * S)          # d2: the latest of u1 that showed C
    click("u1", "A", 120 * S)         # d1: the latest of u1 that showed A (d2 did not)
    click("u1", "Q", 30 * S)          # never shown to u1: unlinked
    click("u1", "A", -5 * S)          # before u1's first decision: unlinked
    click("u1", "B", 11 * MIN + S)    # d1 showed B, but 11 minutes before: after_window
    click("u1", None, 90 * S)         # no candidate: no_candidate
    click("u2", "A", 100 * S)         # d3, u2's (not d1, u1's)
    click("u3", "X", 210 * S)         # d4 or d5, both at T0+200 s: the greatest decision id
    tel.log_outcome(d["d2"].decision_id, kind="click", event_ns=T0 + 70 * S, source="app", candidate="D")  # by its id
    tel.close()
    late = Telemetry(SegmentLog(home), system=system, clock=lambda: LATE)
    d["d6"] = Runtime(system, Bundle.build(system, feed_module.model), telemetry=late).decide(
        _ctx("u1", "ABC", 6), timestamp_ns=T0 + 100 * S)  # shows A before u1's click on it, but ingested late
    late.close()
    store = TelemetryStore(home)
    store.compact()
    return store, d


def _rewards(path, system):
    table, _ = load_dataset(path, system)
    return {(did, a): r for did, a, r in zip(table["decision_id"].to_pylist(), table["action"].to_pylist(),
                                             table["reward"].to_pylist(), strict=True)}


def test_unit_time_links_to_the_latest_decision_of_the_unit_that_showed_the_candidate(tmp_path):
    system = _feed()
    store, d = _logged(tmp_path / "home", system)
    ids = {k: v.decision_id for k, v in d.items()}
    tie = max(ids["d4"], ids["d5"])
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 10**4 * S, out=tmp_path / "ds")
    got = _rewards(tmp_path / "ds", system)
    paid = {k for k, r in got.items() if r}
    assert paid == {(ids["d2"], "C"), (ids["d1"], "A"), (ids["d3"], "A"), (tie, "X"), (ids["d2"], "D")}
    assert len(got) == 15 and all(did != ids["d6"] for did, _ in got)  # d6 did not exist at the cut-off
    assert m.counts["outcomes"] == {"matched": 5, "unlinked": 2, "after_window": 1, "no_candidate": 1}
    assert m.content["rewards"]["link"] == "unit_time"

    # at a later cut-off u1's late decision exists: it showed A and B at T0+100 s, so the clicks on them are its
    build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                         since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=LATE, out=tmp_path / "ds2")
    later = {k for k, r in _rewards(tmp_path / "ds2", system).items() if r}
    assert later == paid - {(ids["d1"], "A")} | {(ids["d6"], "A"), (ids["d6"], "B")}


def test_unit_time_per_decision_links_to_the_latest_decision_of_the_unit(tmp_path):
    system = _feed(per="decision")
    store, d = _logged(tmp_path / "home", system)
    ids = {k: v.decision_id for k, v in d.items()}
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 10**4 * S, out=tmp_path / "ds")
    paid = {did for (did, _), r in _rewards(tmp_path / "ds", system).items() if r}
    # per decision the candidate does not matter: u1's clicks at 90 s, 120 s (and without a candidate) pay d2,
    # the latest of u1; Q at 30 s pays d1; B at 11 minutes is after d2's window
    assert paid == {ids["d1"], ids["d2"], ids["d3"], max(ids["d4"], ids["d5"])}
    assert m.counts["outcomes"] == {"matched": 7, "unlinked": 1, "after_window": 1}


@pytest.mark.parametrize("link", ["decision", "unit_time"])
def test_outcomes_with_a_decision_id_link_by_it_under_either_link(tmp_path, link):
    f = feed_module
    system = System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                    features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
                    rewards=RewardPolicy([Reward("click")], window=timedelta(minutes=10), link=link))
    clock = ManualClock(T0)
    home = tmp_path / "home"
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, feed_module.model), telemetry=tel, clock=clock)
    a = rt.decide(_ctx("u1", "ABC", 1), timestamp_ns=T0)
    tel.log_outcome(a.decision_id, kind="click", event_ns=T0 + S, source="app", candidate="B")
    tel.log_outcome(unit="u1", kind="click", event_ns=T0 + S, source="app", candidate="C")
    tel.close()
    store = TelemetryStore(home)
    store.compact()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + S, cutoff_ns=T0 + 10**4 * S, out=tmp_path / "ds")
    paid = {k for k, r in _rewards(tmp_path / "ds", system).items() if r}
    assert paid == ({(a.decision_id, "B")} if link == "decision" else {(a.decision_id, "B"), (a.decision_id, "C")})
    assert m.counts["outcomes"] == ({"matched": 1, "unknown_id": 1} if link == "decision" else {"matched": 2})

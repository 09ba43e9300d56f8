"""The goal metric ``exploration_share``: of the items a system showed in a window (a choice: one
per decision; a ranking: one per slot shown), the share exploration chose instead of the greedy
one — measured by the goal tracker from the telemetry the runtime wrote, and checked here against
a count made independently from the logged scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from examples.feed import system as feed_module

from closedloop import (
    BestAction,
    Bundle,
    F,
    Float,
    Goal,
    LinearModel,
    ManualClock,
    Ranking,
    Runtime,
    SpecError,
    SquareCB,
    Str,
    System,
)
from closedloop.orchestration import GoalTracker, SeriesStore, parse_metric
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

DAY = 86_400 * 10**9
START = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z
GOAL = Goal("exploring", "leading", "exploration_share", target=0.4, direction="at_most", cadence="daily")


def _measure(home: Path, system: System, tmp_path: Path) -> dict:
    store = TelemetryStore(home)
    store.compact()
    tracker = GoalTracker(system)
    pts = tracker.measure(SeriesStore(tmp_path / "series.jsonl"), decision_files=store.decision_files(),
                          outcome_files=store.outcome_files(), now_ns=START + 2 * DAY)
    day = [p for p in pts if p["name"] == "exploring" and p["window"] == "2026-01-05"]
    assert len(day) == 1
    return day[0]


def _telemetry(home: Path, system: System) -> Telemetry:
    return Telemetry(SegmentLog(home), system=system, clock=ManualClock(START).now_ns, flush_interval_ms=1)


def test_a_choice_systems_exploration_share_is_the_share_of_decisions_off_the_greedy_action(tmp_path):
    actions = ["a0", "a1", "a2", "a3"]
    system = System("offers", context=[Str("user"), Float("x")], unit="user", features={"x": F.col("x")},
                    actions=actions, experience=BestAction(explore=SquareCB(6.0)), goals=[GOAL])
    from closedloop.intelligence import Intelligence

    class Tilted(Intelligence):  # action a<j>'s score: j · x (the best action moves with x)
        kind = "tilted"
        outputs = tuple(actions)

        def inputs(self):
            return ("x",)

        def bind(self, features):
            from closedloop.intelligence import Scorer

            class _S(Scorer):
                outputs = tuple(actions)

                def batch(self, X, cols):
                    return np.asarray(X)[:, :1] * np.arange(4.0)[None, :]

                def one(self, x, c):
                    return [x[0] * j for j in range(4)]

            return _S()

        def to_dict(self, files):
            return {"kind": "tilted"}

        @classmethod
        def from_dict(cls, spec, files, kinds):
            return cls()

    home = tmp_path / "home"
    rt = Runtime(system, Bundle.build(system, Tilted()), telemetry=_telemetry(home, system))
    xs = np.random.default_rng(0).uniform(-0.5, 0.5, 3000)
    n = xs.size
    batch = rt.decide_batch({"user": [f"u{i}" for i in range(n - 500)], "x": xs[: n - 500].tolist()},
                            timestamps_ns=np.full(n - 500, START + 3600 * 10**9))
    singles = [rt.decide({"user": f"v{i}", "x": float(x)}, timestamp_ns=START + 7200 * 10**9) for i, x in enumerate(xs[n - 500:])]
    rt.telemetry.close()
    # independently: the greedy action is the highest logged score (the first on a tie)
    chosen = np.concatenate([batch.action_codes, [actions.index(d.action) for d in singles]])
    scores = np.vstack([batch.score_matrix, [[d.scores[a] for a in actions] for d in singles]])
    off = int((chosen != scores.argmax(axis=1)).sum())
    assert 0 < off < n
    point = _measure(home, system, tmp_path)
    assert point["n"] == n and point["value"] == pytest.approx(off / n, rel=1e-12)
    assert point["met"] == (off / n <= 0.4)


def test_a_rankings_exploration_share_counts_the_slots_off_the_greedy_order(tmp_path):
    f = feed_module
    system = System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                    features=f.features, experience=Ranking("score", k=3, explore=SquareCB(20.0)), goals=[GOAL])
    home = tmp_path / "home"
    rt = Runtime(system, Bundle.build(system, LinearModel({"ctr": 1.0}, 0.0, output="score")), telemetry=_telemetry(home, system))
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 7, 800)  # 0 to 6 candidates: some requests show fewer than 3 slots, some none
    n, total = counts.size, int(counts.sum())
    requests = {"user_id": [f"u{i}" for i in range(n)], "country": ["de"] * n, "hour": [9] * n}
    ctr = rng.uniform(0, 1, total).round(2)  # rounded: ties, which go to the lower input index
    cands = {"item_id": [f"i{j}" for j in range(total)], "category": ["news"] * total, "item_ctr": ctr.tolist(),
             "age_hours": [5.0] * total, "request": np.repeat(np.arange(n), counts)}
    rb = rt.decide_batch(requests, candidates=cands, timestamps_ns=np.full(n, START + 3600 * 10**9))
    rt.telemetry.close()
    shown = off = 0
    for i in range(n):  # independently: slot by slot, the best remaining candidate by score, ties to the lower index
        scores = rb.scores[rb.offsets[i]:rb.offsets[i + 1]].tolist()
        remaining = list(range(len(scores)))
        for pick in rb.ranked[rb.rank_offsets[i]:rb.rank_offsets[i + 1]].tolist():
            best = max(remaining, key=lambda i: (scores[i], -i))
            off += pick != best
            shown += 1
            remaining.remove(pick)
    assert 0 < off < shown
    point = _measure(home, system, tmp_path)
    assert point["n"] == shown and point["value"] == pytest.approx(off / shown, rel=1e-12)


def test_the_metric_is_in_the_grammar_and_a_near_miss_is_refused():
    system = System("offers", context=[Str("user"), Float("x")], unit="user", features={"x": F.col("x")},
                    actions=["a0", "a1"], experience=BestAction(explore=SquareCB(6.0)))
    m = parse_metric("exploration_share", system)
    assert m.kind == "exploration" and not m.needs_labels
    with pytest.raises(SpecError, match="exploration_share"):
        parse_metric("exploration_shares", system)


def test_the_flight_guard_says_why_it_does_not_judge_it():
    from closedloop.registry.guard_goals import flight_goals

    system = System("offers", context=[Str("user"), Float("x")], unit="user", features={"x": F.col("x")},
                    actions=["a0", "a1"], experience=BestAction(explore=SquareCB(6.0)), goals=[GOAL])
    judged, skipped = flight_goals(system)
    assert judged == [] and skipped == [{"goal": "exploring", "metric": "exploration_share", "note": (
        "not judged in flight: the exploration share describes the experience's policy, not an arm's outcomes")}]

"""A click farm in the bandit world, caught by the loop: three farm units browse the feed all day and
click the farm's two items every time they are shown (logged by this driver beside the world's
genuine clicks); an honest heavy user browses as much and clicks far more than most, across
everything. The system knows a few recurring catalog items by name (one feature each), so a reward
model can learn an item. The cycle's ``monitor`` quarantines exactly the farm's units, the reward
dataset leaves their decisions out (its manifest counts them), and the candidate trained on it does
not rank the farm's items first — while one trained on the same days with the farm kept does."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from closedloop import Bundle, ManualClock, Runtime, System
from closedloop.context import features as F
from closedloop.context.fields import Float, Int, Str
from closedloop.datasets.slots import build_reward_dataset
from closedloop.evaluation.report import Gate
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.orchestration import ClickFarmPolicy, Cycle, LoopPlan, Rollout
from closedloop.registry import GuardPolicy, Registry
from closedloop.system.rewards import Reward, RewardPolicy
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.training.train import train
from closedloop.world.bandit import CATEGORIES, SEGMENTS, BanditWorld

DAY = 86_400 * 10**9
START = 1_767_571_200 * 10**9
PER_DAY = 2500
#: recurring catalog items, each known to the system by name: the farm promotes the first two
CATALOG = {"p0": ("games", 0.7), "p1": ("food", 0.7), "p2": ("news", 0.7), "p3": ("music", 0.7)}
FARM_ITEMS = ("p0", "p1")
FARM = ("farm-0", "farm-1", "farm-2")
SESSIONS = 60  # a day, per farm unit and for the heavy user


def _system() -> System:
    """The bandit world's ranking system (BanditWorld.system, features "full") with a feature per catalog item."""
    feats = {"quality": F.col("quality"), "age": F.col("age_hours")}
    feats.update({f"cat_{c}": F.col("category").eq(c) for c in CATEGORIES})
    feats.update({f"{s}_{c}": F.col("segment").eq(s) & F.col("category").eq(c) for s in SEGMENTS for c in CATEGORIES})
    feats.update({f"item_{i}": F.col("item_id").eq(i) for i in CATALOG})
    return System(
        "bandit",
        context=[Str("user_id", max_length=64), Str("segment", choices=SEGMENTS), Int("hour", ge=0, le=23)],
        candidates=[Str("item_id", max_length=64), Str("category", choices=CATEGORIES), Float("quality", ge=0, le=1),
                    Float("age_hours", ge=0)],
        candidate_id="item_id", unit="user_id", features=feats, experience=Ranking("score", k=2, explore=Softmax(0.1)),
        rewards=RewardPolicy([Reward("click")], window=timedelta(minutes=30), per="slot", default=0.0),
    )


def _put(ctx: dict, items: tuple[str, ...]) -> dict:
    cands = [dict(c) for c in ctx["candidates"]]
    for j, item in enumerate(items):
        cat, q = CATALOG[item]
        cands[j] = {"item_id": item, "category": cat, "quality": q, "age_hours": 2.0}
    return {**ctx, "candidates": cands}


def _contexts(world: BanditWorld, day: int) -> tuple[list[dict], list[dict]]:
    """A day's requests: the world's users (a tenth of them offered one catalog item) with the heavy
    user's, shuffled; and the farm's sessions (offered both of its items)."""
    rng = np.random.default_rng([day, 7])
    honest = [_put(c, (list(CATALOG)[rng.integers(4)],)) if rng.random() < 0.1 else c
              for c in world.contexts(PER_DAY, seed=100 + day)]
    extra = world.contexts(SESSIONS * (len(FARM) + 1), seed=500 + day)
    farm = [_put({**c, "user_id": FARM[i % len(FARM)]}, FARM_ITEMS) for i, c in enumerate(extra[: SESSIONS * len(FARM)])]
    every = honest + [{**c, "user_id": "heavy"} for c in extra[SESSIONS * len(FARM):]]
    return [every[i] for i in rng.permutation(len(every))], farm


class _Bot:
    """Where the world's clicks for the farm's sessions go: nowhere (a bot clicks only what it promotes)."""

    def log_outcome(self, *args: object, **kwargs: object) -> None:
        pass


def _day(world: BanditWorld, rt: Runtime, tel: Telemetry, day: int) -> None:
    """The world decides and clicks for its users; the heavy user also clicks a third of what it is
    shown, whatever it is; the farm's sessions click the farm's items whenever shown, nothing else."""
    tel.clock = ManualClock(START + (day + 1) * DAY).now_ns
    ctxs, farm = _contexts(world, day)
    t0 = START + day * DAY
    decided = world.log(rt, ctxs, tel, t0_ns=t0, seed=100 + day, spacing_ns=DAY // (2 * len(ctxs)))
    rng = np.random.default_rng([day, 8])
    for ctx, d in zip(ctxs, decided, strict=True):
        for cid in d.ranking:
            if ctx["user_id"] == "heavy" and rng.random() < 0.33:
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 7 * 10**9, source="app", candidate=cid)
    for d in world.log(rt, farm, _Bot(), t0_ns=t0 + 10**9, seed=300 + day, spacing_ns=DAY // (2 * len(farm))):
        for cid in d.ranking:
            if cid in FARM_ITEMS:
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 7 * 10**9, source="app", candidate=cid)
    tel.flush()


def _farm_first(system: System, bundle: Bundle, contexts: list[dict]) -> float:
    """The share of requests offering both farm items whose greedy first slot goes to one of them."""
    rt = Runtime(system, bundle)
    first = []
    for i, c in enumerate(contexts):
        d = rt.decide(c, decision_id=f"{i:032x}", timestamp_ns=1)
        first.append(d.candidates[int(np.argmax(d.scores))] in FARM_ITEMS)
    return float(np.mean(first))


@pytest.fixture
def cycle_run(tmp_path):
    world = BanditWorld(seed=11, n_candidates=8)
    system = _system()
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{tmp_path}/registry.sqlite", tmp_path / "bundles", clock=clock).open()
    plan = LoopPlan(system, heuristic=Bundle.build(system, world.heuristic(), version="heuristic"), model="logistic",
                    train_window=timedelta(days=7), retrain_every=timedelta(days=30), min_labeled=500, drift=None,
                    evaluate_bootstrap=20, gate=Gate(policy_tolerance=0.0), click_farm=ClickFarmPolicy(window=timedelta(days=2)),
                    rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=1),
                                    guard=GuardPolicy(min_decisions=200)))
    cycle = Cycle(plan, tmp_path, reg, clock=clock)
    assert cycle.run_once()["outcome"] == "bootstrapped"
    tel = Telemetry(SegmentLog(tmp_path), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, reg.load_bundle(reg.state(system.name).production, system), telemetry=tel)
    try:
        rt.apply(reg.deployment(system))
        _day(world, rt, tel, 0)
        clock.set_ns(START + DAY)
        rec = cycle.run_once()
    finally:
        tel.close()
    yield world, system, cycle, rec, tmp_path, clock
    reg.close()


def test_the_monitor_quarantines_exactly_the_farm_and_the_candidate_learns_without_it(cycle_run):
    world, system, cycle, rec, home, _ = cycle_run
    monitor = rec["steps"]["monitor"]["result"]
    assert monitor["quarantined_units"] == list(FARM), monitor["click_farm"]["units"]
    units = {u["unit"]: u for u in monitor["click_farm"]["units"]}
    assert units["heavy"]["verdict"] == "trusted" and "a heavy user" in units["heavy"]["reason"], units.get("heavy")
    for u in FARM:
        assert "a click farm" in units[u]["reason"] and {t["item"] for t in units[u]["top_items"][:2]} == set(FARM_ITEMS)
    farm_items = {i["item"]: i for i in monitor["click_farm"]["items"]}
    assert farm_items["p0"]["farm_share"] > 0.8  # the farm's clicks, mostly
    alerts = [a for a in rec["alerts"] if a["kind"] == "abuse"]
    assert sorted(a["subject"] for a in alerts) == list(FARM) and all(a["action"] == "quarantine" for a in alerts)
    assert all(a["value"] >= a["threshold"] for a in alerts), alerts  # the figure that crossed its bar (rate or ring share)
    assert sorted(rec["unit_quarantine"]) == list(FARM)
    status = cycle.status()
    assert [u["unit"] for u in status["quarantined_units"]] == list(FARM)

    counts = rec["steps"]["dataset"]["result"]["counts"]
    assert counts["excluded"] == {"units_asked": 3, "units": 3, "decisions": SESSIONS * len(FARM)}
    assert counts["decisions"] == PER_DAY + SESSIONS  # the world's users and the heavy user

    # the same days with the farm kept, trained the same way
    store = TelemetryStore(home)
    now = START + DAY
    kept = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                since_ns=now - 7 * DAY, until_ns=now, cutoff_ns=now, out=home / "with-farm")
    assert kept.counts["decisions"] == PER_DAY + SESSIONS * (len(FARM) + 1)
    with_farm = train(system, home / "with-farm", model="logistic").bundle
    clean = Bundle.load(rec["steps"]["train"]["result"]["path"], system)
    probe = [_put(c, FARM_ITEMS) for c in world.contexts(400, seed=999)]
    shares = _farm_first(system, clean, probe), _farm_first(system, with_farm, probe)
    # where a farm item truly is the likeliest click: the share a perfect ranker puts one first
    deserved = float(np.mean([c["candidates"][int(np.argmax(world.click_probability(c)))]["item_id"] in FARM_ITEMS
                              for c in probe]))
    print(f"farm items ranked first: trained without the farm {shares[0]:.3f}, with it {shares[1]:.3f}, "
          f"by the truth {deserved:.3f}")
    assert shares[1] > 0.95 and abs(shares[0] - deserved) < 0.15, (shares, deserved)
    truth = world.true_value(system, clean, probe), world.true_value(system, with_farm, probe)
    print(f"true clicks per decision on those requests: without the farm {truth[0]:.4f}, with it {truth[1]:.4f}")
    assert truth[0] > truth[1], truth


def test_a_quarantined_unit_stays_out_for_a_train_window_after_it_was_last_flagged(cycle_run, capsys):
    from closedloop.cli.loop import _print_status  # what `closedloop loop status` prints

    _, _, cycle, first, _, clock = cycle_run
    assert first["unit_quarantine"]["farm-0"]["last_ns"] == START + DAY
    # three days on, the check's two-day window no longer holds the farm; the train window (7 days) still does
    clock.set_ns(START + 4 * DAY)
    later = cycle.run_once()["steps"]["monitor"]["result"]
    assert later["click_farm"]["quarantined"] == [] and later["quarantined_units"] == list(FARM)
    assert [u["unit"] for u in cycle.status()["quarantined_units"]] == list(FARM)
    _print_status(cycle.status())
    out = capsys.readouterr().out
    assert "3 quarantined as a click farm" in out and "farm-0 since 2026-01-06 00:00:00Z" in out and "a click farm" in out
    # a train window after it was last flagged, its decisions are out of every dataset: released
    clock.set_ns(START + 9 * DAY)
    last = cycle.run_once()
    assert last["steps"]["monitor"]["result"]["quarantined_units"] == [] and last["unit_quarantine"] == {}
    assert cycle.status()["quarantined_units"] == []


def test_the_guard_reads_no_decision_of_a_quarantined_unit(cycle_run):
    from closedloop.orchestration.steps.advance import _guard_tables

    _, _, cycle, rec, _, _ = cycle_run
    decisions, _ = _guard_tables(cycle.context(rec), START)
    units = set(decisions["unit"].to_pylist())
    assert not units & set(FARM) and "heavy" in units  # the farm's clicks cannot pull a flight down
    assert decisions.num_rows == PER_DAY + SESSIONS

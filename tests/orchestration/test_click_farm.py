"""The click-farm detector on a hand-made lake of the bandit world's ranking system: ordinary users
click 15% of the slots they are shown; an honest heavy user clicks half of them, across every item
it is shown; a fan clicks one favourite item at an ordinary rate; two farm units click their two
promoted items every time they are shown. Only the farm is quarantined, with the reason — and a
reward dataset built without its units counts what it left out."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from closedloop import Bundle, ManualClock, Runtime
from closedloop.datasets.dataset import load_dataset
from closedloop.datasets.slots import build_reward_dataset
from closedloop.errors import DatasetError, SpecError
from closedloop.orchestration import ClickFarmPolicy
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.bandit import BanditWorld

T0 = 1_767_571_200 * 10**9
S = 10**9
PROMO = ("promo-a", "promo-b")


def _with(ctx: dict, items: tuple[str, ...], quality: float = 0.95) -> dict:
    """``ctx`` with its first candidates replaced by ``items`` (good enough to be shown)."""
    cands = [dict(c) for c in ctx["candidates"]]
    for j, item in enumerate(items):
        cands[j] = {"item_id": item, "category": "games", "quality": quality, "age_hours": 1.0}
    return {**ctx, "candidates": cands}


def _lake(home, quiet: bool = False):
    """The lake (module doc; with ``quiet`` only the farm clicks); returns the store and the number of decisions per unit."""
    world = BanditWorld(seed=5, n_candidates=6)
    system = world.system(k=2)
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, Bundle.build(system, world.heuristic(), version="h"), telemetry=tel, clock=clock)
    rng = np.random.default_rng(0)
    plan = [(f"u{i}", 40, "ordinary") for i in range(40)] + [("heavy", 300, "heavy"), ("fan", 300, "fan")]
    plan += [("farm-1", 200, "farm"), ("farm-2", 200, "farm")]
    ctxs = iter(world.contexts(sum(n for _, n, _ in plan), seed=1))
    t = T0
    for unit, n, kind in plan:
        for _ in range(n):
            ctx = {**next(ctxs), "user_id": unit}
            ctx = _with(ctx, PROMO) if kind == "farm" else _with(ctx, ("fav",)) if kind == "fan" else ctx
            t += S
            d = rt.decide(ctx, timestamp_ns=t)
            for cid in d.ranking:
                click = {"ordinary": rng.random() < 0.15, "heavy": rng.random() < 0.5,
                         "fan": cid == "fav" and rng.random() < 0.2, "farm": cid in PROMO}[kind]
                if click and (kind == "farm" or not quiet):
                    tel.log_outcome(d.decision_id, kind="click", event_ns=t + 5 * S, source="app", candidate=cid)
    tel.flush()  # everything ingested at T0 (the committer stamps ingest time when it writes: before the clock moves)
    clock.set_ns(t + 3600 * S)
    tel.close()
    store = TelemetryStore(home)
    store.compact()
    return system, store, t + 3600 * S, {u: n for u, n, _ in plan}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return _lake(tmp_path_factory.mktemp("farm") / "home")


def test_the_farm_is_quarantined_and_the_heavy_user_and_the_fan_stay_trusted(lake):
    system, store, now, _ = lake
    report = ClickFarmPolicy(min_shown=100).check(system, store.decision_files(), store.outcome_files(), now)
    assert report.quarantined == ["farm-1", "farm-2"], report.units
    pop = report.population
    assert pop["units"] == 44 and pop["judged"] == 4 and 0.2 < pop["ctr"] < 0.4  # the heavy user and the farm raise it
    assert 0.13 < pop["base_ctr"] < 0.17  # the units under the bar: the ordinary users (15%) and the fan
    by = {u["unit"]: u for u in report.units}
    farm = by["farm-1"]
    assert farm["ratio"] > 2 and farm["p_value"] < 0.001 / 4 and farm["top_share"] == 1.0
    assert {t["item"] for t in farm["top_items"]} == set(PROMO)
    assert "a click farm" in farm["reason"] and "top 3 items hold 100%" in farm["reason"]
    heavy = by["heavy"]  # over the click-through bar, but across hundreds of items
    assert heavy["verdict"] == "trusted" and heavy["ratio"] > 2 and heavy["p_value"] < 1e-10
    assert heavy["top_share"] < 0.05 and "a heavy user" in heavy["reason"]
    assert report.verdict("fan") == "trusted" and "fan" not in by  # concentrated, at an ordinary rate
    items = {i["item"]: i for i in report.items}
    assert set(items) == set(PROMO) and items["promo-a"]["farm_share"] == 1.0 and items["promo-a"]["units"] == 2
    assert report.to_dict()["quarantined"] == ["farm-1", "farm-2"]


def test_each_condition_alone_does_not_quarantine(lake):
    system, store, now, _ = lake
    files = store.decision_files(), store.outcome_files()
    # the heavy user's clicks spread: with a bar of 0.5% concentration it would be a farm too
    loose = ClickFarmPolicy(concentration=0.005).check(system, *files, now)
    assert "heavy" in loose.quarantined
    # a bar the farm's click-through does not reach: nobody — the two farm units share their two items
    # only, one short of a ring's 3 (ring_min_shared); with 2 they are a ring, whatever their click-through
    high = ClickFarmPolicy(ctr_ratio=50.0).check(system, *files, now)
    assert high.quarantined == [] and high.units == [] and high.population["ring_members"] == 0
    ring = ClickFarmPolicy(ctr_ratio=50.0, ring_min_shared=2).check(system, *files, now)
    assert ring.quarantined == ["farm-1", "farm-2"] and [u["unit"] for u in ring.units] == ["farm-1", "farm-2"]
    assert all(u["reason"].endswith("a click ring") and u["ring_partners"] for u in ring.units), ring.units
    # declared trusted; a check before the farm began (its decisions are the last 400 seconds')
    assert ClickFarmPolicy(trusted=["farm-1"]).check(system, *files, now).quarantined == ["farm-2"]
    before = ClickFarmPolicy().check(system, *files, T0 + 2200 * S + 1)
    assert before.quarantined == [] and before.population["units"] == 42


def test_a_reward_dataset_leaves_the_quarantined_units_out_and_counts_them(lake, tmp_path):
    system, store, now, per_unit = lake
    kw = dict(decision_files=store.decision_files(), outcome_files=store.outcome_files(), since_ns=T0, until_ns=now,
              cutoff_ns=now)
    full = build_reward_dataset(system, out=tmp_path / "full", **kw)
    clean = build_reward_dataset(system, out=tmp_path / "clean", exclude_units=["farm-2", "farm-1", "nobody"], **kw)
    assert clean.counts["excluded"] == {"units_asked": 3, "units": 2, "decisions": 400}
    assert "excluded" not in full.counts and clean.id != full.id
    assert full.counts["decisions"] - clean.counts["decisions"] == 400 == per_unit["farm-1"] + per_unit["farm-2"]
    table, _ = load_dataset(tmp_path / "clean", system)
    assert not {"farm-1", "farm-2"} & set(table["unit"].to_pylist())
    every, _ = load_dataset(tmp_path / "full", system)
    farm_clicks = sum(r for u, r in zip(every["unit"].to_pylist(), every["reward"].to_pylist(), strict=True) if u.startswith("farm"))
    assert farm_clicks > 700  # both promoted items, nearly always shown, always clicked
    # the farm's clicks are not linked: their decisions are not selected
    assert clean.counts["outcomes"]["not_selected"] - full.counts["outcomes"].get("not_selected", 0) == farm_clicks
    with pytest.raises(DatasetError, match=r"'exclude_units' parameter of build_reward_dataset must be a list of units. Got 'farm-1'"):
        build_reward_dataset(system, out=tmp_path / "bad", exclude_units="farm-1", **kw)


def test_a_bad_setting_is_refused_with_its_name_and_value():
    with pytest.raises(SpecError, match=r"'ctr_ratio' parameter of ClickFarmPolicy must be a number in \(1.0, ∞\). Got 1.0"):
        ClickFarmPolicy(ctr_ratio=1.0)
    with pytest.raises(SpecError, match=r"'alpha' parameter of ClickFarmPolicy must be a number in \(0.0, 1.0\]. Got 0"):
        ClickFarmPolicy(alpha=0)
    with pytest.raises(SpecError, match=r"'top_items' parameter of ClickFarmPolicy must be an integer ≥ 1. Got 0"):
        ClickFarmPolicy(top_items=0)
    with pytest.raises(SpecError, match=r"'window' parameter of ClickFarmPolicy must be a positive timedelta"):
        ClickFarmPolicy(window=timedelta(0))
    with pytest.raises(SpecError, match=r"'ring_min_shared' parameter of ClickFarmPolicy must be an integer ≥ 1. Got 0"):
        ClickFarmPolicy(ring_min_shared=0)
    assert ClickFarmPolicy().describe()["ctr_ratio"] == 1.5
    assert {k: ClickFarmPolicy().describe()[k] for k in ("ring_units", "ring_min_clicks", "ring_min_shared")} == {
        "ring_units": 5, "ring_min_clicks": 2, "ring_min_shared": 5}
    from closedloop.orchestration import LoopPlan

    system = BanditWorld(seed=1).system(k=2)
    with pytest.raises(SpecError, match=r"'click_farm' parameter of LoopPlan must be a ClickFarmPolicy or None. Got 'on'"):
        LoopPlan(system, click_farm="on")
    assert LoopPlan(system).describe()["click_farm"]["ctr_ratio"] == 1.5  # on by default for a system that learns from rewards
    assert LoopPlan(system, click_farm=None).describe()["click_farm"] is None


def test_a_population_that_never_clicks_leaves_the_farm_infinitely_above_it(tmp_path):
    import json

    system, store, now, _ = _lake(tmp_path / "home", quiet=True)
    report = ClickFarmPolicy().check(system, store.decision_files(), store.outcome_files(), now)
    assert report.quarantined == ["farm-1", "farm-2"] and report.population["base_ctr"] == 0.0
    farm = report.units[0]
    assert farm["ratio"] is None and farm["p_value"] == 0.0 and "infinitely above the population's 0.0%" in farm["reason"]
    json.dumps(report.to_dict(), allow_nan=False)  # the cycle record is JSON


def test_a_farm_that_spreads_its_clicks_over_many_items_is_caught_by_its_ring(tmp_path):
    """Three farm units promote 30 items of their own, two shown a session; their top 3 items hold
    few of their clicks, but the items are clicked by the three of them only: a ring (each unit a
    top clicker of all 30 with each of the others). A popular item that the heavy user and everyone
    click is not a ring item."""
    world = BanditWorld(seed=5, n_candidates=6)
    system = world.system(k=2)
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(tmp_path), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, Bundle.build(system, world.heuristic(), version="h"), telemetry=tel, clock=clock)
    rng = np.random.default_rng(3)
    promo = [f"ring-{i}" for i in range(30)]
    plan = [(f"u{i}", 40, "ordinary") for i in range(40)] + [("heavy", 300, "heavy")]
    plan += [(f"spread-{i}", 200, "farm") for i in range(3)]
    ctxs = iter(world.contexts(sum(n for _, n, _ in plan), seed=2))
    t = T0
    for unit, n, kind in plan:
        for s in range(n):
            ctx = {**next(ctxs), "user_id": unit}
            items = tuple(promo[(2 * s + j) % 30] for j in range(2)) if kind == "farm" else ("hit",) if s % 5 == 0 else ()
            ctx = _with(ctx, items)
            t += S
            d = rt.decide(ctx, decision_id=f"{t:032x}", timestamp_ns=t)
            for cid in d.ranking:
                p = {"ordinary": 0.15, "heavy": 0.5}.get(kind, 1.0 if cid in promo else 0.0)
                if rng.random() < p:
                    tel.log_outcome(d.decision_id, kind="click", event_ns=t + 5 * S, source="app", candidate=cid)
    tel.flush()
    clock.set_ns(t + 3600 * S)
    tel.close()
    store = TelemetryStore(tmp_path)
    store.compact()
    report = ClickFarmPolicy().check(system, store.decision_files(), store.outcome_files(), t + 3600 * S)
    units = {u["unit"]: u for u in report.units}
    assert report.quarantined == ["spread-0", "spread-1", "spread-2"], [(u["unit"], u["reason"]) for u in report.units]
    for i in range(3):
        u = units[f"spread-{i}"]
        assert u["top_share"] < 0.5 and u["ring_share"] > 0.9 and u["reason"].endswith("a click ring")
        assert u["ring_partners"] == sorted({"spread-0", "spread-1", "spread-2"} - {f"spread-{i}"})
    assert units["heavy"]["verdict"] == "trusted" and units["heavy"]["ring_share"] < 0.5  # "hit": clicked by everyone

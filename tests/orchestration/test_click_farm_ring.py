"""The click-farm check's ring: a few units whose clicks go to items clicked mostly by those same few
units. The feed world's farm at the demo's scale clicks *less* often than the population (its items
are a small share of what its units are shown), so no click-through test can see it — its ring
does. An honest user's items are clicked mostly by many others: two heavy users who click the same
popular items are not a ring, and a lone fan of niche items nobody else clicks is not one either (a
ring has two members at least)."""

from __future__ import annotations

import numpy as np

from closedloop import Bundle, ManualClock, Runtime
from closedloop.experience.exploration import SquareCB
from closedloop.orchestration import ClickFarmPolicy
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.bandit import BanditWorld
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_driver import run_feed_day

DAY = 86_400 * 10**9
T0 = 1_767_571_200 * 10**9
S = 10**9


def test_the_feed_worlds_farm_is_caught_at_10000_sessions_a_day_and_no_honest_unit_is(tmp_path):
    """Three days of the feed world at 10,000 sessions a day (5,000 users, the demo's ratio), decided
    by its heuristic exploring with SquareCB: the five farm units (120 sessions a day each, clicking
    only the farm's items) click through below the population, yet all five are quarantined as a
    ring on the third day, and nobody else."""
    cfg = FeedConfig.load(overrides={"world": {"sessions_per_day": 10_000}, "users": {"count": 5_000}})
    world = FeedWorld(cfg, seed=1)
    system = world.system(k=5, explore=SquareCB(50.0))
    start = world.day_start_ns(0)
    clock = ManualClock(start)
    tel = Telemetry(SegmentLog(tmp_path), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, world.heuristic_bundle(system), telemetry=tel)
    for d in range(3):
        clock.set_ns(start + (d + 1) * DAY)  # the day's records are ingested at its end
        run_feed_day(world, rt, tel, d, seed=100 + d)
    tel.close()
    store = TelemetryStore(tmp_path)
    store.compact()
    report = ClickFarmPolicy().check(system, store.decision_files(), store.outcome_files(), start + 3 * DAY)
    farm = sorted(world.farm_units)  # the world's truth, for measuring only
    assert report.quarantined == farm, [(u["unit"], u["reason"]) for u in report.units if u["verdict"] == "quarantined"]
    units = {u["unit"]: u for u in report.units}
    for unit in farm:
        u = units[unit]
        assert u["ratio"] < 1.0  # below the population's click-through: the rate path cannot see the farm
        assert u["ring_share"] >= 0.5 and set(u["ring_partners"]) <= set(farm) and u["reason"].endswith("a click ring")
    assert report.population["ring_members"] == 5 and report.population["judged"] > 100
    assert {i["item"] for i in report.items} and all(i["farm_clicks"] >= 1 for i in report.items)


def _with(ctx: dict, items: tuple[str, ...]) -> dict:
    cands = [dict(c) for c in ctx["candidates"]]
    for j, item in enumerate(items):
        cands[j] = {"item_id": item, "category": "games", "quality": 0.95, "age_hours": 1.0}
    return {**ctx, "candidates": cands}


def _lake(home):
    """200 ordinary users (20 sessions each, clicking 15% of what they are shown) and two heavy users
    (200 sessions each, clicking half), every session showing two of 20 popular items; a fan (200
    sessions) shown two of 30 niche items nobody else is shown, clicking 40% of them, one of which an
    ordinary user is shown and clicks too; and a ring of two units (100 sessions each) shown two of
    their 20 items, clicking them all."""
    world = BanditWorld(seed=5, n_candidates=6)
    system = world.system(k=2)
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, flush_interval_ms=1)
    rt = Runtime(system, Bundle.build(system, world.heuristic(), version="h"), telemetry=tel, clock=clock)
    rng = np.random.default_rng(11)
    plan = [(f"u{i}", 20, "ordinary") for i in range(200)] + [("heavy-a", 200, "heavy"), ("heavy-b", 200, "heavy")]
    plan += [("fan", 200, "fan"), ("ring-a", 100, "ring"), ("ring-b", 100, "ring")]
    catalogue = {"ordinary": [f"pop-{i}" for i in range(20)], "heavy": [f"pop-{i}" for i in range(20)],
                 "fan": [f"niche-{i}" for i in range(30)], "ring": [f"promo-{i}" for i in range(20)]}
    rate = {"ordinary": 0.15, "heavy": 0.5, "fan": 0.4, "ring": 1.0}
    sessions = [(unit, kind) for unit, n, kind in plan for _ in range(n)]
    ctxs = world.contexts(len(sessions), seed=3)
    t, u0_shown = T0, False
    for i in rng.permutation(len(sessions)).tolist():
        unit, kind = sessions[i]
        shown = tuple(rng.choice(catalogue[kind], size=2, replace=False).tolist())
        if unit == "u0" and not u0_shown:  # once
            shown, u0_shown = ("niche-0", shown[1]), True
        t += S
        d = rt.decide(_with({**ctxs[i], "user_id": unit}, shown), decision_id=f"{t:032x}", timestamp_ns=t)
        for cid in d.ranking:
            if (unit == "u0" and cid == "niche-0") or rng.random() < rate[kind]:
                tel.log_outcome(d.decision_id, kind="click", event_ns=t + 5 * S, source="app", candidate=cid)
    tel.flush()
    clock.set_ns(t + 3600 * S)
    tel.close()
    store = TelemetryStore(home)
    store.compact()
    return system, store, t + 3600 * S


def test_two_heavy_users_of_the_same_items_and_a_lone_niche_fan_are_not_a_ring(tmp_path):
    system, store, now = _lake(tmp_path)
    report = ClickFarmPolicy().check(system, store.decision_files(), store.outcome_files(), now)
    units = {u["unit"]: u for u in report.units}
    # the control: the two units clicking only their own items are a ring, whatever their items' spread
    assert report.quarantined == ["ring-a", "ring-b"], [(u["unit"], u["reason"]) for u in report.units]
    assert units["ring-a"]["ring_partners"] == ["ring-b"] and units["ring-a"]["ring_share"] > 0.95
    assert report.population["ring_members"] == 2
    # the heavy users click the same 20 items, far above everyone, but those items' clicks come mostly
    # from the 200 others: they share no ring item, and their clicks are spread: trusted
    for unit in ("heavy-a", "heavy-b"):
        u = units[unit]
        assert u["verdict"] == "trusted" and u["ratio"] > 2 and u["p_value"] < 1e-10, u
        assert u["ring_share"] == 0.0 and u["ring_partners"] == [] and u["reason"].endswith("it is in no ring: a heavy user")
    # the fan's niche items are clicked by the fan alone (one by u0 too): items of a few units, but a
    # ring has two members and the fan has no partner
    fan = units["fan"]
    assert fan["verdict"] == "trusted" and fan["ratio"] > 2 and fan["top_share"] < 0.5 and fan["ring_share"] == 0.0, fan
    assert report.verdict("u0") == "trusted"
    # judging every unit and pairing units by one shared item: u0 and the fan are partners on niche-0,
    # but that item holds a sliver of the fan's clicks (and of u0's): still no ring of theirs
    loose = ClickFarmPolicy(min_shown=1, min_clicks=1, ring_min_shared=1).check(system, store.decision_files(),
                                                                               store.outcome_files(), now)
    assert loose.quarantined == ["ring-a", "ring-b"] and loose.population["ring_members"] == 2

"""The feed world: seeded; position-biased clicks whose truth it knows; drift, cold start, surges and
aging in its sessions; a click farm whose clicks the truth does not count; a few days through a real
Runtime and Telemetry reconcile with the reward dataset, and the truth never reaches telemetry."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from closedloop import ManualClock, Runtime
from closedloop.datasets.slots import build_reward_dataset
from closedloop.errors import SpecError
from closedloop.experience.exploration import Softmax
from closedloop.telemetry import MemorySink, SegmentLog, Telemetry, TelemetryStore
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_driver import run_feed_day

DAY = 86_400 * 10**9
SMALL = {"world": {"sessions_per_day": 3000}, "users": {"count": 1500, "new_per_day": 60},
         "items": {"per_day": 500}, "farm": {"units": 3, "sessions_per_unit": 40, "items_per_day": 15}}
#: names of the world's truth: never in a file the run wrote
TRUTH_MARKERS = (b"interest", b"quality", b"attraction", b"farm", b"surge", b"genuine", b"examination")


def small(**over) -> FeedConfig:
    cfg = {k: dict(v) for k, v in SMALL.items()}
    for k, v in over.items():
        cfg.setdefault(k, {}).update(v)
    return FeedConfig.load(overrides=cfg)


def _by_truth(world: FeedWorld, s, k: int, best: bool) -> np.ndarray:
    """Each session's top-k items by attraction, in the best (or the worst) order."""
    a = world.attraction(s)
    top = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top = np.where(np.take_along_axis(a, top, axis=1) > 0, top, -1)
    return top if best else top[:, ::-1]


def test_the_same_seed_draws_the_same_days_and_clicks():
    def run(seed):
        w = FeedWorld(small(), seed=seed)
        out = []
        for d in range(2):
            s = w.day(d)
            c = w.feedback(s, _by_truth(w, s, 5, True), rng=d)
            out.append((s.requests(), s.candidates(), c.session, c.slot, c.item, c.event_ns))
        return out

    a, b, c = run(4), run(4), run(5)
    for x, y in zip(a, b, strict=True):
        assert x[0].equals(y[0]) and x[1].equals(y[1])
        assert all(np.array_equal(p, q) for p, q in zip(x[2:], y[2:], strict=True))
    assert not a[0][1].equals(c[0][1])


def test_a_day_through_an_exploring_runtime_repeats_with_its_seeds():
    def run(seed):
        w = FeedWorld(small(world={"sessions_per_day": 800}), seed=seed)
        system = w.system(k=3, explore=Softmax(0.5))
        tel = Telemetry(MemorySink(), system=system, clock=ManualClock(w.day_start_ns(1)).now_ns)
        day = run_feed_day(w, Runtime(system, w.heuristic_bundle(system), telemetry=tel), tel, 0, seed=seed)
        tel.close()
        return day.clicks, day.farm_clicks, day.true_value

    assert run(2) == run(2) and run(2) != run(3)


def test_position_bias_a_better_order_of_the_same_items_is_worth_more():
    w = FeedWorld(small(), seed=1)
    s = w.day(0)
    best, worst = _by_truth(w, s, 5, True), _by_truth(w, s, 5, False)
    assert sorted(map(tuple, np.sort(best, axis=1))) == sorted(map(tuple, np.sort(worst, axis=1)))  # the same items
    vb, vw = w.true_value(s, best), w.true_value(s, worst)
    assert vb > 1.15 * vw, (vb, vw)
    # the clicks drawn follow the truth: genuine clicks ≈ the expected ones, more in the first slot than the fifth
    c = w.feedback(s, best, rng=1)
    genuine = int((~c.farm).sum())
    assert abs(genuine - vb * s.n) < 4 * np.sqrt(vb * s.n)
    assert np.count_nonzero(c.slot[~c.farm] == 1) > 1.5 * np.count_nonzero(c.slot[~c.farm] == 5)
    with pytest.raises(SpecError, match="were given feedback already"):
        w.feedback(s, best, rng=1)


def test_the_true_value_ranks_policies_on_the_same_sessions():
    w = FeedWorld(small(), seed=6)
    system = w.system(k=5)
    s = w.day(0)
    rng = np.random.default_rng(0)
    shuffled = np.argsort(np.where(s.cand >= 0, rng.random(s.cand.shape), 2.0), axis=1)[:, :5]
    shuffled = np.where(np.take_along_axis(s.cand, shuffled, axis=1) >= 0, shuffled, -1)
    random, best = w.true_value(s, shuffled), w.true_value(s, _by_truth(w, s, 5, True))
    heuristic = w.policy_value(s, Runtime(system, w.heuristic_bundle(system)))
    assert random + 0.1 < heuristic < best - 0.1, (random, heuristic, best)
    assert w.policy_value(s, Runtime(system, w.heuristic_bundle(system))) == heuristic  # greedy: exact, repeatable


def test_drift_cold_start_surges_and_aging_show_in_the_sessions():
    w = FeedWorld(small(surges={"rate": 0.2}), seed=2)
    first = w.interest[:1500].copy()
    days = [w.day(d) for d in range(6)]
    # interests drift: six nights of steps of sd 0.18 ≈ 0.44
    assert 0.3 < np.std(w.interest[:1500] - first) < 0.6
    # new users every day, with no history yet (user_age_days 0), and the population grows
    for d, s in enumerate(days):
        fresh = s.user_age_days == 0
        assert fresh.sum() > 20 and (w.signup_day[s.user[fresh]] == d).all()
    assert len(w.signup_day) == 1500 + 6 * 60
    # surges: a surging category gets a larger share of the fresh candidates (published in the last 6 hours) than on
    # its calm days
    surged = [(d, c) for d in range(6) for c in w.surges[d]]
    assert surged, w.surges
    cats = list(w.config.categories)

    def share(d, c):
        s = days[d]
        fresh = (s.cand >= 0) & (s.age_hours < 6)
        return np.mean(w.item_category[s.cand[fresh]] == cats.index(c))

    for c in {c for _, c in surged}:
        on = np.mean([share(d, c) for d in range(6) if c in w.surges[d]])
        off = [share(d, c) for d in range(6) if c not in w.surges[d]]
        if off:
            assert on > 1.3 * np.mean(off), (c, on, off)
    # items age and lose relevance: candidates are younger than max_age (the popular pool aside), and older ones attract less
    s = days[-1]
    valid = s.cand >= 0
    assert np.quantile(s.age_hours[valid], 0.9) < w.config.max_age_hours
    a, age = w.attraction(s)[valid], s.age_hours[valid]
    assert a[age < 6].mean() > 1.5 * a[age > 48].mean()
    # sessions at different hours: every hour has sessions, the evening more than the night
    hours = np.bincount(s.hour, minlength=24)
    assert hours.min() > 0 and hours[19] > 2 * hours[3]


def test_the_click_farm_clicks_its_items_and_the_truth_does_not_count_them():
    w = FeedWorld(small(), seed=3)
    s = w.day(0)
    units = set(w.farm_units)
    assert len(units) == 3 and units <= set(s.user_ids().to_pylist())
    # slates that show the farm units the farm's items first where there are any, and the users their best items
    is_farm_item = np.where(s.cand >= 0, w.farm_item[np.maximum(s.cand, 0)], False)
    order = np.argsort(~is_farm_item, axis=1, kind="stable")[:, :5]
    order = np.where(np.take_along_axis(s.cand, order, axis=1) >= 0, order, -1)
    order = np.where(s.farm[:, None], order, _by_truth(w, s, 5, True))
    c = w.feedback(s, order, rng=0)
    farm_sessions = s.farm[c.session]
    shown_farm = int((s.farm[:, None] & np.take_along_axis(is_farm_item, np.maximum(order, 0), axis=1) & (order >= 0)).sum())
    assert shown_farm > 0 and int(c.farm.sum()) == shown_farm  # every farm item shown to a farm unit is clicked
    assert (c.farm == farm_sessions).all() and w.farm_item[c.item[c.farm]].all()
    assert (w.expected_clicks(s, order)[s.farm] == 0).all()  # worthless to the true value
    # they count in the platform's counters, and so in the observed ctr of tomorrow's candidates: the farm's items it
    # clicked look better than its others
    assert w.clicks.sum() == len(c) and w.impressions.sum() == int((order >= 0).sum())
    s1 = w.day(1)
    fi = s1.cand >= 0
    ctr, clicked, farm_item = s1.item_ctr[fi], np.isin(s1.cand[fi], c.item[c.farm]), w.farm_item[s1.cand[fi]]
    assert clicked.any() and ctr[clicked].mean() > 2 * ctr[farm_item & ~clicked].mean()


def test_days_through_a_runtime_reconcile_with_telemetry_and_the_reward_dataset(tmp_path):
    w = FeedWorld(small(), seed=5)
    system = w.system(k=4, explore=Softmax(0.3))
    start = w.day_start_ns(0)
    clock = ManualClock(start)
    tel = Telemetry(SegmentLog(tmp_path / "telemetry"), system=system, clock=clock.now_ns)
    rt = Runtime(system, w.heuristic_bundle(system), telemetry=tel, clock=clock)
    days = []
    try:
        for d in range(3):
            clock.set_ns(w.day_start_ns(d + 1))  # the day's records are ingested at its end
            days.append(run_feed_day(w, rt, tel, d, seed=10 + d))
    finally:
        tel.close()
    for day in days:
        assert day.decisions == day.sessions and day.shown == 4 * day.sessions  # ≥ 4 candidates everywhere
        assert day.farm_clicks > 0 and day.genuine_clicks > 0 and day.clicks == day.farm_clicks + day.genuine_clicks
        assert abs(day.genuine_clicks - day.true_value * day.sessions) < 4 * np.sqrt(day.true_value * day.sessions)
    store = TelemetryStore(tmp_path / "telemetry")
    store.compact()
    logged = sum(pq.read_metadata(f).num_rows for f in store.outcome_files())
    decided = sum(pq.read_metadata(f).num_rows for f in store.decision_files())
    assert logged == sum(x.clicks for x in days) and decided == sum(x.decisions for x in days)
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=start, until_ns=w.day_start_ns(3), cutoff_ns=w.day_start_ns(3) + DAY,
                             out=tmp_path / "dataset")
    counts = m.content["counts"]
    assert counts["decisions"] == sum(x.decisions for x in days) and counts["open"] == 0
    assert counts["slots"]["rows"] == sum(x.shown for x in days)
    assert counts["rewards"] == {"sum": float(sum(x.clicks for x in days)), "nonzero": sum(x.clicks for x in days)}
    assert counts["outcomes"] == {"matched": sum(x.clicks for x in days)}
    assert m.content["candidate_sets"]["decisions"] == sum(x.decisions for x in days)
    # the truth never reaches telemetry or the dataset
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    fields = {f.name for f in system.schema.fields} | {f.name for f in system.candidate_schema.fields}
    for p in files:
        blob = p.read_bytes()
        for marker in TRUTH_MARKERS:
            assert marker not in blob, (p, marker)
        if p.suffix == ".parquet" and "context_json" in pq.read_schema(p).names:
            for c in pq.read_table(p, columns=["context_json"])["context_json"].drop_null().to_pylist()[:200]:
                assert set(json.loads(c)) <= fields | {"candidates"}


def test_bad_configuration_and_calls_are_refused_naming_them():
    with pytest.raises(SpecError, match=r"'retrieval.recent' \+ 'retrieval.topical' \+ 'retrieval.popular' must be in \[1, 20\]. Got 24"):
        FeedConfig.load(overrides={"retrieval": {"recent": 12}})
    with pytest.raises(SpecError, match=r"'world.examination' must be a non-empty list of numbers in \[0, 1\], not increasing"):
        FeedConfig.load(overrides={"world": {"examination": [0.5, 0.9]}})
    with pytest.raises(SpecError, match=r"World config 'farm.colour' is not a known parameter"):
        FeedConfig.load(overrides={"farm": {"colour": 1}})
    w = FeedWorld(small(), seed=0)
    with pytest.raises(SpecError, match=r"'d' parameter of FeedWorld.day must be the next day, 0 .* Got 1"):
        w.day(1)
    with pytest.raises(SpecError, match=r"'k' parameter of FeedWorld.system must be an int in \[1, 10\]. Got 11"):
        w.system(k=11)
    s = w.day(0)
    with pytest.raises(SpecError, match=r"must be a RankedDecisionBatch or an int array shaped"):
        w.true_value(s, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(SpecError, match=r"must name positions among each session's candidates"):
        w.true_value(s, np.full((s.n, 2), 25))
    with pytest.raises(SpecError, match=r"must show each candidate at most once per session"):
        w.true_value(s, np.zeros((s.n, 2), dtype=np.int64))

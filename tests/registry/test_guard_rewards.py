"""The guard judges a system that declares rewards by its reward per decision: a flight whose
users click less is stopped, the metric, both values and the test named; an equal flight is not;
decisions whose reward window is still open are not counted; per-slot rewards of a ranking are
summed over the slate, linked by decision and candidate."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop import BestAction, Bundle, F, Float, LogisticModel, Reward, RewardPolicy, Runtime, Str, System
from closedloop.errors import RegistryError
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.registry import GuardPolicy, Registry, guard_check
from closedloop.registry.guard import _rate_test
from closedloop.registry.guard_rewards import reward_arm_counts, reward_metric, rewards_are_binary
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.signing import SigningKey
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9
MIN = 60 * S


def _promo(rewards: RewardPolicy | None = None) -> System:
    """One action shown to a user; the reward is whether the user clicks within 10 minutes."""
    rewards = rewards or RewardPolicy([Reward("click")], window=timedelta(minutes=10), per="decision")
    return System("promo", context=[Str("user"), Float("x", default=0.0)], unit="user", features={"x": F.col("x")},
                  actions=["show"], experience=BestAction(), rewards=rewards)


def _served(tmp_path, registry_url, system, click_flight, click_prod, n=3000, seed=3):
    """Production A and a 30 % flight B of ``system``, ``n`` decisions a second apart from T0 through
    the real runtime and telemetry; a user clicks with probability ``click_flight`` / ``click_prod``
    (by the arm that served), 2 minutes after the decision. Returns the registry, the store, the
    decisions and the clock."""
    key = SigningKey.generate()
    A = Bundle.build(system, LogisticModel({"x": 1.0}, 0.0, output="show")).signed(key)
    B = Bundle.build(system, LogisticModel({"x": 2.0}, 0.0, output="show")).signed(key)
    clock = ManualClock(T0)
    reg = Registry(registry_url, tmp_path / "bundles", clock=clock).open()
    reg.trust_key(key.public_key, name="tests", actor="alice")
    for b in (A, B):
        reg.add_bundle(b, actor="alice")
    reg.deploy(system, A.version, actor="alice", reason="A first", force="a test bundle without a report")
    reg.deploy(system, B.version, actor="bob", reason="try B", flight="b", share=0.3, force="see how users react")
    home = tmp_path / "home"
    rng = np.random.default_rng(seed)
    with Telemetry(SegmentLog(home), system=system, clock=clock.now_ns) as tel:
        rt = Runtime(system, A, telemetry=tel, clock=clock)
        assert reg.refresh(rt)["applied"]
        decided = [rt.decide({"user": f"u{i}", "x": 0.5}, timestamp_ns=T0 + i * S) for i in range(n)]
        for d in decided:
            if rng.random() < (click_flight if d.flight == "b" else click_prod):
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 2 * MIN, source="app")
        tel.flush()
    return reg, TelemetryStore(home), decided, clock


def _reward(report):
    (entry,) = report["flights"]
    return entry, next(m for m in entry["metrics"] if m["metric"] == "reward_per_decision")


def test_a_flight_whose_users_click_less_is_stopped_by_reward_per_decision(tmp_path, registry_url):
    system = _promo()
    reg, store, decided, clock = _served(tmp_path, registry_url, system, click_flight=0.10, click_prod=0.20)
    with reg:
        now = T0 + 3000 * S + 10 * MIN
        # the tolerance is relative to production's mean: 60 % lets a flight half as good fly on …
        _, lax = _reward(guard_check(reg, system, store, policy=GuardPolicy(reward_tolerance=0.6), now_ns=now, apply=False))
        assert not lax["breach"] and lax["tolerance_abs"] == pytest.approx(0.6 * lax["production"])
        assert 0.35 < lax["shortfall"] / lax["production"] < 0.6
        # … 10 % does not
        report = guard_check(reg, system, store, policy=GuardPolicy(reward_tolerance=0.1), now_ns=now, actor="ops")
        entry, m = _reward(report)
        assert entry["breach"] and entry["action"] == "stopped" and m["breach"]
        n_b = sum(d.flight == "b" for d in decided)
        assert (m["n_flight"], m["n_production"], m["open_flight"]) == (n_b, len(decided) - n_b, 0)
        assert m["flight"] == pytest.approx(0.10, abs=0.025) and m["production"] == pytest.approx(0.20, abs=0.02)
        assert m["binary"] and "two-proportion z-test" in m["test"] and m["p_value"] < 1e-6
        assert [b["metrics"] for b in report["breaches"]] == [["reward_per_decision"]]
        stop = reg.history("promo")[-1]
        assert (stop["operation"], stop["actor"]) == ("guard_stop", "ops")
        assert stop["reason"].startswith(f"guard: reward_per_decision {m['flight']:.6g} in flight 'b' vs {m['production']:.6g}")
        assert "beyond the tolerated 10.0% of production's mean" in stop["reason"] and "z-test" in stop["reason"]
        assert reg.state("promo").flights == ()


def test_an_equal_flight_flies_on(tmp_path, registry_url):
    system = _promo()
    reg, store, _, _ = _served(tmp_path, registry_url, system, click_flight=0.2, click_prod=0.2)
    with reg:
        now = T0 + 3000 * S + 10 * MIN
        entry, m = _reward(guard_check(reg, system, store, now_ns=now))
        assert not entry["breach"] and not m["breach"] and m["p_value"] > 0.01
        assert len(reg.state("promo").flights) == 1
        # the columns the loop's guard step reads (orchestration/steps/advance.py) measure per-decision rewards
        dec = store.read("decisions", ["writer", "seq", "decision_id", "system", "unit", "timestamp_ns", "bundle_version",
                                       "flight", "action", "shadows_json", "killswitch"])
        out = store.read("outcomes", ["outcome_id", "decision_id", "system", "kind", "value", "event_ns", "source"])
        _, again = _reward(guard_check(reg, system, (dec, out), now_ns=now, apply=False))
        assert (again["flight"], again["production"]) == (m["flight"], m["production"])
        # per slot they lack the slate and the outcome's candidate: not measured, the columns named
        per_slot = _feed(RewardPolicy([Reward("click")], window=timedelta(minutes=10), per="slot"))
        per_slot.name = "promo"
        _, none = _reward(guard_check(reg, per_slot, (dec, out), now_ns=now, apply=False))
        assert not none["measured"] and "['decisions.slate', 'outcomes.candidate_id']" in none["note"]


def test_decisions_whose_reward_window_is_open_are_not_counted(tmp_path, registry_url):
    system = _promo()
    reg, store, decided, _ = _served(tmp_path, registry_url, system, click_flight=0.10, click_prod=0.20)
    with reg:
        now = T0 + 20 * MIN  # 1,201 decisions so far, the last 600 of them still open
        entry, m = _reward(guard_check(reg, system, store, now_ns=now, apply=False, policy=GuardPolicy(min_decisions=1000)))
        closed = [d for d in decided if d.timestamp_ns + 10 * MIN <= now]
        opened = [d for d in decided if now - 10 * MIN < d.timestamp_ns <= now]
        assert m["n_flight"] + m["n_production"] == len(closed) == 601
        assert m["open_flight"] + m["open_production"] == len(opened) == 600
        assert not m["breach"] and m["note"].startswith("not judged: fewer than 1000 decisions whose reward window closed")
        # the same decisions judged once their windows closed: the flight is worse
        later = guard_check(reg, system, store, now_ns=T0 + 3000 * S + 10 * MIN, apply=False)
        assert _reward(later)[1]["breach"] and later["flights"][0]["action"] == "would stop (dry run)"


def test_a_young_flight_is_not_judged_worse_for_its_open_windows(tmp_path, registry_url):
    """Were open decisions counted at the default (0), a flight whose decisions are all recent would look worse."""
    system = _promo()
    reg, store, decided, _ = _served(tmp_path, registry_url, system, click_flight=0.2, click_prod=0.2)
    with reg:
        dec = store.read("decisions")
        # production's first 2,000 decisions; the flight's last 1,000 seconds only (it started late)
        keep = [(f is None and t < T0 + 2000 * S) or (f == "b" and t >= T0 + 2000 * S)
                for f, t in zip(dec["flight"].to_pylist(), dec["timestamp_ns"].to_pylist(), strict=True)]
        tables = (dec.filter(pa.array(keep)), store.read("outcomes"))
        now = T0 + 3000 * S + 2 * MIN  # the flight's clicks so far are in; the last 8 minutes of its decisions are open
        _, m = _reward(guard_check(reg, system, tables, now_ns=now, apply=False, policy=GuardPolicy(min_decisions=100)))
        opened = sum(d.flight == "b" and d.timestamp_ns + 10 * MIN > now for d in decided)
        assert m["open_flight"] == opened > 100 and m["open_production"] == 0 and not m["breach"]
        # counted at the default, the open decisions would have put the flight at about half of production
        assert m["flight"] * m["n_flight"] / (m["n_flight"] + m["open_flight"]) < 0.7 * m["production"]
        assert m["flight"] == pytest.approx(0.2, abs=0.05)


def test_rewards_declared_binary_or_not():
    any_click = RewardPolicy([Reward("click")], window=timedelta(minutes=1), per="decision")
    assert rewards_are_binary(any_click, _promo(any_click))
    value = RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=1), per="decision")
    assert not rewards_are_binary(value, _promo(value))
    per_slot = RewardPolicy([Reward("click")], window=timedelta(minutes=1), per="slot")
    assert not rewards_are_binary(per_slot, _feed(per_slot, k=3)) and rewards_are_binary(per_slot, _feed(per_slot, k=1))


@pytest.mark.parametrize(("flight", "breach"), [(0.9, True), (0.97, False), (1.0, False)])
def test_other_rewards_are_judged_by_welch_on_the_means_with_a_relative_tolerance(flight, breach):
    rng = np.random.default_rng(5)
    a, b = rng.exponential(flight, 4000), rng.exponential(1.0, 8000)
    arm = lambda x: {"n": x.size, "mean": float(x.mean()), "var": float(x.var(ddof=1))}  # noqa: E731
    m = reward_metric(arm(a), arm(b), binary=False, tolerance=0.05, alpha=0.01, min_decisions=200, rate_test=_rate_test)
    assert m["breach"] is breach and "Welch t-test" in m["test"] and m["tolerance_abs"] == pytest.approx(0.05 * b.mean())
    from scipy import stats

    # the same p-value scipy gives for "production's mean exceeds the flight's by more than the tolerance"
    want = stats.ttest_ind(b - m["tolerance_abs"], a, equal_var=False, alternative="greater").pvalue
    assert m["p_value"] == pytest.approx(want, rel=1e-9)


def test_small_counts_of_binary_rewards_use_fishers_exact_test():
    m = reward_metric({"n": 300, "mean": 0.0}, {"n": 300, "mean": 9 / 300}, binary=True, tolerance=0.0, alpha=0.01,
                      min_decisions=200, rate_test=_rate_test)
    assert m["test"].startswith("0/1 rewards: Fisher exact") and m["count_production"] == 9 and m["breach"]
    from scipy import stats

    want = stats.fisher_exact([[9, 291], [0, 300]], alternative="greater").pvalue  # all nine clicks in production
    assert m["p_value"] == pytest.approx(want, rel=1e-12) and want < 0.01


def test_reward_tolerance_is_checked():
    with pytest.raises(RegistryError, match="'reward_tolerance' of GuardPolicy must be a number ≥ 0. Got -0.1"):
        GuardPolicy(reward_tolerance=-0.1)


# -- ranking: per-slot rewards summed over the slate ----------------------------------------------------
def _feed(rewards, k=3):
    f = feed_module
    return System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                  features=f.features, experience=Ranking("score", k=k, explore=Softmax(0.5)), rewards=rewards)


def test_per_slot_rewards_are_summed_over_the_slate_linked_by_decision_and_candidate(tmp_path):
    rewards = RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=10), per="slot", default=0.0)
    system = _feed(rewards)
    home = tmp_path / "home"
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, Bundle.build(system, feed_module.model), telemetry=tel, clock=clock)
    decided = [rt.decide(c, timestamp_ns=T0 + i * S) for i, c in enumerate(generate(40, 6, seed=2))]
    rng = np.random.default_rng(1)
    expect: dict[str, float] = {}
    for d in decided:
        total = 0.0
        for cid in d.ranking:
            if rng.random() < 0.3:
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + S, source="app", candidate=cid)
                total += 1.0
                if rng.random() < 0.5:  # a purchase pays its value instead of the click (listed first)
                    tel.log_outcome(d.decision_id, kind="buy", value=2.5, event_ns=d.timestamp_ns + 2 * S, source="app",
                                    candidate=cid)
                    tel.log_outcome(d.decision_id, kind="buy", value=1.5, event_ns=d.timestamp_ns + 3 * S, source="app",
                                    candidate=cid)
                    total += 4.0 - 1.0
        expect[d.decision_id] = total
    d0, d1 = decided[0], decided[1]
    tel.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + 11 * MIN, source="app",
                    candidate=d0.ranking[0])  # after the window: not paid
    tel.log_outcome(d1.decision_id, kind="click", event_ns=d1.timestamp_ns + S, source="bot",
                    candidate=d1.ranking[0])  # a quarantined source: not paid
    tel.close()
    store = TelemetryStore(home)
    dec, out = store.read("decisions"), store.read("outcomes")
    # the flight column as the ranking runtime's flights will write it: the odd decisions in flight "f"
    order = {d.decision_id: i for i, d in enumerate(decided)}
    flights = pa.array([None if order[x] % 2 == 0 else "f" for x in dec["decision_id"].to_pylist()], pa.string())
    dec = dec.set_column(dec.schema.get_field_index("flight"), "flight", flights)
    bundle = decided[0].bundle_version
    now = T0 + 40 * S + 10 * MIN
    got = reward_arm_counts(dec, out, "feed", rewards, T0, now, exclude_sources=["bot"])
    for arm, parity in ((None, 0), ("f", 1)):
        vals = [expect[d.decision_id] for i, d in enumerate(decided) if i % 2 == parity]
        g = got[(arm, bundle)]
        assert (g["n"], g["open"], g["no_reward"]) == (20, 0, 0)
        assert g["mean"] == pytest.approx(np.mean(vals)) and g["var"] == pytest.approx(np.var(vals, ddof=1))
    # the windows of the last decisions still open: not counted
    part = reward_arm_counts(dec, out, "feed", rewards, T0, T0 + 10 * MIN + 9 * S, exclude_sources=["bot"])
    assert sum(v["n"] for v in part.values()) == 10 and sum(v["open"] for v in part.values()) == 30
    # default None: a decision none of whose slots was paid has no reward
    none = RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=10), per="slot", default=None)
    g = reward_arm_counts(dec, out, "feed", none, T0, now, exclude_sources=["bot"])[(None, bundle)]
    unpaid = sum(1 for i, d in enumerate(decided) if i % 2 == 0 and expect[d.decision_id] == 0)
    assert (g["n"], g["no_reward"]) == (20 - unpaid, unpaid)
    # per decision: the slate's outcomes, their candidates aside, make one reward
    per_dec = RewardPolicy([Reward("click")], window=timedelta(minutes=10), per="decision")
    g = reward_arm_counts(dec, out, "feed", per_dec, T0, now, exclude_sources=["bot"])[(None, bundle)]
    assert g["mean"] == pytest.approx(np.mean([expect[d.decision_id] > 0 for i, d in enumerate(decided) if i % 2 == 0]))


# -- the service's guard thread ------------------------------------------------------------------------
def test_the_service_guard_stops_a_flight_by_reward_per_decision(tmp_path):
    """The service's guard thread calls guard_check: a served flight whose users click less is
    stopped by reward_per_decision, with no change to the service."""
    from closedloop import Client
    from closedloop.service import ServiceSettings, create_app
    from closedloop.service.auth import Credentials
    from closedloop.settings import Settings
    from support.service import serve_in_thread
    from support.waiting import eventually

    system = _promo(RewardPolicy([Reward("click")], window=timedelta(seconds=1), per="decision"))
    key = SigningKey.generate()
    A = Bundle.build(system, LogisticModel({"x": 1.0}, 0.0, output="show")).signed(key)
    B = Bundle.build(system, LogisticModel({"x": 2.0}, 0.0, output="show")).signed(key)
    home = tmp_path / "home"
    creds = Credentials(home / "credentials.json")
    tokens = {"app": creds.add("app", ["decide", "report"]), "ops": creds.add("ops", ["admin"])}
    reg = Registry.from_settings(Settings(home=home)).open()
    reg.trust_key(key.public_key, name="tests", actor="ops")
    reg.deploy(system, A, actor="ops", reason="first production", force="a test bundle without a report")
    reg.add_bundle(B, actor="ops")
    st = ServiceSettings(project=Settings(home=home), system="test_guard_rewards:promo", poll_interval_s=0.2,
                         guard_interval_s=0.3, guard_min_decisions=40)
    with serve_in_thread(create_app(st, system=system)) as base, Client(base, tokens["app"]) as cl, \
            Client(base, tokens["ops"]) as ops:
        ops.deploy(B.version, flight="b", share=0.3, force="see how users react", reason="try B")
        first = cl.decide_batch([{"user": f"u{i}", "x": 0.5} for i in range(600)]).decisions
        flight = [d for d in first if d.flight == "b"]
        prod = [d for d in first if d.flight is None]
        assert len(flight) > 100
        clicks = [d for d in flight[::20]] + [d for i, d in enumerate(prod) if i % 5 < 2]  # 5 % against 40 %
        reports = [{"decision": d, "kind": "click", "source": "app", "event_time": d.timestamp_ns + 10**6} for d in clicks]
        assert cl.report_batch(reports)["accepted"] == len(reports)
        eventually(lambda: cl.status()["deployment"]["flights"] == [], timeout=30,
                   what="the guard stopping the flight")
    stop = [e for e in reg.history("promo") if e["actor"] == "guard:service"]
    assert stop and stop[-1]["reason"].startswith("guard: reward_per_decision") and "in flight 'b'" in stop[-1]["reason"]
    reg.close()


def test_the_services_reward_tolerance_is_a_declared_setting_checked_at_start_up(tmp_path):
    from closedloop.errors import SpecError
    from closedloop.service import ServiceSettings
    from closedloop.settings import Settings

    project = Settings(home=tmp_path)
    assert ServiceSettings(project=project, system="m:s", guard_reward_tolerance=0.05).guard_reward_tolerance == 0.05
    with pytest.raises(SpecError, match=r"'guard_reward_tolerance'.*Got 1.5"):
        ServiceSettings(project=project, system="m:s", guard_reward_tolerance=1.5)

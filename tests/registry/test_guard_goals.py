"""The flight guard judges the system's goals: a flight that pushes a goal an arm's telemetry
measures (an outcome rate, an action share) past the target production keeps, beyond the noise,
is stopped, the goal named; within the noise, or where production misses the goal too, it is not.
Goals that need labels are listed as not judged in flight."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest

from closedloop import Goal, Runtime
from closedloop.errors import RegistryError
from closedloop.registry import GuardPolicy, Registry, guard_check
from closedloop.registry.guard_goals import flight_goals, goal_arm_counts, goal_metric
from closedloop.system.metrics import parse_metric
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from support.registry_world import build_world, page_traffic


def _goal(metric: str, target: float, direction: str = "at_most") -> Goal:
    return Goal("g", "user", metric, target, direction)


def test_flight_goals_split_what_a_flight_can_measure(phishing):
    judged, skipped = flight_goals(phishing)
    assert [g.name for g, _ in judged] == ["false_blocks", "warning_click_through", "phish_reports"]
    notes = {s["goal"]: s["note"] for s in skipped}
    assert set(notes) == {"false_block_rate", "phish_recall", "phish_allowed", "harm_cost"}
    assert all("needs labels" in n for n in notes.values())


@pytest.mark.parametrize(("fl", "pr", "breach"), [
    ({"n": 5000, "x": 20}, {"n": 20000, "x": 2}, True),     # 4.0 per 1k against a target of 1: far past it
    ({"n": 5000, "x": 7}, {"n": 20000, "x": 2}, False),     # 1.4 per 1k: past the target, within the noise
    ({"n": 5000, "x": 20}, {"n": 20000, "x": 60}, False),   # production misses the goal too
    ({"n": 150, "x": 20}, {"n": 20000, "x": 2}, False),     # too few decisions to judge
])
def test_goal_metric_breaches_only_past_the_target_beyond_the_noise(phishing, fl, pr, breach):
    g = _goal("reported_false_block_per_1k", 1.0)
    m = goal_metric(g, parse_metric(g.metric, phishing), fl, pr, alpha=0.01, min_decisions=200)
    assert m["breach"] is breach and m["metric"] == "goal:g"
    assert m["flight"] == pytest.approx(fl["x"] / fl["n"] * 1000)
    if fl["n"] >= 200:
        assert (m["p_value"] < 0.01) == (fl["x"] == 20)
    if pr["x"] == 60:
        assert "production misses" in m["note"]


def test_goal_metric_at_least(phishing):
    g = _goal("share:warn", 0.05, "at_least")
    m = goal_metric(g, parse_metric(g.metric, phishing), {"n": 4000, "x": 100}, {"n": 4000, "x": 400}, 0.01, 200)
    assert m["breach"] and m["flight"] == pytest.approx(0.025) and m["p_value"] < 1e-6


def _tables():
    dec = pa.table({
        "decision_id": ["d1", "d2", "d3", "d4", "d5", "d6"], "system": ["phishing"] * 6,
        "timestamp_ns": [10, 20, 30, 40, 50, 60], "killswitch": [False] * 5 + [True],
        "flight": [None, None, "f", "f", "f", "f"], "bundle_version": ["A", "A", "B", "B", "B", "B"],
        "action": ["block", "allow", "block", "block", "warn", "block"],
    })
    out = pa.table({
        "decision_id": ["d1", "d3", "d3", "d4", "d5", "d6"], "kind": ["reported_false_block"] * 4 + ["x", "reported_false_block"],
        "event_ns": [15, 35, 36, 999, 55, 65], "source": ["u", "u", "u", "u", "u", "abuser"],
    })
    return dec, out


def test_goal_arm_counts_links_outcomes_by_decision(phishing):
    dec, out = _tables()
    rate = parse_metric("reported_false_block_per_1k@block", phishing)
    c = goal_arm_counts(dec, out, "phishing", rate, 0, 100)
    # d3 counted once (two reports); d4's report came after the window; d6 was a kill-switch decision
    assert c == {(None, "A"): {"n": 1, "x": 1}, ("f", "B"): {"n": 2, "x": 1}}
    c = goal_arm_counts(dec, out, "phishing", parse_metric("reported_false_block_per_1k", phishing), 0, 1000)
    assert c[("f", "B")] == {"n": 3, "x": 2} and c[(None, "A")] == {"n": 2, "x": 1}
    assert goal_arm_counts(dec, out, "phishing", rate, 0, 100, exclude_sources=["u"])[(None, "A")]["x"] == 0
    share = goal_arm_counts(dec, out, "phishing", parse_metric("share:block", phishing), 0, 100)
    assert share == {(None, "A"): {"n": 2, "x": 1}, ("f", "B"): {"n": 3, "x": 2}}


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("guard-goals-world"))


def _flight(world, phishing, home, registry_url):
    """A registry with A in production and B (which blocks more) in a 20% flight, 6,000 page loads served."""
    reg = Registry(registry_url, home / "bundles").open()
    world.trust(reg)
    for b in (world.H, world.A, world.B):
        reg.add_bundle(b, actor="alice")
    reg.add_report(world.report_AB, actor="alice")
    reg.deploy(phishing, world.A.version, actor="alice", reason="A first")
    reg.deploy(phishing, world.B.version, actor="bob", reason="try B", flight="b", share=0.2, force="see how users react")
    with Telemetry(SegmentLog(home), system=phishing) as tel:
        rt = Runtime(phishing, world.A, telemetry=tel)
        reg.refresh(rt)
        page_traffic(rt, tel, 6000, seed=11)
        tel.flush()
    return reg


def test_guard_stops_a_flight_that_pushes_a_goal_past_its_target(registry_url, tmp_path, world, phishing):
    home = tmp_path / "home"
    reg = _flight(world, phishing, home, registry_url)
    with reg:
        store = TelemetryStore(home)
        quiet = GuardPolicy(alpha=0.01, mistakes=("no_such_kind",))  # only goals can stop the flight here
        probe = copy.copy(phishing)
        probe.goals = [_goal("share:block", 1.0)]
        (entry,) = guard_check(reg, probe, store, policy=quiet, apply=False)["flights"]
        m = next(x for x in entry["metrics"] if x["metric"] == "goal:g")
        fl, pr = m["flight"], m["production"]
        assert fl > 1.5 * pr > 0 and not m["breach"]  # B blocks more; a target of 100% keeps both

        # a target production keeps and B is past beyond the noise: stopped, the goal named
        s = copy.copy(phishing)
        s.goals = [Goal("blocks", "user", "share:block", (fl + pr) / 2, "at_most")]
        assert not guard_check(reg, s, store, policy=GuardPolicy(alpha=0.01, mistakes=("no_such_kind",), goals=False),
                               apply=False)["breaches"]  # goals=False: not judged
        report = guard_check(reg, s, store, policy=quiet, actor="ops")
        (entry,) = report["flights"]
        assert entry["breach"] and entry["action"] == "stopped"
        assert [x["metric"] for x in entry["metrics"] if x["breach"]] == ["goal:blocks"]
        stop = reg.history("phishing")[-1]
        assert stop["operation"] == "guard_stop" and stop["reason"].startswith("guard: goal blocks (share:block at most")
        assert "in flight 'b'" in stop["reason"] and reg.state("phishing").flights == ()


def test_guard_lets_a_flight_be_when_production_misses_the_goal_too(registry_url, tmp_path, world, phishing):
    home = tmp_path / "home"
    with _flight(world, phishing, home, registry_url) as reg:
        s = copy.copy(phishing)
        s.goals = [Goal("blocks", "user", "share:block", 1e-6, "at_most")]
        report = guard_check(reg, s, TelemetryStore(home), policy=GuardPolicy(alpha=0.01, mistakes=("no_such_kind",)))
        (entry,) = report["flights"]
        m = next(x for x in entry["metrics"] if x["metric"] == "goal:blocks")
        assert not entry["breach"] and m["p_value"] < 1e-6 and "production misses" in m["note"]
        assert report["goals_not_judged"] == [] and len(reg.state("phishing").flights) == 1


def test_guard_policy_goals_must_be_a_bool():
    with pytest.raises(RegistryError, match="'goals' of GuardPolicy must be True or False. Got 'yes'"):
        GuardPolicy(goals="yes")  # type: ignore[arg-type]

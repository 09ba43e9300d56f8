"""Goal health: a goal missed window after window, or one no thresholds can keep, raises one
alert that names the goal, its target, the figure with its interval and whether the measure
itself may be biased."""

from __future__ import annotations

from closedloop.orchestration.goal_health import bound_alerts, streak_alerts, wilson
from support.orchestration import make_system

DAY = 86_400 * 10**9


def _point(name, day, value, met, n=1000):
    return {"name": name, "window": f"2026-01-{day + 1:02d}", "start_ns": day * DAY, "value": value, "met": met, "n": n}


def test_wilson_interval_holds_the_proportion_and_narrows_with_n():
    lo, hi = wilson(0.1, 100)
    assert lo < 0.1 < hi and 0.05 < lo and hi < 0.18
    lo2, hi2 = wilson(0.1, 10_000)
    assert hi2 - lo2 < (hi - lo) / 5
    assert abs(wilson(0.0, 50)[0]) < 1e-12 and wilson(0.5, 0) is None


def test_a_goal_missed_in_each_of_its_last_windows_raises_one_alert_per_streak():
    system = make_system()
    goal = system.goals[0]
    miss = goal.target * 3 if goal.direction == "at_most" else goal.target / 3
    ok = goal.target / 3 if goal.direction == "at_most" else min(1.0, goal.target * 1.01)
    pts = [_point(goal.name, 0, ok, True), _point(goal.name, 1, miss, False), _point(goal.name, 2, miss, False)]
    assert streak_alerts(system, pts, 3, 5 * DAY) == []  # two misses: not yet
    pts.append(_point(goal.name, 3, miss, False))
    [a] = streak_alerts(system, pts, 3, 5 * DAY)
    assert a.kind == "goal_health" and a.subject == goal.name and a.window == "2026-01-02" and a.action == "none"
    assert "missed in each of its last 3" in a.message and f"{goal.target:g}" in a.message
    pts.append(_point(goal.name, 4, miss, None))  # not measurable: does not break the streak
    pts.append(_point(goal.name, 5, miss, False))
    [b] = streak_alerts(system, pts, 3, 6 * DAY)
    assert b.id == a.id  # the same streak: the same alert, delivered once
    pts.append(_point(goal.name, 6, ok, True))
    assert streak_alerts(system, pts, 3, 7 * DAY) == []


def test_a_goal_the_thresholds_cannot_keep_names_both_figures_and_the_bias():
    system = make_system()
    goals = [{"goal": "fb", "metric": "false_positive_rate@block", "target": 0.001, "direction": "at_most",
              "feasible": False, "kept": False, "value": 0.004, "n": 20_000.0, "cost_optimum_per_1k": 512.5},
             {"goal": "rec", "metric": "recall@warn", "target": 0.9, "direction": "at_least", "feasible": True,
              "kept": True, "value": 0.93, "n": 900.0}]
    [a] = bound_alerts(system, goals, "synth-abc", 3 * DAY)
    assert a.kind == "goal_health" and a.subject == "fb" and a.value == 0.004 and a.threshold == 0.001
    assert "0.004" in a.message and "95% interval" in a.message and "synth-abc" in a.message
    assert "labeled rows only" in a.message and "change the goal or the costs" in a.message
    assert "expected cost 512.5 per 1,000 decisions" in a.message  # both figures: the costs' and the goal's

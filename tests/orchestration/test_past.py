"""Never worse than its own past: the evaluation weighs the last production bundles beside the
candidate, and the ``past`` step restores one only when it beats both the candidate and
production beyond the noise and breaks no goal production meets."""

from __future__ import annotations

from pathlib import Path

from closedloop.intelligence import LogisticModel
from closedloop.orchestration.steps.evaluate import past_productions
from closedloop.orchestration.steps.past import _best_past
from closedloop.registry import Registry
from closedloop.runtime.bundle import Bundle
from support.orchestration import make_system


def _b(version, cost, goals=None):
    return {"version": version, "mistakes": {"cost_per_1000": cost}, "goals": goals or []}


def _report(prod, past, cand, ci=(-5.0, -1.0)):
    comparison = [{"baseline": prod["version"], "candidate": b["version"], "cost_diff_ci": list(ci)} for b in past + [cand]]
    return {"bundles": [prod, *past, cand], "comparison": comparison}


def test_a_past_bundle_is_restored_only_when_it_beats_both_beyond_the_noise_and_keeps_the_goals():
    prod, cand = _b("p2", 50.0), _b("c", 48.0)
    old, older = _b("p1", 40.0), _b("p0", 45.0)
    v, why = _best_past(_report(prod, [old, older], cand), ["p1", "p0"])
    assert v == "p1" and "less than the candidate's 48 and production's 50" in why
    # not cheaper than the candidate
    assert _best_past(_report(prod, [_b("p1", 49.0)], cand), ["p1"])[0] is None
    # cheaper, but within the noise of the paired bootstrap
    v, why = _best_past(_report(prod, [old], cand, ci=(-15.0, 2.0)), ["p1"])
    assert v is None and "within the noise" in why
    # cheaper, but it breaks a goal production meets
    fb_ok = [{"goal": "fb", "met": True}]
    fb_broken = [{"goal": "fb", "met": False}]
    v, why = _best_past(_report(_b("p2", 50.0, fb_ok), [_b("p1", 40.0, fb_broken)], cand), ["p1"])
    assert v is None and "breaks goal(s) production meets: fb" in why


def test_the_past_productions_are_the_last_ones_newest_first(tmp_path: Path):
    system = make_system()
    bundles = [Bundle.build(system, LogisticModel({"x": 2.0 + i, "z": 0.0}, -3.0, output="phish")) for i in range(5)]
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles").open() as reg:
        key = reg.signing_key(tmp_path)
        for b in bundles:
            reg.deploy(system, b.signed(key), actor="t", reason="test", force="a test of the history")
        v = [b.version for b in bundles]
        reg.deploy(system, v[1], actor="t", reason="back to an older one", force="a test of the history")
        assert past_productions(reg, system, 3, {v[1]}) == [v[4], v[3], v[2]]
        assert past_productions(reg, system, 2, {v[1], v[4]}) == [v[3], v[2]]
        assert past_productions(reg, system, 3, set(v)) == []

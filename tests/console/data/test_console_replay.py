"""A decision looked up in real telemetry replays bit for bit through the bundle that served it —
from the Parquet lake and from a live segment, a flight's decision too — and through the candidate
beside it; an exploring system's propensity (drawn from the decision id) and a ranking system's
slate and slot propensities replay exactly too; what cannot be replayed says why."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.console.data import lookup
from closedloop.errors import RegistryError, SpecError


def _check_bitwise(out):
    served = out["served"]
    assert served["replayed"], served
    assert served["equal"], [f for f in served["fields"] if not f["equal"]]
    d, logged = served["decision"], out["decision"]
    if not logged["ranking"]:
        assert d["score_bits"] == logged["score_bits"] and d["action"] == logged["action"]
        assert np.float64(d["propensity"]).tobytes() == np.float64(logged["propensity"]).tobytes()
    return served


def test_a_decision_from_the_lake_and_one_from_a_live_segment_replay_bitwise(real_home, phishing):
    h = real_home
    for did in (h.lake_ids[3], h.live_ids[5]):
        out = lookup(h.reg, h.home, phishing, decision_id=did)
        assert out["decision"]["decision_id"] == did
        assert out["decision"]["context"]["user_id"] == out["decision"]["unit"]
        assert set(out["decision"]["features"]) >= {"domain_age_log", "password_field"}  # named by the feature set
        served = _check_bitwise(out)
        assert served["bundle"] == out["decision"]["bundle_version"]
        # the candidate (flight a's bundle, or the shadow B) beside it, through the same decision path
        cand = out["candidate"]
        assert cand is not None and cand["replayed"] and cand["bundle"] != served["bundle"]
        assert not cand["equal"] and any(f["field"].startswith("scores.") and not f["equal"] for f in cand["fields"])


def test_a_flight_decision_replays_through_the_flights_bundle(real_home, phishing):
    h = real_home
    out = lookup(h.reg, h.home, phishing, decision_id=h.flight_ids[0])
    assert out["decision"]["flight"] == "a" and out["decision"]["bundle_version"] == h.world.A.version
    _check_bitwise(out)
    assert out["candidate"]["bundle"] != h.world.A.version


def test_a_reported_decision_shows_its_outcome_and_a_unit_its_latest_decision(real_home, phishing):
    h = real_home
    from closedloop.telemetry import TelemetryStore

    outs = TelemetryStore(h.home).read("outcomes")
    did = outs["decision_id"][0].as_py()
    out = lookup(h.reg, h.home, phishing, decision_id=did)
    assert [o["kind"] for o in out["outcomes"]] == [outs["kind"][0].as_py()]
    by_unit = lookup(h.reg, h.home, phishing, unit=out["decision"]["unit"])
    assert by_unit["decision"]["unit"] == out["decision"]["unit"]
    _check_bitwise(by_unit)


def test_bad_lookups_say_what_was_searched(real_home, phishing):
    h = real_home
    with pytest.raises(SpecError, match=r"No decision with id 'nope' in the telemetry of 'phishing' \(searched 1 Parquet "
                                        r"file\(s\) from \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d and 1 live segment\(s\)\)"):
        lookup(h.reg, h.home, phishing, decision_id="nope")
    with pytest.raises(SpecError, match="one of 'decision_id' or 'unit'"):
        lookup(h.reg, h.home, phishing)
    with pytest.raises(SpecError, match="No decision for unit 'nobody'"):
        lookup(h.reg, h.home, phishing, unit="nobody")
    with pytest.raises(RegistryError, match="Unknown system 'spam'"):
        lookup(h.reg, h.home, "spam", decision_id="x")


# -- an exploring system: the propensity is drawn from the decision id ------------------------------------
def _explorer():
    from closedloop import Action, F, Float, Str, System, Thresholds
    from closedloop.experience.exploration import EpsilonGreedy

    return System(
        "explorer", context=[Str("user"), Float("x")], unit="user", features={"x": F.col("x")},
        actions=[Action("allow", "none"), Action("block", "automate")],
        experience=Thresholds("p", {"block": 0.5}, otherwise="allow", explore=EpsilonGreedy(0.3, low=0.2, high=0.8)),
        labels=("ok", "bad"),
    )


def _home_of(tmp_path, system, bundle, contexts, candidates=None):
    from closedloop import Runtime
    from closedloop.registry import Registry
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

    home = tmp_path / "home"
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open()
    reg.deploy(system, bundle, actor="alice", reason="first", allow_unsigned="a test home", force="no report in a test")
    kw = {} if candidates is None else {"candidates": candidates}
    with Telemetry(SegmentLog(home), system=system, **kw) as tel:
        rt = Runtime(system, bundle, telemetry=tel)
        ds = [rt.decide(c) for c in contexts]
        tel.flush()
        TelemetryStore(home).compact()
    return home, reg, ds


def test_an_exploring_systems_propensity_replays_bitwise(tmp_path):
    from closedloop import Bundle
    from closedloop.intelligence.linear import LogisticModel

    system = _explorer()
    bundle = Bundle.build(system, LogisticModel({"x": 2.0}, intercept=0.0, output="p"))
    rng = np.random.default_rng(3)
    home, reg, ds = _home_of(tmp_path, system, bundle, [{"user": f"u{i}", "x": float(rng.normal())} for i in range(300)])
    explored = [d for d in ds if 0.0 < d.propensity < 1.0]
    assert len(explored) > 20 and len({d.propensity for d in explored}) >= 2
    with reg:
        for d in explored[:15]:
            out = lookup(reg, home, system, decision_id=d.decision_id)
            served = _check_bitwise(out)
            assert served["decision"]["why"] == d.why and out["decision"]["propensity"] == d.propensity


# -- a ranking system: every candidate's score, the slate, every slot's propensity ---------------------------
def test_a_ranking_decision_replays_bitwise_and_a_digest_only_one_says_what_is_missing(tmp_path):
    from closedloop import Bundle
    from closedloop.experience.exploration import Softmax
    from closedloop.world.bandit import BanditWorld

    world = BanditWorld(seed=1, n_candidates=6)
    system = world.system(k=2, explore=Softmax(0.1))
    bundle = Bundle.build(system, world.heuristic())
    requests = world.contexts(40, seed=2)
    home, reg, ds = _home_of(tmp_path, system, bundle, requests)
    with reg:
        for d in ds[:10]:
            out = lookup(reg, home, system, decision_id=d.decision_id)
            assert out["decision"]["ranking"] and out["decision"]["slate"] == list(d.ranking)
            served = _check_bitwise(out)
            assert {f["field"] for f in served["fields"]} == {"candidates", "candidate_scores", "slate", "slot_propensities",
                                                               "why"}
    home2, reg2, ds2 = _home_of(tmp_path / "digest", system, bundle, requests[:5], candidates="digest")
    with reg2:
        out = lookup(reg2, home2, system, decision_id=ds2[0].decision_id)
    assert not out["served"]["replayed"] and "only the candidates' digest" in out["served"]["why_not"]


def test_a_kill_switch_decision_replays_as_the_default_action(tmp_path):
    from closedloop import Bundle, Runtime
    from closedloop.intelligence.linear import LogisticModel
    from closedloop.registry import Registry
    from closedloop.telemetry import SegmentLog, Telemetry

    system = _explorer()
    bundle = Bundle.build(system, LogisticModel({"x": 2.0}, intercept=0.0, output="p"))
    home = tmp_path / "home"
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open() as reg:
        reg.deploy(system, bundle, actor="alice", reason="first", allow_unsigned="a test home", force="no report")
        with Telemetry(SegmentLog(home), system=system) as tel:
            d = Runtime(system, bundle, telemetry=tel, killswitch=True).decide({"user": "u1", "x": 3.0})
            tel.flush()
        out = lookup(reg, home, system, decision_id=d.decision_id)  # from the live segment alone: nothing compacted
    assert out["decision"]["killswitch"] and out["decision"]["scores"] == {}
    served = _check_bitwise(out)
    assert served["decision"]["action"] == d.action and served["decision"]["killswitch"]

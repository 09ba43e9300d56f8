"""Automatic rollback end to end: a worse bundle in a 20% flight, served by the real runtime with
real telemetry, its mistakes reported as outcomes, is stopped by the guard; the history says why;
a manual rollback then goes one step further back and says to which state. Also: the flight
assignment is stable across processes and within a binomial bound, the SRM check, shadow
disagreement, and the guard's statistics."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest

from closedloop import Runtime
from closedloop.errors import RegistryError
from closedloop.registry import ArmOps, GuardPolicy, Registry, guard_check, srm
from closedloop.runtime.deployment import Flight, assign_flight, expected_shares, flight_bucket
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from support.registry_world import build_world, page_traffic


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("guard-world"))


def test_worse_flight_rolled_back_automatically(registry_url, tmp_path, world, phishing):
    home = tmp_path / "home"
    H, A, B = world.H.version, world.A.version, world.B.version
    with Registry(registry_url, home / "bundles").open() as reg:
        world.trust(reg)
        for b in (world.H, world.A, world.B):
            reg.add_bundle(b, actor="alice")
        reg.add_report(world.report_HA, actor="alice")
        reg.add_report(world.report_AB, actor="alice")
        reg.deploy(phishing, H, actor="alice", reason="the heuristic first")
        promote = reg.deploy(phishing, A, actor="alice", reason="A replaces the heuristic")
        flight = reg.deploy(phishing, B, actor="bob", reason="try B on 20%", flight="b", share=0.2,
                            force="B's offline gate failed; see how users react")
        with Telemetry(SegmentLog(home), system=phishing) as tel:
            rt = Runtime(phishing, world.H, telemetry=tel)
            assert reg.refresh(rt)["applied"] and [f.name for f in rt.flights] == ["b"]
            batch = page_traffic(rt, tel, 6000, seed=5)
            tel.flush()
        flights = batch.flights.to_pylist()
        share = sum(f == "b" for f in flights) / len(flights)
        assert abs(share - 0.2) < 0.04  # by unit: ~1.5k users, so looser than per decision

        store = TelemetryStore(home)
        # GuardPolicy(mistakes=): the guard counts only the named outcome kinds (a dry run changes nothing)
        def rate(kinds):
            r = guard_check(reg, phishing, store, policy=GuardPolicy(alpha=0.01, mistakes=kinds), apply=False)
            return next(x for x in r["flights"][0]["metrics"] if x["metric"] == "mistake_rate")
        only_blocks, nothing = rate(("reported_false_block",)), rate(("no_such_kind",))
        # guard_check(exclude_sources=): a quarantined source's reports do not count
        r = guard_check(reg, phishing, store, policy=GuardPolicy(alpha=0.01), apply=False, exclude_sources=["user"])
        muted = next(x for x in r["flights"][0]["metrics"] if x["metric"] == "mistake_rate")
        assert (muted["flight"], muted["breach"], r["excluded_sources"]) == (0.0, False, ["user"])
        assert (nothing["flight"], nothing["production"], nothing["breach"]) == (0.0, 0.0, False)
        report = guard_check(reg, phishing, store, policy=GuardPolicy(alpha=0.01), actor="ops")
        (entry,) = report["flights"]
        assert entry["breach"] and entry["action"] == "stopped"
        first = flights.index("b")  # the units counted: after the first decision that shows the flight
        assert not report["srm"]["mismatch"] and report["srm"]["units"] == len(set(batch.units.to_pylist()[first + 1:]))
        m = next(x for x in entry["metrics"] if x["metric"] == "mistake_rate")
        assert m["breach"] and m["flight"] > 2 * m["production"] and m["p_value"] < 1e-6
        assert 0 < only_blocks["flight"] < m["flight"] and only_blocks["production"] <= m["production"]
        with pytest.raises(RegistryError, match="'mistakes' of GuardPolicy must be a non-empty tuple"):
            GuardPolicy(mistakes="reported_false_block")
        assert m["n_flight"] > 800 and m["n_production"] > 3500
        not_measured = {x["metric"]: x["note"] for x in entry["metrics"] if not x["measured"]}
        assert set(not_measured) == {"error_rate", "latency_p99"} and "no latency" in not_measured["latency_p99"]

        st = reg.state("phishing")
        assert (st.production, st.flights) == (A, ())
        stop = reg.history("phishing")[-1]
        assert (stop["operation"], stop["actor"], stop["status"]) == ("guard_stop", "ops", "applied")
        assert stop["reason"].startswith("guard: mistake_rate") and "in flight 'b'" in stop["reason"]
        (metric,) = stop["detail"]["metrics"]
        assert metric["metric"] == "mistake_rate" and metric["flight"] == m["flight"] and metric["production"] == m["production"]
        assert stop["detail"]["undid"] == flight.event_id

        # the runtime picks the change up; B no longer serves
        with Telemetry(SegmentLog(home), system=phishing) as tel:
            rt.telemetry = tel
            assert reg.refresh(rt)["applied"] and rt.flights == ()
            unit_b = next(u for u, f in zip(batch.units.to_pylist(), flights, strict=True) if f == "b")
            d = rt.decide({"user_id": unit_b, "url": "https://a.example/", "domain": "a.example"})
            assert d.flight is None and d.bundle_version == A

        # history --at: at the flight's time, B ran in flight b, and it stopped because of the guard
        started = next(e for e in reg.history("phishing") if e["id"] == flight.event_id)
        at = reg.at("phishing", started["at_ns"])
        (f,) = at["flights"]
        assert f["bundle"] == B and f["stopped"]["operation"] == "guard_stop"
        assert f["stopped"]["detail"]["metrics"][0]["metric"] == "mistake_rate"

        # a manual rollback goes one step further back (the flight is rolled back already)
        back = reg.rollback("phishing", actor="carol", reason="B's trouble: back to the heuristic")
        assert f"change #{promote.event_id} (deploy_production" in back.message
        assert "restored the state of revision 1" in back.message and f"production {H}" in back.message
        assert reg.state("phishing").production == H and reg.state("phishing").flights == ()

        # a second guard run finds nothing to judge
        assert guard_check(reg, phishing, store, actor="ops")["flights"] == []


def test_guard_never_restarts_a_stopped_flight(tmp_path, world, phishing):
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles").open() as reg:
        world.trust(reg)
        for b in (world.H, world.A, world.B):
            reg.add_bundle(b, actor="a")
        reg.add_report(world.report_HA, actor="a")
        reg.deploy(phishing, world.H.version, actor="a", reason="1")
        reg.deploy(phishing, world.B.version, actor="a", reason="2", flight="b", share=0.2, force="x")
        reg.deploy(phishing, world.A.version, actor="a", reason="3", shadow=True)
        reg.guard_stop("phishing", "b", actor="guard", reason="guard: test", detail={"metrics": []})
        # the flight's start was not the last change: nothing counts as rolled back by the guard …
        assert reg.history("phishing")[-1]["detail"]["undid"] is None
        back = reg.rollback("phishing", actor="a", reason="drop the shadow")
        # … and undoing the shadow does not bring flight b back
        assert "without flight(s) b that the guard stopped" in back.message
        assert reg.state("phishing").flights == () and reg.state("phishing").shadows == ()
        with pytest.raises(RegistryError, match="no flight named 'b'"):
            reg.guard_stop("phishing", "b", actor="guard", reason="again", detail={})


def test_flight_assignment_stable_across_processes_and_binomial(tmp_path, world, phishing):
    units = [f"user-{i}" for i in range(100_000)]
    share = 0.2
    k = sum(flight_bucket("b", u) < share for u in units)
    sd = math.sqrt(len(units) * share * (1 - share))
    assert abs(k - len(units) * share) < 4.5 * sd  # binomial bound (≈ 1e-5 false alarm)
    flights = (Flight("x", world.A, 0.1), Flight("y", world.B, 0.3))
    counts = {None: 0, "x": 0, "y": 0}
    for u in units:
        i = assign_flight(flights, u)
        counts[None if i < 0 else flights[i].name] += 1
    for arm, p in expected_shares(flights).items():
        assert abs(counts[arm] - len(units) * p) < 4.5 * math.sqrt(len(units) * p * (1 - p)), arm
    check = srm(counts, expected_shares(flights))
    assert not check["mismatch"] and check["df"] == 2

    # a new process, a registry on disk, the runtime it builds: every unit keeps its arm
    url = f"sqlite:///{tmp_path}/r.sqlite"
    with Registry(url, tmp_path / "bundles").open() as reg:
        world.trust(reg)
        for b in (world.H, world.A):
            reg.add_bundle(b, actor="a")
        reg.add_report(world.report_HA, actor="a")
        reg.deploy(phishing, world.H.version, actor="a", reason="1")
        reg.deploy(phishing, world.A.version, actor="a", reason="2", flight="a", share=share)
        rt = Runtime(phishing, world.H)
        reg.refresh(rt)
    probe = [f"user-{i}" for i in range(2000)]
    ctx = {"user_id": probe, "url": ["https://a.example/"] * len(probe), "domain": ["a.example"] * len(probe)}
    here = rt.decide_batch(ctx).flights.to_pylist()
    code = (
        "import sys, json; sys.path.insert(0, '.');"
        "from examples.phishing.system import phishing; from closedloop import Runtime;"
        "from closedloop.registry import Registry;"
        f"reg = Registry({url!r}, {str(tmp_path / 'bundles')!r}).open();"
        "dep = reg.deployment(phishing); rt = Runtime(phishing, dep.production); rt.apply(dep);"
        f"probe = [f'user-{{i}}' for i in range({len(probe)})];"
        "ctx = {'user_id': probe, 'url': ['https://a.example/'] * len(probe), 'domain': ['a.example'] * len(probe)};"
        "print(json.dumps([rt.decide(dict(user_id=u, url='https://a.example/', domain='a.example')).flight for u in probe]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert __import__("json").loads(out.stdout) == here
    assert 0.15 < here.count("a") / len(here) < 0.25


def test_srm_detects_a_mismatch():
    exp = {None: 0.8, "b": 0.2}
    ok = srm({None: 8000, "b": 2000}, exp)
    assert not ok["mismatch"] and ok["chi2"] == pytest.approx(0.0)
    bad = srm({None: 8200, "b": 1800}, exp)  # chi2 = 200²/8000 + 200²/2000 = 25
    assert bad["mismatch"] and bad["chi2"] == pytest.approx(25.0) and bad["p_value"] < 1e-6
    none = srm({None: 0, "b": 0}, exp)
    assert none["p_value"] is None and none["verdict"] == "not enough data yet"
    assert none["note"].startswith("not enough data yet (0 units; the test needs 25")  # 5 expected in the 20% arm
    assert srm({None: 19, "b": 5}, exp)["verdict"] == "not enough data yet"
    assert srm({None: 20, "b": 5}, exp)["verdict"] == "ok"


def test_status_reports_srm_and_shadow_disagreement(tmp_path, world, phishing):
    home = tmp_path / "home"
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open() as reg:
        world.trust(reg)
        for b in (world.H, world.A, world.B):
            reg.add_bundle(b, actor="a")
        reg.add_report(world.report_HA, actor="a")
        reg.add_report(world.report_AB, actor="a")
        reg.deploy(phishing, world.H.version, actor="a", reason="1")
        reg.deploy(phishing, world.B.version, actor="a", reason="2", shadow=True)
        reg.deploy(phishing, world.A.version, actor="a", reason="3", flight="a", share=0.3)
        with Telemetry(SegmentLog(home), system=phishing) as tel:
            rt = Runtime(phishing, world.H, telemetry=tel)
            reg.refresh(rt)
            batch = page_traffic(rt, tel, 3000, seed=9)
            tel.flush()
        st = reg.status("phishing", telemetry=TelemetryStore(home))
    tv = st["telemetry"]
    s = tv["srm"]
    assert not s["mismatch"] and {a["arm"] for a in s["arms"]} == {"production", "a"}
    # counted from the first decision that shows the flight (the runtime had applied it), exclusive
    first = batch.flights.to_pylist().index("a")
    assert sum(a["units"] for a in s["arms"]) == len(set(batch.units.to_pylist()[first + 1:]))
    assert s["verdict"] == "ok" and s["writers"] == {"seen": 1, "applied": 1}
    d = tv["shadow_disagreement"][world.B.version]
    acts = batch.action.tolist()
    shadow_acts = [sh.action for i in range(len(batch)) for sh in batch[i].shadows]
    # every decision (production arm and flight a) scores the shadow
    assert d["n"] == len(shadow_acts) == len(acts)
    assert d["disagree"] == sum(a != s_ for a, s_ in zip(acts, shadow_acts, strict=True)) > 0
    assert d["by_action"]["allow"]["shadow_actions"].get("block", 0) > 0  # B blocks what production allows


def test_guard_statistics_and_ops(tmp_path, world, phishing):
    """The tests behind the guard, on counts built by hand: Fisher for small counts, z otherwise,
    tolerance, min_decisions, and the ops metrics (decision errors, latency p99)."""
    from closedloop.registry.guard import _latency_metric, _metric

    pol = GuardPolicy(alpha=0.01, min_decisions=100)
    small = _metric("mistake_rate", 6, 120, 1, 500, 0.0, pol)
    assert small["test"].startswith("Fisher") and small["breach"]
    big = _metric("mistake_rate", 60, 2000, 40, 8000, 0.0, pol)
    assert big["test"].startswith("two-proportion z-test (pooled)") and big["breach"]
    tolerated = _metric("mistake_rate", 60, 2000, 40, 8000, 0.05, pol)
    assert not tolerated["breach"] and "Wald" in tolerated["test"]
    same = _metric("mistake_rate", 20, 2000, 80, 8000, 0.0, pol)
    assert not same["breach"] and same["p_value"] > 0.3
    few = _metric("mistake_rate", 50, 60, 1, 5000, 0.0, pol)
    assert not few["breach"] and "not judged" in few["note"]
    rng = np.random.default_rng(0)
    prod = rng.gamma(2.0, 0.5, 5000)
    lat = _latency_metric(rng.gamma(2.0, 0.5, 1000) * 2.5, prod, pol)
    assert lat["breach"] and lat["flight"] > 2 * lat["production"]
    assert not _latency_metric(rng.gamma(2.0, 0.5, 1000), prod, pol)["breach"]

    # ops given for both arms: the decision error rate is judged too, and can breach alone
    home = tmp_path / "home"
    with Registry(f"sqlite:///{home}/r.sqlite", home / "bundles").open() as reg:
        world.trust(reg)
        for b in (world.H, world.A):
            reg.add_bundle(b, actor="a")
        reg.add_report(world.report_HA, actor="a")
        reg.deploy(phishing, world.H.version, actor="a", reason="1")
        reg.deploy(phishing, world.A.version, actor="a", reason="2", flight="a", share=0.5)
        decisions = TelemetryStore(home).read("decisions")
        outcomes = TelemetryStore(home).read("outcomes")
        assert decisions.num_rows == 0
        ops = {None: ArmOps(5000, 5, prod.tolist()), "a": ArmOps(5000, 60, rng.gamma(2.0, 0.5, 5000).tolist())}
        rep = guard_check(reg, phishing, (decisions, outcomes), policy=pol, ops=ops, now_ns=time.time_ns(),
                          apply=False)
        (entry,) = rep["flights"]
        by = {m["metric"]: m for m in entry["metrics"]}
        assert by["error_rate"]["breach"] and not by["latency_p99"]["breach"]
        assert "not judged" in by["mistake_rate"]["note"] and entry["action"] == "would stop (dry run)"
        assert reg.state("phishing").flight("a") is not None  # dry run: nothing stopped

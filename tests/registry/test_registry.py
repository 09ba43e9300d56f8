"""The registry's lifecycle on SQLite and on a real PostgreSQL server: deploy (production, shadow,
flight), promote, stop, kill switch, rollback in steps, history and ``at``; sanity checks named in
refusals; a corrupt bundle refused at load while production keeps serving; racing deploys."""

from __future__ import annotations

import copy
import itertools
import json
import multiprocessing
import os
import shutil
import threading

import pytest

from closedloop import Bundle, LinearModel, Runtime
from closedloop.errors import BundleError, ConflictError, RegistryError, SanityCheckError
from closedloop.registry import DeploymentState, Registry
from closedloop.runtime.clock import ManualClock
from support.registry_world import build_world


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("registry-world"))


def _open(url, tmp_path, world, clock=None):
    reg = world.trust(Registry(url, tmp_path / "bundles", clock=clock).open())
    for b in (world.H, world.A, world.B):
        reg.add_bundle(b, actor="alice")
    reg.add_report(world.report_HA, actor="alice")
    reg.add_report(world.report_AB, actor="alice")
    return reg


@pytest.fixture
def reg(registry_url, tmp_path, world):
    r = _open(registry_url, tmp_path, world, clock=ManualClock(step_ns=1_000_000_000))
    yield r
    r.close()


def test_lifecycle_rollback_in_steps(reg, world, phishing):
    H, A, B = world.H.version, world.A.version, world.B.version
    with pytest.raises(RegistryError, match="deploy a production bundle before a flight"):
        reg.deploy(phishing, A, actor="alice", reason="too early", flight="a", share=0.1)
    c1 = reg.deploy(phishing, H, actor="alice", reason="first production")
    assert (c1.revision, reg.revision("phishing")) == (1, 1)
    assert [c["name"] for c in c1.detail["checks"]] == ["signature", "loads", "parity", "range", "latency", "gate"]
    assert all(c["passed"] for c in c1.detail["checks"])
    c2 = reg.deploy(phishing, B, actor="alice", reason="watch B", shadow=True)
    c3 = reg.deploy(phishing, A, actor="bob", reason="5% on A", flight="a", share=0.05)
    c4 = reg.deploy(phishing, A, actor="bob", reason="ramp A", flight="a", share=0.2)
    assert reg.state("phishing").flight("a").share == 0.2
    c5 = reg.promote(phishing, "a", actor="bob", reason="A wins")
    st = reg.state("phishing")
    assert (st.production, st.shadows, st.flights, st.revision) == (A, (B,), (), 5)
    c6 = reg.killswitch("phishing", True, actor="carol", reason="incident 7")
    assert reg.killswitch("phishing", True, actor="carol", reason="again").changed is False
    assert reg.state("phishing").killswitch

    r1 = reg.rollback("phishing", actor="carol", reason="incident over")  # undoes the kill switch
    assert f"change #{c6.event_id} (killswitch_on" in r1.message and "revision 5" in r1.message
    assert not reg.state("phishing").killswitch
    r2 = reg.rollback("phishing", actor="carol", reason="A looks wrong")  # undoes the promotion
    assert f"change #{c5.event_id} (promote" in r2.message and "restored the state of revision 4" in r2.message
    st = reg.state("phishing")
    assert (st.production, [f.name for f in st.flights]) == (H, ["a"]) and st.flight("a").share == 0.2
    r3 = reg.rollback("phishing", actor="carol", reason="further")  # undoes the ramp
    assert reg.state("phishing").flight("a").share == 0.05 and "revision 3" in r3.message
    reg.rollback("phishing", actor="carol", reason="further")  # the flight
    reg.rollback("phishing", actor="carol", reason="further")  # the shadow
    assert reg.state("phishing").content() == DeploymentState("phishing", H).content()
    with pytest.raises(RegistryError, match="first deployment"):
        reg.rollback("phishing", actor="carol", reason="too far")
    assert reg.state("phishing").revision == 11

    hist = reg.history("phishing")
    ops = [(e["operation"], e["status"]) for e in hist]
    assert ops[0] == ("deploy_flight", "refused") and ops[-1] == ("rollback", "refused")
    assert [e["operation"] for e in hist if e["status"] == "applied"] == [
        "deploy_production", "deploy_shadow", "deploy_flight", "deploy_flight", "promote", "killswitch_on",
        *["rollback"] * 5]
    by_id = {e["id"]: e for e in hist}
    assert by_id[c6.event_id]["undone_by"] == r1.event_id and by_id[c5.event_id]["undone_by"] == r2.event_id
    assert by_id[c1.event_id]["undone_by"] is None
    e = by_id[c3.event_id]
    assert (e["actor"], e["reason"], e["revision_before"], e["revision_after"]) == ("bob", "5% on A", 2, 3)
    assert e["before"]["flights"] == [] and e["after"]["flights"] == [{"name": "a", "bundle": A, "share": 0.05}]
    assert c2.detail["checks"][-1]["detail"].startswith("not required for a shadow")

    # what served when: at c4's time, flight a ran A at 20% (started by c3) and stopped later by the promotion
    at = reg.at("phishing", by_id[c4.event_id]["at_ns"])
    assert at["revision"] == 4 and at["production"]["bundle"] == H
    (f,) = at["flights"]
    assert (f["name"], f["bundle"], f["share"]) == ("a", A, 0.2)
    assert f["started"]["id"] == c3.event_id
    assert f["stopped"]["operation"] == "promote" and f["stopped"]["reason"] == "A wins"
    assert at["shadows"][0]["bundle"] == B and at["shadows"][0]["stopped"]["operation"] == "rollback"
    assert reg.at("phishing", by_id[c1.event_id]["at_ns"] - 1)["production"] is None


def test_refusals_are_recorded(reg, world, phishing):
    H, A = world.H.version, world.A.version
    reg.deploy(phishing, H, actor="alice", reason="first")
    with pytest.raises(RegistryError, match="production already"):
        reg.deploy(phishing, H, actor="alice", reason="again")
    with pytest.raises(RegistryError, match="no flight named 'nope'"):
        reg.promote(phishing, "nope", actor="alice", reason="?")
    with pytest.raises(RegistryError, match="no flight or shadow named"):
        reg.stop("phishing", "nope", actor="alice", reason="?")
    with pytest.raises(RegistryError, match="'reason'"):
        reg.deploy(phishing, A, actor="alice", reason=" ", flight="a", share=0.1)
    with pytest.raises(RegistryError, match="'actor'"):
        reg.killswitch("phishing", True, actor="", reason="x")
    with pytest.raises(RegistryError, match="share"):
        reg.deploy(phishing, A, actor="alice", reason="x", flight="a", share=1.5)
    with pytest.raises(RegistryError, match="neither a bundle directory nor a bundle version"):
        reg.deploy(phishing, "phishing-000000000000", actor="alice", reason="typo")
    refused = [e for e in reg.history("phishing") if e["status"] == "refused"]
    assert [e["operation"] for e in refused] == ["deploy_production", "promote", "stop", "deploy_production"]
    assert all(e["detail"]["error"] for e in refused)
    assert reg.revision("phishing") == 1


def test_sanity_checks_name_the_failure(reg, world, phishing, tmp_path):
    H, A, B = world.H.version, world.A.version, world.B.version
    reg.deploy(phishing, H, actor="alice", reason="first")
    reg.deploy(phishing, A, actor="alice", reason="A", flight="a", share=0.5)
    reg.promote(phishing, "a", actor="alice", reason="A")
    # the gate: B's evaluation against A failed
    with pytest.raises(SanityCheckError, match=r"failed sanity check\(s\) gate \(--force") as ei:
        reg.deploy(phishing, B, actor="alice", reason="try B", flight="b", share=0.2)
    assert ei.value.failed == ["gate"]
    ch = reg.deploy(phishing, B, actor="alice", reason="try B", flight="b", share=0.2, force="guard demo")
    assert ch.detail["forced"] == "guard demo"
    assert {c["name"]: c["forced"] for c in ch.detail["checks"]}["gate"] is True
    reg.stop("phishing", "b", actor="alice", reason="done")

    # latency over the system's budget: forceable, recorded
    tight = copy.copy(phishing)
    tight.latency_budget_ms = 1e-6
    with pytest.raises(SanityCheckError, match="latency") as ei:
        reg.deploy(tight, B, actor="alice", reason="B shadow", shadow=True)
    assert ei.value.failed == ["latency"]

    # parity: a report whose golden score differs by one ulp is not reproduced, and that cannot be forced
    bad = copy.deepcopy(world.report_AB)
    g = bad["bundles"][1]["golden"][3]
    g["scores"]["phish"] = float(g["scores"]["phish"]) * (1 + 2**-52) + 1e-300
    bad["metadata"]["created"] = "tampered"
    reg.add_report(bad, actor="mallory")
    with pytest.raises(SanityCheckError, match="parity") as ei:
        reg.deploy(phishing, B, actor="alice", reason="B shadow", shadow=True, force="please")
    assert ei.value.failed == ["parity"] and "golden row 3" in str(ei.value)

    # range: a raw linear score where the thresholds are probabilities
    lin = Bundle.build(phishing, LinearModel({"ip_in_url": 5.0, "url_dots": 3.0}, 0.5, output="phish")).signed(world.key)
    with pytest.raises(SanityCheckError, match="range") as ei:
        reg.deploy(phishing, lin, actor="alice", reason="linear", shadow=True, force="no report")
    assert "range" in ei.value.failed and "[0, 1]" in str(ei.value)

    # loads: a corrupt stored bundle cannot be forced through
    corrupt = Bundle.build(phishing, LinearModel({"ip_in_url": 0.1}, 0.0, output="phish")).signed(world.key)
    reg.add_bundle(corrupt, actor="alice")
    _corrupt(tmp_path / "bundles" / corrupt.version)
    with pytest.raises(SanityCheckError, match="loads") as ei:
        reg.deploy(phishing, corrupt.version, actor="alice", reason="x", shadow=True, force="please")
    assert ei.value.failed == ["loads"] and "checksum" in str(ei.value)

    refused = [e for e in reg.history("phishing") if e["status"] == "refused"]
    assert [e["detail"]["error"] for e in refused] == [
        "failed gate", "failed latency", "failed parity", "failed range", "failed loads"]
    assert refused[0]["detail"]["checks"][-1]["name"] == "gate"
    assert reg.state("phishing").shadows == ()


def _corrupt(path):
    f = path / "intelligence.json"
    os.chmod(f, 0o644)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def test_latency_check_judges_the_bundle_not_the_machines_load(world, phishing, monkeypatch):
    """The latency check times a decision in the calling thread's CPU time: time the thread spends
    off the CPU — descheduled on a busy machine, waiting for the GIL; here a 3 ms sleep in every
    decision — shows in the wall-clock p99 it reports, but does not make the bundle's own cost
    look over budget."""
    import time

    from closedloop.registry.sanity import _contexts, _latency
    from closedloop.runtime.runtime import Runtime as Rt

    system = copy.copy(phishing)
    # 2.5 ms: under the 3 ms the wall clock sees, far above the ~0.1 ms of CPU a decision costs (a
    # 1 ms budget failed once when a loaded machine's cache misses pushed one CPU-time p99 to 1.4 ms)
    system.latency_budget_ms = 2.5
    contexts = _contexts(system, [])
    decide = Rt.decide

    def descheduled(self, ctx, *a, **kw):
        time.sleep(0.003)
        return decide(self, ctx, *a, **kw)

    monkeypatch.setattr(Rt, "decide", descheduled)
    busy = _latency(system, world.A, contexts)
    wall_p99 = float(busy.detail.split("wall clock p99 ")[1].split(" ms")[0])
    assert busy.passed, busy.detail
    assert wall_p99 >= 3.0  # the wall clock saw the waits: it would have failed the bundle
    ticks = itertools.count(0, 3_000_000)  # a clock on which every decision costs 3 ms: over budget
    slow = _latency(system, world.A, contexts, clock=lambda: next(ticks))
    assert not slow.passed and "p99 3.000 ms CPU" in slow.detail and "over budget" in slow.detail


def test_corrupt_bundle_refused_at_load_production_keeps_serving(reg, world, phishing, tmp_path):
    H, A = world.H.version, world.A.version
    reg.deploy(phishing, H, actor="alice", reason="first")
    rt = Runtime(phishing, reg.load_bundle(H, phishing))
    assert reg.refresh(rt) == {"applied": True, "revision": 1, "serving": 1, "error": None}
    reg.deploy(phishing, A, actor="alice", reason="A", flight="a", share=0.5)
    _corrupt(tmp_path / "bundles" / A)
    out = reg.refresh(rt)
    assert not out["applied"] and out["revision"] == 2 and out["serving"] == 1
    assert "checksum" in out["error"]
    assert rt.deployment.revision == 1 and rt.flights == ()
    d = rt.decide({"user_id": "u1", "url": "http://10.0.0.1/login", "domain": "10.0.0.1"})
    assert d.bundle_version == H
    with pytest.raises(BundleError) as ei:
        reg.deployment(phishing)
    assert ei.value.check == "checksum"

    # a different, self-consistent bundle swapped in under H's version is refused by the registry's digest
    impostor = Bundle.build(phishing, LinearModel({"ip_in_url": 0.1}, 0.0, output="phish"), version=H)
    target = tmp_path / "bundles" / H
    for p in target.iterdir():
        os.chmod(p, 0o644)
    shutil.rmtree(target)
    impostor.save(target)
    with pytest.raises(BundleError) as ei:
        reg.load_bundle(H, phishing)
    assert ei.value.check == "registry_digest"
    with pytest.raises(RegistryError, match="different bundle under version"):
        reg.add_bundle(world.H, actor="alice")


def test_deployment_and_status(reg, world, phishing):
    H, A, B = world.H.version, world.A.version, world.B.version
    reg.deploy(phishing, H, actor="alice", reason="first")
    reg.deploy(phishing, B, actor="alice", reason="shadow", shadow=True)
    reg.deploy(phishing, A, actor="alice", reason="flight", flight="a", share=0.25)
    dep = reg.deployment(phishing)
    assert dep.production.version == H and [s.version for s in dep.shadows] == [B]
    assert [(f.name, f.bundle.version, f.share) for f in dep.flights] == [("a", A, 0.25)] and dep.revision == 3
    st = reg.status("phishing")
    json.dumps(st)
    assert st["revision"] == 3 and st["flights"][0]["expected_share_of_units"] == 0.25
    assert st["last_change"]["operation"] == "deploy_flight" and set(st["bundles"]) == {H, A, B}
    assert st["bundles"][A]["metrics"]  # the training metrics recorded in the manifest
    assert reg.bundles("phishing")[0]["version"] in (H, A, B) and reg.systems() == ["phishing"]


def _race(url, bundles, system, version, flight, expected, barrier=None):
    if barrier is not None:
        barrier.wait()
    with Registry(url, bundles) as r:
        try:
            r.deploy(system, version, actor=f"racer-{flight}", reason="race", flight=flight, share=0.1,
                     force="race test", expected_revision=expected)
            return "ok"
        except ConflictError:
            return "conflict"


def _race_process(args):
    from examples.phishing.system import phishing

    url, bundles, version, flight, expected = args
    return _race(url, bundles, phishing, version, flight, expected)


def _check_race(reg, results, expected_after):
    assert sorted(results) == ["conflict", "ok"], results
    hist = reg.history("phishing")
    last_two = hist[-2:]
    assert sorted(e["status"] for e in last_two) == ["applied", "conflict"]
    conflict = next(e for e in last_two if e["status"] == "conflict")
    assert "changed while this deploy_flight was prepared" in conflict["detail"]["error"]
    st = reg.state("phishing")
    applied = [e for e in hist if e["status"] == "applied"]
    assert st.revision == expected_after == applied[-1]["revision_after"]
    assert DeploymentState.from_dict(applied[-1]["after"]).content() == st.content()


def test_racing_deploys_threads(reg, world, phishing, registry_url, tmp_path):
    reg.deploy(phishing, world.H.version, actor="alice", reason="first")
    for round_ in range(2):
        rev = reg.revision("phishing")
        barrier = threading.Barrier(2)
        results: list[str] = []

        def run(v: str, flight: str, rev: int = rev, barrier: threading.Barrier = barrier,
                results: list[str] = results) -> None:
            results.append(_race(registry_url, tmp_path / "bundles", phishing, v, flight, rev, barrier))

        threads = [threading.Thread(target=run, args=(v, f"{n}{round_}"))
                   for v, n in ((world.A.version, "x"), (world.B.version, "y"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _check_race(reg, results, rev + 1)


def test_racing_deploys_processes(reg, world, phishing, registry_url, tmp_path):
    reg.deploy(phishing, world.H.version, actor="alice", reason="first")
    rev = reg.revision("phishing")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_race_process, [(registry_url, str(tmp_path / "bundles"), world.A.version, "p", rev),
                                           (registry_url, str(tmp_path / "bundles"), world.B.version, "q", rev)])
    _check_race(reg, results, rev + 1)


def test_reports_attach_and_gate(reg, world, phishing):
    reps = reg.reports(world.A.version)
    assert len(reps) == 2 and all(any(b["version"] == world.A.version for b in r["bundles"]) for r in reps)
    again = reg.add_report(world.report_HA, actor="bob")  # idempotent by content
    assert again["gate"] == {"baseline": world.H.version, "candidate": world.A.version, "passed": True,
                             "reasons": []}
    assert len(reg.reports(world.A.version)) == 2
    with pytest.raises(RegistryError, match="schema_version"):
        reg.add_report({"system": "phishing", "bundles": []}, actor="bob")
    other = copy.deepcopy(world.report_HA)
    other["bundles"][0]["version"] = "phishing-ffffffffffff"
    with pytest.raises(RegistryError, match="neither a bundle directory nor a bundle version"):
        reg.add_report(other, actor="bob")


def test_a_change_committed_during_the_checks_wins(registry_url, tmp_path, world, phishing):
    """Deterministic interleaving: another process's change commits while a deploy runs its sanity
    checks; the deploy's transaction sees the revision moved and refuses (nothing written)."""
    other = _open(registry_url, tmp_path, world)
    other.deploy(phishing, world.H.version, actor="alice", reason="first")

    with Registry(registry_url, tmp_path / "bundles").open() as reg:
        reports = reg.catalog.reports

        def interleaved(version):  # the deploy's sanity checks read the bundle's reports
            other.killswitch("phishing", True, actor="bob", reason="meanwhile")
            return reports(version)

        reg.catalog.reports = interleaved
        with pytest.raises(ConflictError, match="revision 1 was read, revision 2 is current") as ei:
            reg.deploy(phishing, world.A.version, actor="alice", reason="A", flight="a", share=0.1)
        assert ei.value.revision == 2
        st = reg.state("phishing")
        assert st.revision == 2 and st.killswitch and st.flights == ()
        last = reg.history("phishing")[-2:]
        assert [(e["operation"], e["status"]) for e in last] == [("killswitch_on", "applied"),
                                                                  ("deploy_flight", "conflict")]
        assert "killswitch_on by bob" in last[1]["detail"]["error"]
    other.close()


def test_shadow_promote_and_stop(reg, world, phishing):
    H, A, B = world.H.version, world.A.version, world.B.version
    reg.deploy(phishing, H, actor="alice", reason="first")
    reg.deploy(phishing, A, actor="alice", reason="watch A", shadow=True)
    reg.deploy(phishing, B, actor="alice", reason="watch B", shadow=True)
    with pytest.raises(RegistryError, match="shadow already"):
        reg.deploy(phishing, B, actor="alice", reason="again", shadow=True)
    stop = reg.stop("phishing", B, actor="alice", reason="enough of B")
    assert stop.message == f"stopped shadow {B}" and reg.state("phishing").shadows == (A,)
    c = reg.promote(phishing, A, actor="alice", reason="A's shadow run was good")
    st = reg.state("phishing")
    assert (st.production, st.shadows) == (A, ()) and c.detail["previous_production"] == H
    assert {x["name"]: x["passed"] for x in c.detail["checks"]}["gate"]
    back = reg.rollback("phishing", actor="alice", reason="undo")
    assert reg.state("phishing").production == H and reg.state("phishing").shadows == (A,)
    assert "restored the state of revision 4" in back.message

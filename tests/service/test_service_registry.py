"""The service with the registry: hot reload, admin endpoints, the guard's automatic rollback,
and the faults (registry unavailable, corrupt bundle) — end to end on loopback."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedloop import Bundle, Client, ServiceError
from closedloop.runtime.deployment import flight_bucket
from closedloop.runtime.signing import SigningKey
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.settings import Settings
from support.service import serve_in_thread
from support.waiting import eventually

# The registry and the service meet here: these tests run once both are on the branch.
Registry = pytest.importorskip("closedloop.registry").Registry

FORCE = "test: no evaluation report"


def ctx(i: int) -> dict[str, Any]:
    # Young domains with a password field: scored high enough that bundle B (block ≥ 0.05) blocks.
    return {"user_id": f"user-{i}", "url": f"http://login-{i}.example/verify", "domain": f"login-{i}.example",
            "domain_age_days": float(5 + i % 20), "has_password_field": True, "num_forms": 1}

#: Signs the test bundles; each registry below trusts it (closedloop.runtime.signing).
KEY = SigningKey.generate()


@pytest.fixture(scope="module")
def bundles(phishing):
    from examples.phishing.heuristic import heuristic_intelligence

    a = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6}).signed(KEY)
    b = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.05, "warn": 0.01}).signed(KEY)
    c = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.8, "warn": 0.5}).signed(KEY)
    return a, b, c


def home_with_registry(tmp: Path, phishing: Any, production: Bundle) -> tuple[Path, dict[str, str], Any]:
    home = tmp / "home"
    creds = Credentials(home / "credentials.json")
    tokens = {"app": creds.add("app", ["decide", "report"]), "ops": creds.add("ops", ["admin"])}
    reg = Registry.from_settings(Settings(home=home)).open()
    reg.trust_key(KEY.public_key, name="tests", actor="ops")
    reg.deploy(phishing, production, actor="ops", reason="first production", force=FORCE)
    return home, tokens, reg


def settings_for(home: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", **kw)


def changes(text: str, via: str) -> float:
    """The ``closedloop_deployment_changes_total`` of one ``via`` in Prometheus text (0 when absent)."""
    m = re.search(rf'^closedloop_deployment_changes_total{{via="{via}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_flight_guard_rollback_and_killswitch_end_to_end(phishing, bundles, tmp_path):
    a, b, _ = bundles
    home, tokens, reg = home_with_registry(tmp_path, phishing, a)
    poll = 0.2
    st = settings_for(home, poll_interval_s=poll, guard_interval_s=0.3, guard_min_decisions=40)
    with serve_in_thread(create_app(st, system=phishing)) as base, \
            Client(base, tokens["app"]) as cl, Client(base, tokens["ops"]) as ops:
        assert cl.status()["deployment"]["production"] == a.version
        reg.add_bundle(b, actor="ops")  # in the registry's store (as `closedloop deploy` would put it)
        # flight B at 20% through the admin endpoint: applied on this worker at once
        res = ops.deploy(b.version, flight="b", share=0.2, force=FORCE, reason="try the aggressive bundle")
        assert res["applied"] is True and res["change"]["operation"] == "deploy_flight"
        assert cl.status()["deployment"]["flights"] == [{"name": "b", "bundle": b.version, "share": 0.2}]

        n = 600
        first = cl.decide_batch([ctx(i) for i in range(n)]).decisions
        again = [cl.decide(ctx(i)) for i in range(0, n, 7)]
        for d2 in again:  # each unit's arm is stable across requests
            d1 = first[int(d2.unit.split("-")[1])]
            assert (d1.flight, d1.bundle_version) == (d2.flight, d2.bundle_version)
        for d in first:  # and it is the stable hash of (flight, unit)
            assert (d.flight == "b") == (flight_bucket("b", d.unit) < 0.2)
            assert d.bundle_version == (b.version if d.flight == "b" else a.version)
        in_b = sum(d.flight == "b" for d in first)
        assert abs(in_b - 0.2 * n) <= 4 * math.sqrt(n * 0.2 * 0.8)

        # B is worse on the guard metric: its blocks are reported as false, through POST /v1/outcomes
        reports = [{"decision": d, "kind": "reported_false_block", "source": "user"}
                   for d in first if d.flight == "b" and d.action == "block"]
        reports += [{"decision": d, "kind": "reported_false_block", "source": "user"}
                    for d in first if d.flight is None][:5]
        assert len(reports) > 60
        assert cl.report_batch(reports)["accepted"] == len(reports)

        # the guard stops the flight; the next decisions of B's units use A
        eventually(lambda: cl.status()["deployment"]["flights"] == [], what="the guard stopping the flight")
        moved = [d.unit for d in first if d.flight == "b"][:20]
        for u in moved:
            d = cl.decide(ctx(int(u.split("-")[1])))
            assert d.flight is None and d.bundle_version == a.version
        hist = httpx.get(base + "/v1/admin/history", headers={"Authorization": f"Bearer {tokens['ops']}"}).json()
        stop = [e for e in hist if e["actor"] == "guard:service"]
        assert stop and "mistake_rate" in stop[-1]["reason"] and stop[-1]["status"] == "applied"

        # the kill switch, changed by another process (the CLI): in effect within the poll interval
        reg.killswitch(phishing, True, actor="ops", reason="incident 42")
        polls = changes(cl.metrics(), "poll")
        eventually(lambda: cl.decide(ctx(1)).killswitch, step=0.01, what="the kill switch in effect")
        # it came by a poll (every `poll` seconds), not by any request of this test
        assert changes(cl.metrics(), "poll") == polls + 1
        d = cl.decide(ctx(2))
        assert d.action == phishing.default_action and d.propensity == 1.0
        # … and off again through the admin endpoint: at once on this worker
        assert ops.killswitch(False, reason="incident over")["applied"] is True
        assert cl.decide(ctx(2)).killswitch is False
        text = cl.metrics()
        assert 'closedloop_deployment_changes_total{via="guard"} 1' in text
        assert 'closedloop_deployment_changes_total{via="poll"}' in text
    reg.close()


def test_registry_unavailable_and_corrupt_bundle_keep_the_last_good_state(phishing, bundles, tmp_path):
    a, _, c = bundles
    home, tokens, reg = home_with_registry(tmp_path, phishing, a)
    st = settings_for(home, poll_interval_s=0.1, guard_interval_s=0)
    db = home / "registry.sqlite"
    with serve_in_thread(create_app(st, system=phishing)) as base, \
            Client(base, tokens["app"]) as cl, Client(base, tokens["ops"]) as ops:
        # the registry file made unavailable: decisions continue, /readyz degraded with the reason
        os.rename(db, home / "elsewhere.sqlite")
        eventually(lambda: cl.ready()["status"] == "degraded", what="/readyz degraded")
        why = cl.ready()["reasons"][0]
        assert "registry file" in why and "unavailable" in why and "serving revision 1" in why
        for i in range(20):
            assert cl.decide(ctx(i)).bundle_version == a.version
        os.rename(home / "elsewhere.sqlite", db)
        eventually(lambda: cl.ready()["status"] == "ready", what="/readyz ready again")

    # a corrupt bundle: refused at load, the previous one keeps serving. The registry verifies a
    # bundle before it deploys it, so the bundle is corrupted in the store after the deploy and
    # before this (slowly polling) service loads it; a reload notification makes it look now.
    slow = settings_for(home, poll_interval_s=60, guard_interval_s=0)
    with serve_in_thread(create_app(slow, system=phishing)) as base, \
            Client(base, tokens["app"]) as cl, Client(base, tokens["ops"]) as ops:
        reg.deploy(phishing, c, actor="ops", reason="candidate C", force=FORCE)
        stored = home / "bundles" / c.version / "intelligence.json"
        os.chmod(stored, 0o644)
        stored.write_bytes(stored.read_bytes() + b" ")
        res = ops.admin("reload")
        assert res["applied"] is False and res["serving_revision"] == 1
        reasons = cl.ready()["reasons"]
        assert cl.ready()["status"] == "degraded" and any(
            "revision 2 refused" in r and "BundleError" in r for r in reasons), reasons
        assert cl.status()["deployment"]["production"] == a.version
        assert cl.decide(ctx(3)).bundle_version == a.version
        # a rollback to A is a new revision with good bundles: applied, ready again
        reg.rollback(phishing, actor="ops", reason="C is corrupt")
        assert ops.admin("reload")["applied"] is True
        assert cl.ready() == {"status": "ready", "reasons": [], "revision": 3}
        # and the registry itself refuses to deploy C again (its 'loads' check), over HTTP too
        with pytest.raises(ServiceError) as ei:
            ops.deploy(c.version, flight="c", share=0.1, force=FORCE, reason="C in a flight")
        assert ei.value.status == 422 and "loads" in ei.value.problem["detail"]
    reg.close()


def test_admin_endpoints_need_the_admin_role(phishing, bundles, tmp_path):
    a, b, _ = bundles
    home, tokens, reg = home_with_registry(tmp_path, phishing, a)
    with serve_in_thread(create_app(settings_for(home, guard_interval_s=0), system=phishing)) as base:
        for op, body in (("deploy", {"bundle": b.version, "reason": "x"}), ("rollback", {"reason": "x"}),
                         ("killswitch", {"on": True, "reason": "x"}), ("promote", {"flight": "f", "reason": "x"}),
                         ("stop", {"flight": "f", "reason": "x"}), ("reload", {})):
            r = httpx.post(f"{base}/v1/admin/{op}", json=body)
            assert r.status_code == 401, op
            r = httpx.post(f"{base}/v1/admin/{op}", json=body, headers={"Authorization": f"Bearer {tokens['app']}"})
            assert r.status_code == 403 and "'admin'" in r.json()["detail"], op
        h = {"Authorization": f"Bearer {tokens['ops']}"}
        r = httpx.post(f"{base}/v1/admin/killswitch", json={"on": True, "reason": ""}, headers=h)
        assert r.status_code == 422 and r.json()["field"] == "reason"
        r = httpx.post(f"{base}/v1/admin/promote", json={"flight": "nope", "reason": "x"}, headers=h)
        assert r.status_code == 400 and r.json()["type"].endswith("registry-refused")
        assert reg.state(phishing).killswitch is False and reg.revision(phishing) == 1
    reg.close()


def test_every_worker_follows_the_registry(phishing, bundles, tmp_path):
    from support.service import serve_subprocess

    a, _, _ = bundles
    home, tokens, reg = home_with_registry(tmp_path, phishing, a)
    args = ["--home", str(home), "serve", "--system", "examples.phishing.system:phishing", "--workers", "2",
            "--poll-interval", "0.2", "--guard-interval", "0"]
    with serve_subprocess(args) as base:
        reg.killswitch(phishing, True, actor="ops", reason="incident 43")
        # each worker follows on its own poll: wait (deadline) until both have answered with the
        # kill switch on; once on, a worker never answers with it off again
        on: dict[int, bool] = {}
        later: list[bool] = []

        def both_on() -> bool:
            with Client(base, tokens["app"]) as cl:  # a new connection each time: both workers answer
                worker, killed = cl.status()["worker"], cl.decide(ctx(len(later))).killswitch
            assert killed or not on.get(worker), (worker, on)
            on[worker] = on.get(worker, False) or killed
            later.append(killed)
            return len(on) == 2 and all(on.values())

        eventually(both_on, what="both workers following the kill switch")
        for i in range(10):
            with Client(base, tokens["app"]) as cl:
                assert cl.decide(ctx(i)).killswitch is True
    reg.close()


def test_a_postgresql_registry_announces_changes_and_workers_reload_at_once(phishing, bundles, tmp_path, postgres):
    """On PostgreSQL every applied change is announced (NOTIFY, in its own transaction): a worker
    listening reloads within moments of a deploy even with a 30 s poll interval; a source on
    SQLite has nothing to listen to and waits the interval out (polling); ``stop`` ends a wait."""
    import threading

    from closedloop.service.reload import RegistrySource

    a, _, c = bundles
    url = postgres.database()
    home = tmp_path / "home"
    creds = Credentials(home / "credentials.json")
    tokens = {"app": creds.add("app", ["decide", "report"])}
    project = Settings(home=home, registry_url=url)
    reg = Registry.from_settings(project).open()
    reg.trust_key(KEY.public_key, name="tests", actor="ops")
    reg.deploy(phishing, a, actor="ops", reason="first production", force=FORCE)

    # the source: a change of this system wakes a wait at once, another system's does not
    src = RegistrySource(Registry.from_settings(project).open(upgrade=False), phishing)
    stop = threading.Event()
    assert src.wait(0.3, stop) is False  # nothing announced: the timeout
    timer = threading.Timer(0.3, lambda: reg.killswitch(phishing, True, actor="ops", reason="incident"))
    timer.start()
    assert src.wait(60.0, stop) is True  # announced (True), not the 60 s timeout (False)
    timer.join()
    stop.set()
    t0 = time.monotonic()
    assert src.wait(120.0, stop) is False and time.monotonic() - t0 < 60.0  # stop ends the wait, not the timeout
    src.close()
    lite = RegistrySource(Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "b").open(), phishing)
    t0 = time.monotonic()
    assert lite.wait(0.3, threading.Event()) is False and time.monotonic() - t0 >= 0.29
    lite.close()

    # a served worker: polling every 30 s, it still serves a new production within moments
    st = ServiceSettings(project=project, system="examples.phishing.system:phishing", poll_interval_s=30.0,
                         guard_interval_s=0.0)
    with serve_in_thread(create_app(st, system=phishing)) as base, Client(base, tokens["app"]) as cl:
        assert cl.decide(ctx(1)).bundle_version == a.version
        reg.deploy(phishing, c, actor="ops", reason="c replaces a", force=FORCE)
        # well before the 30 s poll: by the announcement (counted as via="notify" below)
        eventually(lambda: cl.decide(ctx(2)).bundle_version == c.version, timeout=25.0)
        metrics = httpx.get(base + "/metrics").text
        assert 'closedloop_deployment_changes_total{via="notify"} 1' in metrics
    reg.close()

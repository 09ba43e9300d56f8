"""Several hosts, for real: three ``closedloop serve`` processes, each with its own project home, on one
PostgreSQL registry and one Redis (tests/support/cluster.py; started once for the module).

- a unit capped at 3 warnings a day never gets a 4th, whichever replica answers, under concurrent
  requests to all three;
- a source over its outcome-report rate is refused on every replica;
- a deploy, a rollback and the kill switch made on one host (the registry API, the CLI) reach every
  replica within 1 s, the new bundle included: nothing is copied to the hosts;
- a bundle deployed from host 0 reaches every replica's home from the registry's database, byte for
  byte; a bundle whose row was altered in the database is refused by the replicas that fetch it
  (previous deployment served, /readyz says why) and served once the row is right again;
- a replica SIGKILLed mid-load and restarted: every outcome that got a 202 is in its telemetry
  exactly once, every answered decision is stored once, nothing acknowledged is lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.registry.models import bundle_files as T_FILES
from support.cluster import FORCE, Cluster
from support.cluster_load import decisions_at_risk, load_through_a_kill
from support.cluster_system import WARNINGS_PER_DAY, context
from support.waiting import eventually

DAY_NS = 86_400 * 10**9
#: Every source gets 200 outcome reports at once, then one a second (shared by the replicas on Redis).
SOURCE_BURST = 200


@pytest.fixture(scope="module")
def cluster(postgres) -> Iterator[Cluster]:
    # --poll-interval 5: what reaches a replica within 1 s came by PostgreSQL's NOTIFY, not a poll
    args = ("--poll-interval", "5", "--guard-interval", "0", "--outcome-rate-per-source", f"1/{SOURCE_BURST}")
    with Cluster(3, serve_args=args, postgres=postgres) as c:  # a database of its own on the session's server
        yield c


def _headers(c: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {c.tokens['app']}"}


def test_a_capped_unit_never_gets_a_fourth_warning_whichever_replica_answers(cluster):
    unit = f"capped-{uuid.uuid4().hex[:8]}"
    per_thread, threads_per_replica = 8, 2
    start = threading.Barrier(3 * threads_per_replica)
    got: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def decide(r: int, t: int) -> None:
        with httpx.Client(headers=_headers(cluster), timeout=10) as http:
            start.wait()
            mine = [(r, http.post(cluster.bases[r] + "/v1/decide", json=context(unit, 100 * t + i)).json())
                    for i in range(per_thread)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=decide, args=(r, t)) for r in range(3) for t in range(threads_per_replica)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 3 * threads_per_replica * per_thread
    warned = Counter(d["timestamp_ns"] // DAY_NS for _, d in got if d["action"] == "warn")
    days = Counter(d["timestamp_ns"] // DAY_NS for _, d in got)
    # the cap's window is the UTC day: each day seen (one, unless the run straddles midnight) warned 3 times
    assert warned == {day: min(WARNINGS_PER_DAY, n) for day, n in days.items()}
    capped = [d for _, d in got if d["action"] != "warn"]
    assert capped and all(d["action"] == "allow" and d["guardrail"] == "cap_warn" for d in capped)
    assert {r for r, _ in got} == {0, 1, 2}


def test_a_source_over_its_rate_is_refused_on_every_replica(cluster):
    source = f"greedy-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    accepted = 0
    with httpx.Client(headers=_headers(cluster), timeout=10) as http:
        for r in range(3):  # 3 × 100 reports, one batch per replica, units all different
            batch = [{"unit": f"{source}-{r}-{i}", "kind": "reported_false_warning", "source": source} for i in range(100)]
            resp = http.post(cluster.bases[r] + "/v1/outcomes", json=batch)
            assert resp.status_code in (202, 429), resp.text
            if resp.status_code == 202:
                body = resp.json()
                accepted += body["accepted"]
                assert all(p["status"] == 429 and p["limit"] == "source" for p in body["rejected"])
        elapsed = time.monotonic() - t0
        # the source's one bucket, shared on Redis: its burst, plus what refilled meanwhile (1 a second)
        assert SOURCE_BURST <= accepted <= SOURCE_BURST + int(elapsed) + 1
        for r in range(3):  # and now every replica refuses it
            resp = http.post(cluster.bases[r] + "/v1/outcomes",
                             json={"unit": f"{source}-last-{r}", "kind": "reported_false_warning", "source": source})
            assert resp.status_code == 429, (r, resp.text)
            assert resp.json()["limit"] == "source" and source in resp.json()["detail"]
        # another source is not affected
        resp = http.post(cluster.bases[2] + "/v1/outcomes", json={"unit": "u", "kind": "reported_false_warning", "source": "calm"})
        assert resp.status_code == 202


def _until_every_replica(c: Cluster, shows: Callable[[dict[str, Any]], bool], change: Callable[[], Any]) -> tuple[float, list[float]]:
    """Poll every replica's decisions (a thread each, already polling when ``change`` runs) until
    ``shows`` holds; the seconds ``change`` took and each replica's delay after it returned."""
    seen: list[float | None] = [None] * c.n
    go = threading.Event()
    stop = threading.Event()

    def poll(r: int) -> None:
        with httpx.Client(headers=_headers(c), timeout=10) as http:
            i = 0
            while not stop.is_set():
                d = http.post(c.bases[r] + "/v1/decide", json=context(f"poll-{r}", i)).json()
                i += 1
                if go.is_set() and shows(d):
                    seen[r] = time.monotonic()
                    return
                time.sleep(0.002)

    threads = [threading.Thread(target=poll, args=(r,), daemon=True) for r in range(c.n)]
    for th in threads:
        th.start()
    time.sleep(0.1)  # every poller running
    t0 = time.monotonic()
    go.set()
    change()
    t1 = time.monotonic()
    try:
        eventually(lambda: all(s is not None for s in seen), timeout=30, what="every replica serving the change")
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=15)
    return t1 - t0, [max(0.0, s - t1) for s in seen if s is not None]


def _cli(c: Cluster, i: int, *args: str) -> str:
    """``closedloop ARGS`` as an operator on host ``i`` runs it: that home, the shared registry, the ops token."""
    env = {"CLOSEDLOOP_HOME": str(c.settings(i).home), "CLOSEDLOOP_REGISTRY_URL": c.registry_url,
           "CLOSEDLOOP_TELEMETRY_KEY": c.telemetry_key, "CLOSEDLOOP_TOKEN": c.tokens["ops"]}
    r = CliRunner().invoke(app, list(args), env=env)
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


def test_deploy_rollback_and_killswitch_reach_every_replica_within_a_second(cluster):
    system, a = cluster.system, cluster.production
    assert a is not None
    b = cluster.bundle({"block": 0.95, "warn": 0.01})  # in no replica's home: they fetch it from the registry
    figures: dict[str, list[float]] = {}
    with cluster.registry(0) as reg:
        reg.add_bundle(b, actor="ops")
        steps: list[tuple[str, Callable[[dict[str, Any]], bool], Callable[[], Any]]] = [
            ("deploy", lambda d: d["bundle_version"] == b.version,
             lambda: reg.deploy(system, b, actor="ops", reason="cluster test: deploy", force=FORCE)),
            ("rollback", lambda d: d["bundle_version"] == a.version,
             lambda: reg.rollback(system, actor="ops", reason="cluster test: roll back")),
            ("killswitch on", lambda d: d["killswitch"] is True,
             lambda: reg.killswitch(system, True, actor="ops", reason="cluster test: incident")),
            ("killswitch off (CLI)", lambda d: d["killswitch"] is False,
             lambda: _cli(cluster, 0, "killswitch", "off", "--system", "phishing", "--reason", "cluster test: incident over")),
        ]
        for name, shows, change in steps:
            took, delays = _until_every_replica(cluster, shows, change)
            figures[name] = delays
            print(f"{name}: the registry call took {took * 1e3:.1f} ms; then served by the 3 replicas after "
                  + ", ".join(f"{x * 1e3:.1f}" for x in delays) + " ms")
    for name, delays in figures.items():
        assert len(delays) == 3 and max(delays) < 1.0, (name, delays)


def _serves(c: Cluster, r: int, version: str) -> bool:
    d = httpx.post(c.bases[r] + "/v1/decide", json=context("probe", r), headers=_headers(c), timeout=10).json()
    return bool(d["bundle_version"] == version)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_deployed_bundle_reaches_every_replica_home_from_the_registry(cluster):
    system, a = cluster.system, cluster.production
    assert a is not None
    c = cluster.bundle({"block": 0.9, "warn": 0.2})
    homes = [cluster.settings(i).bundles / c.version for i in range(cluster.n)]
    with cluster.registry(0) as reg:
        reg.deploy(system, c, actor="ops", reason="cluster test: a bundle from host 0", force=FORCE)
        assert homes[0].is_dir() and not any(h.exists() for h in homes[1:])  # written on host 0 and in the database only
        for r in range(3):
            eventually(lambda r=r: _serves(cluster, r, c.version), what=f"replica {r} serving the new bundle")
        for h in homes[1:]:  # fetched by each replica, verified, into its own home
            assert _tree(h) == _tree(homes[0])
        reg.rollback(system, actor="ops", reason="cluster test: back to production")
    for r in range(3):
        eventually(lambda r=r: _serves(cluster, r, a.version), what=f"replica {r} back on production")


def test_a_bundle_altered_in_the_database_is_refused_by_the_replicas_that_fetch_it(cluster):
    system, a = cluster.system, cluster.production
    assert a is not None
    d = cluster.bundle({"block": 0.85, "warn": 0.15})
    ops = {"Authorization": f"Bearer {cluster.tokens['ops']}"}
    good = d.file_bytes()["intelligence.json"]
    with cluster.registry(0) as reg:
        reg.add_bundle(d, actor="ops")  # into the database and host 0's home
        with reg.db.write() as conn:  # then its bytes altered in the database (its row's sha256 not)
            conn.execute(update(T_FILES).where(T_FILES.c.version == d.version, T_FILES.c.path == "intelligence.json")
                         .values(data=good.replace(b"0", b"1", 1)))
        reg.deploy(system, d.version, actor="ops", reason="cluster test: an altered row", force=FORCE)
        eventually(lambda: _serves(cluster, 0, d.version), what="host 0 serving its own copy")
        for r in (1, 2):  # the others refuse it, keep serving the previous deployment, and say why
            eventually(lambda r=r: httpx.get(cluster.bases[r] + "/readyz").json()["status"] == "degraded", what=f"replica {r} degraded")
            reasons = " ".join(httpx.get(cluster.bases[r] + "/readyz").json()["reasons"])
            assert d.version in reasons and "'checksum'" in reasons and "intelligence.json" in reasons, reasons
            assert _serves(cluster, r, a.version)
            assert not (cluster.settings(r).bundles / d.version).exists()  # nothing kept
        with reg.db.write() as conn:  # the row right again: the next poll (here: a reload now) serves it
            conn.execute(update(T_FILES).where(T_FILES.c.version == d.version, T_FILES.c.path == "intelligence.json")
                         .values(data=good))
        for r in (1, 2):
            assert httpx.post(cluster.bases[r] + "/v1/admin/reload", headers=ops, timeout=10).status_code == 200
            assert _serves(cluster, r, d.version)
            assert httpx.get(cluster.bases[r] + "/readyz").json()["status"] == "ready"
        reg.rollback(system, actor="ops", reason="cluster test: back to production")
    for r in range(3):
        eventually(lambda r=r: _serves(cluster, r, a.version), what=f"replica {r} back on production")


def test_a_replica_killed_mid_load_loses_nothing_acknowledged(cluster):
    tag = f"kill-{uuid.uuid4().hex[:6]}"
    res, t_kill = load_through_a_kill(cluster, tag)

    def stored() -> tuple[list[dict[str, list[str]]], Counter[str], Counter[str]]:
        tel = [cluster.telemetry(i) for i in range(cluster.n)]
        return tel, Counter(x for t in tel for x in t["outcomes"]), Counter(x for t in tel for x in t["decisions"])

    # every acknowledged outcome: in the telemetry of the replica that acknowledged it, once in all
    tel, outcomes, decisions = stored()
    missing = [(r, o) for r, o, _ in res.acked if o not in tel[r]["outcomes"]]
    assert not missing, f"{len(missing)} acknowledged outcomes lost, e.g. {missing[:5]}"
    assert all(outcomes[o] == 1 for _, o, _ in res.acked)
    assert not [o for o, n in outcomes.items() if n > 1]
    # every answered decision stored once. Decisions are logged by group commit, not made durable
    # before they are answered: the killed replica may lose those answered after the last outcome
    # it acknowledged before the kill (that acknowledgement flushed everything logged before it).
    at_risk = decisions_at_risk(res, 1, t_kill)

    def all_decisions_stored() -> list[str]:
        nonlocal decisions
        _, _, decisions = stored()
        return [d for _, d, _ in res.decisions if decisions[d] == 0 and d not in at_risk]

    eventually(lambda: not all_decisions_stored(), timeout=10, what="every answered decision stored")
    assert not [d for d, n in decisions.items() if n > 1]
    lost = [d for d in at_risk if decisions[d] == 0]
    print(f"decisions the killed replica answered after its last acknowledged outcome: {len(at_risk)}, lost: {len(lost)}")

"""The decision service end to end on loopback: a real uvicorn server, the real Client."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from closedloop import Bundle, Client, ContextError, Runtime
from closedloop.errors import AuthError, ServiceError
from closedloop.service import RateLimit, ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.settings import Settings
from closedloop.telemetry import TelemetryStore
from support.service import serve_in_thread
from support.waiting import steadily

CTX = {"user_id": "u1", "url": "http://10.0.0.1/login", "domain": "10.0.0.1", "page_brand": "PayPal",
       "domain_age_days": 3}


def ctx(i: int, **kw: Any) -> dict[str, Any]:
    return {"user_id": f"u{i}", "url": f"https://site{i}.example/path", "domain": f"site{i}.example",
            "domain_age_days": float(i % 400), "has_password_field": i % 3 == 0, **kw}


@pytest.fixture(scope="module")
def bundle(phishing):
    from examples.phishing.heuristic import heuristic_intelligence

    return Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})


def make_home(tmp: Path, bundle: Bundle) -> tuple[Path, Path, dict[str, str]]:
    home = tmp / "home"
    path = bundle.save(home / "bundles" / bundle.version)
    creds = Credentials(home / "credentials.json")
    tokens = {
        "app": creds.add("app", ["decide", "report"]),
        "decider": creds.add("decider", ["decide"]),
        "ops": creds.add("ops", ["admin"]),
    }
    return home, path, tokens


def settings_for(home: Path, path: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing",
                           bundle=str(path), **kw)


@pytest.fixture(scope="module")
def served(phishing, bundle, tmp_path_factory):
    home, path, tokens = make_home(tmp_path_factory.mktemp("svc"), bundle)
    st = settings_for(home, path, max_body_bytes=64 * 1024, max_batch=50,
                      outcome_rate_per_unit=RateLimit(0.0, 3.0), outcome_rate_per_source=RateLimit(0.0, 40.0))
    with serve_in_thread(create_app(st, system=phishing)) as base:
        yield base, tokens, home


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.compile(rf"^{re.escape(name)}(\{{([^}}]*)\}})? (\S+)$", re.M)
    total = 0.0
    found = False
    for m in pat.finditer(text):
        got = m.group(2) or ""
        if all(part in got.split(",") for part in want.split(",") if part):
            total += float(m.group(3))
            found = True
    return total if found else 0.0


def test_decisions_over_http_equal_the_runtime(served, phishing, bundle):
    base, tokens, _ = served
    rt = Runtime(phishing, bundle)
    contexts = [ctx(i) for i in range(20)] + [CTX]
    with Client(base, tokens["app"]) as cl:
        for c in contexts:
            d = cl.decide(c)
            ref = rt.decide(c)
            assert (d.action, d.scores, d.why, d.propensity, d.bundle_version) == (
                ref.action, ref.scores, ref.why, ref.propensity, ref.bundle_version)
            assert d.system == "phishing" and d.unit == c["user_id"] and len(d.decision_id) == 32
        batch = cl.decide_batch(contexts)
    assert batch.errors == []
    for c, d in zip(contexts, batch.decisions, strict=True):
        assert d is not None and d.unit == c["user_id"] and d.action == rt.decide(c).action
    assert len({d.decision_id for d in batch.decisions}) == len(contexts)


def test_a_bad_row_never_sinks_the_batch(served):
    base, tokens, _ = served
    rows = [ctx(1), {"user_id": "u2", "url": "x", "domain": "d", "domain_age_days": -3}, ctx(3), "not an object"]
    with Client(base, tokens["app"]) as cl:
        res = cl.decide_batch(rows)
    assert [d is not None for d in res.decisions] == [True, False, True, False]
    assert res.decisions[0].unit == "u1" and res.decisions[2].unit == "u3"
    by_index = {e["index"]: e for e in res.errors}
    assert by_index[1]["field"] == "domain_age_days" and by_index[1]["value"] == -3
    assert "≥ 0" in by_index[1]["rule"] and by_index[1]["status"] == 422
    assert by_index[3]["field"] == "<context>"


def test_problem_details(served):
    base, tokens, _ = served
    h = {"Authorization": f"Bearer {tokens['app']}", "Content-Type": "application/json"}
    r = httpx.post(base + "/v1/decide", content=b'{"user_id": "u1", "url": ', headers=h)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("malformed-json")
    r = httpx.post(base + "/v1/decide", json={"user_id": "u1", "url": "x", "domain": "d", "domain_age_days": -3}, headers=h)
    p = r.json()
    assert r.status_code == 422 and (p["field"], p["value"]) == ("domain_age_days", -3)
    assert p["detail"] == "Context field 'domain_age_days' must be a number ≥ 0. Got -3 instead."
    r = httpx.post(base + "/v1/decide", json={"url": "x", "domain": "d"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "user_id" and r.json()["rule"] == "present"
    r = httpx.post(base + "/v1/decide", content=b"42", headers=h)
    assert r.status_code == 400 and "JSON object" in r.json()["detail"]
    big = msgspec.json.encode([ctx(1, url="https://x.example/" + "a" * 4000)] * 20)  # > 64 KiB
    r = httpx.post(base + "/v1/decide", content=big, headers=h)
    assert r.status_code == 413 and r.json()["limit"] == 64 * 1024
    r = httpx.post(base + "/v1/decide", json=[ctx(i) for i in range(51)], headers=h)
    assert r.status_code == 413 and "at most 50 contexts. Got 51" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b" " * 8192
        yield b"{}"

    r = httpx.post(base + "/v1/decide", content=chunks(), headers=h)
    assert r.status_code == 413
    for path in ("/v1/decide", "/v1/outcomes", "/v1/admin/rollback"):  # never a 500 for bad JSON
        for body in (b"[" * 30_000 + b"]" * 30_000, b'{"user_id": ' + b"[" * 30_000,
                     b'[{"kind": 1}, {"kind": oops]', b'[{"user_id": 1}, nope]'):
            who = tokens["ops"] if "admin" in path else tokens["app"]
            r = httpx.post(base + path, content=body, headers={**h, "Authorization": f"Bearer {who}"})
            assert r.status_code in (400, 422) and r.json()["status"] == r.status_code, (path, body[:30], r.text)
    r = httpx.get(base + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["status"] == 404
    with Client(base, tokens["app"]) as cl, pytest.raises(ContextError) as ei:
        cl.decide({"user_id": "u1", "url": "x", "domain": "d", "domain_age_days": -3})
    assert ei.value.field == "domain_age_days" and ei.value.value == -3


def test_auth_roles_and_failures_counted(served):
    base, tokens, _ = served
    before = httpx.get(base + "/metrics").text
    r = httpx.post(base + "/v1/decide", json=CTX)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(base + "/v1/decide", json=CTX, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and "matches no credential" in r.json()["detail"]
    r = httpx.post(base + "/v1/decide", json=CTX, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    r = httpx.post(base + "/v1/outcomes", json={"decision_id": "d", "kind": "k", "source": "s"},
                   headers={"Authorization": f"Bearer {tokens['decider']}"})
    assert r.status_code == 403 and "'report'" in r.json()["detail"]
    r = httpx.post(base + "/v1/decide", json=CTX, headers={"Authorization": f"Bearer {tokens['ops']}"})
    assert r.status_code == 403
    after = httpx.get(base + "/metrics").text
    for reason, n in (("missing", 1), ("invalid", 2), ("forbidden", 2)):
        assert metric(after, "closedloop_auth_failures_total", reason=reason) - metric(
            before, "closedloop_auth_failures_total", reason=reason) == n
    with Client(base, "nope") as cl, pytest.raises(AuthError):
        cl.decide(CTX)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert httpx.get(base + path).status_code == 200
    assert httpx.get(base + "/v1/status").status_code == 401


def test_outcomes_are_acknowledged_once_durable(served, phishing):
    base, tokens, home = served
    with Client(base, tokens["app"]) as cl:
        d = cl.decide(ctx(100))
        assert cl.report(d, kind="reported_false_block", source="user") == 1
        # 202 means fsynced: the record is readable from the segment files right now.
        got = TelemetryStore(home).read("outcomes").to_pylist()
        mine = [o for o in got if o["decision_id"] == d.decision_id]
        assert len(mine) == 1 and mine[0]["kind"] == "reported_false_block" and mine[0]["unit"] == "u100"
        res = cl.report_batch([
            {"decision": d, "kind": "chose:continue", "source": "user"},
            {"decision_id": d.decision_id, "kind": "9bad", "source": "user"},
            {"decision_id": d.decision_id, "kind": "ok", "source": "user", "value": "NaN?"},
            {"decision_id": d.decision_id, "kind": "ok", "source": "user\r\nforged"},
        ])
        assert res["accepted"] == 1
        bad = {e["index"]: e for e in res["rejected"]}
        assert bad[1]["field"] == "kind" and bad[1]["value"] == "9bad" and bad[2]["field"] == "value"
        assert bad[3]["field"] == "source" and "without control characters" in bad[3]["rule"]
    decisions = TelemetryStore(home).read("decisions")
    assert d.decision_id in decisions.column("decision_id").to_pylist()


class _LoseFirstAnswer(httpx.HTTPTransport):
    """Delivers every request, but the answer to the first POST is 'lost' (a read timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = super().handle_request(request)
        if request.method == "POST" and self.lost == 0:
            r.read()
            self.lost += 1
            raise httpx.ReadTimeout("answer lost", request=request)
        return r


def test_client_retries_reports_safely(served, phishing):
    base, tokens, home = served
    with Client(base, tokens["app"]) as cl:
        d = cl.decide(ctx(200))
    transport = _LoseFirstAnswer()
    with Client(base, tokens["app"], transport=transport, backoff=0.01) as cl:
        assert cl.report(d, kind="reported_false_block", source="user") == 1
    assert transport.lost == 1
    rows = [o for o in TelemetryStore(home).read("outcomes").to_pylist() if o["decision_id"] == d.decision_id]
    # Delivered twice, the same report both times: one outcome id, which datasets deduplicate.
    assert len(rows) == 2 and rows[0]["outcome_id"] == rows[1]["outcome_id"]
    assert rows[0]["event_ns"] == rows[1]["event_ns"]
    # A decision whose answer was lost is not retried (it would be a second decision).
    with Client(base, tokens["app"], transport=_LoseFirstAnswer(), backoff=0.01) as cl, pytest.raises(ServiceError) as ei:
        cl.decide(ctx(201))
    assert "not retried" in str(ei.value)


def test_outcome_reports_are_rate_limited_per_unit_and_source(served):
    base, tokens, _ = served
    before = httpx.get(base + "/metrics").text
    with Client(base, tokens["app"], retries=0) as cl:
        d = cl.decide(ctx(300))
        for _ in range(3):
            assert cl.report(d, kind="reported_false_block", source="rl-user") == 1
        with pytest.raises(ServiceError) as ei:
            cl.report(d, kind="reported_false_block", source="rl-user")
        assert ei.value.status == 429 and ei.value.problem["errors"][0]["limit"] == "unit"
        # another unit is not limited by this one
        assert cl.report(cl.decide(ctx(301)), kind="reported_false_block", source="rl-user") == 1
        # a batch: the limited items are refused, the others accepted
        res = cl.report_batch([{"unit": f"unit-{i % 2}", "kind": "k", "source": "rl-batch"} for i in range(8)])
        assert res["accepted"] == 6 and [e["status"] for e in res["rejected"]] == [429, 429]
        # per source: 40 tokens for the source "flood", whatever the units
        res = cl.report_batch([{"unit": f"s-{i}", "kind": "k", "source": "flood"} for i in range(45)])
        assert res["accepted"] == 40 and all(e["limit"] == "source" for e in res["rejected"])
    r = httpx.post(base + "/v1/outcomes", json={"unit": "unit-0", "kind": "k", "source": "rl-batch"},
                   headers={"Authorization": f"Bearer {tokens['app']}"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    after = httpx.get(base + "/metrics").text
    assert metric(after, "closedloop_outcome_rejections_total", reason="rate_unit") - metric(
        before, "closedloop_outcome_rejections_total", reason="rate_unit") == 4
    assert metric(after, "closedloop_outcome_rejections_total", reason="rate_source") - metric(
        before, "closedloop_outcome_rejections_total", reason="rate_source") == 5
    assert metric(after, "closedloop_outcome_reports_total", source="flood") == 40


def test_status_health_and_metrics(served, bundle):
    base, tokens, _ = served
    with Client(base, tokens["app"]) as cl:
        before = cl.metrics()
        for i in range(7):
            cl.decide(ctx(400 + i))
        cl.decide_batch([ctx(500 + i) for i in range(5)])
        st = cl.status()
        after = cl.metrics()
        ready = cl.ready()
    assert st["deployment"] == {"revision": 0, "production": bundle.version, "shadows": [], "flights": [],
                                "killswitch": False}
    assert st["telemetry"]["healthy"] is True and st["ready"] is True
    assert st["limits"]["outcomes_per_unit"] == {"rate_per_s": 0.0, "burst": 3.0}
    assert ready == {"status": "ready", "reasons": [], "revision": 0}
    made = metric(after, "closedloop_decisions_total", bundle=bundle.version) - metric(
        before, "closedloop_decisions_total", bundle=bundle.version)
    assert made == 12
    assert metric(after, "closedloop_decision_latency_seconds_count") - metric(
        before, "closedloop_decision_latency_seconds_count") == 7
    assert metric(after, "closedloop_flight_share", flight="") == 1.0
    assert metric(after, "closedloop_telemetry_healthy") == 1.0
    assert "# TYPE closedloop_decision_latency_seconds histogram" in after
    assert 'closedloop_decision_latency_seconds_bucket{le="+Inf"}' in after
    for line in after.splitlines():  # every sample line parses as: name{labels} number
        if line and not line.startswith("#"):
            value = line.rsplit(" ", 1)[1]
            assert value in ("+Inf", "-Inf", "NaN") or math.isfinite(float(value)), line


def test_telemetry_unwritable_decisions_continue_drops_counted(phishing, bundle, tmp_path):
    home, path, tokens = make_home(tmp_path, bundle)
    (home / "telemetry").write_text("a file where the telemetry directory should be")
    st = settings_for(home, path, ack_timeout_s=5.0)
    with serve_in_thread(create_app(st, system=phishing)) as base, Client(base, tokens["app"], retries=0) as cl:
        for i in range(20):
            assert cl.decide(ctx(i)).action in ("allow", "warn", "block")
        assert len([d for d in cl.decide_batch([ctx(i) for i in range(10)]).decisions if d]) == 10
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = cl.metrics()
            if metric(text, "closedloop_telemetry_dropped", reason="write_error") >= 30:
                break
            time.sleep(0.05)
        assert metric(text, "closedloop_telemetry_dropped", reason="write_error") == 30
        assert metric(text, "closedloop_telemetry_healthy") == 0.0
        ready = cl.ready()
        assert ready["status"] == "degraded" and "telemetry unhealthy" in ready["reasons"][0]
        with pytest.raises(ServiceError) as ei:  # an outcome cannot be made durable: never a false 202
            cl.report("some-decision", kind="k", source="s")
        assert ei.value.status == 503 and "not acknowledged" in ei.value.problem["detail"]


def test_admin_on_a_fixed_deployment_is_refused(served):
    base, tokens, _ = served
    h = {"Authorization": f"Bearer {tokens['ops']}"}
    r = httpx.post(base + "/v1/admin/killswitch", json={"on": True, "reason": "x"}, headers=h)
    assert r.status_code == 409 and "--bundle" in r.json()["detail"]
    r = httpx.post(base + "/v1/admin/killswitch", json={"on": True, "reason": "x"},
                   headers={"Authorization": f"Bearer {tokens['app']}"})
    assert r.status_code == 403
    with Client(base, tokens["app"]) as cl:
        assert cl.decide(CTX).killswitch is False


def test_closedloop_serve_with_two_workers(bundle, tmp_path):
    from support.service import serve_subprocess

    home, path, tokens = make_home(tmp_path, bundle)
    args = ["--home", str(home), "serve", "--system", "examples.phishing.system:phishing",
            "--bundle", bundle.version, "--workers", "2"]
    with serve_subprocess(args) as base:
        workers = set()
        for i in range(40):
            with Client(base, tokens["app"]) as cl:  # a new connection each time
                assert cl.decide(ctx(i)).bundle_version == bundle.version
                workers.add(cl.status()["worker"])
            if len(workers) == 2 and i >= 10:
                break
        assert len(workers) == 2
        # /metrics answers for the whole server, whichever worker a scrape reaches: the sums of
        # both workers' counters and histograms (each publishes its numbers about once a second).
        # Wait until 4 scrapes in a row show the exact sums; no scrape ever shows more.
        def summed() -> bool:
            text = httpx.get(base + "/metrics").text  # a new connection each time
            n = metric(text, "closedloop_decisions_total")
            count = metric(text, "closedloop_decision_latency_seconds_count")
            assert n <= i + 1 and count <= i + 1, (n, count)
            return n == count == i + 1

        steadily(summed, times=4, what="/metrics showing both workers' sums")
    # both workers logged their decisions, each to its own segment files
    decisions = TelemetryStore(home).read("decisions")
    assert decisions.num_rows == i + 1 and len(set(decisions.column("writer").to_pylist())) == 2
    assert not list((home / "run").glob("metrics-*"))  # the server removed its shared directory


def test_shared_metrics_sum_the_workers(tmp_path):
    """SharedMetrics: each worker publishes its counters and histograms; any worker renders the
    sums; a worker that exited keeps its last numbers; an unreadable file is skipped."""
    from closedloop.service.metrics import MetricsRegistry, SharedMetrics

    def worker(pid):
        reg = MetricsRegistry()
        c = reg.counter("d_total", "decisions", ("action",))
        h = reg.histogram("lat_seconds", "latency", (0.001, 0.01))
        return SharedMetrics(tmp_path / "m", reg, pid=pid), c, h

    (a, ca, ha), (b, cb, hb) = worker(101), worker(102)
    ca.inc(("allow",), 3)
    ha.observe(0.0005, 3)
    cb.inc(("allow",), 2)
    cb.inc(("block",), 1)
    hb.observe(0.005, 2)
    b.publish()
    text = a.render()
    assert metric(text, "d_total", action="allow") == 5 and metric(text, "d_total", action="block") == 1
    assert metric(text, "lat_seconds_count") == 5 and 'lat_seconds_bucket{le="0.001"} 3' in text
    assert 'lat_seconds_bucket{le="0.01"} 5' in text
    assert a.registry.render().count("d_total{") == 1  # its own numbers alone: allow only
    (tmp_path / "m" / "103.json").write_text("{not json")  # a torn or foreign file
    cb.inc(("allow",), 10)  # not yet published: the others see b's last numbers
    assert metric(a.render(), "d_total", action="allow") == 5
    assert metric(b.render(), "d_total", action="allow") == 15


def test_added_middleware_sees_the_decide_route_too(phishing, bundle, tmp_path):
    """``POST /v1/decide`` skips the middleware stack only while the app has none: a middleware a
    deployment adds runs for it like for every other route."""
    home, path, tokens = make_home(tmp_path, bundle)
    app = create_app(settings_for(home, path), system=phishing)
    seen: list[str] = []

    class Tag:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.inner(scope, receive, send)

    app.add_middleware(Tag)
    with serve_in_thread(app) as base, Client(base, tokens["app"], retries=0) as cl:
        assert cl.decide(ctx(1)).action in ("allow", "warn", "block")
        assert len([d for d in cl.decide_batch([ctx(i) for i in range(3)]).decisions if d]) == 3
    assert seen.count("/v1/decide") == 2

"""``closedloop serve --telemetry-url nats://…``: a real service subprocess publishing its telemetry to a
real nats-server with JetStream (tests/support/nats_server.py).

- an outcome answered 202 is on the log (read back by a consumer group), every decision too;
- nats-server stopped: outcome reports are not answered 202 (503, nothing acknowledged), decisions
  are still served, /readyz and /metrics say the log is unreachable and what is spilled;
- nats-server restarted: the spilled records arrive on the log, nothing lost, and a retried report
  is acknowledged;
- a replica started while the log is down serves and spills; SIGKILLed, its spill is re-published by
  the replica started after it on the same home.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from closedloop import Bundle, Client
from closedloop.cli.main import app as cli
from closedloop.errors import ServiceError
from closedloop.service.auth import Credentials
from closedloop.telemetry.jetstream import JetStreamTransport
from closedloop.telemetry.segments import scan_segment
from support.nats_server import NatsServer
from support.service import ROOT, free_port, serve_subprocess, wait_ready


@pytest.fixture(scope="module")
def js() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def bundle(phishing):
    from examples.phishing.heuristic import heuristic_intelligence

    return Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})


def ctx(i: int) -> dict[str, Any]:
    return {"user_id": f"u{i}", "url": f"https://site{i}.example/path", "domain": f"site{i}.example",
            "domain_age_days": float(i % 400), "has_password_field": i % 3 == 0}


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else float("nan")  # absent: equal to nothing


def read_log(url: str, stream: str, column: str, want: set[str], group: str, timeout: float = 20.0) -> list[str]:
    """Every value of ``column`` in the records on the system's ``stream`` (a new consumer group
    reads from the start), once ``want`` are all there (or the timeout)."""
    t = JetStreamTransport(url)
    try:
        sub = t.subscribe("phishing", stream, group, ack_wait=30)
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while not want <= set(got) and time.monotonic() < deadline:
            for m in sub.fetch(500, timeout=0.5):
                got.extend(scan_segment(bytes(m.data)).frames[0].batch().column(column).to_pylist())
        return got
    finally:
        t.close()


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def test_acknowledged_outcomes_are_on_the_log_and_an_outage_spills_and_recovers(bundle, tmp_path, js):
    home = tmp_path / "home"
    bundle.save(home / "bundles" / bundle.version)
    token = Credentials(home / "credentials.json").add("app", ["decide", "report"])
    args = ["--home", str(home), "serve", "--system", "examples.phishing.system:phishing", "--bundle", bundle.version,
            "--telemetry-url", js.url, "--outcome-rate-per-unit", "off"]
    with serve_subprocess(args) as base, Client(base, token, retries=0) as cl:
        before = [cl.decide(ctx(i)) for i in range(10)]
        for i, d in enumerate(before):
            cl.report(d, kind="click", source="t", outcome_id=f"o{i}")  # 202: acknowledged by JetStream
        acked = {f"o{i}" for i in range(10)}
        assert acked <= set(read_log(js.url, "outcomes", "outcome_id", acked, "check_before"))

        js.stop()
        with pytest.raises(ServiceError) as ei:
            cl.report(before[0], kind="click2", source="t", outcome_id="during")
        assert ei.value.status == 503 and "not acknowledged" in ei.value.problem["detail"]
        during = [cl.decide(ctx(100 + i)) for i in range(5)]  # decisions are still served
        wait_for(lambda: metric(httpx.get(base + "/metrics").text, "closedloop_telemetry_log_spilled") >= 6, "spilling")
        text = httpx.get(base + "/metrics").text
        assert metric(text, "closedloop_telemetry_log_reachable") == 0.0
        assert metric(text, "closedloop_telemetry_log_spill_backlog") >= 6
        ready = cl.ready()
        assert ready["status"] == "degraded" and any("telemetry log unreachable" in r for r in ready["reasons"])

        js.start()
        wait_for(lambda: metric(httpx.get(base + "/metrics").text, "closedloop_telemetry_log_spill_backlog") == 0,
                 "re-publishing the spill")
        text = httpx.get(base + "/metrics").text
        assert metric(text, "closedloop_telemetry_log_reachable") == 1.0
        assert metric(text, "closedloop_telemetry_log_republished") >= 6
        assert metric(text, "closedloop_telemetry_log_dropped", stream="decisions") == 0
        cl.report(before[0], kind="click2", source="t", outcome_id="during")  # the client's retry: 202 now
        ids = {d.decision_id for d in before + during}
        assert ids <= set(read_log(js.url, "decisions", "decision_id", ids, "check_after"))
        outcomes = read_log(js.url, "outcomes", "outcome_id", acked | {"during"}, "check_after")
        assert acked | {"during"} <= set(outcomes)  # the spilled one and its retry: the collector dedupes
        assert not [p for p in (home / "telemetry" / "spill").rglob("*.seg")]  # re-published spill files deleted
        assert cl.ready()["status"] == "ready"


def test_a_killed_replicas_spill_is_published_by_the_replica_started_after_it(bundle, tmp_path, js):
    home = tmp_path / "home"
    bundle.save(home / "bundles" / bundle.version)
    token = Credentials(home / "credentials.json").add("app", ["decide", "report"])
    args = ["--home", str(home), "serve", "--system", "examples.phishing.system:phishing", "--bundle", bundle.version,
            "--telemetry-url", js.url]
    js.stop()  # the replica starts while the log is down: it serves, and spills
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "closedloop.cli", *args, "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc=proc)
        with Client(base, token, retries=0) as cl:
            made = [cl.decide(ctx(200 + i)) for i in range(8)]
        wait_for(lambda: metric(httpx.get(base + "/metrics").text, "closedloop_telemetry_log_spilled") >= 8, "spilling")
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: the spill stays, its lock released
        proc.wait(30)
    assert [p for p in (home / "telemetry" / "spill").rglob("*.seg")]
    js.start()
    with serve_subprocess(args) as base:
        wait_for(lambda: metric(httpx.get(base + "/metrics").text, "closedloop_telemetry_log_republished") >= 8,
                 "re-publishing the killed replica's spill")
        ids = {d.decision_id for d in made}
        assert ids <= set(read_log(js.url, "decisions", "decision_id", ids, "check_killed"))
        wait_for(lambda: not [p for p in (home / "telemetry" / "spill").rglob("*.seg")], "deleting the re-published spill")


def test_serve_refuses_a_bad_telemetry_url(tmp_path):
    for args, says in ((["--telemetry-url", "http://127.0.0.1:4222"], "'telemetry_url' parameter of ServiceSettings must be a nats://"),
                       (["--telemetry-url", "nats://127.0.0.1:4222", "--no-telemetry"], "needs telemetry on")):
        r = CliRunner().invoke(cli, ["serve", "--system", "examples.phishing.system:phishing", "--home", str(tmp_path), *args],
                               env={"CLOSEDLOOP_HOME": ""})
        assert r.exit_code != 0 and says in r.output, r.output


def test_the_embedded_default_never_imports_nats(tmp_path):
    import subprocess
    import sys

    code = ("import sys\n"
            "from closedloop.service.settings import ServiceSettings\n"
            "from closedloop.service.telemetry_log import open_sink\n"
            "from closedloop.settings import Settings\n"
            "import closedloop.cli.main, closedloop.service.app\n"
            f"sink = open_sink(ServiceSettings(project=Settings(home={str(tmp_path)!r}), system='m:a'), 'phishing')\n"
            "print(type(sink).__name__, sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "SegmentLog []", out.stdout + out.stderr

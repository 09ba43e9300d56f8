"""The JavaScript SDK and runtime in a real browser (Debian's Chromium): a page served from its own
origin decides locally against a real ``closedloop serve`` on another origin (CORS), gets a
flight's bundle for a unit in the flight, refuses a tampered and a truncated bundle while it keeps
deciding with its last good one, and sends decisions that arrive in the home's telemetry."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from closedloop import Bundle
from closedloop.runtime.deployment import flight_bucket
from closedloop.runtime.signing import home_key
from closedloop.service.auth import Credentials
from closedloop.settings import Settings
from closedloop.telemetry import TelemetryStore
from support.browser import browser
from support.console_browser import wait_for
from support.service import ROOT, serve_subprocess

Registry = pytest.importorskip("closedloop.registry").Registry
FORCE = "test: no evaluation report"
PAGE = Path(__file__).resolve().parents[1] / "assets" / "sdk_page"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # the test's output stays readable
        pass


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on a free 127.0.0.1 port (a thread); yield its origin."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(10)


def context(unit: str, i: int) -> dict[str, Any]:
    return {"user_id": unit, "url": f"http://login-{i}.example/verify", "domain": f"login-{i}.example",
            "domain_age_days": float(3 + i % 20), "has_password_field": True, "num_forms": 1}


def run(driver: Any, call: str, *args: Any) -> Any:
    """``await window.closedloopPage.<call>(...args)`` in the page; its value, or the error raised."""
    out = driver.execute_async_script(
        f"const done = arguments[arguments.length - 1];"
        f"Promise.resolve().then(() => window.closedloopPage.{call}(...Array.from(arguments).slice(0, -1)))"
        f".then((v) => done({{ok: true, value: v}}), (e) => done({{ok: false, error: String(e && e.stack || e)}}));",
        *args)
    assert out["ok"], out["error"]
    return out["value"]


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    """A home with production A and a flight 'b' on B for half the units; a client token; the key."""
    from examples.phishing.heuristic import heuristic_intelligence

    home = tmp_path_factory.mktemp("browser") / "home"
    key = home_key(home).key
    a = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6}).signed(key)
    b = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.05, "warn": 0.01}).signed(key)
    creds = Credentials(home / "credentials.json")
    token = creds.add("web", ["client"])
    reg = Registry.from_settings(Settings(home=home)).open()
    reg.trust_key(key.public_key, name="home", actor="ops")
    reg.deploy(phishing, a, actor="ops", reason="production", force=FORCE)
    reg.add_bundle(b, actor="ops")
    reg.deploy(phishing, b.version, actor="ops", reason="try b", flight="b", share=0.5, force=FORCE)
    reg.close()
    units = [f"user-{i}" for i in range(100)]
    return {"home": home, "key": key.public_key, "token": token, "a": a.version, "b": b.version,
            "prod": next(u for u in units if flight_bucket("b", u) >= 0.5),
            "flight": next(u for u in units if flight_bucket("b", u) < 0.5)}


def test_the_sdk_decides_in_chromium_against_a_running_service(world, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(ROOT / "clients" / "js" / "src", site / "src")
    for f in PAGE.iterdir():
        shutil.copy(f, site / f.name)
    with static_site(site) as origin:
        args = ["--home", str(world["home"]), "serve", "--system", "examples.phishing.system:phishing",
                "--guard-interval", "0", "--flush-interval-ms", "2", "--cors-origin", origin]
        with serve_subprocess(args) as base:
            driver = browser()
            try:
                sent = _drive(driver, origin, base, world)
            finally:
                driver.quit()
    store = TelemetryStore(world["home"])
    store.compact()
    logged = {r["decision_id"]: r for r in store.read("decisions").to_pylist() if r["decision_id"] in sent}
    assert set(logged) == set(sent), "every decision the service acknowledged is in telemetry"
    for did, (unit, bundle) in sent.items():
        assert (logged[did]["unit"], logged[did]["bundle_version"]) == (unit, bundle)
    assert {logged[d]["flight"] for d, (u, _) in sent.items() if u == world["flight"]} == {"b"}


def _drive(driver: Any, origin: str, base: str, world: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The page's steps; returns the decisions it sent: decision id → (unit, bundle)."""
    driver.get(origin + "/index.html")
    assert wait_for(driver, "window.closedloopPage && document.getElementById('state').textContent === 'ready'", 20)
    config = {"base": base, "token": world["token"], "key": world["key"], "clearStorage": True}
    status = run(driver, "start", {**config, "unit": world["prod"]})
    assert (status["bundleId"], status["flight"], status["source"]) == (world["a"], None, "network")
    sent: dict[str, tuple[str, str]] = {}
    for i in range(5):
        d = run(driver, "decide", context(world["prod"], i))
        assert d["action"] in ("allow", "warn", "block") and 0 < d["propensity"] <= 1
        sent[d["decisionId"]] = (world["prod"], world["a"])
    for mode, field in (("signature", "signature"), ("truncate", "download")):
        status = run(driver, "check", mode)
        assert status["bundleError"]["field"] == field, status
        assert status["bundleId"] == world["a"], "the last good bundle is kept"
        d = run(driver, "decide", context(world["prod"], 7))
        sent[d["decisionId"]] = (world["prod"], world["a"])
    flushed = run(driver, "flush")
    assert flushed["ok"] and flushed["status"]["queue"] == 0, flushed
    # a unit in the flight gets the flight's bundle (a fresh page, nothing stored)
    driver.get(origin + "/index.html")
    assert wait_for(driver, "window.closedloopPage && document.getElementById('state').textContent === 'ready'", 20)
    status = run(driver, "start", {**config, "unit": world["flight"]})
    assert (status["bundleId"], status["flight"]) == (world["b"], "b")
    for i in range(3):
        d = run(driver, "decide", context(world["flight"], 10 + i))
        sent[d["decisionId"]] = (world["flight"], world["b"])
    flushed = run(driver, "flush")
    assert flushed["ok"] and flushed["status"]["sent"] == 3, flushed
    return sent

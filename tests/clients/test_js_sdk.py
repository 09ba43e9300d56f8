"""The JavaScript SDK (clients/js/src/sdk) against a real ``closedloop serve``: Node's test runner
runs clients/js/test/sdk with the server's address, tokens, key, units and bundles in its
environment; then the decisions it had acknowledged are found in the home's telemetry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from closedloop import Bundle
from closedloop.runtime.deployment import flight_bucket
from closedloop.runtime.signing import home_key
from closedloop.service.auth import Credentials
from closedloop.service.client_bundles import sign_payload, verify_document
from closedloop.settings import Settings
from closedloop.telemetry import TelemetryStore
from support.service import ROOT, serve_subprocess

Registry = pytest.importorskip("closedloop.registry").Registry
FORCE = "test: no evaluation report"


def test_the_sdk_against_a_running_service(phishing, tmp_path):
    node = shutil.which("node")
    assert node is not None, "Node.js (node) is needed for the SDK tests: install nodejs"
    from examples.phishing.heuristic import heuristic_intelligence

    home = tmp_path / "home"
    key = home_key(home).key
    a = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6}).signed(key)
    b = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.05, "warn": 0.01}).signed(key)
    creds = Credentials(home / "credentials.json")
    tokens = {"client": creds.add("browser", ["client"]), "ops": creds.add("ops", ["admin"])}
    reg = Registry.from_settings(Settings(home=home)).open()
    reg.trust_key(key.public_key, name="home", actor="ops")
    reg.deploy(phishing, a, actor="ops", reason="production", force=FORCE)
    reg.add_bundle(b, actor="ops")
    reg.deploy(phishing, b.version, actor="ops", reason="try b", flight="b", share=0.5, force=FORCE)
    reg.close()
    units = [f"user-{i}" for i in range(100)]
    prod = next(u for u in units if flight_bucket("b", u) >= 0.5)
    flight = next(u for u in units if flight_bucket("b", u) < 0.5)
    args = ["--home", str(home), "serve", "--system", "examples.phishing.system:phishing", "--poll-interval", "0.2",
            "--guard-interval", "0", "--flush-interval-ms", "2"]
    out = tmp_path / "sent.txt"
    out.write_text("")
    with serve_subprocess(args) as base:
        fixtures = _other_documents(base, tokens["client"], prod, key, tmp_path / "fixtures")
        env = {**os.environ, "CLOSEDLOOP_URL": base, "CLOSEDLOOP_CLIENT_TOKEN": tokens["client"],
               "CLOSEDLOOP_ADMIN_TOKEN": tokens["ops"], "CLOSEDLOOP_PUBLIC_KEY": key.public_key,
               "CLOSEDLOOP_UNIT_PROD": prod, "CLOSEDLOOP_BUNDLE_PROD": a.version, "CLOSEDLOOP_UNIT_FLIGHT": flight,
               "CLOSEDLOOP_BUNDLE_FLIGHT": b.version, "CLOSEDLOOP_FIXTURES": str(fixtures), "CLOSEDLOOP_SDK_OUT": str(out)}
        run = subprocess.run([node, "--test", "clients/js/test/sdk/"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
        assert "# pass 11\n" in run.stdout and "# fail 0\n" in run.stdout, run.stdout[-2000:]
    sent = set(out.read_text().split())
    assert len(sent) == 25 + 10 + 1
    store = TelemetryStore(home)
    store.compact()
    logged = {r["decision_id"]: r for r in store.read("decisions").to_pylist() if r["decision_id"] in sent}
    assert set(logged) == sent  # every acknowledged decision is in telemetry
    flown = [r for r in logged.values() if r["unit"] == flight and not r["killswitch"]]
    assert len(flown) == 10 and all(r["flight"] == "b" and r["bundle_version"] == b.version for r in flown)
    assert all(r["flight"] is None and r["bundle_version"] == a.version for r in logged.values() if r["unit"] == prod)
    killed = [r for r in logged.values() if r["killswitch"]]
    assert [(r["action"], r["propensity"], r["bundle_version"]) for r in killed] == [("allow", 1.0, a.version)]


def _other_documents(base: str, token: str, unit: str, key: object, where: Path) -> Path:
    """Documents signed with the home's key (so only the SDK's own checks can refuse them): the
    unit's bundle claiming another system, and another schema version."""
    r = httpx.get(base + "/v1/bundles/current", params={"unit": unit}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    form = json.loads(verify_document(r.content, [key.public_key]))  # type: ignore[attr-defined]
    where.mkdir()
    for name, change in (("other_system.json", {"system": "spam"}), ("other_schema.json", {"schema_version": "999"})):
        doc = {**form, "bundle": {**form["bundle"], **change}}
        (where / name).write_bytes(sign_payload(json.dumps(doc), key))  # type: ignore[arg-type]
    return where

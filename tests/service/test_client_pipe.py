"""The pipe to clients: ``GET /v1/bundles/current`` (signed, per unit's arm, ETag/304, the kill
switch) and ``POST /v1/decisions`` (client decisions as telemetry: validated item by item,
durable when acknowledged, deduplicated in datasets) — against a real server on loopback."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle
from closedloop.datasets import build_dataset
from closedloop.errors import BundleError
from closedloop.runtime.deployment import Deployment, Flight, flight_bucket
from closedloop.runtime.signing import home_key
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.service.client_bundles import verify_document
from closedloop.service.sources import StaticSource
from closedloop.settings import Settings
from closedloop.telemetry import TelemetryStore
from support.service import serve_in_thread


def ctx(i: int) -> dict[str, Any]:
    return {"user_id": f"user-{i}", "url": f"http://login-{i}.example/verify", "domain": f"login-{i}.example",
            "domain_age_days": float(5 + i % 20), "has_password_field": True, "num_forms": 1}


@pytest.fixture(scope="module")
def served(phishing, tmp_path_factory):
    """A server with production A and flight 'b' (half the units) on B; its home, tokens, key."""
    from examples.phishing.heuristic import heuristic_intelligence

    home = tmp_path_factory.mktemp("pipe") / "home"
    key = home_key(home).key
    a = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6}).signed(key)
    b = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.05, "warn": 0.01}).signed(key)
    creds = Credentials(home / "credentials.json")
    tokens = {"client": creds.add("browser", ["client", "report"]), "app": creds.add("app", ["decide"])}
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", flush_interval_ms=2)
    app = create_app(st, system=phishing, source=StaticSource(Deployment(a, flights=(Flight("b", b, 0.5),))))
    with serve_in_thread(app) as base:
        yield {"base": base, "home": home, "tokens": tokens, "key": key, "a": a, "b": b, "app": app}


def get(s: dict[str, Any], unit: str | None, token: str = "client", **headers: str) -> httpx.Response:
    params = {} if unit is None else {"unit": unit}
    return httpx.get(s["base"] + "/v1/bundles/current", params=params,
                     headers={"Authorization": f"Bearer {s['tokens'][token]}", **headers})


def test_each_unit_gets_its_arms_bundle_signed_with_a_strong_etag(served):
    s = served
    trusted = [s["key"].public_key]
    seen = {}
    for i in range(40):
        unit = f"user-{i}"
        r = get(s, unit)
        assert r.status_code == 200, r.text
        payload = json.loads(verify_document(r.content, trusted))
        in_b = flight_bucket("b", unit) < 0.5
        want = s["b"] if in_b else s["a"]
        assert payload["bundle"]["id"] == want.version == r.headers["closedloop-bundle"]
        assert payload["bundle"]["system"] == "phishing"
        assert r.headers.get("closedloop-flight") == ("b" if in_b else None)
        assert r.headers["etag"] == '"' + hashlib.sha256(r.content).hexdigest() + '"'
        seen[want.version] = r.headers["etag"]
        # an unchanged bundle costs a 304 without a body
        again = get(s, unit, **{"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]
    assert len(seen) == 2
    # exported once per bundle, never per request
    assert s["app"].state.client_documents["docs"].exports == 2
    # a stale ETag gets the document
    assert get(s, "user-1", **{"If-None-Match": '"0000"'}).status_code == 200


def test_a_tampered_or_truncated_document_is_refused_by_verification(served):
    r = get(served, "user-3")
    trusted = [served["key"].public_key]
    body = r.content
    with pytest.raises(BundleError, match="not JSON"):
        verify_document(body[:-5], trusted)
    env = json.loads(body)
    env["payload"] = env["payload"].replace("phishing", "phishinG", 1)
    with pytest.raises(BundleError, match="does not match"):
        verify_document(json.dumps(env).encode(), trusted)
    from closedloop.runtime.signing import SigningKey

    with pytest.raises(BundleError, match="not trusted"):
        verify_document(body, [SigningKey.generate().public_key])


def test_the_unit_and_the_role_are_checked(served):
    for unit, rule in ((None, "non-empty"), ("", "non-empty"), ("u" * 513, "at most 512"), ("a\nb", "control")):
        r = get(served, unit)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["field"] == "unit" and rule in r.json()["rule"]
    assert get(served, "user-1", token="app").status_code == 403
    assert httpx.get(served["base"] + "/v1/bundles/current?unit=x").status_code == 401


def test_the_kill_switch_serves_the_default_action_signed(served):
    svc = served["app"].state.holder["svc"]
    before = get(served, "user-1")
    svc.runtime.set_killswitch(True)
    try:
        for unit in ("user-1", "user-2", "user-5"):
            r = get(served, unit)
            doc = json.loads(verify_document(r.content, [served["key"].public_key]))
            assert doc["format"] == "closedloop.client.killswitch" and doc["default_action"] == "allow"
            assert doc["bundle_id"] == served["a"].version and r.headers["closedloop-killswitch"] == "on"
            assert "closedloop-flight" not in r.headers
    finally:
        svc.runtime.set_killswitch(False)
    after = get(served, "user-1", **{"If-None-Match": before.headers["etag"]})
    assert after.status_code == 304


def report(s: dict[str, Any], items: Any) -> httpx.Response:
    return httpx.post(s["base"] + "/v1/decisions", json=items, headers={"Authorization": f"Bearer {s['tokens']['client']}"},
                      timeout=30)


def item(s: dict[str, Any], i: int, **kw: Any) -> dict[str, Any]:
    unit = f"user-{i}"
    in_b = flight_bucket("b", unit) < 0.5
    out = {"decision_id": f"{0x19000000000 + i:012x}{i:020x}", "bundle_id": (s["b"] if in_b else s["a"]).version,
           "system": "phishing", "unit": unit, "context": ctx(i), "action": "block" if i % 2 else "allow",
           "propensity": 1.0, "score": 0.25 + i / 1000, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "sample_prob": 0.5}
    out.update(kw)
    return out


def test_client_decisions_are_validated_item_by_item_and_reach_datasets(served):
    s = served
    good = [item(s, i) for i in range(30)]
    bad = [
        item(s, 100, decision_id=""),
        item(s, 101, system="other"),
        item(s, 102, context={**ctx(102), "num_forms": -1}),
        item(s, 103, action="explode"),
        item(s, 104, propensity=0),
        item(s, 105, timestamp="yesterday"),
        item(s, 106, unit="someone-else"),
        "not an object",
        item(s, 108, score="high"),
    ]
    batch = good[:10] + bad + good[10:]
    r = report(s, batch)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 30
    fields = {p["index"]: p["field"] for p in body["rejected"]}
    assert fields == {10: "decision_id", 11: "system", 12: "context.num_forms", 13: "action", 14: "propensity",
                      15: "timestamp", 16: "unit", 17: "<decision>", 18: "score"}
    # sent again (a retry after a lost answer): accepted again, no duplicate rows in the dataset
    assert report(s, good).json() == {"accepted": 30, "rejected": []}
    # every item bad: the refusal itself, each named
    r = report(s, bad[:2])
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["decision_id", "system"]
    # outcomes as today, for the client's decisions
    out = [{"decision_id": d["decision_id"], "kind": "reported_phish", "source": "user"} for d in good[:5]]
    rr = httpx.post(s["base"] + "/v1/outcomes", json=out, headers={"Authorization": f"Bearer {s['tokens']['client']}"})
    assert rr.status_code == 202, rr.text

    store = TelemetryStore(s["home"])
    store.compact()
    now = time.time_ns()
    from examples.phishing.system import phishing

    m = build_dataset(phishing, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                      since_ns=0, until_ns=now + 1, cutoff_ns=now + 10**9 * 86400 * 30, out=Path(s["home"]) / "ds",
                      early_labels=True)
    rows = {r["decision_id"]: r for r in pq.read_table(Path(m.path) / "data.parquet").to_pylist()}
    ids = [d["decision_id"] for d in good]
    assert set(ids) <= set(rows)
    dec = pq.read_table(store.decision_files()).to_pylist()
    assert sum(d["decision_id"] in set(ids) for d in dec) == 60  # both copies written; the join keeps one
    for d in good:
        row = rows[d["decision_id"]]
        assert row["bundle_version"] == d["bundle_id"] and row["action"] == d["action"]
        assert row["flight"] == ("b" if flight_bucket("b", d["unit"]) < 0.5 else None)
        assert row["features"] and len(row["features"]) == len(phishing.features.names)
    labeled = [rows[i] for i in ids[:5]]
    assert all(r["label"] == "phish" and r["label_value"] == 1 for r in labeled)
    row = rows[ids[0]]  # the columns a decision of the service has: scores named, weight 1 / sample_prob
    assert row["score_names"] == ["phish"] and row["scores"] == [0.25] and row["weight"] == 2.0


def test_a_home_without_a_signing_key_serves_nothing_unsigned(phishing, tmp_path):
    from examples.phishing.heuristic import heuristic_intelligence

    home = tmp_path / "home"
    token = Credentials(home / "credentials.json").add("web", ["client"])
    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6})
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing")
    with serve_in_thread(create_app(st, system=phishing, source=StaticSource(Deployment(bundle)))) as base:
        h = {"Authorization": f"Bearer {token}"}
        r = httpx.get(base + "/v1/bundles/current", params={"unit": "u1"}, headers=h)
        assert r.status_code == 503 and r.json()["type"].endswith("no-signing-key") and "closedloop init" in r.json()["detail"]
        assert httpx.post(base + "/v1/decisions", json=[], headers=h).json() == {"accepted": 0, "rejected": []}


def test_client_decisions_on_a_full_disk_are_not_acknowledged(served, monkeypatch):
    from support.full_disk import FullDisk

    disk = FullDisk(monkeypatch)
    batch = [item(served, i) for i in range(200, 205)]
    r = report(served, batch)
    assert r.status_code == 503 and r.json()["type"].endswith("not-durable") and disk.failures >= 1
    assert "No space left" in r.json()["detail"] and r.headers["retry-after"] == "1"
    disk.full = False  # the disk has room again: the same batch, sent again, is acknowledged
    assert report(served, batch).json() == {"accepted": 5, "rejected": []}

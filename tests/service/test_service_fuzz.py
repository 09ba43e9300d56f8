"""Fuzzing the service (served from the registry) with schemathesis against its own OpenAPI document: at least 1,000
generated requests (valid and invalid bodies, every operation), authenticated with a token that
holds every role — never a 5xx, and every error is problem details."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from closedloop import Bundle
from closedloop.service import RateLimit, ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.settings import Settings
from support.service import serve_in_thread

pytestmark = pytest.mark.fuzz

EXAMPLES = 70  # per operation and generation mode (≈ 1,300 requests in all)
CALLS: dict[str, int] = {}
SEEN: dict[str, set[int]] = {}


def _app():
    """The app, built at import: its OpenAPI document (what schemathesis generates from) is
    complete before it starts; the fixture below serves this very app on loopback."""
    import tempfile

    from examples.phishing.heuristic import heuristic_intelligence
    from examples.phishing.system import phishing

    home = Path(tempfile.mkdtemp(prefix="closedloop-fuzz-")) / "home"
    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})
    token = Credentials(home / "credentials.json").add("fuzzer", ["decide", "report", "admin"])
    # Served from the registry, so that the admin endpoints reach the registry's own checks.
    from closedloop.registry import Registry

    with Registry.from_settings(Settings(home=home)).open() as reg:
        path = bundle.save(home / "bundles" / bundle.version, key=reg.signing_key(home))
        reg.deploy(phishing, path, actor="fuzzer", reason="first production", force="fuzzing: no report")
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing",
                         max_batch=200, outcome_rate_per_unit=RateLimit(float("inf"), 0.0),
                         outcome_rate_per_source=RateLimit(float("inf"), 0.0), guard_interval_s=0)
    return create_app(st, system=phishing), token, home.parent


APP, TOKEN, TMP = _app()
schema = schemathesis.openapi.from_dict(APP.openapi())


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(APP) as base:
        yield base
    shutil.rmtree(TMP, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, server):
    response = case.call(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    key = f"{case.method} {case.path}"
    CALLS[key] = CALLS.get(key, 0) + 1
    SEEN.setdefault(key, set()).add(response.status_code)
    assert response.status_code < 500, (key, response.status_code, response.text[:500])
    if response.status_code >= 400:
        ctype = response.headers.get("content-type")
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype == "application/problem+json", (key, response.text[:300])
        problem = response.json()
        assert problem["status"] == response.status_code and problem["detail"], problem


def test_at_least_a_thousand_cases():
    total = sum(CALLS.values())
    print(f"schemathesis: {total} requests", CALLS)
    assert total >= 1000, CALLS
    assert {"POST /v1/decide", "POST /v1/outcomes", "GET /v1/status"} <= set(CALLS)
    # both sides of the edge were reached: accepted requests and refused ones
    assert 200 in SEEN["POST /v1/decide"] and 422 in SEEN["POST /v1/decide"], SEEN["POST /v1/decide"]
    assert 202 in SEEN["POST /v1/outcomes"] and (SEEN["POST /v1/outcomes"] & {400, 422}), SEEN["POST /v1/outcomes"]

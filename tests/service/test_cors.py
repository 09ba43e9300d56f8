"""Cross-origin access for the browser clients' endpoints only (closedloop.service.cors), on a real
server on loopback: preflights, the headers an allowed origin gets, and what stays closed."""

from __future__ import annotations

import httpx
import pytest

from closedloop import Bundle
from closedloop.errors import SpecError
from closedloop.runtime.deployment import Deployment
from closedloop.runtime.signing import home_key
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.service.sources import StaticSource
from closedloop.settings import Settings
from support.service import serve_in_thread

PAGE = "http://127.0.0.1:9999"


@pytest.fixture(scope="module")
def served(phishing, tmp_path_factory):
    from examples.phishing.heuristic import heuristic_intelligence

    home = tmp_path_factory.mktemp("cors") / "home"
    key = home_key(home).key
    a = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6}).signed(key)
    creds = Credentials(home / "credentials.json")
    tokens = {"client": creds.add("browser", ["client"]), "app": creds.add("app", ["decide"])}
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", cors_origins=(PAGE,))
    app = create_app(st, system=phishing, source=StaticSource(Deployment(a)))
    with serve_in_thread(app) as base:
        yield base, tokens


def preflight(base: str, path: str, origin: str, method: str = "GET") -> httpx.Response:
    return httpx.options(base + path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                               "Access-Control-Request-Headers": "authorization,if-none-match"})


def test_an_allowed_origin_passes_the_preflight_and_reads_the_bundle_and_its_headers(served):
    base, tokens = served
    p = preflight(base, "/v1/bundles/current", PAGE)
    assert p.status_code == 204
    assert p.headers["access-control-allow-origin"] == PAGE
    assert "Authorization" in p.headers["access-control-allow-headers"]
    assert "If-None-Match" in p.headers["access-control-allow-headers"]
    r = httpx.get(base + "/v1/bundles/current", params={"unit": "u1"},
                  headers={"Origin": PAGE, "Authorization": f"Bearer {tokens['client']}"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == PAGE
    exposed = r.headers["access-control-expose-headers"]
    assert "ETag" in exposed and "Closedloop-Flight" in exposed and "Closedloop-Bundle" in exposed
    assert "Origin" in r.headers["vary"]
    assert preflight(base, "/v1/decisions", PAGE, "POST").headers["access-control-allow-methods"] == "POST"


def test_another_origin_is_refused_at_the_preflight_and_gets_no_cors_headers(served):
    base, tokens = served
    p = preflight(base, "/v1/bundles/current", "http://evil.example")
    assert p.status_code == 403
    assert p.json()["field"] == "Origin" and p.json()["value"] == "http://evil.example"
    r = httpx.get(base + "/v1/bundles/current", params={"unit": "u1"},
                  headers={"Origin": "http://evil.example", "Authorization": f"Bearer {tokens['client']}"})
    assert "access-control-allow-origin" not in r.headers


def test_the_decide_and_admin_paths_stay_closed_to_pages(served):
    base, tokens = served
    assert preflight(base, "/v1/decide", PAGE, "POST").status_code == 405
    r = httpx.post(base + "/v1/decide", headers={"Origin": PAGE, "Authorization": f"Bearer {tokens['app']}"},
                   json={"user_id": "u", "url": "http://a.example/", "domain": "a.example", "domain_age_days": 3.0,
                         "has_password_field": False, "num_forms": 0})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origins", [("*",), ("http://x.example/path",), ("ftp://x.example",), ["ok"], "http://x.example"])
def test_origins_are_checked_naming_the_field(origins):
    with pytest.raises(SpecError, match="'cors_origins'"):
        ServiceSettings(project=Settings(home="h"), system="m:a", cors_origins=origins)

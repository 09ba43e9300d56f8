"""The admin actions through the console: roll back, stop a flight, the kill switch, promote — each
confirmed with a reason, done through the registry as the logged-in credential, shown on the page;
refused (nothing changed) for a viewer, without the CSRF token, without a reason, or when the
deployment changed since the confirmation."""

from __future__ import annotations

from html import unescape

import pytest

from support.console_client import client, csrf, login

OVERVIEW = "/systems/phishing/overview"


def _state(home):
    with home.registry() as reg:
        return reg.state("phishing")


def _admin(console, home):
    c = client(console)
    login(c, home.tokens["admin"])
    return c


def test_admin_rolls_back_and_the_registry_and_the_page_change(console, home):
    c = _admin(console, home)
    before = _state(home)
    confirm = c.get("/systems/phishing/actions/rollback")
    assert confirm.status_code == 200
    text = unescape(confirm.text)
    assert "change #2 (deploy_flight by alice" in text and "what served before it comes back" in text
    token = csrf(c, "/systems/phishing/actions/rollback")
    r = c.post("/systems/phishing/actions/rollback",
               data={"csrf_token": token, "reason": "the flight hurts", "expected_revision": str(before.revision)})
    assert r.status_code == 200, r.text
    assert "rolled back" in unescape(r.text) or "undid" in unescape(r.text) or "restored" in unescape(r.text)
    after = _state(home)
    assert after.revision == before.revision + 1 and after.flights == () and after.production == home.production
    with home.registry() as reg:
        last = reg.history("phishing", limit=1)[-1]
    assert (last["operation"], last["actor"], last["reason"]) == ("rollback", "ada", "the flight hurts")
    page = c.get(OVERVIEW).text
    assert "No flights." in page and f"revision {after.revision}" in page


def test_admin_stops_a_flight_and_turns_the_kill_switch(console, home):
    c = _admin(console, home)
    token = csrf(c, OVERVIEW)
    assert "flight &#39;strict&#39;" in c.get("/systems/phishing/actions/stop?name=strict").text
    r = c.post("/systems/phishing/actions/stop", data={"csrf_token": token, "name": "strict", "reason": "enough"})
    assert r.status_code == 200 and "stopped flight" in unescape(r.text)
    assert _state(home).flights == ()
    r = c.post("/systems/phishing/actions/killswitch", data={"csrf_token": token, "on": "on", "reason": "incident"})
    assert r.status_code == 200 and "kill switch ON" in r.text
    assert _state(home).killswitch is True
    page = c.get(OVERVIEW).text
    assert 'id="killswitch">ON<' in page and "?on=off" in page
    r = c.post("/systems/phishing/actions/killswitch", data={"csrf_token": token, "on": "on", "reason": "again"})
    assert r.status_code == 200 and "No change" in r.text  # on already: a no-op, said so


def test_promote_goes_through_the_registry_and_shows_its_refusal(console, home):
    c = _admin(console, home)
    token = csrf(c, OVERVIEW)
    assert "becomes production" in c.get("/systems/phishing/actions/promote?name=strict").text
    before = _state(home)
    r = c.post("/systems/phishing/actions/promote", data={"csrf_token": token, "name": "strict", "reason": "wins"})
    # the flight's bundle has no evaluation report attached: the registry's sanity checks refuse it, and
    # the page shows the registry's own message; nothing changed, the attempt is in the history
    text = unescape(r.text)
    assert r.status_code == 422 and "Refused by the sanity checks" in text and "failed sanity check(s) parity, gate" in text
    assert _state(home) == before
    with home.registry() as reg:
        last = reg.history("phishing", limit=1)[-1]
    assert (last["operation"], last["status"], last["actor"]) == ("promote", "refused", "ada")


def test_a_viewer_is_refused_and_nothing_changes(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    token = csrf(c, OVERVIEW)
    before = _state(home)
    assert c.get("/systems/phishing/actions/rollback").status_code == 403
    for op, data in (("rollback", {}), ("stop", {"name": "strict"}), ("killswitch", {"on": "on"}), ("promote", {"name": "strict"})):
        r = c.post(f"/systems/phishing/actions/{op}", data={"csrf_token": token, "reason": "try", **data})
        assert r.status_code == 403 and "is a viewer: only an admin may change what serves" in unescape(r.text)
    api = c.post("/api/systems/phishing/actions/rollback", json={"reason": "try"}, headers={"x-csrf-token": token})
    assert api.status_code == 403 and api.headers["content-type"] == "application/problem+json"
    assert _state(home) == before


@pytest.mark.parametrize("given", [None, "wrong-token"])
def test_a_change_without_the_csrf_token_is_refused(console, home, given):
    c = _admin(console, home)
    before = _state(home)
    data = {"reason": "no token"} if given is None else {"reason": "bad token", "csrf_token": given}
    r = c.post("/systems/phishing/actions/rollback", data=data)
    assert r.status_code == 403 and "CSRF token" in r.text and "nothing was changed" in r.text
    r = c.post("/api/systems/phishing/actions/killswitch", json={"reason": "x", "on": True},
               headers={} if given is None else {"x-csrf-token": given})
    assert r.status_code == 403 and r.json()["type"].endswith(":csrf")
    assert _state(home) == before


def test_a_reason_is_needed_and_bounded(console, home):
    c = _admin(console, home)
    token = csrf(c, OVERVIEW)
    before = _state(home)
    for reason, says in (("  ", "needs a reason"), ("x" * 501, "at most 500 characters")):
        r = c.post("/systems/phishing/actions/rollback", data={"csrf_token": token, "reason": reason})
        assert r.status_code == 422 and says in r.text and "What will change" in r.text
    assert _state(home) == before


def test_a_confirmation_made_stale_by_another_change_does_nothing(console, home):
    c = _admin(console, home)
    token = csrf(c, OVERVIEW)
    seen = _state(home).revision
    with home.registry() as reg:  # another admin, by the CLI
        reg.killswitch("phishing", True, actor="bob", reason="meanwhile")
    r = c.post("/systems/phishing/actions/rollback", data={"csrf_token": token, "reason": "r", "expected_revision": str(seen)})
    assert r.status_code == 409 and "changed since this was confirmed" in r.text
    assert _state(home).revision == seen + 1


def test_the_api_twin_with_a_bearer_token(console, home):
    c = client(console)
    auth = {"authorization": f"Bearer {home.tokens['admin']}"}
    ov = c.get("/api/systems/phishing/overview", headers=auth).json()
    assert ov["serving"]["production"]["bundle"] == home.production and ov["fingerprint"]
    r = c.post("/api/systems/phishing/actions/stop", json={"reason": "api", "name": "strict"}, headers=auth)
    assert r.status_code == 200 and r.json()["operation"] == "stop" and _state(home).flights == ()
    r = c.post("/api/systems/phishing/actions/stop", json={"reason": "api", "name": "strict"}, headers=auth)
    assert r.status_code == 409 and "runs no flight or shadow named 'strict'" in r.json()["detail"]
    viewer = {"authorization": f"Bearer {home.tokens['viewer']}"}
    assert c.post("/api/systems/phishing/actions/rollback", json={"reason": "x"}, headers=viewer).status_code == 403


def test_an_unknown_system_is_a_clear_404(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    for path in ("/systems/nope/overview", "/systems/nope/goals", "/systems/nope/overview/live"):
        r = c.get(path)
        assert r.status_code == 404 and "No system named 'nope' in this registry; systems: ['phishing']" in unescape(r.text)
    r = c.get("/api/systems/nope/overview")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "No system named 'nope' in this registry; systems: ['phishing']."
    assert c.get("/systems/phishing/history").status_code == 200  # every page of the navigation is built


def test_promote_without_the_system_says_how_to_give_it(home):
    from closedloop.console import ConsoleSettings, create_console_app

    c = client(create_console_app(ConsoleSettings(home=home.path)))  # no --system
    login(c, home.tokens["admin"])
    token = csrf(c, OVERVIEW)
    before = _state(home)
    r = c.post("/systems/phishing/actions/promote", data={"csrf_token": token, "name": "strict", "reason": "wins"})
    assert r.status_code == 409 and "start the console with --system MODULE:ATTR" in unescape(r.text)
    assert _state(home) == before
    r = c.post("/systems/phishing/actions/stop", data={"csrf_token": token, "name": "strict", "reason": "no system needed"})
    assert r.status_code == 200 and _state(home).flights == ()


def test_a_flight_must_be_named_and_a_broken_credentials_file_lets_nobody_in(console, home):
    c = _admin(console, home)
    token = csrf(c, OVERVIEW)
    r = c.post("/systems/phishing/actions/stop", data={"csrf_token": token, "reason": "which?"})
    assert r.status_code == 422 and "name it" in r.text and len(_state(home).flights) == 1
    (home.path / "credentials.json").write_text("{not json")
    r = c.get(OVERVIEW)
    assert r.status_code == 503 and "not valid JSON" in r.text


def test_admin_promotes_a_flight_that_passes_its_checks(console, home, tmp_path):
    """With an evaluation report attached (golden rows, the gate passed against production), the
    promotion goes through: the flight's bundle is production, the flight ends."""
    from examples.phishing.data import generate

    from closedloop.evaluation.report import evaluate
    from support.pages import import_pages

    cols, labels = generate(2000, 11, phish_rate=0.3)
    ds = import_pages(home.system, cols, labels, tmp_path / "ds")
    with home.registry() as reg:
        bundles = [reg.load_bundle(v, home.system) for v in (home.production, home.flight_bundle)]
        report = evaluate(home.system, bundles, ds.path, bootstrap=10, golden=30)
        assert report["gate"]["passed"]
        reg.add_report(report, actor="alice")
    c = _admin(console, home)
    token = csrf(c, OVERVIEW)
    r = c.post("/systems/phishing/actions/promote", data={"csrf_token": token, "name": "strict", "reason": "it wins",
                                                          "expected_revision": "2"})
    assert r.status_code == 200, unescape(r.text)
    assert "promoted strict" in unescape(r.text)
    after = _state(home)
    assert after.production == home.flight_bundle and after.flights == () and after.revision == 3
    page = c.get(OVERVIEW).text
    assert f'id="production">{home.flight_bundle}<' in page and "No flights." in page

"""The pages that change things or follow changes, over the console tests' home (phishing: production H
and a 10% flight 'strict'): the Flights page's live fragment (204 while nothing changed, the new state
after a stop made elsewhere), and the Hot fixes page — the lists for a viewer, a viewer's POST refused,
a bad entry refused with nothing changed, a hot fix by an admin (checked, confirmed) deployed as
production and recorded in the History."""

from __future__ import annotations

import re
from html import unescape

from support.console_client import client, csrf, login

S = "/systems/phishing"


def _fingerprint(html: str) -> str:
    m = re.search(r'data-fingerprint="([^"]+)"', html)
    assert m
    return m.group(1)


def _state(home):
    with home.registry() as reg:
        st = reg.state("phishing")
        return st.revision, st.production


def test_the_flights_fragment_is_204_until_a_stop_made_elsewhere(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    page = c.get(f"{S}/flights")
    assert page.status_code == 200 and 'id="flight-strict"' in page.text
    fp = _fingerprint(page.text)
    live = f"{S}/flights/live?since={fp}"
    assert c.get(live).status_code == 204
    with home.registry() as reg:  # the CLI, or another console
        reg.stop("phishing", "strict", actor="bob", reason="too strict")
    r = c.get(live)
    assert r.status_code == 200 and "<html" not in r.text and 'id="no-flights"' in r.text and 'id="flight-strict"' not in r.text
    assert c.get(f"{S}/flights/live?since={_fingerprint(r.text)}").status_code == 204
    assert c.get(f"{S}/flights/live?since=").status_code == 200


def test_new_telemetry_alone_renews_the_flights_figures_at_most_every_10_s(console, home, clock):
    from closedloop.console.pages.flights import TELEMETRY_EVERY_S

    c = client(console)
    login(c, home.tokens["viewer"])
    fp = _fingerprint(c.get(f"{S}/flights").text)
    (home.path / "telemetry" / "segments" / "decisions").mkdir(parents=True)  # the telemetry moved
    assert c.get(f"{S}/flights/live?since={fp}").status_code == 204
    clock.advance(TELEMETRY_EVERY_S + 1)
    r = c.get(f"{S}/flights/live?since={fp}")
    assert r.status_code == 200 and _fingerprint(r.text) != fp


def test_a_viewer_sees_the_lists_and_cannot_post(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    r = c.get(f"{S}/hotfix")
    assert r.status_code == 200 and 'id="allow-list"' in r.text and 'id="block-list"' in r.text
    assert 'id="viewer-note"' in r.text and "<textarea" not in r.text
    token = csrf(c, f"{S}/hotfix")
    before = _state(home)
    for step in ("check", "apply"):
        refused = c.post(f"{S}/hotfix", data={"csrf_token": token, "step": step, "field": "domain", "block": "evil.example",
                                              "reason": "x"})
        assert refused.status_code == 403 and "only an admin" in unescape(refused.text)
    assert _state(home) == before


def test_an_invalid_entry_is_named_and_nothing_changes(console, home):
    c = client(console)
    login(c, home.tokens["admin"])
    token = csrf(c, f"{S}/hotfix")
    before = _state(home)
    for step in ("check", "apply"):
        r = c.post(f"{S}/hotfix", data={"csrf_token": token, "step": step, "field": "domain", "allow": "good.example",
                                        "block": "evil.example\nhas space.example", "reason": "block evil"})
        assert r.status_code == 422, r.text
        text = unescape(r.text)
        assert "The block list's entry #2 'has space.example' must not contain spaces" in text and "Nothing was changed" in text
        assert "has space.example" in text.split('id="block"')[1]  # the form keeps what was typed
    api = c.post(f"/api{S}/hotfix", json={"field": "domain", "block": ["a.example", "x" * 5000], "reason": "r"},
                 headers={"X-CSRF-Token": token})
    assert api.status_code == 422 and api.headers["content-type"] == "application/problem+json"
    assert "entry #2" in api.json()["detail"]
    page = c.get(f"{S}/hotfix").text
    assert '<select id="field" name="field" required>' in page and '<option value="" selected>' in page  # no field chosen for you
    nofield = c.post(f"{S}/hotfix", data={"csrf_token": token, "step": "check", "field": "", "block": "evil.example", "reason": "r"})
    assert nofield.status_code == 422 and "Choose the context field" in unescape(nofield.text)
    missing = c.post(f"{S}/hotfix", data={"csrf_token": token, "step": "check", "field": "domain", "block": "evil.example"})
    assert missing.status_code == 422 and "needs a reason" in unescape(missing.text)
    assert c.post(f"{S}/hotfix", data={"step": "apply", "field": "domain", "block": "evil.example", "reason": "r"}).status_code == 403
    assert _state(home) == before


def test_a_hot_fix_by_an_admin_changes_production_and_appears_in_history(console, home):
    c = client(console)
    login(c, home.tokens["admin"])
    token = csrf(c, f"{S}/hotfix")
    rev, prod = _state(home)
    check = c.post(f"{S}/hotfix", data={"csrf_token": token, "step": "check", "field": "domain",
                                        "block": "Evil.example\n\nphish.example", "allow": "good.example", "reason": "evil phishes"})
    assert check.status_code == 200 and "Confirm the hot fix" in check.text
    assert "evil.example, phish.example" in unescape(check.text)  # added, as the list matches (lower case)
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', check.text))
    assert fields["step"] == "apply" and fields["expected_revision"] == str(rev)
    done = c.post(f"{S}/hotfix", data={**{k: unescape(v) for k, v in fields.items()}, "reason": "evil phishes"})
    assert done.status_code == 200, done.text
    version = re.search(r'id="version">([^<]+)<', done.text).group(1)
    new_rev, new_prod = _state(home)
    assert new_prod == version != prod and new_rev == rev + 1
    assert "hot-fix replay" in done.text and 'id="checks"' in done.text
    with home.registry() as reg:
        bundle = reg.load_bundle(version)
        rails = {g.name: g for g in bundle.guardrails}
        assert sorted(rails["hotfix_block"].values) == ["evil.example", "phish.example"]
        assert list(rails["hotfix_allow"].values) == ["good.example"]
    lists = c.get(f"{S}/hotfix").text
    assert "<code>phish.example</code>" in lists and version in lists
    history = unescape(c.get(f"{S}/history").text)
    row = history.split(f'id="event-{new_rev}"')[1].split("</tr>")[0] if f'id="event-{new_rev}"' in history else ""
    first = re.search(r'<tr id="event-(\d+)">(.*?)</tr>', history, re.S)
    assert first and "ada" in first.group(2) and "evil phishes" in first.group(2) and "deploy_production" in first.group(2)
    assert version in first.group(2) and row is not None
    again = c.post(f"{S}/hotfix", data={**{k: unescape(v) for k, v in fields.items()}, "reason": "same again",
                                        "expected_revision": str(new_rev)})
    assert again.status_code == 200 and "No change" in again.text and _state(home) == (new_rev, new_prod)


def test_the_pages_link_under_the_mount_of_serve_console(home):
    from closedloop.cli.console import with_console
    from closedloop.service import ServiceSettings
    from closedloop.service.app import create_app
    from closedloop.settings import Settings

    settings = ServiceSettings(project=Settings(home=home.path), system="examples.phishing.system:phishing")
    c = client(with_console(create_app(settings, system=home.system), settings))
    login(c, home.tokens["admin"], prefix="/console")
    for page in ("history", "goals", "flights", "reports", "mistakes", "hotfix"):
        r = c.get(f"/console{S}/{page}")
        assert r.status_code == 200, (page, r.text)
        links = re.findall(r'(?:href|src|action|hx-get)="(/[^"]*)"', r.text)
        assert links and all(x.startswith("/console/") for x in links), (page, [x for x in links if not x.startswith("/console/")])
    assert c.get("/console/charts/vega.min.js").status_code == 200  # the goals' and reports' chart libraries
    token = csrf(c, f"/console{S}/hotfix")
    r = c.post(f"/console{S}/hotfix", data={"csrf_token": token, "step": "check", "field": "domain", "block": "evil.example",
                                             "reason": "mounted"})
    assert r.status_code == 200 and 'action="/console/systems/phishing/hotfix"' in r.text


def test_history_shows_refused_attempts_unless_asked_for_applied_changes_only(console, home):
    with home.registry() as reg:
        try:
            reg.stop("phishing", "nope", actor="bob", reason="a typo")
        except Exception:  # noqa: BLE001 - refused: recorded as an attempt
            pass
    c = client(console)
    login(c, home.tokens["viewer"])
    every = unescape(c.get(f"{S}/history").text)
    assert "a typo" in every and '<span class="badge bad">refused</span>' in every
    applied = unescape(c.get(f"{S}/history?applied=1").text)
    assert "a typo" not in applied and "try stricter" in applied and "Every applied change" in applied

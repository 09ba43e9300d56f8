"""The console's auth: login (viewer, admin, a wrong token, a role the console does not take), the
signed session cookie (tampered, expired), logout, CSRF, and the security headers on every answer."""

from __future__ import annotations

import os
import stat
from html import unescape

import pytest

from closedloop.console.security import CSP
from closedloop.console.sessions import COOKIE, SessionSigner, load_secret
from closedloop.errors import AuthError
from support.console_client import client, csrf, login

OVERVIEW = "/systems/phishing/overview"


def test_login_as_viewer_sees_everything_and_no_action(console, home):
    c = client(console)
    assert c.get(OVERVIEW).status_code == 401  # not logged in: the login page, with why
    r = login(c, home.tokens["viewer"])
    assert r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert c.get("/").headers["location"] == OVERVIEW  # one system: straight to it
    page = c.get(OVERVIEW)
    assert page.status_code == 200 and home.production in page.text and "strict" in page.text
    assert "vera" in page.text and "viewer" in page.text
    assert "/actions/" not in page.text and "disabled" in page.text  # no action links, the buttons disabled
    assert c.get("/api/systems").json() == {"systems": ["phishing"], "user": "vera", "roles": ["viewer"]}


def test_login_as_admin_sees_the_actions(console, home):
    c = client(console)
    login(c, home.tokens["admin"])
    page = c.get(OVERVIEW).text
    assert "/systems/phishing/actions/rollback" in page and "/systems/phishing/actions/stop?name=strict" in page


def test_a_wrong_token_says_so_and_sets_no_cookie(console, home):
    c = client(console)
    r = c.post("/login", data={"token": "not-a-token"})
    assert r.status_code == 401 and "matches no credential" in r.text and "set-cookie" not in r.headers
    r = c.post("/login", data={"token": home.tokens["decide"]})  # a credential without a console role
    assert r.status_code == 403 and "needs 'viewer'" in unescape(r.text) and "set-cookie" not in r.headers


def test_a_cross_site_login_is_refused(console, home):
    r = client(console).post("/login", data={"token": home.tokens["admin"]}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.text and "set-cookie" not in r.headers


def test_a_tampered_cookie_is_refused_and_cleared(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    value = c.cookies[COOKIE]
    payload, mac = value.split(".")
    import base64
    import json

    d = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    d["roles"] = ["admin"]  # a viewer makes itself an admin
    forged = base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode() + "." + mac
    c.cookies.set(COOKIE, forged)
    r = c.get(OVERVIEW)
    assert r.status_code == 401 and "signature does not match" in r.text
    assert f'{COOKIE}=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    api = client(console, cookies={COOKIE: forged}).get("/api/systems/phishing/overview")
    assert api.status_code == 401 and api.headers["content-type"] == "application/problem+json"
    assert "signature does not match" in api.json()["detail"]


def test_an_expired_cookie_is_refused(console, home, clock):
    c = client(console)
    login(c, home.tokens["viewer"])
    clock.advance(11.9 * 3600)
    assert c.get(OVERVIEW).status_code == 200
    clock.advance(0.2 * 3600)
    r = c.get(OVERVIEW)
    assert r.status_code == 401 and "expired at" in r.text and "log in again" in r.text


def test_a_removed_credential_ends_its_sessions(console, home):
    from closedloop.service.auth import Credentials

    c = client(console)
    login(c, home.tokens["admin"])
    Credentials(home.path / "credentials.json").remove("ada")
    r = c.get(OVERVIEW)
    assert r.status_code == 401 and "no longer exists" in r.text


def test_logout_needs_the_csrf_token_and_clears_the_cookie(console, home):
    c = client(console)
    login(c, home.tokens["viewer"])
    assert c.post("/logout").status_code == 403  # no CSRF token: refused, still logged in
    assert c.get(OVERVIEW).status_code == 200
    token = csrf(c, OVERVIEW)
    r = c.post("/logout", data={"csrf_token": token})
    assert r.status_code == 200 and "logged out" in r.text and "Max-Age=0" in r.headers["set-cookie"]
    assert c.get(OVERVIEW).status_code == 401


@pytest.mark.parametrize("path", ["/login", "/static/console.css", "/static/htmx.min.js", OVERVIEW, "/nowhere",
                                  "/api/systems", "/systems/nope/overview"])
def test_every_answer_carries_the_security_headers(console, home, path):
    c = client(console)
    for logged_in in (False, True):
        if logged_in:
            login(c, home.tokens["viewer"])
        r = c.get(path)
        assert r.headers["content-security-policy"] == CSP, (path, r.status_code)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"


def test_no_page_has_an_inline_script_or_style(console, home):
    import re

    c = client(console)
    pages = [c.get("/login").text]
    login(c, home.tokens["admin"])
    pages += [c.get(p).text for p in (OVERVIEW, "/systems", "/systems/phishing/actions/rollback", "/systems/phishing/goals")]
    for html in pages:
        assert "<style" not in html and " style=" not in html
        for m in re.finditer(r"<script([^>]*)>(.*?)</script>", html, re.S):
            assert "src=" in m.group(1) and not m.group(2).strip()
        assert not re.search(r"<[^>]+\son[a-z]+=", html)  # no inline event handlers


def test_the_secret_is_private_made_once_and_signs(tmp_path):
    p = tmp_path / "home" / "console" / "secret"
    a = load_secret(p)
    assert len(a) == 32 and stat.S_IMODE(os.stat(p).st_mode) == 0o600 and stat.S_IMODE(os.stat(p.parent).st_mode) == 0o700
    assert load_secret(p) == a
    signer = SessionSigner(a, lifetime_s=60)
    s, value = signer.issue("vera", ["viewer"], 1000)
    assert signer.verify(value, 1059) == s
    with pytest.raises(AuthError, match="expired at 1970-01-01T00:17:40Z"):
        signer.verify(value, 1060)
    with pytest.raises(AuthError, match="signature does not match"):
        SessionSigner(b"x" * 32, lifetime_s=60).verify(value, 1001)
    with pytest.raises(AuthError, match="malformed"):
        signer.verify("garbage", 1001)
    with pytest.raises(AuthError, match="malformed"):  # a cookie header is read as latin-1: not ASCII is refused, not a 500
        signer.verify(value.replace(".", ".\u00e9", 1), 1001)


def test_the_cookie_is_secure_over_https(console, home):
    c = client(console, base_url="https://console.example")
    r = login(c, home.tokens["viewer"])
    assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]


def test_the_secret_is_made_at_the_first_start(tmp_path):
    from closedloop.console import ConsoleSettings, create_console_app

    create_console_app(ConsoleSettings(home=tmp_path / "h"))
    secret = tmp_path / "h" / "console" / "secret"
    assert secret.is_file() and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    before = secret.read_bytes()
    create_console_app(ConsoleSettings(home=tmp_path / "h"))
    assert secret.read_bytes() == before  # kept: sessions survive a restart

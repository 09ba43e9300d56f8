"""Helpers of the console tests (tests/console): a test client that does not follow redirects, login,
and the CSRF token a page carries."""

from __future__ import annotations

import re
from typing import Any


def client(app: Any, **kw: Any) -> Any:
    from fastapi.testclient import TestClient

    return TestClient(app, follow_redirects=False, **kw)


def login(c: Any, token: str, prefix: str = "") -> Any:
    r = c.post(f"{prefix}/login", data={"token": token})
    assert r.status_code == 303, r.text
    return r


def csrf(c: Any, page: str) -> str:
    """The CSRF token a page carries (its forms' hidden field)."""
    r = c.get(page)
    assert r.status_code == 200, r.text
    m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert m, "the page carries no CSRF token"
    return m.group(1)

"""``closedloop console`` and ``closedloop serve --console`` (uvicorn replaced: what they would serve),
the console's settings and its bounded form reader."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app as cli
from closedloop.console import ConsoleSettings
from closedloop.errors import SpecError
from support.console_client import client, csrf, login


class _Uvicorn:
    def __init__(self) -> None:
        self.calls: list[tuple[object, dict]] = []

    def run(self, app, **kw):
        self.calls.append((app, kw))


@pytest.fixture
def uvicorn(monkeypatch):
    """uvicorn.run recorded, not run; the environment `serve` hands its workers restored after."""
    import os

    import uvicorn as real

    for name in ("CLOSEDLOOP_SERVICE_SETTINGS", "PYTHONPATH"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    fake = _Uvicorn()
    monkeypatch.setattr(real, "run", fake.run)
    return fake


def test_closedloop_console_serves_the_home(home, uvicorn):
    r = CliRunner().invoke(cli, ["console", "--home", str(home.path), "--port", "8471", "--system",
                                 "examples.phishing.system:phishing"], env={"CLOSEDLOOP_HOME": ""})
    assert r.exit_code == 0, r.output
    ((app, kw),) = uvicorn.calls
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8471 and kw["workers"] == 1
    settings = app.state.console.settings
    assert settings.home == home.path and settings.systems == ("examples.phishing.system:phishing",)
    c = client(app)
    login(c, home.tokens["viewer"])
    assert c.get("/systems/phishing/overview").status_code == 200


def test_closedloop_console_warns_without_credentials(tmp_path, uvicorn):
    r = CliRunner().invoke(cli, ["console", "--home", str(tmp_path)], env={"CLOSEDLOOP_HOME": ""})
    assert r.exit_code == 0 and "nobody can log in" in r.output and "--role viewer" in r.output


def test_serve_console_runs_the_factory_that_mounts_it(home, uvicorn):
    from closedloop.cli.console import app_with_console_from_environ

    r = CliRunner().invoke(cli, ["serve", "--system", "examples.phishing.system:phishing", "--console", "--home", str(home.path)],
                           env={"CLOSEDLOOP_HOME": ""})
    assert r.exit_code == 0, r.output
    ((factory, kw),) = uvicorn.calls
    assert factory == "closedloop.cli.console:app_with_console_from_environ" and kw["factory"] is True
    app = app_with_console_from_environ()  # what each worker builds (the settings are in its environment)
    assert app.user_middleware == [] and any(getattr(r, "path", "") == "/console" for r in app.routes)


def test_plain_serve_is_unchanged(home, uvicorn):
    r = CliRunner().invoke(cli, ["serve", "--system", "examples.phishing.system:phishing", "--home", str(home.path)],
                           env={"CLOSEDLOOP_HOME": ""})
    assert r.exit_code == 0, r.output
    assert uvicorn.calls[0][0] == "closedloop.service.app:app_from_environ"


@pytest.mark.parametrize(("kw", "says"), [
    ({"port": 70000}, "'port' parameter of ConsoleSettings must be an integer >= 0 and <= 65535. Got 70000"),
    ({"session_hours": 0}, "'session_hours'"),
    ({"refresh_seconds": 0.01}, "'refresh_seconds' parameter of ConsoleSettings must be a number >= 0.1 and <= 60"),
    ({"page_size": 0}, "'page_size'"),
    ({"host": ""}, "'host'"),
    ({"systems": ("phishing",)}, "'module:attr' references"),
    ({"registry_url": ""}, "'registry_url'"),
])
def test_settings_say_what_is_wrong(tmp_path, kw, says):
    with pytest.raises(SpecError, match=says.replace("(", r"\(").replace(")", r"\)")):
        ConsoleSettings(home=tmp_path, **kw)


def test_settings_defaults(tmp_path):
    s = ConsoleSettings(home=str(tmp_path))
    assert (s.host, s.port, s.session_hours, s.refresh_seconds, s.page_size) == ("127.0.0.1", 8470, 12.0, 1.0, 50)
    assert s.registry == f"sqlite:///{tmp_path / 'registry.sqlite'}" and s.credentials_path == tmp_path / "credentials.json"
    assert s.secret_path == tmp_path / "console" / "secret" and s.session_seconds == 12 * 3600


def test_health_and_bad_bodies(console, home):
    c = client(console)
    assert c.get("/healthz").json() == {"status": "ok"} and c.get("/readyz").json() == {"status": "ok"}
    login(c, home.tokens["admin"])
    token = csrf(c, "/systems/phishing/overview")
    r = c.post("/systems/phishing/actions/rollback", content=b"x" * (300 * 1024),
               headers={"content-type": "application/x-www-form-urlencoded", "x-csrf-token": token})
    assert r.status_code == 413 and "at most 262144 bytes" in r.text
    r = c.post("/systems/phishing/actions/rollback", content=b"\xff\xfe=1",
               headers={"content-type": "application/x-www-form-urlencoded", "x-csrf-token": token})
    assert r.status_code == 400 and "not UTF-8" in r.text
    r = c.post("/api/systems/phishing/actions/rollback", content=b"[1]", headers={"x-csrf-token": token,
                                                                               "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"] == "The body must be a JSON object. Got list instead."
    with home.registry() as reg:
        assert reg.revision("phishing") == 2


def test_page_of_reads_the_page_asked_for(console):
    from starlette.requests import Request

    from closedloop.console.framework import ConsoleError, page_of

    def request(qs: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "query_string": qs.encode(), "headers": [], "app": console})

    assert page_of(request("")).offset == 0 and page_of(request("page=3")).offset == 100
    for bad in ("page=0", "page=x", "page=-1"):
        with pytest.raises(ConsoleError, match="'page' must be an integer"):
            page_of(request(bad))


def test_serve_hands_the_redis_settings_to_its_workers(home, uvicorn):
    from closedloop.service import ServiceSettings

    r = CliRunner().invoke(cli, ["serve", "--system", "examples.phishing.system:phishing", "--home", str(home.path),
                                 "--redis-url", "redis://127.0.0.1:6390/0", "--redis-on-unavailable", "closed"],
                           env={"CLOSEDLOOP_HOME": ""})
    assert r.exit_code == 0, r.output
    got = ServiceSettings.from_environ()  # what each worker reads
    assert got.redis_url == "redis://127.0.0.1:6390/0" and got.redis_on_unavailable == "closed"


@pytest.mark.parametrize(("args", "says"), [
    (["--redis-url", "http://127.0.0.1:6379"], "'redis_url' parameter of ServiceSettings must be a redis:// URL"),
    (["--redis-on-unavailable", "maybe"], "'redis_on_unavailable' parameter of ServiceSettings must be 'open' or 'closed'"),
])
def test_serve_refuses_bad_redis_settings(home, uvicorn, args, says):
    r = CliRunner().invoke(cli, ["serve", "--system", "examples.phishing.system:phishing", "--home", str(home.path), *args],
                           env={"CLOSEDLOOP_HOME": ""})
    assert r.exit_code != 0 and says in r.output and uvicorn.calls == []

"""Credentials: tokens with roles, hashed at rest; the CLI's token commands."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.cli.tokens import admin
from closedloop.errors import AuthError, SpecError
from closedloop.service.auth import Credentials
from closedloop.settings import Settings


def test_add_authenticate_require(tmp_path):
    path = tmp_path / "credentials.json"
    creds = Credentials(path)
    t_ops = creds.add("ops", ["admin", "decide"])
    t_app = creds.add("app", ["decide"])
    assert t_ops != t_app and len(t_ops) >= 40
    raw = path.read_text()
    assert t_ops not in raw and t_app not in raw  # only hashes at rest
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fresh = Credentials.load(path)
    ops = fresh.authenticate(t_ops)
    assert ops.name == "ops" and ops.require("admin") is ops
    app_cred = fresh.authenticate(t_app)
    with pytest.raises(AuthError, match="'app' lacks the role 'admin'"):
        app_cred.require("admin")
    with pytest.raises(AuthError, match="matches no credential"):
        fresh.authenticate(t_app + "x")
    with pytest.raises(AuthError, match="credential is required"):
        fresh.authenticate(None)


def test_bad_names_roles_and_files(tmp_path):
    creds = Credentials(tmp_path / "c.json")
    with pytest.raises(SpecError, match="'roles'"):
        creds.add("ops", ["root"])
    with pytest.raises(SpecError, match="'name'"):
        creds.add("bad name", ["admin"])
    creds.add("ops", ["admin"])
    with pytest.raises(SpecError, match="already exists"):
        creds.add("ops", ["decide"])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AuthError, match="not valid JSON"):
        Credentials.load(tmp_path / "broken.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"version": 1, "credentials": [{"name": "x", "roles": ["god"], "sha256": "0" * 64}]}))
    with pytest.raises(AuthError, match="'roles'"):
        Credentials.load(tmp_path / "wrong.json")


def test_remove_revokes(tmp_path):
    creds = Credentials(tmp_path / "c.json")
    tok = creds.add("ops", ["admin"])
    creds.remove("ops")
    with pytest.raises(AuthError):
        Credentials.load(tmp_path / "c.json").authenticate(tok)
    with pytest.raises(SpecError, match="No credential named"):
        creds.remove("ops")


def test_cli_token_add_and_admin_check(tmp_path):
    runner = CliRunner()
    home = tmp_path / "home"
    r = runner.invoke(app, ["--home", str(home), "token", "add", "ops", "--role", "admin"])
    assert r.exit_code == 0, r.output
    token = r.output.strip()
    r = runner.invoke(app, ["--home", str(home), "token", "list"])
    assert json.loads(r.output.strip())["name"] == "ops" and token not in r.output
    assert admin(Settings.from_env(home=home, environ={}, token=token)).name == "ops"
    # The token may come from the environment, read once into Settings.
    assert admin(Settings.from_env(home=home, environ={"CLOSEDLOOP_TOKEN": token})).name == "ops"
    with pytest.raises(AuthError):
        admin(Settings.from_env(home=home, environ={}))
    assert token not in repr(Settings.from_env(home=home, environ={}, token=token))

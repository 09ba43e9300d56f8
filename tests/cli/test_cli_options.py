"""The root options (--home, --token) work before or after the subcommand; help and tables are
not cut at 80 columns when there is no terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from typer.testing import CliRunner

from closedloop.cli.main import app, hoist_root_options, no_terminal_columns

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env={"CLOSEDLOOP_HOME": "", "CLOSEDLOOP_TOKEN": "", **(env or {})})


# -- root options anywhere ------------------------------------------------------------------------
def test_home_after_the_subcommand(tmp_path: Path) -> None:
    home = tmp_path / "h"
    r = _run("token", "add", "ops", "--role", "admin", "--home", str(home))
    assert r.exit_code == 0, r.output
    assert (home / "credentials.json").exists()
    r = _run("key", "show", f"--home={home}")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["path"].startswith(str(home))


def test_token_after_the_subcommand_authenticates(tmp_path: Path) -> None:
    home = tmp_path / "h"
    token = _run("--home", str(home), "token", "add", "ops", "--role", "admin").stdout.strip()
    # the README's form: the token after the subcommand and its own options
    from closedloop.runtime.signing import SigningKey

    other = SigningKey.generate()
    r = _run("key", "trust", other.public_key, "--name", "ci", "--token", token, env={"CLOSEDLOOP_HOME": str(home)})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_id"] == other.key_id
    r = _run("key", "list", "--token", token, "--home", str(home))
    assert r.exit_code == 0 and other.key_id in r.stdout, r.output
    r = _run("key", "revoke", other.key_id, "--home", str(home), "--token", "wrong")
    assert r.exit_code == 1 and "token" in r.output.lower()


def test_a_subcommand_option_of_the_same_name_wins(tmp_path: Path) -> None:
    """`key trust --home` is the subcommand's flag (trust this home's key), not the root's --home."""
    home = tmp_path / "h"
    token = _run("--home", str(home), "token", "add", "ops", "--role", "admin").stdout.strip()
    r = _run("--home", str(home), "key", "trust", "--home", "--token", token)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"].startswith("home ")


def test_the_last_value_wins_and_help_still_works(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    r = _run("--home", str(a), "token", "add", "x", "--role", "decide", "--home", str(b))
    assert r.exit_code == 0, r.output
    assert (b / "credentials.json").exists() and not a.exists()
    for args in (["--help"], ["deploy", "--help"], ["token", "add", "--help", "--home", str(a)]):
        r = _run(*args)
        assert r.exit_code == 0 and "Usage" in r.stdout, (args, r.output)
    r = _run("status", "--home")
    assert r.exit_code == 2 and "--home" in r.output


def test_hoisting_is_exact() -> None:
    from typer.main import get_command

    group = get_command(app)
    h = lambda *a: hoist_root_options(group, list(a))  # noqa: E731
    assert h("deploy", "v1", "--reason", "r", "--token", "t") == ["--token", "t", "deploy", "v1", "--reason", "r"]
    assert h("--home", "x", "status", "--home=y") == ["--home", "x", "--home=y", "status"]
    # a subcommand option's value is never taken for a root option; nor anything after `--`
    assert h("deploy", "v1", "--reason", "--token") == ["deploy", "v1", "--reason", "--token"]
    assert h("decide", "--", "--home", "x") == ["decide", "--", "--home", "x"]
    # a sub-group's command
    assert h("key", "list", "--home", "x") == ["--home", "x", "key", "list"]
    assert h("key", "trust", "--home", "--token", "t") == ["--token", "t", "key", "trust", "--home"]
    assert h("nosuchcommand", "--home", "x") == ["nosuchcommand", "--home", "x"]


# -- width when there is no terminal --------------------------------------------------------------
def test_no_terminal_columns_rule() -> None:
    assert no_terminal_columns({}, terminal=False) == "160"
    assert no_terminal_columns({"COLUMNS": "100"}, terminal=False) is None
    assert no_terminal_columns({}, terminal=True) is None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    return {**env, **extra}


def _help(env: dict[str, str]) -> str:
    r = subprocess.run([sys.executable, "-m", "closedloop.cli", "deploy", "--help"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_is_not_cut_without_a_terminal() -> None:
    out = _help(_env())
    widest = max(len(line) for line in out.splitlines())
    assert 80 < widest <= 160, widest
    assert "--allow-unsigned" in out
    assert max(len(line) for line in _help(_env(COLUMNS="100")).splitlines()) <= 100


def test_help_on_a_terminal_keeps_its_width() -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "closedloop.cli", "deploy", "--help"], stdin=follower,
                            stdout=follower, stderr=follower, env=_env(TERM="dumb-not"), close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    lines = text.replace("\r", "").splitlines()
    assert proc.returncode == 0 and any("Usage" in line for line in lines)
    assert max(len(line) for line in lines) <= 90

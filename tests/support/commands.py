"""Run the shell command lines of a README as a user would type them: `closedloop …` through the
real CLI (typer's CliRunner, in process), `closedloop serve …` as a real server on 127.0.0.1 (a
subprocess), `curl …` as the same HTTP request, `export`, `cd` and `echo … |` as the shell does."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from closedloop.cli.main import app
from support.service import serve_subprocess

SH_BLOCK = re.compile(r"```(?:sh|bash)\n(.*?)```", re.S)


def sh_blocks(text: str) -> list[tuple[int, str]]:
    """The ```sh / ```bash blocks of a Markdown text: (line number of the fence, body)."""
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in SH_BLOCK.finditer(text)]


def command_lines(block: str) -> list[str]:
    """A block's commands: continuation lines joined, blank and comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in block.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            out.append(line.strip())
    return out


def forget_modules() -> None:
    """`--system system:system` / `--plan loop:plan` import modules named `system` and `loop` from
    the working directory: forget them so the next project's are imported."""
    for name in [m for m in sys.modules if m in ("system", "loop") or m.startswith("_closedloop_system_")]:
        del sys.modules[name]


class Session:
    """A user's shell: a working directory, environment variables, placeholders filled in from
    earlier outputs, and at most one server at a time."""

    def __init__(self, cwd: Path, monkeypatch: Any, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.monkeypatch = monkeypatch
        self.env: dict[str, str] = {"CLOSEDLOOP_HOME": "", "CLOSEDLOOP_TOKEN": "", **(env or {})}
        self.subs: dict[str, str] = {}
        self.runner = CliRunner()
        self.base: str | None = None
        self._servers = contextlib.ExitStack()
        self.after: Callable[[str, str], None] | None = None  # (command line, stdout) → fill in subs
        self.ran: list[str] = []

    def close(self) -> None:
        self._servers.close()

    def fill(self, line: str) -> str:
        for key, value in self.subs.items():
            line = line.replace(key, value)
        return line

    def run(self, line: str) -> str:
        """Run one command line; return its stdout. Fails the test when the command fails."""
        line = self.fill(line)
        left = re.search(r"<[^<>|]+>", line.replace("<<", ""))
        assert left is None, f"unfilled placeholder {left.group(0)!r} in: {line}"
        words = shlex.split(line, comments=True)
        stdin: str | None = None
        while words:
            if words[0] == "cd":
                end = words.index("&&") if "&&" in words else len(words)
                self.cwd = (self.cwd / words[1]).resolve()
                words = words[end + 1 :]
            elif words[0] == "echo" and "|" in words:
                bar = words.index("|")
                stdin = " ".join(words[1:bar]) + "\n"
                words = words[bar + 1 :]
            else:
                break
        self.ran.append(line)
        if not words:
            return ""
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            self.env[key] = value
            return ""
        if words[0] == "curl":
            return self._curl(words[1:])
        assert words[0] == "closedloop", f"not a command this runner knows: {line}"
        args = words[1:]
        if "<" in args:  # `… < file`
            i = args.index("<")
            stdin = (self.cwd / args[i + 1]).read_text()
            args = args[:i] + args[i + 2 :]
        if args and args[0] == "serve":
            return self._serve(args)
        self.monkeypatch.chdir(self.cwd)
        result = self.runner.invoke(app, args, input=stdin, env=self.env)
        assert result.exit_code == 0, f"`{line}` exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
        if self.after is not None:
            self.after(line, result.stdout)
        return result.stdout

    def _serve(self, args: list[str]) -> str:
        self._servers.close()
        self._servers = contextlib.ExitStack()
        env = {**self.env, "PYTHONPATH": os.pathsep.join(p for p in (str(self.cwd), self.env.get("PYTHONPATH")) if p)}
        self.base = self._servers.enter_context(serve_subprocess(args, env=env, cwd=self.cwd))
        return ""

    def _curl(self, words: list[str]) -> str:
        headers: dict[str, str] = {}
        data: str | None = None
        url = ""
        it = iter(words)
        for w in it:
            if w == "-H":
                k, _, v = next(it).partition(":")
                headers[k.strip()] = v.strip()
            elif w in ("-d", "--data"):
                data = next(it)
            elif w.startswith("-"):
                continue
            else:
                url = w
        assert self.base is not None, "curl before any `closedloop serve`"
        url = re.sub(r"^http://127\.0\.0\.1:8000", self.base, url)
        r = httpx.post(url, content=data, headers=headers) if data is not None else httpx.get(url, headers=headers)
        assert r.status_code < 300, f"curl {url} → {r.status_code}: {r.text[:500]}"
        if self.after is not None:
            self.after("curl " + url, r.text)
        return r.text


@contextlib.contextmanager
def session(cwd: Path, monkeypatch: Any, env: dict[str, str] | None = None) -> Iterator[Session]:
    s = Session(cwd, monkeypatch, env)
    try:
        yield s
    finally:
        s.close()
        forget_modules()

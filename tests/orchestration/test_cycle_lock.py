"""One cycle at a time per home: a second `closedloop loop run --once` (a real process) is refused
naming the holder, a holder killed with SIGKILL frees the lock, `--wait` succeeds once the
holder finishes; the lock's interface in process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop import ManualClock
from closedloop.orchestration import Cycle, CycleLock, FileCycleLock, LockHeldError, LoopPlan
from closedloop.registry import Registry
from closedloop.service.auth import Credentials
from support.orchestration import START, make_system

TESTS = Path(__file__).resolve().parents[1]

PLAN = """
import sys
sys.path.insert(0, {tests!r})
from support.orchestration import make_system
from closedloop.orchestration import LoopPlan

plan = LoopPlan(make_system())
"""

# takes the home's cycle lock, says so, and holds it until its stdin is closed
HOLD = """
import sys
from closedloop.orchestration import FileCycleLock
lock = FileCycleLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def home(tmp_path: Path):
    home = tmp_path / "home"
    (tmp_path / "plan.py").write_text(PLAN.format(tests=str(TESTS)))
    token = Credentials(home / "credentials.json").add("loop-bot", ["admin"])
    return home, tmp_path / "plan.py", token


def _env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env["CLOSEDLOOP_TOKEN"] = token
    return env


def _loop_run(home: Path, plan: Path, token: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "closedloop.cli", "--home", str(home), "loop", "run", "--once",
           "--plan", f"{plan}:plan", "--now", str(START), *extra]
    return subprocess.Popen(cmd, env=_env(token), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _hold(home: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(home / ".cycle.lock")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_is_refused_naming_the_holder_and_wait_gets_through(home) -> None:
    home, plan, token = home
    holder = _hold(home)
    try:
        refused = _loop_run(home, plan, token)
        waiting = _loop_run(home, plan, token, "--wait", "60")  # started with it: waits meanwhile
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 1, err
        assert f"pid {holder.pid} on host {socket.gethostname()!r}" in err and "--wait" in err
        assert "Traceback" not in err and out == ""
        assert not list((home / "orchestration" / "cycles").glob("*.json"))  # it ran nothing
        assert waiting.poll() is None  # still waiting
    finally:
        holder.stdin.close()  # the holder finishes
        holder.wait(timeout=30)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["id"] == 1 and line["outcome"] == "nothing_deployed", line


def test_a_holder_killed_with_sigkill_frees_the_home(home) -> None:
    home, plan, token = home
    holder = _hold(home)
    lock = FileCycleLock(home / ".cycle.lock")
    info = lock.holder()
    assert info is not None and info["pid"] == holder.pid and info["host"] == socket.gethostname()
    with pytest.raises(LockHeldError, match=f"pid {holder.pid}") as exc:
        lock.acquire()
    assert exc.value.holder["pid"] == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdin.close()
    assert lock.holder() is None  # what the file still says is a dead holder's
    r = _loop_run(home, plan, token)
    out, err = r.communicate(timeout=60)
    assert r.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["outcome"] == "nothing_deployed"


def test_the_lock_in_process(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".cycle.lock"
    a, b = FileCycleLock(path), FileCycleLock(path)
    assert isinstance(a, CycleLock) and a.holder() is None and not a.held
    with a:
        assert a.held and a.holder()["pid"] == os.getpid()
        assert b.holder()["pid"] == os.getpid()
        t0 = time.monotonic()
        with pytest.raises(LockHeldError, match=r"after waiting 0\.3 s by pid"):
            b.acquire(wait=0.3)
        assert 0.3 <= time.monotonic() - t0 < 30  # it waited, and not forever (no tighter bound: a loaded machine)
        with pytest.raises(Exception, match="held by this object already"):
            a.acquire()
    assert not a.held and b.holder() is None
    with b.acquire(wait=0):
        assert b.held
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(ValueError, match="'wait' parameter of FileCycleLock.acquire"):
            a.acquire(wait=bad)


def test_run_once_refuses_while_another_cycle_holds_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    clock = ManualClock(START)
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock) as reg:
        cycle = Cycle(LoopPlan(make_system()), home, reg, clock=clock)
        with FileCycleLock(home / ".cycle.lock"):
            with pytest.raises(LockHeldError, match="another cycle is running"):
                cycle.run_once()
            assert cycle.records() == []
        assert cycle.run_once()["outcome"] == "nothing_deployed"
        assert not cycle.lock.held

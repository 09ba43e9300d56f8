"""One cycle per system at a time across hosts: with a PostgreSQL registry the cycle lock is an
advisory lock per system. Two homes sharing one registry (real PostgreSQL, tests/support/postgres.py)
run a cycle of the same system at once: exactly one runs it, the other is refused naming the holder
— or, with ``wait``, runs after it and sees its work; other systems do not block; a holder killed
with SIGKILL (a real process) frees the lock."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from closedloop import ManualClock
from closedloop.orchestration import Cycle, FileCycleLock, LockHeldError, LoopPlan, PostgresCycleLock
from closedloop.orchestration.lock_pg import lock_key
from closedloop.registry import Registry
from support.orchestration import START, first_bundle, make_system

# takes the system's cycle lock on the database, says so, and holds it until its stdin is closed
HOLD = """
import sys
from closedloop.orchestration import PostgresCycleLock
lock = PostgresCycleLock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def db(postgres) -> str:
    return postgres.database()


def _hold(url: str, system: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", HOLD, url, system], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_the_key_is_a_stable_64_bit_hash_of_the_system_name() -> None:
    digest = hashlib.sha256(b"closedloop-cycle:synth").digest()
    assert lock_key("synth") == int.from_bytes(digest[:8], "big", signed=True)
    assert -(2**63) <= lock_key("synth") < 2**63 and lock_key("synth") != lock_key("other")


def test_the_lock_in_process(db: str) -> None:
    a, b, other = PostgresCycleLock(db, "synth"), PostgresCycleLock(db, "synth"), PostgresCycleLock(db, "other")
    try:
        assert a.holder() is None and not a.held
        with a:
            assert a.held and a.holder()["pid"] == os.getpid()
            seen = b.holder()
            assert seen["pid"] == os.getpid() and socket.gethostname().startswith(seen["host"]) and seen["since"]
            t0 = time.monotonic()
            with pytest.raises(LockHeldError, match=rf"system 'synth'.* is held after waiting 0\.3 s by pid {os.getpid()}"):
                b.acquire(wait=0.3)
            assert 0.3 <= time.monotonic() - t0 < 30
            with other:  # another system: not blocked
                assert other.held
        assert b.holder() is None
        with b.acquire(wait=0):
            assert b.held
        with pytest.raises(ValueError, match="must be a PostgreSQL URL"):
            PostgresCycleLock("sqlite:///x.sqlite", "synth")
    finally:
        for lock in (a, b, other):
            lock.close()


def test_an_unreachable_server_is_a_registry_error_not_a_hang() -> None:
    from closedloop.errors import RegistryError

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lock = PostgresCycleLock(f"postgresql://nobody@127.0.0.1:{port}/registry", "synth")
    with pytest.raises(RegistryError, match="Cannot reach the registry's PostgreSQL for the cycle lock of system 'synth'"):
        lock.acquire(wait=0)
    assert not lock.held


def test_a_holder_killed_with_sigkill_frees_the_lock(db: str) -> None:
    holder = _hold(db, "synth")
    lock = PostgresCycleLock(db, "synth")
    try:
        info = lock.holder()
        assert info is not None and info["pid"] == holder.pid and socket.gethostname().startswith(info["host"]) and info["host"]
        with pytest.raises(LockHeldError, match=f"pid {holder.pid}") as exc:
            lock.acquire()
        assert exc.value.holder["pid"] == holder.pid
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        with lock.acquire(wait=20):  # the session ends when the socket closes: the server releases the lock
            assert lock.held
    finally:
        holder.stdin.close()
        lock.close()


def test_a_file_lock_stays_for_sqlite_and_postgres_gets_the_advisory_lock(tmp_path: Path, db: str) -> None:
    system = make_system()
    with Registry(f"sqlite:///{tmp_path}/registry.sqlite", tmp_path / "bundles") as reg:
        assert isinstance(Cycle(LoopPlan(system), tmp_path / "a", reg).lock, FileCycleLock)
    with Registry(db, tmp_path / "bundles") as reg:
        lock = Cycle(LoopPlan(system), tmp_path / "a", reg).lock
        assert isinstance(lock, PostgresCycleLock) and lock.key == lock_key("synth")


def _homes(tmp_path: Path, db: str, n: int = 2):
    """``n`` homes, each with its own registry object on the one database and its own Cycle."""
    system = make_system()
    out = []
    for i in range(n):
        home = tmp_path / f"host{i}"
        clock = ManualClock(START)
        reg = Registry(db, home / "bundles", clock=clock).open()
        out.append((reg, Cycle(LoopPlan(system, heuristic=first_bundle(system)), home, reg, clock=clock)))
    return out


def _blocked_first(cycle: Cycle):
    """Run ``cycle`` in a thread that stops at its first step until ``go`` is set."""
    inside, go, result = threading.Event(), threading.Event(), {}

    def on_event(step: str, phase: str) -> None:
        if not inside.is_set():
            inside.set()
            go.wait(60)

    def run() -> None:
        try:
            result["rec"] = cycle.run_once()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    cycle.on_event = on_event
    t = threading.Thread(target=run)
    t.start()
    assert inside.wait(60)
    return t, go, result


def test_two_homes_one_registry_the_second_is_refused_naming_the_holder(tmp_path: Path, db: str) -> None:
    (reg_a, a), (reg_b, b) = _homes(tmp_path, db)
    try:
        t, go, result = _blocked_first(a)
        try:
            with pytest.raises(LockHeldError, match=rf"is held by pid {os.getpid()} on host") as exc:
                b.run_once()
            assert exc.value.holder["pid"] == os.getpid() and "another cycle is running" in str(exc.value)
            assert b.records() == []  # it ran nothing
        finally:
            go.set()
            t.join(60)
        assert result["rec"]["outcome"] == "bootstrapped" and not a.lock.held
        assert len(reg_a.history("synth")) == 1  # one deployment: the cycle ran once
    finally:
        reg_a.close()
        reg_b.close()


def test_with_wait_the_second_runs_after_the_first_and_sees_its_work(tmp_path: Path, db: str) -> None:
    (reg_a, a), (reg_b, b) = _homes(tmp_path, db)
    try:
        t, go, result = _blocked_first(a)
        timer = threading.Timer(0.5, go.set)  # the first finishes while the second waits
        timer.start()
        try:
            rec_b = b.run_once(wait=60)
        finally:
            go.set()
            t.join(60)
        rec_a = result["rec"]
        assert rec_a["outcome"] == "bootstrapped" and rec_a["finished"]
        # the second ran after: the heuristic is production already, so it did not bootstrap again
        assert rec_b["finished"] and rec_b["outcome"] != "bootstrapped" and "bootstrap" not in rec_b["steps"]
        assert len(reg_b.history("synth")) == 1
    finally:
        reg_a.close()
        reg_b.close()


def test_different_systems_do_not_block_each_other(tmp_path: Path, db: str) -> None:
    (reg_a, a), (reg_b, b) = _homes(tmp_path, db)
    try:
        b.lock = PostgresCycleLock(db, "another-system")  # stands for a cycle of another system
        t, go, result = _blocked_first(a)
        try:
            with b.lock.acquire():
                assert b.lock.held
        finally:
            go.set()
            t.join(60)
        assert result["rec"]["outcome"] == "bootstrapped"
    finally:
        reg_a.close()
        reg_b.close()


PLAN = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from support.orchestration import make_system
from closedloop.orchestration import LoopPlan

plan = LoopPlan(make_system())
"""


def _loop_run(home: Path, plan: Path, token: str, db: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env |= {"CLOSEDLOOP_TOKEN": token, "CLOSEDLOOP_REGISTRY_URL": db, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "closedloop.cli", "--home", str(home), "loop", "run", "--once",
           "--plan", f"{plan}:plan", "--now", str(START), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_loop_run_on_a_postgres_registry_takes_the_systems_lock(tmp_path: Path, db: str) -> None:
    from closedloop.service.auth import Credentials

    home, plan = tmp_path / "host1", tmp_path / "plan.py"
    plan.write_text(PLAN)
    token = Credentials(home / "credentials.json").add("loop-bot", ["admin"])
    holder = _hold(db, "synth")  # another host's cycle of the same system
    try:
        refused = _loop_run(home, plan, token, db)
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 1, err
        assert "system 'synth'" in err and f"pid {holder.pid}" in err and "Traceback" not in err and out == ""
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        ran = _loop_run(home, plan, token, db, "--wait", "20")
        out, err = ran.communicate(timeout=60)
        assert ran.returncode == 0, err
        assert '"nothing_deployed"' in out.strip().splitlines()[-1]
        assert not (home / ".cycle.lock").exists()  # the file lock was not used
    finally:
        holder.stdin.close()
        holder.kill()
        holder.wait(timeout=30)

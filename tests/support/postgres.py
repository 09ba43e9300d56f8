"""A throwaway PostgreSQL server for the registry tests: a new cluster in a temporary directory,
listening on a free loopback port (and a unix socket in the same directory), stopped and removed
at the end. A run that was killed (SIGKILL: no teardown) leaves its cluster running; the next
``start()`` stops and removes every cluster whose owning test process is gone. Uses Debian's
``postgresql`` binaries (``scripts/ensure_system_deps.sh`` installs them; ``make test`` runs it).
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user
(``runuser``). Nothing is skipped: a missing PostgreSQL is an error.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PostgresServer"]


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run "
            "`bash scripts/ensure_system_deps.sh` (make test does) or apt-get install postgresql."
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(tmp: str | None = None) -> list[Path]:
    """Stop and remove the clusters of test runs that died without their teardown (the owner's
    pid is in ``owner.pid``); returns the roots removed."""
    removed = []
    for root in map(Path, glob.glob(os.path.join(tmp or tempfile.gettempdir(), "closedloop-pg-*"))):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # being set up right now, or not ours
        if _alive(owner):
            continue
        try:
            postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            deadline = time.monotonic() + 10
            while _alive(postmaster) and time.monotonic() < deadline:
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            pass  # no server left (or never started)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


class PostgresServer:
    """``start()`` a cluster, ``database()`` a fresh empty database URL, ``stop()`` and remove."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="closedloop-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.user = "closedloop"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *args], check=True, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )

    def start(self) -> PostgresServer:
        reap_orphans()
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        for attempt in range(5):
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
                          "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
                return self
            except subprocess.CalledProcessError:
                if attempt == 4:
                    log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.2)
        return self  # pragma: no cover

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.port and self.data.exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

"""A throwaway Redis server for the shared-state tests: ``redis-server`` on a free loopback port,
its working directory a temporary directory, no persistence (``--save ''``, no AOF), stopped and
removed at the end. Uses Debian's ``redis-server`` (``scripts/ensure_system_deps.sh`` installs it;
``make test`` runs it). A missing binary is an error naming the fix, never a skip: as PostgreSQL's,
the tests that need it are the proof that shared state works.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``start()`` a server, ``url`` to reach it, ``client()`` a new redis-py client, ``stop()``."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash scripts/ensure_system_deps.sh` (make test does) "
                               "or apt-get install redis-server")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="closedloop-redis-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kw):  # noqa: ANN003, ANN201 - a redis.Redis
        import redis

        kw.setdefault("socket_timeout", 2.0)
        kw.setdefault("socket_connect_timeout", 1.0)
        return redis.Redis.from_url(self.url, **kw)

    def start(self) -> RedisServer:
        for attempt in range(5):
            self.port = _free_port()
            log = self.root / "server.log"
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(log)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            return self
                except OSError:
                    time.sleep(0.05)
            self.stop(remove=False)
            if attempt == 4:
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server did not start:\n{text}")
        return self  # pragma: no cover

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (SIGTERM, then SIGKILL); with ``remove``, delete its directory too."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

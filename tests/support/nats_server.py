"""A throwaway NATS server with JetStream for the telemetry-log tests: Debian's ``nats-server``
(``scripts/ensure_system_deps.sh`` installs it; ``make test`` runs it) on a free loopback port,
its JetStream store in a temporary directory, stopped and removed at the end.

``stop()`` then ``start()`` restarts it on the SAME port with the SAME store (an outage the
clients reconnect from, nothing persisted lost); ``kill()`` is a SIGKILL. A missing binary is an
error naming the fix, never a skip: the tests that need it are the proof that the log works.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["NatsServer"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("nats-server is not installed: run `bash scripts/ensure_system_deps.sh` (make test does) "
                           "or apt-get install nats-server (Debian's package, JetStream included)")
    return found


class NatsServer:
    """``start()`` a server, ``url`` to reach it, ``stop()`` / ``kill()`` / ``start()`` again on the
    same port and store, ``close()`` to stop it and remove its directory."""

    def __init__(self) -> None:
        self.binary = _binary()
        self.root = Path(tempfile.mkdtemp(prefix="closedloop-nats-"))
        self.store = self.root / "jetstream"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ready(self, timeout: float) -> bool:
        """True once the server answers with an INFO line that says JetStream is on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    line = s.makefile("rb").readline()
                    if line.startswith(b"INFO ") and json.loads(line[5:]).get("jetstream"):
                        return True
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        return False

    def start(self) -> NatsServer:
        """Start the server: on a new free port the first time, on the same port and store after."""
        if self.running:
            return self
        first = self.port == 0
        for attempt in range(5):
            if first:
                self.port = _free_port()
            log = self.root / "server.log"
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store),
                 "-l", str(log), "-n", f"closedloop-test-{self.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._ready(15):
                return self
            self._end(signal.SIGKILL)
            if attempt == 4 or not first and attempt >= 2:
                text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"nats-server did not start on 127.0.0.1:{self.port}:\n{text}")
            time.sleep(0.2)
        return self  # pragma: no cover

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM; SIGKILL after 10 s); the store stays for a restart."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server (a crash); the store stays for a restart."""
        self._end(signal.SIGKILL)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

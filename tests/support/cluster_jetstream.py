"""The JetStream half of a cluster (tests/support/cluster.py, ``Cluster(telemetry="jetstream")``): one
real ``nats-server`` with JetStream (tests/support/nats_server.py), every replica started with
``--telemetry-url`` (its :class:`~closedloop.telemetry.sink_transport.TransportSink`), and TWO
``closedloop telemetry collect`` processes — each its own process group, one consumer group, one
lake home for both (``<root>/lake``) — that write the stream into the day-partitioned Parquet lake.

:meth:`JetStreamTelemetry.kill_collector` SIGKILLs a collector (its fetched, unacknowledged messages
are delivered again after ``ack_wait``); :meth:`restart_collector` starts it again.
:meth:`pending` asks the server how many messages the collectors' consumer group has not
acknowledged yet (never delivered + delivered and not acknowledged, decisions and outcomes);
:meth:`read` waits until that is 0 (with a deadline), then reads the lake's record ids.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.js.errors

from closedloop.telemetry.jetstream import stream_name
from closedloop.telemetry.store import TelemetryStore
from support.nats_server import NatsServer

__all__ = ["ACK_WAIT", "GROUP", "JetStreamTelemetry", "consumer_pending"]

#: The collectors' consumer group (the CLI's default) and their ack_wait: a killed collector's
#: messages are delivered again this many seconds after it fetched them.
GROUP = "collectors"
ACK_WAIT = 2.0
#: The streams whose records land in the lake (feature sets are files, not records).
RECORDS = ("decisions", "outcomes")


async def _pending(url: str, system: str, group: str) -> int | None:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=2.0)
        total = 0
        for stream in RECORDS:
            try:
                info = await js.consumer_info(stream_name(system), f"{group}_{stream}")
            except nats.js.errors.NotFoundError:
                return None  # no collector has joined yet
            total += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return total
    finally:
        await nc.close()


def consumer_pending(url: str, system: str, group: str = GROUP) -> int | None:
    """Messages of ``system``'s decisions and outcomes the consumer group has not acknowledged
    (None while the group does not exist yet)."""
    return asyncio.run(_pending(url, system, group))


class JetStreamTelemetry:
    """The NATS server and the collectors of one cluster (its ``root``; ``env`` makes a process's
    environment for a home)."""

    def __init__(self, root: Path, system: str, env: dict[str, str], collectors: int = 2) -> None:
        self.root = root
        self.system = system
        self.lake = root / "lake"
        self._env = env
        self.server: NatsServer | None = None
        self.collectors: list[subprocess.Popen[bytes] | None] = [None] * collectors
        self.starts = [0] * collectors

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the NATS server is not started")
        return self.server.url

    def start(self) -> JetStreamTelemetry:
        self.server = NatsServer().start()
        if self.server.proc is not None:
            (self.root / "pids" / "nats.pid").write_text(f"{self.server.proc.pid} -p {self.server.port} ")
            (self.root / "pids" / "nats.dir").write_text(str(self.server.root))
        self.lake.mkdir(mode=0o700, exist_ok=True)
        for i in range(len(self.collectors)):
            self.restart_collector(i)
        deadline = time.monotonic() + 30
        while self.pending() is None:  # both consumers exist once a collector has subscribed
            if time.monotonic() > deadline:
                raise TimeoutError(f"no collector subscribed within 30 s:\n{self.log_tail(0)}")
            for i, p in enumerate(self.collectors):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"collector {i} exited ({p.returncode}):\n{self.log_tail(i)}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Kill every collector, then stop the server and remove its directory."""
        try:
            for i in range(len(self.collectors)):
                self.kill_collector(i)
        finally:
            if self.server is not None:
                self.server.close()
                self.server = None

    # -- collectors ------------------------------------------------------------------------------
    def _log(self, i: int) -> Path:
        return self.root / f"collector-{i}.log"

    def log_tail(self, i: int, chars: int = 3000) -> str:
        log = self._log(i)
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def restart_collector(self, i: int) -> None:
        """Start collector ``i`` (killing it first if it runs)."""
        self.kill_collector(i)
        env = {**self._env, "CLOSEDLOOP_HOME": str(self.lake)}
        cmd = [sys.executable, "-m", "closedloop.cli", "telemetry", "collect", "--url", self.url, "--system", self.system,
               "--group", GROUP, "--ack-wait", str(ACK_WAIT)]
        with open(self._log(i), "ab") as log:
            log.write(f"--- start {self.starts[i]} at {time.time():.3f}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.collectors[i] = proc
        self.starts[i] += 1
        (self.root / "pids" / f"collector-{i}.pid").write_text(f"{proc.pid} --url {self.url} ")

    def kill_collector(self, i: int) -> None:
        """SIGKILL collector ``i``'s process group (a crash: no acknowledgement of what it holds)."""
        proc, self.collectors[i] = self.collectors[i], None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    # -- the lake --------------------------------------------------------------------------------
    def pending(self) -> int | None:
        return consumer_pending(self.url, self.system)

    def wait_drained(self, timeout: float = 30.0) -> float:
        """Wait until the collectors have acknowledged every message of the stream; the seconds it took."""
        t0 = time.monotonic()
        while True:
            left = self.pending()
            if left == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the collectors still had {left} messages to acknowledge after {timeout} s:\n"
                                   + "\n".join(self.log_tail(i, 1500) for i in range(len(self.collectors))))
            time.sleep(0.1)

    def ids(self) -> dict[str, list[str]]:
        """The lake's record ids, repeats kept: ``{"decisions": [...], "outcomes": [...]}``."""
        store = TelemetryStore(self.lake)
        out: dict[str, list[str]] = {}
        for stream, column in (("decisions", "decision_id"), ("outcomes", "outcome_id")):
            out[stream] = store.read(stream, columns=[column])[column].to_pylist()
        return out

    def read(self, timeout: float = 30.0) -> dict[str, list[str]]:
        """Once drained (within ``timeout``): the lake's record ids."""
        self.wait_drained(timeout)
        return self.ids()

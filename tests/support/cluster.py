"""A cluster on one machine, for real: one PostgreSQL (the registry), one Redis (caps and outcome rate
limits) and N ``closedloop serve`` replicas, each a separate process group on its own free loopback
port, started by :class:`Cluster` (a context manager) in a temporary directory.

Real hosts do not share a disk, so each replica has its OWN project home (``<root>/home-<i>``: its
telemetry, its bundle store, its ``run/``); what they share is what a deployment shares: the
registry database (``CLOSEDLOOP_REGISTRY_URL``, PostgreSQL: its ``NOTIFY`` reaches every replica),
the Redis (``--redis-url``), the trusted signing keys (in the registry), the telemetry key
(``CLOSEDLOOP_TELEMETRY_KEY``) and the credentials file (copied into every home, so every replica
accepts the same tokens). Bundles travel through the registry: with PostgreSQL each home's bundle
store is a read-through cache of the registry database's bundles
(:class:`~closedloop.registry.store.CachedBundleStore`), so a bundle registered or deployed from any
home is fetched, verified, by every replica that needs it; nothing is copied between homes.

Telemetry: ``telemetry="local"`` (each replica's embedded sink, its home's segments and Parquet lake;
:meth:`Cluster.telemetry` compacts a home and reads its ids). ``telemetry="jetstream"``: one real
``nats-server`` with JetStream, every replica publishing to it (``--telemetry-url``), and two
``closedloop telemetry collect`` processes writing one lake (tests/support/cluster_jetstream.py);
:meth:`Cluster.telemetry` then waits until the collectors have acknowledged every message and reads
that lake; :meth:`Cluster.kill_collector` / :meth:`Cluster.restart_collector` crash and restart one.

:meth:`Cluster.kill` SIGKILLs a replica's process group; :meth:`Cluster.restart` starts it again on
the same port and home. :meth:`Cluster.stop` (also on exit, also when a test failed) kills every
process group it started, then stops Redis and PostgreSQL and removes the directory. A run that was
itself SIGKILLed leaves its processes behind: the next :meth:`Cluster.start` kills those of every
cluster whose owning process is gone (their pids are in ``<root>/pids/``: replicas, collectors, Redis, NATS; PostgreSQL's own
``reap_orphans`` stops its server).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from closedloop import Bundle
from closedloop.registry import Registry
from closedloop.runtime.signing import SigningKey
from closedloop.service.auth import Credentials
from closedloop.settings import Settings
from closedloop.telemetry.store import TelemetryStore
from support.cluster_jetstream import JetStreamTelemetry
from support.cluster_system import SPEC, system
from support.postgres import PostgresServer
from support.redis_server import RedisServer
from support.service import free_port

__all__ = ["TELEMETRY", "Cluster", "Replica"]

ROOT = Path(__file__).resolve().parents[2]
#: The telemetry paths a cluster can run: each replica's embedded sink, or JetStream and two collectors.
TELEMETRY = ("local", "jetstream")
#: Why the registry accepts the test bundles without an evaluation report.
FORCE = "cluster test: no evaluation report"


@dataclass
class Replica:
    """One ``closedloop serve`` process: its index, home, port, process (None while down) and log."""

    index: int
    home: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> list[Path]:
    """Kill the replicas and Redis of clusters whose owner (``owner.pid``) is gone; remove their
    directories; return them. A pid is killed only while its command line still names the port or
    directory recorded beside it (a reused pid is left alone)."""
    removed = []
    for root in map(Path, glob.glob(os.path.join(tempfile.gettempdir(), "closedloop-cluster-*"))):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for f in (root / "pids").glob("*.pid"):
            try:
                pid_s, mark = f.read_text().split(" ", 1)
                cmdline = Path(f"/proc/{int(pid_s)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if mark not in cmdline:
                    continue
                if f.name.startswith(("replica", "collector")):
                    os.killpg(int(pid_s), signal.SIGKILL)
                else:
                    os.kill(int(pid_s), signal.SIGKILL)
            except (OSError, ValueError):
                pass  # gone already
        for server in ("redis", "nats"):
            with contextlib.suppress(OSError):
                shutil.rmtree((root / "pids" / f"{server}.dir").read_text(), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


class Cluster:
    """``with Cluster(3) as c:`` — PostgreSQL, Redis and ``replicas`` serving processes, ready.

    ``serve_args`` are added to every replica's ``closedloop serve`` command line (rates, poll
    interval, …); ``production`` is the bundle deployed first (default: the heuristic bundle of
    :mod:`support.cluster_system`, signed by :attr:`key`); ``postgres``: a running server to put the
    registry's database on (a new one is started, and stopped at the end, when None)."""

    def __init__(self, replicas: int = 3, *, telemetry: str = "local", serve_args: tuple[str, ...] = (),
                 production: Bundle | None = None, postgres: PostgresServer | None = None, ready_timeout: float = 60.0) -> None:
        if telemetry not in TELEMETRY:
            raise ValueError(f"The 'telemetry' parameter of Cluster must be one of {TELEMETRY}. Got {telemetry!r} instead.")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 16:
            raise ValueError(f"The 'replicas' parameter of Cluster must be an integer from 1 to 16. Got {replicas!r} instead.")
        self.n = replicas
        self.telemetry_mode = telemetry
        self.serve_args = list(serve_args)
        self.ready_timeout = ready_timeout
        self.key = SigningKey.generate()
        self.system = system
        self._production = production
        self.root = Path(tempfile.mkdtemp(prefix="closedloop-cluster-"))
        self.telemetry_key = secrets.token_hex(16)
        self.postgres: PostgresServer | None = postgres
        self._own_postgres = postgres is None  # a server given (the tests' session one) is not stopped here
        self.redis: RedisServer | None = None
        self.jetstream: JetStreamTelemetry | None = None
        self.registry_url = ""
        self.replicas: list[Replica] = []
        self.tokens: dict[str, str] = {}
        self.production: Bundle | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Start PostgreSQL and Redis, set up the registry and every home, start every replica
        and wait until each answers ``/readyz``."""
        reap_orphans()
        (self.root / "pids").mkdir()
        (self.root / "owner.pid").write_text(str(os.getpid()))
        if self.postgres is None:
            self.postgres = PostgresServer().start()
        self.registry_url = self.postgres.database()
        self.redis = RedisServer().start()
        if self.redis.proc is not None:
            (self.root / "pids" / "redis.pid").write_text(f"{self.redis.proc.pid} 127.0.0.1:{self.redis.port}")
            (self.root / "pids" / "redis.dir").write_text(str(self.redis.root))
        if self.telemetry_mode == "jetstream":  # the server and both collectors, before any replica publishes
            self.jetstream = JetStreamTelemetry(self.root, self.system.name, self.env(0))
            self.jetstream.start()
        homes = [self.root / f"home-{i}" for i in range(self.n)]
        self._credentials(homes)
        self.replicas = [Replica(i, h, free_port(), self.root / f"replica-{i}.log") for i, h in enumerate(homes)]
        self.production = self._production or self.bundle()
        with self.registry() as reg:  # migrates the empty database: replicas open it without upgrading
            reg.trust_key(self.key.public_key, name="cluster", actor="ops")
            reg.deploy(self.system, self.production, actor="ops", reason="first production", force=FORCE)
        for r in self.replicas:
            self._spawn(r)
        for r in self.replicas:
            self.wait_ready(r.index)
        return self

    def stop(self) -> None:
        """Kill every replica's process group, the collectors and NATS, stop Redis and PostgreSQL,
        remove the directory. Each step runs whatever the previous ones raised."""
        def replicas() -> None:
            for r in self.replicas:
                self._kill(r)

        own_postgres = self.postgres if self._own_postgres else None
        steps = [replicas, *(s.stop for s in (self.jetstream, self.redis, own_postgres) if s is not None)]
        errors: list[BaseException] = []
        for step in steps:
            try:
                step()
            except BaseException as e:  # noqa: BLE001 - every step runs; the first error is raised at the end
                errors.append(e)
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise errors[0]

    # -- set-up ----------------------------------------------------------------------------------
    def _credentials(self, homes: list[Path]) -> None:
        """One credentials file (an app token: decide + report; an ops token: admin), copied into
        every home: every replica accepts the same tokens."""
        first = homes[0] / "credentials.json"
        creds = Credentials(first)
        self.tokens = {"app": creds.add("app", ["decide", "report"]), "ops": creds.add("ops", ["admin"])}
        for h in homes[1:]:
            h.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy2(first, h / "credentials.json")

    def settings(self, i: int = 0) -> Settings:
        """Replica ``i``'s project settings (its home; the shared registry and telemetry key)."""
        return Settings(home=self.root / f"home-{i}", telemetry_key=bytes.fromhex(self.telemetry_key),
                        registry_url=self.registry_url)

    def registry(self, i: int = 0) -> Registry:
        """The registry as host ``i`` sees it (the shared database, ``i``'s bundle cache), open."""
        return Registry.from_settings(self.settings(i)).open()

    def bundle(self, thresholds: dict[str, float] | None = None) -> Bundle:
        """The heuristic bundle (with ``thresholds``), signed by the cluster's trusted key."""
        from examples.phishing.heuristic import heuristic_intelligence

        return Bundle.build(self.system, heuristic_intelligence(), thresholds=thresholds).signed(self.key)

    def env(self, i: int) -> dict[str, str]:
        """The environment of replica ``i``'s process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
        src = str(ROOT / "src")
        env.update(CLOSEDLOOP_HOME=str(self.root / f"home-{i}"), CLOSEDLOOP_REGISTRY_URL=self.registry_url,
                   CLOSEDLOOP_TELEMETRY_KEY=self.telemetry_key,
                   PYTHONPATH=src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
        return env

    def command(self, r: Replica) -> list[str]:
        if self.redis is None:
            raise RuntimeError("the cluster is not started")
        log = [] if self.jetstream is None else ["--telemetry-url", self.jetstream.url]
        return [sys.executable, "-m", "closedloop.cli", "serve", "--system", SPEC, "--host", "127.0.0.1",
                "--port", str(r.port), "--redis-url", self.redis.url, *log, *self.serve_args, *r.extra]

    # -- replicas --------------------------------------------------------------------------------
    @property
    def bases(self) -> list[str]:
        return [r.base for r in self.replicas]

    def _spawn(self, r: Replica) -> None:
        with open(r.log, "ab") as log:
            log.write(f"--- start {r.starts} at {time.time():.3f}\n".encode())
            log.flush()
            r.proc = subprocess.Popen(self.command(r), cwd=ROOT, env=self.env(r.index), stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        (self.root / "pids" / f"replica-{r.index}.pid").write_text(f"{r.proc.pid} --port {r.port} ")
        r.starts += 1

    def wait_ready(self, i: int) -> float:
        """Wait until replica ``i`` answers ``/readyz`` with 200; the seconds it took."""
        r = self.replicas[i]
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.ready_timeout:
            if r.proc is None or r.proc.poll() is not None:
                raise RuntimeError(f"replica {i} exited ({None if r.proc is None else r.proc.returncode}):\n{self.log_tail(i)}")
            try:
                if httpx.get(r.base + "/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"replica {i} was not ready in {self.ready_timeout} s:\n{self.log_tail(i)}")

    def log_tail(self, i: int, chars: int = 3000) -> str:
        log = self.replicas[i].log
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i``'s process group (no teardown: what a crashed host does)."""
        self._kill(self.replicas[i])

    def restart(self, i: int) -> float:
        """Start replica ``i`` again (same home, same port); the seconds until it was ready."""
        r = self.replicas[i]
        self._kill(r)
        self._spawn(r)
        return self.wait_ready(i)

    @staticmethod
    def _kill(r: Replica) -> None:
        proc, r.proc = r.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group is the process's pid
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    # -- telemetry -------------------------------------------------------------------------------
    def _js(self) -> JetStreamTelemetry:
        if self.jetstream is None:
            raise RuntimeError("kill_collector and restart_collector need Cluster(telemetry='jetstream'), started")
        return self.jetstream

    def kill_collector(self, i: int) -> None:
        """SIGKILL collector ``i`` (0 or 1): what it fetched and did not acknowledge is delivered again."""
        self._js().kill_collector(i)

    def restart_collector(self, i: int) -> None:
        """Start collector ``i`` again (the same lake and consumer group)."""
        self._js().restart_collector(i)

    def telemetry(self, i: int | None = None, *, timeout: float = 30.0) -> dict[str, list[str]]:
        """Replica ``i``'s telemetry, compacted: ``{"decisions": [decision ids], "outcomes": [outcome
        ids]}`` with repeats kept (so a record stored twice shows twice). Safe while it serves:
        compaction reads a live segment up to its last complete frame. With JetStream (``i`` not
        given): the collectors' one lake, once they acknowledged every message (within ``timeout``)."""
        if self.jetstream is not None:
            if i is not None:
                raise ValueError(f"The 'i' parameter of Cluster.telemetry must be None with telemetry='jetstream' "
                                 f"(one lake for every replica). Got {i!r} instead.")
            return self.jetstream.read(timeout)
        if i is None:
            raise ValueError("The 'i' parameter of Cluster.telemetry must name a replica with telemetry='local'. Got None instead.")
        store = TelemetryStore(self.settings(i).home)
        store.compact()
        out: dict[str, list[str]] = {}
        for stream, column in (("decisions", "decision_id"), ("outcomes", "outcome_id")):
            out[stream] = store.read(stream, columns=[column])[column].to_pylist()
        return out

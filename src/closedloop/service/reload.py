"""Hot reload from the registry, and the automatic rollback the service runs.

:class:`RegistrySource` is the :class:`~closedloop.service.sources.DeploymentSource` of a
:class:`closedloop.registry.Registry`: ``revision()`` is the registry's one indexed read (polled
by every worker every ``poll_interval_s``), ``deployment()`` loads and verifies every bundle of
the current state. When the registry cannot be reached, or a bundle fails verification, the
service keeps serving its last good deployment and ``/readyz`` says why.

:class:`Guard` runs :func:`closedloop.registry.guard_check` every ``guard_interval_s`` while
flights run: the flights are compared with production on telemetry (the system's mistake
outcomes, reported through ``POST /v1/outcomes``) and on this worker's own per-arm counters
(decision errors, latency) — a breach stops the flight in the registry, and every worker's next
poll serves the previous state.

Everything registry-specific is imported when a registry is used, not before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from closedloop.service.settings import ServiceSettings
from closedloop.service.sources import DeploymentSource
from closedloop.system.spec import System

__all__ = ["ArmCounters", "Guard", "RegistrySource", "registry_source"]

log = logging.getLogger("closedloop.service")


class RegistrySource(DeploymentSource):
    """The deployment of ``system`` in ``registry`` (an open :class:`closedloop.registry.Registry`).

    With a SQLite registry, every poll first checks the file itself: a missing file is an
    unavailable registry (pooled connections would otherwise go on reading the deleted file while
    ``closedloop deploy`` writes a new one), and a file replaced by another makes the source
    reconnect to the new one.

    With PostgreSQL, :meth:`wait` listens on the registry's notification channel (the registry
    announces every applied change in the change's own transaction), so a deploy or a rollback
    reaches the worker within milliseconds rather than at its next poll; polling goes on as the
    fallback (a lost listening connection is opened again at the next wait).
    """

    kind = "registry"
    polled = True

    def __init__(self, registry: Any, system: System) -> None:
        self.registry = registry
        self.system = system
        self._file = _sqlite_file(registry.url)
        self._inode: tuple[int, int] | None = None
        if self._file is not None:
            self._inode = self._stat()
        self._listener: Any = None  # a psycopg connection of its own, LISTENing (PostgreSQL only)
        self._listens = registry.engine.dialect.name == "postgresql"
        self._listen_failed = False  # said once in the log, not at every poll interval

    def _stat(self) -> tuple[int, int]:
        from closedloop.errors import RegistryError

        path = self._file
        try:
            st = os.stat(path)  # type: ignore[arg-type]
        except OSError as e:
            raise RegistryError(f"The registry file {path} is unavailable: {e.strerror or e}.") from None
        return st.st_dev, st.st_ino

    def revision(self) -> int:
        if self._file is not None:
            inode = self._stat()
            if inode != self._inode:  # replaced: read the file that is there now
                self.registry.close()
                self.registry.open(upgrade=False)
                self._inode = inode
        return int(self.registry.revision(self.system))

    def deployment(self) -> Any:
        return self.registry.deployment(self.system)

    def describe(self) -> dict[str, Any]:
        from sqlalchemy.engine import make_url

        return {"kind": self.kind, "url": make_url(self.registry.url).render_as_string(hide_password=True)}

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        if not self._listens:
            return super().wait(timeout, stop)
        from closedloop.registry.registry import NOTIFY_CHANNEL

        deadline = time.monotonic() + timeout
        want = f"{self.system.name}:"
        try:
            if self._listener is None:
                raw = self.registry.engine.raw_connection()
                conn = raw.driver_connection
                raw.detach()  # ours alone, never back in the pool: it holds a LISTEN
                conn.autocommit = True
                conn.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
                self._listener = conn
                if self._listen_failed:
                    log.warning("listening for registry changes again")
                    self._listen_failed = False
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for n in self._listener.notifies(timeout=min(left, 0.25), stop_after=1):
                    if n.payload.startswith(want):
                        return True
        except Exception as e:  # noqa: BLE001 - listening is a speed-up: polling goes on without it
            if not self._listen_failed:
                log.warning("not listening for registry changes (polling instead): %s", e)
                self._listen_failed = True
            self._drop_listener()
            stop.wait(max(0.0, deadline - time.monotonic()))
        return False

    def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def close(self) -> None:
        self._drop_listener()
        self.registry.close()


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).expanduser()


def registry_source(settings: ServiceSettings, system: System) -> RegistrySource:
    """The registry of the project home (``settings.project``), opened without migrating: a
    serving process never changes the schema (``closedloop`` commands do)."""
    from closedloop.registry import Registry

    return RegistrySource(Registry.from_settings(settings.project).open(upgrade=False), system)


class ArmCounters:
    """Per arm (flight name, ``None`` for production): requests, failed decisions and the latest
    latency samples, since the arm started serving in this worker. Updated on the event loop."""

    def __init__(self, max_samples: int = 20_000) -> None:
        self.max_samples = max_samples
        self.revision = -1
        self.arms: dict[str | None, list[Any]] = {}

    def reset(self, revision: int, arms: list[str | None]) -> None:
        """A new deployment: keep the counters of arms that continue, start the new ones."""
        kept = {a: self.arms[a] for a in arms if a in self.arms}
        for a in arms:
            kept.setdefault(a, [0, 0, deque(maxlen=self.max_samples)])
        self.arms = kept
        self.revision = revision

    def record(self, arm: str | None, seconds: float) -> None:
        c = self.arms.get(arm)
        if c is not None:
            c[0] += 1
            c[2].append(seconds * 1000.0)

    def count(self, arm: str | None, n: int) -> None:
        """``n`` decisions of one batch request (no latency sample per decision)."""
        c = self.arms.get(arm)
        if c is not None:
            c[0] += n

    def error(self, arm: str | None) -> None:
        c = self.arms.get(arm)
        if c is not None:
            c[0] += 1
            c[1] += 1

    def ops(self) -> dict[str | None, Any]:
        from closedloop.registry import ArmOps

        return {a: ArmOps(int(c[0]), int(c[1]), tuple(c[2])) for a, c in self.arms.items()}


class Guard:
    """Runs the registry's guard check while flights run; applies a stop at once on this worker.

    Parameters
    ----------
    service:
        The :class:`~closedloop.service.core.Service` (its source must be a :class:`RegistrySource`).
    interval_s:
        Seconds between checks.
    policy:
        The :class:`closedloop.registry.GuardPolicy`.
    """

    def __init__(self, service: Any, interval_s: float, policy: Any) -> None:
        self.service = service
        self.interval_s = interval_s
        self.policy = policy
        self.last: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Guard:
        self._thread = threading.Thread(target=self._run, name="closedloop-service-guard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check(self) -> dict[str, Any]:
        """One guard check now (flushing this worker's telemetry first); returns its report."""
        from closedloop.registry import guard_check
        from closedloop.telemetry import TelemetryStore

        svc = self.service
        if svc.telemetry is not None:
            svc.telemetry.flush(timeout=10)
        report = svc.change_and_refresh(  # the stop applied here as the guard's, never by a poll in between
            lambda: guard_check(svc.source.registry, svc.system, TelemetryStore(svc.settings.project.home), policy=self.policy,
                                ops=svc.arms.ops(), actor="guard:service"),
            lambda r: bool(r.get("breaches")), "guard")
        self.last = report
        if report.get("breaches"):
            log.warning("guard stopped %s", [b["flight"] for b in report["breaches"]])
        return report

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rt = self.service.runtime
            if rt is None or not rt.deployment.flights:
                continue
            t0 = time.monotonic()
            try:
                self.check()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - a failed check is reported, serving goes on
                self.last_error = f"{type(e).__name__}: {e}"
                log.error("guard check failed: %s", self.last_error)
            log.debug("guard check took %.3f s", time.monotonic() - t0)

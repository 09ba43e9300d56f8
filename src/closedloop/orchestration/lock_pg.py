"""One cycle at a time per system across hosts: a PostgreSQL advisory lock.

When the registry is PostgreSQL, loops on several hosts (each its own project home) share it, and
the per-home :class:`~.lock.FileCycleLock` cannot see the other hosts. :class:`PostgresCycleLock`
is the same :class:`~.lock.CycleLock` on the registry's database: a **session-level advisory
lock** (``pg_try_advisory_lock``) per system, taken on a connection of its own held open for the
whole cycle and released with ``pg_advisory_unlock`` (and the connection closed) at its end.

- **Key**: the first 8 bytes of SHA-256 of ``"closedloop-cycle:" + system name``, read as a
  signed big-endian 64-bit integer (:func:`lock_key`) — the same on every host and every Python
  (``hash()`` is salted per process). Advisory locks are per database: the registry's.
- **Holder**: the connection's ``application_name`` is ``closedloop:<pid>:<since ms>:<host>``
  (set in the same statement that tries the lock; PostgreSQL keeps 63 bytes, so a long host name
  is cut). :meth:`PostgresCycleLock.holder` reads it from ``pg_locks`` joined with
  ``pg_stat_activity`` — ``pid``, ``host``, ``since`` as the file lock names them, plus the
  server's ``backend_pid`` and the ``client_addr``.
- **A dead holder**: a process that dies (SIGKILL too) closes its socket; its session ends and
  PostgreSQL releases the lock. A *host* that vanishes is noticed by TCP keepalives, which the
  lock's session turns on (``tcp_keepalives_idle`` 30 s, 10 s × 3 probes); the session also turns
  off ``idle_session_timeout`` and ``idle_in_transaction_session_timeout`` so a server default
  cannot end a cycle's lock.
- Needs a direct connection (or a pooler in *session* mode): a transaction-mode pooler such as
  PgBouncer's default hands the session to other clients and breaks session locks.
- If the connection is lost mid-cycle (a server restart), the lock is lost with it and the cycle
  goes on; its registry changes are still checked against the deployment's revision.

:func:`default_cycle_lock` is what :class:`~.cycle.Cycle` uses when given no lock: this lock for a
PostgreSQL registry, the file lock on ``<home>/.cycle.lock`` otherwise (SQLite).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from closedloop.base.times import iso_seconds
from closedloop.errors import RegistryError, SpecError
from closedloop.orchestration.lock import CycleLock, FileCycleLock
from closedloop.registry.db import connect

__all__ = ["PostgresCycleLock", "default_cycle_lock", "lock_key"]

PREFIX = "closedloop-cycle:"
#: what the lock's session sets (all settable by any user)
OPTIONS = ("-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3 "
           "-c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0")

_TRY = text("SELECT set_config('application_name', :name, false), pg_try_advisory_lock(:key)")
_HOLDER = text("""
SELECT a.pid, a.application_name, a.backend_start, host(a.client_addr)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = :hi AND l.objid::bigint = :lo
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LIMIT 1
""")


def lock_key(system: str) -> int:
    """The advisory lock key of ``system``: SHA-256 of ``"closedloop-cycle:" + system``, its first
    8 bytes as a signed big-endian 64-bit integer."""
    return int.from_bytes(hashlib.sha256((PREFIX + system).encode()).digest()[:8], "big", signed=True)


def _app_name(pid: int, since_ms: int, host: str) -> str:
    return f"closedloop:{pid}:{since_ms}:{host}"[:63]


def _parse(app: str | None) -> tuple[int, int, str] | None:
    parts = (app or "").split(":", 3)
    if len(parts) != 4 or parts[0] != "closedloop" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1]), int(parts[2]), parts[3]


class PostgresCycleLock(CycleLock):
    """The cycle lock of ``system`` (its name) on the PostgreSQL database at ``url`` (the
    registry's URL): a session-level advisory lock on a connection of its own, held while the lock
    is (see the module docstring)."""

    def __init__(self, url: str, system: str) -> None:
        super().__init__()
        if not isinstance(system, str) or not system:
            raise SpecError(f"The 'system' parameter of PostgresCycleLock must be a system's name. Got {system!r} instead.")
        try:
            backend = make_url(url).get_backend_name() if isinstance(url, str) else None
        except ArgumentError:
            backend = None
        if backend != "postgresql":
            raise SpecError(f"The 'url' parameter of PostgresCycleLock must be a PostgreSQL URL. Got {url!r} instead.")
        self.url, self.system, self.key = url, system, lock_key(system)
        safe = make_url(url).render_as_string(hide_password=True)
        self.name = f"the cycle lock of system {system!r} (PostgreSQL advisory lock {self.key} on {safe})"
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._me: dict[str, Any] | None = None

    # -- connections -------------------------------------------------------------------------------
    def _db(self) -> Engine:
        if self._engine is None:
            self._engine = connect(self.url, poolclass=NullPool, connect_args={
                "application_name": _app_name(os.getpid(), 0, socket.gethostname()), "options": OPTIONS})
        return self._engine

    def _connect(self) -> Connection:
        try:
            return self._db().connect().execution_options(isolation_level="AUTOCOMMIT")
        except DBAPIError as exc:
            raise RegistryError(f"Cannot reach the registry's PostgreSQL for {self.name}: {exc.orig}") from None

    def _close(self) -> None:
        conn, self._conn, self._me = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a lost connection has released the lock already
                conn.close()

    # -- CycleLock -----------------------------------------------------------------------------------
    def acquire(self, wait: float = 0.0) -> CycleLock:
        try:
            return super().acquire(wait)
        except BaseException:
            if not self._held:
                self._close()  # the connection kept while waiting
            raise

    def _try_acquire(self) -> bool:
        if self._conn is None:
            self._conn = self._connect()
        now = time.time_ns()
        pid, host = os.getpid(), socket.gethostname()
        try:
            got = self._conn.execute(_TRY, {"name": _app_name(pid, now // 10**6, host), "key": self.key}).one()[1]
        except DBAPIError as exc:
            self._close()
            raise RegistryError(f"Cannot take {self.name}: {exc.orig}") from None
        if got:
            self._me = {"pid": pid, "host": host, "since": iso_seconds(now), "since_ns": now // 10**6 * 10**6}
        return bool(got)

    def _release(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self._close()

    def holder(self) -> dict[str, Any] | None:
        if self._held and self._me is not None:
            return dict(self._me)
        hi, lo = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        conn = self._connect()
        try:
            row = conn.execute(_HOLDER, {"hi": hi, "lo": lo}).first()
        finally:
            conn.close()
        if row is None:
            return None
        backend_pid, app, started, addr = row
        parsed = _parse(app)
        if parsed is None:  # held by a session that is not a closedloop cycle (psql, another tool)
            since_ns = int(started.timestamp() * 10**9) if started is not None else None
            return {"pid": None, "host": addr or "a local socket", "since": None if since_ns is None else iso_seconds(since_ns),
                    "since_ns": since_ns, "backend_pid": backend_pid, "client_addr": addr, "application_name": app}
        pid, since_ms, host = parsed
        return {"pid": pid, "host": host, "since": iso_seconds(since_ms * 10**6), "since_ns": since_ms * 10**6,
                "backend_pid": backend_pid, "client_addr": addr}

    def close(self) -> None:
        """Release the lock if held and drop the engine (a lock object can be used again after)."""
        self.release()
        self._close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def default_cycle_lock(registry: Any, home: Path | str, system: str) -> CycleLock:
    """The lock a :class:`~.cycle.Cycle` holds when given none: a :class:`PostgresCycleLock` on the
    registry's database when ``registry.url`` is a PostgreSQL URL, else a :class:`~.lock.FileCycleLock`
    on ``<home>/.cycle.lock``."""
    url = getattr(registry, "url", None)
    if isinstance(url, str):
        try:
            postgres = make_url(url).get_backend_name() == "postgresql"
        except ArgumentError:
            postgres = False
        if postgres:
            return PostgresCycleLock(url, system)
    return FileCycleLock(Path(home) / ".cycle.lock")

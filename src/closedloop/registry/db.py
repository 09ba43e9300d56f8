"""Database plumbing: one engine factory for SQLite and PostgreSQL, and the Alembic migrations
run programmatically (no ``alembic.ini``: the scripts ship inside the package).

SQLite: the database file is created ``0600`` (its folder ``0700``) before SQLite opens it, and
SQLite gives its ``-wal``/``-shm``/``-journal`` files the same mode; WAL journal, a 30 s busy
timeout, and transactions opened by closedloop itself — ``BEGIN IMMEDIATE`` for writes (so two
writers queue instead of failing mid-transaction) and a plain ``BEGIN`` for reads (readers never
block writers in WAL mode). PostgreSQL: the default READ COMMITTED; a change's
``UPDATE … WHERE revision = :seen`` is what serializes writers.
``postgresql://`` URLs use the psycopg (v3) driver.

:class:`Database` is the connection holder the registry's parts share (catalog, keys, lifecycle,
history): the URL, the engine once opened, the clock events are stamped with, and the read and
write transactions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from closedloop.base.files import create_private, make_private_dirs
from closedloop.errors import RegistryError

if TYPE_CHECKING:
    from closedloop.runtime.clock import Clock

__all__ = ["WRITE", "Database", "connect", "current", "head", "upgrade"]

#: Execution option that makes a SQLite transaction ``BEGIN IMMEDIATE`` (a write transaction).
WRITE = "closedloop_write"
_MIGRATIONS = "closedloop.registry:migrations"
_PG_LOCK = 0x636C7267  # pg_advisory_xact_lock key: one migration at a time per database


def connect(url: str, **engine_args: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql://…``), configured as the module
    docstring says. Creating it does not connect."""
    if not isinstance(url, str) or not url:
        raise RegistryError(f"The registry URL must be a non-empty string. Got {url!r} instead.")
    try:
        u = make_url(url)
    except ArgumentError:
        raise RegistryError(
            f"The registry URL must be a SQLAlchemy URL such as 'sqlite:///home/registry.sqlite' or "
            f"'postgresql://user@host/db'. Got {url!r} instead."
        ) from None
    backend = u.get_backend_name()
    if backend == "postgresql" and u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise RegistryError(f"The registry URL must be a SQLite or PostgreSQL URL. Got the backend {backend!r} instead.")
    if backend == "sqlite" and u.database and u.database != ":memory:" and not u.query.get("uri"):
        # Private: the folder 0700 when created here, the file 0600 before SQLite opens it (SQLite
        # then gives its -wal, -shm and -journal files the database file's mode).
        db_file = Path(u.database).expanduser()
        make_private_dirs(db_file.parent)
        create_private(db_file)
    try:
        engine = create_engine(u, **({"pool_pre_ping": True} if backend == "postgresql" else {}), **engine_args)
    except NoSuchModuleError as exc:  # pragma: no cover - a driver that is not installed
        raise RegistryError(f"No database driver for the registry URL {url!r}: {exc}") from None
    if backend == "sqlite":
        _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # closedloop emits BEGIN itself (below)
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def _config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", _MIGRATIONS)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest schema revision the migrations shipped with this package reach."""
    from alembic.script import ScriptDirectory

    h = ScriptDirectory.from_config(_config()).get_current_head()
    if h is None:  # pragma: no cover - the package always ships migrations
        raise RegistryError("The registry migrations are missing from the installed package.")
    return h


def current(engine: Engine) -> str | None:
    """The schema revision of the database (``None``: never migrated, e.g. empty)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate the database to ``revision`` (default: head) in one transaction, one migrator at a
    time (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock). Returns the revision."""
    from alembic import command

    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        command.upgrade(_config(conn), revision)
    now = current(engine)
    if now is None:  # pragma: no cover - alembic always writes its version table
        raise RegistryError("The registry migration did not record a schema revision.")
    return now


class Database:
    """The registry's database as its parts share it: ``url``, ``clock`` (where event times come
    from) and, once :meth:`open`, the engine with read and write transactions."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self._engine: Engine | None = None

    def open(self, *, migrate: bool = True) -> None:
        """Connect; with ``migrate`` migrate the schema to this package's head first (an empty
        database gets the whole schema), else refuse a database that is not at head."""
        if self._engine is not None:
            return
        engine = connect(self.url)
        try:
            now, at_head = current(engine), head()
            if now != at_head:
                if not migrate:
                    raise RegistryError(
                        f"The registry database is at schema revision {now!r}; this closedloop needs {at_head!r}. "
                        "Open it with upgrade=True to migrate (the history is kept)."
                    )
                upgrade(engine)
        except OperationalError as exc:
            engine.dispose()
            raise RegistryError(f"Cannot open the registry at {self.safe_url()}: {exc.orig}") from None
        except BaseException:
            engine.dispose()
            raise
        self._engine = engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def safe_url(self) -> str:
        """The URL without its password (for messages)."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - only for a message
            return "<unparsable URL>"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RegistryError("The registry is not open: call Registry.open() (or use it in a 'with' block) first.")
        return self._engine

    @contextlib.contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction. ``snapshot``: every statement in it sees the same committed state
        (SQLite's read transactions do; on PostgreSQL it runs REPEATABLE READ)."""
        conn = self.engine.connect()
        if snapshot and conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite: writers queue)."""
        with self.engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
            yield conn

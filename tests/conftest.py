from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is importable as a package from the repo root
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def phishing():
    from examples.phishing.system import phishing as system

    return system


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (tests/support/postgres.py): real, never skipped."""
    from support.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path):
    """An empty registry database: a SQLite file, and a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    return request.getfixturevalue("postgres").database()


@pytest.fixture
def redis_server():
    """A throwaway redis-server for one test (tests/support/redis_server.py): real, no persistence,
    never skipped (a missing binary is an error naming the fix)."""
    from support.redis_server import RedisServer

    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nats_server():
    """A throwaway nats-server with JetStream for a test module (tests/support/nats_server.py): real,
    its store in a temporary directory, never skipped (a missing binary is an error naming the fix).
    Tests may stop/kill and start it again: it comes back on the same port with the same store."""
    from support.nats_server import NatsServer

    server = NatsServer().start()
    yield server
    server.close()

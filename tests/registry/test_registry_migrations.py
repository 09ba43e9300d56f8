"""Registry schema: created by Alembic from its first version, on SQLite and on a real PostgreSQL
server; the tables the code uses are exactly what the migrations build (so a schema change
without a migration fails here)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from closedloop.errors import RegistryError
from closedloop.registry import Registry, db
from closedloop.registry.models import metadata


def test_empty_database_upgrades_to_head(registry_url, tmp_path):
    engine = db.connect(registry_url)
    try:
        assert db.current(engine) is None
        assert set(inspect(engine).get_table_names()) == set()
        assert db.upgrade(engine) == db.head() == "0003"
        assert set(inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}
        assert db.upgrade(engine) == db.head()  # idempotent
    finally:
        engine.dispose()


def test_models_match_the_migrated_schema(registry_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = db.connect(registry_url)
    try:
        db.upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == [], f"models.py and the migrations differ (add a migration): {diff}"
    finally:
        engine.dispose()


def test_open_migrates_or_refuses(registry_url, tmp_path):
    with pytest.raises(RegistryError, match="schema revision None"):
        Registry(registry_url, tmp_path / "bundles").open(upgrade=False)
    with Registry(registry_url, tmp_path / "bundles") as reg:
        assert reg.revision("phishing") == 0 and reg.history("phishing") == []
    with Registry(registry_url, tmp_path / "bundles").open(upgrade=False) as reg:  # at head now
        assert reg.systems() == []


def test_bad_urls_are_refused(tmp_path):
    with pytest.raises(RegistryError, match="SQLite or PostgreSQL"):
        db.connect("mysql://x@localhost/db")
    with pytest.raises(RegistryError, match="SQLAlchemy URL"):
        db.connect("not a url")
    with pytest.raises(RegistryError, match="not open"):
        Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path).state("x")


def test_a_registry_at_0001_upgrades_to_signing_keys_and_keeps_its_history(registry_url, tmp_path):
    engine = db.connect(registry_url)
    try:
        assert db.upgrade(engine, "0001") == "0001"
        with engine.begin() as conn:
            conn.execute(metadata.tables["events"].insert().values(
                system="phishing", at_ns=1, actor="alice", operation="killswitch_on", reason="before signing",
                status="applied", revision_before=0, revision_after=1, before=None, after=None, detail="{}",
                undoable=False, undone_by=None))
        assert "signing_keys" not in inspect(engine).get_table_names()
        assert db.upgrade(engine, "0002") == "0002"
        assert "signing_keys" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with Registry(registry_url, tmp_path / "bundles") as reg:
        assert [e["reason"] for e in reg.history("phishing")] == ["before signing"]
        assert reg.keys() == [] and reg.trusted_keys() == {}

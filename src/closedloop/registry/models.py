"""The registry's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

The schema is created and changed only by the Alembic migrations in
``closedloop/registry/migrations/versions`` (``tests/registry/test_registry_migrations.py`` checks that
these definitions and the migrated database agree, so a change here without a migration fails).

============== =====================================================================================
table          holds
============== =====================================================================================
bundles        every registered bundle version: its system, kind, manifest digest, parent (lineage)
               and the whole manifest; who registered it and when
reports        evaluation reports (the JSON of ``closedloop.evaluation.report.evaluate``), by digest
report_bundles which bundles a report evaluated, in order, and the gate verdict for its candidate
deployments    the current deployment state of each system and its revision (optimistic locking)
events         the history: every change and every refused or lost attempt — when, who (credential
               name), why, the state before and after, details (sanity checks, guard metrics …)
signing_keys   the Ed25519 public keys whose bundle signatures deploy accepts (closedloop.runtime.signing):
               who trusted each and when, and who revoked it
bundle_files   the bundles themselves, for hosts that share the registry (closedloop.registry.store_db):
               one row per file of a stored bundle and part of it (files over 4 MiB are cut in parts),
               with the whole file's sha256 and size
============== =====================================================================================

Times are integers of nanoseconds since the Unix epoch (UTC); JSON documents are text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["bundle_files", "bundles", "deployments", "events", "metadata", "report_bundles", "reports", "signing_keys"]

metadata = MetaData()

bundles = Table(
    "bundles",
    metadata,
    Column("version", String(200), primary_key=True),
    Column("system", String(63), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("digest", String(64), nullable=False),  # the manifest's own digest
    Column("created_at", String(40), nullable=False),  # from the manifest
    Column("parent", String(200), nullable=True),
    Column("manifest", Text, nullable=False),
    Column("registered_ns", BigInteger, nullable=False),
    Column("registered_by", String(200), nullable=False),
)

reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("system", String(63), nullable=False, index=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("dataset_id", String(200), nullable=True),
    Column("created", String(40), nullable=True),
    Column("registered_ns", BigInteger, nullable=False),
    Column("registered_by", String(200), nullable=False),
    Column("body", Text, nullable=False),
)

report_bundles = Table(
    "report_bundles",
    metadata,
    Column("report_id", Integer, ForeignKey("reports.id"), primary_key=True),
    Column("bundle_version", String(200), ForeignKey("bundles.version"), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("gate_passed", Boolean, nullable=True),  # only for the gate's candidate
    Column("gate_baseline", String(200), nullable=True),
    Index("ix_report_bundles_bundle", "bundle_version"),
)

deployments = Table(
    "deployments",
    metadata,
    Column("system", String(63), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("system", String(63), nullable=False),
    Column("at_ns", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),  # applied | refused | conflict
    Column("revision_before", Integer, nullable=True),
    Column("revision_after", Integer, nullable=True),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("detail", Text, nullable=False),
    Column("undoable", Boolean, nullable=False),
    Column("undone_by", Integer, ForeignKey("events.id"), nullable=True),
    Index("ix_events_system_id", "system", "id"),
    Index("ix_events_system_at", "system", "at_ns"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),  # ed25519:<16 hex of sha256(public key)>
    Column("public_key", String(100), nullable=False),  # base64 of the 32 raw bytes
    Column("name", String(200), nullable=False),
    Column("added_ns", BigInteger, nullable=False),
    Column("added_by", String(200), nullable=False),
    Column("revoked_ns", BigInteger, nullable=True),
    Column("revoked_by", String(200), nullable=True),
)

bundle_files = Table(
    "bundle_files",
    metadata,
    Column("version", String(200), primary_key=True),
    Column("path", String(1000), primary_key=True),  # relative to the bundle: manifest.json, intelligence.json …
    Column("part", Integer, primary_key=True),  # 0, 1, … (a file over the part size is cut in parts)
    Column("sha256", String(64), nullable=False),  # of the whole file
    Column("size", BigInteger, nullable=False),  # of the whole file
    Column("data", LargeBinary, nullable=False),  # this part's bytes
)

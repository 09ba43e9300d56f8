"""The first registry schema: bundles, reports, deployments and their history.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundles",
        sa.Column("version", sa.String(200), primary_key=True),
        sa.Column("system", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("parent", sa.String(200), nullable=True),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("registered_ns", sa.BigInteger, nullable=False),
        sa.Column("registered_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_bundles_system", "bundles", ["system"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("system", sa.String(63), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("dataset_id", sa.String(200), nullable=True),
        sa.Column("created", sa.String(40), nullable=True),
        sa.Column("registered_ns", sa.BigInteger, nullable=False),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_reports_system", "reports", ["system"])
    op.create_table(
        "report_bundles",
        sa.Column("report_id", sa.Integer, sa.ForeignKey("reports.id"), primary_key=True),
        sa.Column("bundle_version", sa.String(200), sa.ForeignKey("bundles.version"), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("gate_passed", sa.Boolean, nullable=True),
        sa.Column("gate_baseline", sa.String(200), nullable=True),
    )
    op.create_index("ix_report_bundles_bundle", "report_bundles", ["bundle_version"])
    op.create_table(
        "deployments",
        sa.Column("system", sa.String(63), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("system", sa.String(63), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revision_before", sa.Integer, nullable=True),
        sa.Column("revision_after", sa.Integer, nullable=True),
        sa.Column("before", sa.Text, nullable=True),
        sa.Column("after", sa.Text, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("undoable", sa.Boolean, nullable=False),
        sa.Column("undone_by", sa.Integer, sa.ForeignKey("events.id"), nullable=True),
    )
    op.create_index("ix_events_system_id", "events", ["system", "id"])
    op.create_index("ix_events_system_at", "events", ["system", "at_ns"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("deployments")
    op.drop_table("report_bundles")
    op.drop_table("reports")
    op.drop_table("bundles")

"""Alembic environment: run on the connection ``closedloop.registry.db.upgrade`` passes in
(``config.attributes["connection"]``), inside its transaction. There is no alembic.ini."""

from __future__ import annotations

from alembic import context

from closedloop.registry.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable when someone runs alembic by hand
    raise RuntimeError("closedloop's migrations run through closedloop.registry.db.upgrade(engine).")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""Alembic migrations of the registry schema (run programmatically: see ``closedloop.registry.db``)."""

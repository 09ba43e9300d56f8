"""The ``closedloop`` command line: one module per command group (``main`` holds the root app and
the bundle, decide and init commands)."""

from __future__ import annotations

from closedloop.cli.main import app, main

__all__ = ["app", "main"]

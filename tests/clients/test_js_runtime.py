"""The client runtime's own tests (``node --test``), run by ``make test``."""

from __future__ import annotations

from support.node_runtime import run_node


def test_node_runtime_tests_pass() -> None:
    out = run_node("--test", "test/runtime")
    assert "# fail 0" in out and "# pass " in out, out

"""The client runtime's own tests (``node --test``), run by ``make test``."""

from __future__ import annotations

from support.node_runtime import CLIENT_JS, run_node


def test_node_runtime_tests_pass() -> None:
    files = sorted(str(p.relative_to(CLIENT_JS)) for p in (CLIENT_JS / "test" / "runtime").glob("*.test.js"))
    assert files
    out = run_node("--test", "--test-reporter=tap", *files)  # exits non-zero when a test fails
    assert "# fail 0" in out, out

"""Node.js for the client runtime's tests: the binary (a missing one is an error, not a skip) and
one run of a script of ``clients/js`` that fails with its output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CLIENT_JS = Path(__file__).resolve().parents[2] / "clients" / "js"


def node_binary() -> str:
    binary = shutil.which("node")
    if binary is None:
        raise RuntimeError("node is not installed: run `bash scripts/ensure_system_deps.sh` (make test does) "
                           "or apt-get install nodejs")
    return binary


def run_node(*args: str, timeout: float = 120.0) -> str:
    """Run ``node ARGS`` in ``clients/js``; its stdout, or an AssertionError with everything it printed."""
    proc = subprocess.run([node_binary(), *args], cwd=CLIENT_JS, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"node {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout

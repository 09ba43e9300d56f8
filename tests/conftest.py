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

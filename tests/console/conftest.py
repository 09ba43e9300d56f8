"""A real home for the console tests: a registry (SQLite in tmp_path) with the phishing system in
production and a flight, real credentials (viewer, admin, decide-only), and a console app over it
with a clock the tests move."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Home:
    path: Path
    system: Any
    production: str
    flight_bundle: str
    tokens: dict[str, str]

    def registry(self) -> Any:
        from closedloop.registry import Registry

        return Registry(f"sqlite:///{self.path / 'registry.sqlite'}", self.path / "bundles").open()


class Clock:
    """Nanoseconds since the epoch that a test moves by hand."""

    def __init__(self) -> None:
        import time

        self.ns = time.time_ns()

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


@pytest.fixture
def home(tmp_path, phishing) -> Home:
    from examples.phishing.heuristic import heuristic_intelligence

    from closedloop import Bundle
    from closedloop.service.auth import Credentials

    h = tmp_path / "home"
    h.mkdir()
    H = Bundle.build(phishing, heuristic_intelligence())
    F = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})
    home = Home(h, phishing, H.version, F.version, {})
    with home.registry() as reg:
        reg.deploy(phishing, H, actor="alice", reason="first", allow_unsigned="tests", force="tests")
        reg.deploy(phishing, F, actor="alice", reason="try stricter", flight="strict", share=0.1,
                   allow_unsigned="tests", force="tests")
    creds = Credentials(h / "credentials.json")
    home.tokens = {"viewer": creds.add("vera", ["viewer"]), "admin": creds.add("ada", ["admin"]),
                   "decide": creds.add("app", ["decide"])}
    return home


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def console(home, clock):
    from closedloop.console import ConsoleSettings, create_console_app

    return create_console_app(ConsoleSettings(home=home.path, systems=("examples.phishing.system:phishing",)), clock=clock)

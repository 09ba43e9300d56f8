"""A real home for the console's data tests: the registry world's bundles (H, A, B) and reports,
a history (H first, then A in a flight, B as a shadow), and real telemetry — a Runtime deciding
into a SegmentLog, users reporting false blocks and warnings — part of it compacted into the
Parquet lake, the rest left in live segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.registry_world import build_world, served_home


@dataclass
class Home:
    home: Path
    reg: Any
    world: Any
    lake_ids: list[str]  # decisions compacted into Parquet
    live_ids: list[str]  # decisions still in segments
    flight_ids: list[str]  # decisions the flight's bundle made


@pytest.fixture(scope="session")
def console_world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("console-world"))


@pytest.fixture(scope="module")
def real_home(phishing, console_world, tmp_path_factory):
    world = console_world
    home = tmp_path_factory.mktemp("console-home")
    reg, first, second = served_home(phishing, world, home, (1500, 700), (21, 22))
    ids = first.decision_ids.to_pylist() + second.decision_ids.to_pylist()
    flights = first.flights.to_pylist() + second.flights.to_pylist()
    yield Home(home, reg, world, first.decision_ids.to_pylist(), second.decision_ids.to_pylist(),
               [i for i, f in zip(ids, flights, strict=True) if f == "a"])
    reg.close()

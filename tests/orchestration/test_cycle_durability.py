"""The cycle's ingest never loses outcomes on a full disk: an inbox file is moved to ``done/``
only once its outcomes are durable; a failed telemetry commit (ENOSPC at the write or at the
fsync — injected, and on a real tiny tmpfs where mount is permitted) leaves it in the inbox,
stops the cycle with the file and the error recorded, and the rerun after the disk is fixed
ingests every outcome exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from closedloop import ManualClock
from closedloop.orchestration import Cycle, LoopPlan
from closedloop.registry import Registry
from closedloop.telemetry import TelemetryStore
from support.full_disk import FullDisk, fill, tiny_tmpfs
from support.orchestration import DAY, START, make_system

N = 200


def _inbox(home: Path, name: str = "outcomes.jsonl", n: int = N, first: int = 0) -> Path:
    inbox = home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_text("".join(json.dumps({"decision_id": f"d{i}", "kind": "reported_phish", "source": "user",
                                        "event_ns": START + i * 10**9}) + "\n" for i in range(first, first + n)))
    return path


def _stored_outcomes(home: Path) -> list[str]:
    """Every outcome id stored (Parquet after compaction, raw: no deduplication)."""
    ids: list[str] = []
    for f in TelemetryStore(home).outcome_files():
        ids += pc.cast(pq.read_table(f, columns=["outcome_id"])["outcome_id"], "string").to_pylist()
    return ids


@pytest.fixture
def loop(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    system = make_system()
    clock = ManualClock(START + DAY)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    plan = LoopPlan(system)  # nothing deployed, no heuristic: a cycle stops after ingest and monitor
    yield home, Cycle(plan, home, reg, actor="test", clock=clock), clock
    reg.close()


def _check_failed_then_fixed(home: Path, cycle: Cycle, clock: ManualClock, heal) -> None:
    f = _inbox(home)
    rec = cycle.run_once()
    assert rec["finished"] and rec["outcome"] == "ingest_failed", rec
    step = rec["steps"]["ingest"]
    assert step["status"] == "stopped"
    (failed,) = step["result"]["failed"]
    assert failed["file"] == "outcomes.jsonl" and failed["records"] == N
    assert "ENOSPC" in failed["error"], failed
    assert "outcomes.jsonl" in rec["reason"] and "ENOSPC" in rec["reason"]
    assert step["result"]["durable"] == 0
    assert f.is_file() and not (home / "inbox" / "done" / f.name).exists()  # left for the next run
    assert "monitor" not in rec["steps"]  # no training on a known-incomplete record of outcomes
    saved = json.loads((home / "orchestration" / "cycles" / f"{rec['id']:06d}.json").read_text())
    assert saved["steps"]["ingest"]["result"]["failed"] == [failed]

    heal()
    clock.advance(3600)
    rec = cycle.run_once()
    step = rec["steps"]["ingest"]
    assert step["status"] == "done", rec
    assert step["result"]["files"] == ["outcomes.jsonl"] and step["result"]["durable"] == N
    assert not f.exists() and (home / "inbox" / "done" / f.name).is_file()
    ids = _stored_outcomes(home)
    assert len(ids) == N and len(set(ids)) == N  # every outcome once: none lost, none twice

    clock.advance(3600)
    rec = cycle.run_once()  # nothing new in the inbox
    assert rec["steps"]["ingest"]["result"]["files"] == []
    assert len(_stored_outcomes(home)) == N


@pytest.mark.parametrize("call", ["writev", "fsync"])
def test_a_failed_telemetry_commit_leaves_the_file_in_the_inbox(loop, monkeypatch, call) -> None:
    home, cycle, clock = loop
    disk = FullDisk(monkeypatch, call=call)

    def heal() -> None:
        assert disk.failures > 0
        disk.full = False

    _check_failed_then_fixed(home, cycle, clock, heal)


def test_a_file_after_a_failed_one_waits_its_turn(loop, monkeypatch) -> None:
    """Files are ingested in name order and the first failure stops the step: a later file is
    not ingested before an earlier one (an outcome's order of arrival is kept)."""
    home, cycle, clock = loop
    disk = FullDisk(monkeypatch)
    disk.full = False
    _inbox(home, "a.jsonl", n=10)
    rec = cycle.run_once()
    assert rec["steps"]["ingest"]["result"]["durable"] == 10
    _inbox(home, "b.jsonl", n=10, first=10)
    _inbox(home, "c.jsonl", n=10, first=20)
    disk.full = True
    clock.advance(3600)
    rec = cycle.run_once()
    res = rec["steps"]["ingest"]["result"]
    assert [x["file"] for x in res["failed"]] == ["b.jsonl"] and res["waiting"] == ["c.jsonl"]
    assert sorted(p.name for p in (home / "inbox").glob("*.jsonl")) == ["b.jsonl", "c.jsonl"]
    disk.full = False
    clock.advance(3600)
    rec = cycle.run_once()
    assert rec["steps"]["ingest"]["result"]["files"] == ["b.jsonl", "c.jsonl"]
    ids = _stored_outcomes(home)
    assert len(ids) == 30 and len(set(ids)) == 30


def test_a_real_full_tmpfs(loop) -> None:
    """The same on a real file system: ``<home>/telemetry`` is a 1 MiB tmpfs, filled up."""
    home, cycle, clock = loop
    with tiny_tmpfs(home / "telemetry", 1 << 20) as mnt:
        filler = fill(mnt)
        _check_failed_then_fixed(home, cycle, clock, filler.unlink)


def test_loop_run_exits_1_when_the_ingest_failed(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from closedloop.cli.main import app
    from closedloop.service.auth import Credentials

    home = tmp_path / "home"
    plan = tmp_path / "plan.py"
    plan.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
                    "from support.orchestration import make_system\nfrom closedloop.orchestration import LoopPlan\n"
                    "plan = LoopPlan(make_system())\n")
    token = Credentials(home / "credentials.json").add("loop-bot", ["admin"])
    _inbox(home)
    disk = FullDisk(monkeypatch)
    args = ["--home", str(home), "--token", token, "loop", "run", "--once", "--plan", f"{plan}:plan",
            "--now", str(START)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "ingest_failed"
    assert "Error: cycle 1: ingest_failed: the outcomes of inbox file 'outcomes.jsonl'" in r.stderr
    assert "ENOSPC" in r.stderr
    disk.full = False
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "nothing_deployed"

"""The loop's clock: a `--now` far ahead of the wall clock is refused unless confirmed
(`--allow-future`: registry changes take effect at once, whatever --now says), and a cycle whose
clock went back says so in dates, names the cycles ahead of it and how to go on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from closedloop import ManualClock
from closedloop.errors import SpecError
from closedloop.orchestration import Cycle, LoopPlan
from closedloop.registry import Registry
from closedloop.service.auth import Credentials
from support.orchestration import DAY, START, make_system

TESTS = Path(__file__).resolve().parents[1]
PLAN = """
import sys
sys.path.insert(0, {tests!r})
from support.orchestration import make_system
from closedloop.orchestration import LoopPlan

plan = LoopPlan(make_system())
"""


def _record(home: Path, cid: int, now_ns: int) -> Path:
    """A finished cycle record at ``now_ns`` (what a run with --now left behind)."""
    d = home / "orchestration" / "cycles"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{cid:06d}.json"
    p.write_text(json.dumps({"id": cid, "system": "synth", "now_ns": now_ns, "steps": {}, "finished": True,
                             "outcome": "nothing_to_do", "reason": "", "resumed": 0, "alerts": [], "changes": []}))
    (d / f"{cid:06d}").mkdir(exist_ok=True)
    return p


def test_clock_went_back_speaks_in_dates_and_says_how_to_go_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _record(home, 1, START)
    _record(home, 2, START + 300 * DAY)  # 2026-11-01: a run with --now ahead of this cycle's time
    _record(home, 3, START + 330 * DAY)
    clock = ManualClock(START + 2 * DAY)
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock) as reg:
        cycle = Cycle(LoopPlan(make_system()), home, reg, actor="t", clock=clock)
        with pytest.raises(SpecError) as ei:
            cycle.run_once()
    msg = str(ei.value)
    assert str(START + 330 * DAY) not in msg and str(START + 2 * DAY) not in msg  # no raw nanoseconds
    assert "2026-01-07T00:00:00Z" in msg  # this cycle's time
    assert "2026-12-01T00:00:00Z" in msg and "cycle #3" in msg  # the last cycle's
    assert "cycles #2, #3 ran later" in msg
    assert "--now 2026-12-01T00:00:00Z" in msg and "--allow-future" in msg
    cycles = home / "orchestration" / "cycles"
    assert f"mv {cycles}/000002.json {cycles}/000002 {cycles}/000003.json {cycles}/000003 " in msg
    assert "closedloop history" in msg and "rollback" in msg
    assert not (cycles / "000004.json").exists()  # nothing recorded

    # following the advice (moving the records ahead aside) lets the cycle run at its time
    aside = home / "orchestration" / "cycles-ahead"
    aside.mkdir()
    for name in ("000002.json", "000002", "000003.json", "000003"):
        (cycles / name).rename(aside / name)
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock) as reg:
        rec = Cycle(LoopPlan(make_system()), home, reg, actor="t", clock=clock).run_once()
    assert (rec["id"], rec["now_ns"], rec["finished"]) == (2, START + 2 * DAY, True)


@pytest.fixture
def cli_home(tmp_path: Path):
    home = tmp_path / "home"
    (tmp_path / "plan.py").write_text(PLAN.format(tests=str(TESTS)))
    token = Credentials(home / "credentials.json").add("loop-bot", ["admin"])
    return home, tmp_path / "plan.py", token


def _run(home: Path, plan: Path, token: str, *args: str):
    from closedloop.cli.main import app

    return CliRunner().invoke(app, ["--home", str(home), "--token", token, "loop", "run", "--once",
                                    "--plan", f"{plan}:plan", *args],
                              env={"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": ""})


def test_now_far_ahead_is_refused_unless_allowed(cli_home) -> None:
    home, plan, token = cli_home
    ahead = time.time_ns() + 30 * DAY
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ahead / 1e9))
    r = _run(home, plan, token, "--now", iso)
    assert r.exit_code == 2, r.output
    err = " ".join(r.stderr.split())  # rich wraps the usage error's lines
    assert f"--now {iso} is 30.0 days ahead of the wall clock" in err
    assert "take effect at once" in err and "--allow-future" in err
    assert not (home / "orchestration" / "cycles").exists()  # refused before anything ran

    # confirmed: the run goes on — here to the clock check, since a cycle ahead even of that exists
    _record(home, 1, ahead + DAY)
    r = _run(home, plan, token, "--now", iso, "--allow-future")
    assert r.exit_code == 1, r.output
    assert "The cycle clock went back" in r.stderr and iso in r.stderr

    # a --now within a few minutes of the wall clock (another host's clock) needs no confirmation
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    r = _run(home, plan, token, "--now", soon)
    assert r.exit_code == 1 and "clock went back" in r.stderr  # not refused (2) for being ahead

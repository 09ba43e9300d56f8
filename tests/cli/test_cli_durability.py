"""Exit codes that tell the truth on a full disk: ``closedloop outcomes ingest`` reports how many
outcomes were made durable and exits non-zero when some were not; ``closedloop decide --log``
exits non-zero when decisions it wrote out were not logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from closedloop import Bundle, LogisticModel
from closedloop.cli.main import app
from closedloop.telemetry import TelemetryStore
from support.full_disk import FullDisk

SYSTEM = "examples.phishing.system:phishing"
T0 = 1_767_225_600 * 10**9
N = 200
runner = CliRunner()


def _outcomes(tmp_path: Path) -> Path:
    f = tmp_path / "outcomes.jsonl"
    f.write_text("".join(json.dumps({"decision_id": f"d{i}", "kind": "reported_phish", "source": "user",
                                     "event_ns": T0 + i}) + "\n" for i in range(N)))
    return f


@pytest.mark.parametrize("call", ["writev", "fsync"])
def test_outcomes_ingest_on_a_full_disk_reports_what_is_durable_and_fails(tmp_path, monkeypatch, call) -> None:
    home, f = tmp_path / "home", _outcomes(tmp_path)
    disk = FullDisk(monkeypatch, call=call)
    r = runner.invoke(app, ["--home", str(home), "outcomes", "ingest", str(f), "--system", SYSTEM])
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ingested"] == N and report["durable"] == 0 and report["not_durable"] == N
    assert f"{N} of {N} outcomes were not made durable" in r.stderr and "ENOSPC" in r.stderr

    disk.full = False  # the disk is fixed: the same file again
    r = runner.invoke(app, ["--home", str(home), "outcomes", "ingest", str(f), "--system", SYSTEM])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ingested"] == N and report["durable"] == N and report["not_durable"] == 0
    assert TelemetryStore(home).stats()["outcomes"] == N  # none lost, none twice (raw rows)


def test_decide_log_fails_when_telemetry_fails(tmp_path, monkeypatch, phishing) -> None:
    home = tmp_path / "home"
    path = Bundle.build(phishing, LogisticModel({n: 0.1 for n in phishing.features.names}, -1.0,
                                                output="phish")).save(tmp_path / "bundle")
    lines = "".join(json.dumps({"user_id": f"u{i}", "url": f"https://s{i}.example/", "domain": f"s{i}.example"}) + "\n"
                    for i in range(5))
    args = ["--home", str(home), "decide", "--system", SYSTEM, "--bundle", str(path), "--log"]
    ok = runner.invoke(app, args, input=lines)
    assert ok.exit_code == 0, ok.output
    assert len(ok.stdout.splitlines()) == 5

    FullDisk(monkeypatch)
    r = runner.invoke(app, args, input=lines)
    assert len(r.stdout.splitlines()) == 5  # the decisions are still answered
    assert r.exit_code == 1, r.output
    assert "5 of 5 decisions were not logged" in r.stderr and "ENOSPC" in r.stderr

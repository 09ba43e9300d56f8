"""What the registry tells a new user: a deploy refused by the parity check says how to
attach a report; a rollback that turns the kill switch back on (or off) says so — in the change's
message, its detail and the CLI's output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from closedloop.errors import SanityCheckError
from closedloop.registry import Registry
from closedloop.runtime.clock import ManualClock
from support.registry_world import build_world

SYSTEM = "examples.phishing.system:phishing"


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("messages-world"))


def test_parity_refusal_says_how_to_attach_a_report(tmp_path, world, phishing):
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles").open() as reg:
        world.trust(reg)
        H = world.H.version
        with pytest.raises(SanityCheckError) as ei:  # the first production: no gate, but parity needs golden rows
            reg.deploy(phishing, world.H, actor="alice", reason="first")
        msg = str(ei.value)
        assert ei.value.failed == ["parity"]
        assert f"no evaluation report with golden rows is attached to {H}" in msg
        assert f"closedloop evaluate --system MODULE:ATTR --bundle {H} --dataset DATASET --register" in msg
        assert "closedloop deploy BUNDLE --report FILE.json" in msg and '--force "why"' in msg
        assert "Registry.add_report" in msg
        gate = next(c for c in ei.value.checks if c["name"] == "gate")
        assert gate["passed"] and "first production" in gate["detail"]
        # the way the message names works: a report attached, the same deploy passes (the gate not required)
        reg.add_bundle(world.A, actor="alice")
        reg.add_report(world.report_HA, actor="alice")
        ch = reg.deploy(phishing, H, actor="alice", reason="first")
        assert {c["name"]: c["passed"] for c in ch.detail["checks"]}["parity"]


def test_rollback_says_when_the_kill_switch_turns_back(tmp_path, world, phishing):
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles",
                  clock=ManualClock(step_ns=1_000_000_000)).open() as reg:
        world.trust(reg)
        for b in (world.H, world.A):
            reg.add_bundle(b, actor="alice")
        reg.add_report(world.report_HA, actor="alice")
        reg.deploy(phishing, world.H, actor="alice", reason="first")
        reg.killswitch("phishing", True, actor="bob", reason="incident")
        reg.killswitch("phishing", False, actor="bob", reason="incident over")
        ch = reg.deploy(phishing, world.A, actor="alice", reason="A", force="test")
        first = reg.rollback("phishing", actor="carol", reason="A looks wrong")  # undoes the deploy of A
        assert "the kill switch is" not in first.message and "killswitch" not in first.detail
        second = reg.rollback("phishing", actor="carol", reason="further")  # undoes 'kill switch off'
        assert reg.state("phishing").killswitch
        assert "the kill switch is ON again" in second.message
        assert "every decision gets the system's default action" in second.message
        assert "closedloop killswitch off" in second.message
        assert second.detail["killswitch"] == {"before": False, "after": True}
        third = reg.rollback("phishing", actor="carol", reason="further still")  # undoes 'kill switch on'
        assert not reg.state("phishing").killswitch
        assert "the kill switch is off again" in third.message and third.detail["killswitch"]["after"] is False
        assert ch.event_id is not None


def test_cli_rollback_prints_the_kill_switch_line(tmp_path, world):
    from closedloop.cli.main import app

    runner = CliRunner()
    home = tmp_path / "home"
    for b in (world.H, world.A):
        b.save(home / "bundles" / b.version)
    rep = tmp_path / "ha.json"
    rep.write_text(json.dumps(world.report_HA))

    def run(*args, token=None):
        pre = ["--home", str(home)] + (["--token", token] if token else [])
        return runner.invoke(app, [*pre, *args], env={"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": ""})

    admin = run("token", "add", "alice", "--role", "admin").output.strip()
    assert run("key", "trust", world.key.public_key, "--name", "tests", token=admin).exit_code == 0
    # the parity refusal on the command line: the three ways out, no traceback
    r = run("deploy", world.H.version, "--system", SYSTEM, "--reason", "first", token=admin)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "--register" in r.stderr and "--report FILE.json" in r.stderr and '--force "why"' in r.stderr
    r = run("deploy", world.H.version, "--system", SYSTEM, "--reason", "first", "--report", str(rep), token=admin)
    assert r.exit_code == 0, r.stderr
    assert run("killswitch", "on", "--reason", "incident", token=admin).exit_code == 0
    assert run("killswitch", "off", "--reason", "over", token=admin).exit_code == 0
    r = run("rollback", "--reason", "oops", token=admin)
    assert r.exit_code == 0, r.stderr
    assert "the kill switch is ON again" in r.output
    assert "warning:" in r.output

"""The registry's CLI: admin credentials required, deploy/promote/rollback/killswitch/status/
history/guard check, and ``evaluate --register`` attaching a report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app
from support.registry_world import build_world

runner = CliRunner()
SYSTEM = "examples.phishing.system:phishing"


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("cli-world"))


def _run(home, *args, token=None):
    pre = ["--home", str(home)] + (["--token", token] if token else [])
    return runner.invoke(app, [*pre, *args], env={"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": ""})


def test_cli_lifecycle(tmp_path, world):
    home = tmp_path / "home"
    for b in (world.H, world.A, world.B):
        b.save(home / "bundles" / b.version)
    rep_ha, rep_ab = tmp_path / "ha.json", tmp_path / "ab.json"
    rep_ha.write_text(json.dumps(world.report_HA))
    rep_ab.write_text(json.dumps(world.report_AB))
    r = _run(home, "token", "add", "alice", "--role", "admin")
    assert r.exit_code == 0, r.output
    admin = r.output.strip()
    viewer = _run(home, "token", "add", "viewer", "--role", "decide").output.strip()
    H, A, B = world.H.version, world.A.version, world.B.version

    r = _run(home, "deploy", H, "--system", SYSTEM, "--reason", "first")
    assert r.exit_code == 1 and "credential is required" in r.stderr
    r = _run(home, "deploy", H, "--system", SYSTEM, "--reason", "first", token=viewer)
    assert r.exit_code == 1 and "lacks the role 'admin'" in r.stderr
    # signed by a key this home's registry does not trust yet: refused, recorded, nothing copied
    r = _run(home, "deploy", H, "--system", SYSTEM, "--reason", "first", token=admin)
    assert r.exit_code == 1 and "Bundle check 'signature' failed" in r.stderr and "does not trust" in r.stderr
    assert "Traceback" not in r.output
    r = _run(home, "key", "trust", world.key.public_key, "--name", "the test builder", token=viewer)
    assert r.exit_code == 1 and "lacks the role 'admin'" in r.stderr
    r = _run(home, "key", "trust", world.key.public_key, "--name", "the test builder", token=admin)
    assert r.exit_code == 0 and json.loads(r.output)["key_id"] == world.key.key_id, r.stderr
    assert [json.loads(line)["name"] for line in _run(home, "key", "list").output.splitlines()] == ["the test builder"]
    r = _run(home, "deploy", H, "--system", SYSTEM, "--reason", "first", "--report", str(rep_ha),
             "--report", str(rep_ab), token=admin)
    assert r.exit_code == 0, r.stderr
    assert "ok     signature" in r.output
    assert f"deployed {H} to production" in r.output and "revision 0 → 1" in r.output
    assert "ok     parity" in r.output
    r = _run(home, "deploy", A, "--system", SYSTEM, "--flight", "a", "--share", "20%", "--reason", "try A",
             token=admin)
    assert r.exit_code == 0, r.stderr
    r = _run(home, "promote", "a", "--system", SYSTEM, "--reason", "A wins", token=admin)
    assert r.exit_code == 0 and f"production {A}" in r.output, r.stderr
    r = _run(home, "deploy", B, "--system", SYSTEM, "--flight", "b", "--share", "0.1", "--reason", "try B",
             token=admin)
    assert r.exit_code == 1 and "failed sanity check(s) gate" in r.stderr and "Traceback" not in r.output
    r = _run(home, "deploy", B, "--system", SYSTEM, "--flight", "b", "--share", "10%", "--reason", "try B",
             "--force", "see it live", token=admin)
    assert r.exit_code == 0 and "FORCED gate" in r.output, r.stderr
    r = _run(home, "deploy", B, "--system", SYSTEM, "--flight", "c", "--share", "150%", "--reason", "x",
             token=admin)
    assert r.exit_code == 2 and "share" in r.stderr

    r = _run(home, "status")
    assert r.exit_code == 0, r.stderr
    assert f"production {A}" in r.output and "flight b:" in r.output and "last change #" in r.output
    st = json.loads(_run(home, "status", "--json", "--system", "phishing").output)
    assert st["revision"] == 4 and st["flights"][0]["name"] == "b"
    r = _run(home, "guard", "check", "--system", SYSTEM, "--dry-run")
    assert r.exit_code == 0, r.stderr
    g = json.loads(r.output)
    assert g["flights"][0]["name"] == "b" and g["flights"][0]["action"] == "none"  # no telemetry yet

    r = _run(home, "killswitch", "on", "--reason", "incident", token=admin)
    assert r.exit_code == 0 and "kill switch ON" in r.output
    r = _run(home, "killswitch", "on", "--reason", "incident", token=admin)
    assert r.exit_code == 0 and r.output.startswith("no change")
    r = _run(home, "killswitch", "maybe", "--reason", "x", token=admin)
    assert r.exit_code == 2
    r = _run(home, "rollback", "--reason", "incident over", token=admin)
    assert r.exit_code == 0 and "rolled back change #" in r.output and "(killswitch_on by alice" in r.output
    r = _run(home, "rollback", "--reason", "no B", token=admin)
    assert "(deploy_flight by alice: try B)" in r.output and "restored the state of revision 3" in r.output

    hist = json.loads(_run(home, "history", "--json").output)
    # attempts without an admin credential never reach the registry; the gate refusal is recorded
    assert [e["status"] for e in hist].count("refused") == 2  # the unknown key, then the gate
    r = _run(home, "history")
    assert r.exit_code == 0 and "REFUSED" in r.output and "rolled back by #" in r.output
    flight_b = next(e for e in hist if e["operation"] == "deploy_flight" and e["status"] == "applied"
                    and e["after"]["flights"] and e["after"]["flights"][0]["name"] == "b")
    r = _run(home, "history", "--at", str(flight_b["at_ns"]))
    assert r.exit_code == 0, r.stderr
    assert "flight b:" in r.output and "stopped" in r.output and "no B" in r.output


def test_cli_evaluate_register(tmp_path, world):
    home = tmp_path / "home"
    admin = _run(home, "token", "add", "alice", "--role", "admin").output.strip()
    paths = []
    for b in (world.A, world.B):
        paths.append(str(b.save(tmp_path / "out" / b.version)))
    args = ["evaluate", "--system", SYSTEM, "--bundle", paths[0], "--bundle", paths[1], "--dataset",
            str(world.dataset), "--bootstrap", "10", "--register"]
    r = _run(home, *args)
    assert r.exit_code == 1 and "credential is required" in r.stderr, r.stderr
    assert _run(home, "key", "trust", world.key.public_key, "--name", "builder", token=admin).exit_code == 0
    r = _run(home, *args, token=admin)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.output)
    assert isinstance(out["registered_report"], int) and out["gate"] == "fail"
    from closedloop.registry import Registry
    from closedloop.settings import Settings

    with Registry.from_settings(Settings(home=home)).open() as reg:
        (rep,) = reg.reports(world.B.version)
        assert rep["gate"]["candidate"] == world.B.version and not rep["gate"]["passed"]
        assert reg.bundle(world.A.version)["registered_by"] == "alice"
        assert (home / "bundles" / world.B.version / "manifest.json").is_file()


def test_cli_evaluate_slice_bins(tmp_path, world):
    home = tmp_path / "home"
    paths = [str(world.A.save(tmp_path / "out" / world.A.version))]
    args = ["evaluate", "--system", SYSTEM, "--bundle", paths[0], "--dataset", str(world.dataset), "--bootstrap", "0",
            "--out", str(tmp_path / "r.json")]
    r = _run(home, *args, "--slice-bins", "1")
    assert r.exit_code == 2 and "slice_bins" in r.stderr
    for n in ("0", "3"):  # 0: one slice per distinct value (the phishing system's slices are not numeric)
        r = _run(home, *args, "--slice-bins", n)
        assert r.exit_code == 0, r.stderr

"""The flights' sample-ratio check tells the truth: decisions a worker made before it
applied a new flight (or a promotion) do not count; after a promotion the ended flight is not
tested against production; with too few units it says so in words — never `chi2 None, p None`.

Real runtimes decide into real telemetry (two writers, as two serving workers); a worker applies
the registry's change late, as a poll interval makes it."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from closedloop import Runtime
from closedloop.registry import Registry, srm
from closedloop.registry.guard import arm_counts
from closedloop.runtime.deployment import expected_shares
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from support.registry_world import build_world


@pytest.fixture(scope="module")
def world(phishing, tmp_path_factory):
    return build_world(phishing, tmp_path_factory.mktemp("srm-world"))


def _decide(rt, n, seed):
    from examples.phishing.data import generate

    cols, _ = generate(n, seed, phish_rate=0.3)
    return rt.decide_batch({k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in cols.items()})


def _registry(home, world):
    reg = world.trust(Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open())
    for b in (world.H, world.A, world.B):
        reg.add_bundle(b, actor="a")
    reg.add_report(world.report_HA, actor="a")
    reg.add_report(world.report_AB, actor="a")
    return reg


def _status_text(home):
    from closedloop.cli.main import app

    r = CliRunner().invoke(app, ["--home", str(home), "status"], env={"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": ""})
    assert r.exit_code == 0, r.output
    return r.output


def _naive(home, state, since):
    """The old count: units per arm of every decision since ``since`` (what cried wolf)."""
    store = TelemetryStore(home)
    counts = arm_counts(store.read("decisions"), store.read("outcomes"), "phishing", (), since, 2**62)
    observed = {None: counts.get((None, state.production), {}).get("units", 0)}
    observed |= {f.name: counts.get((f.name, f.bundle), {}).get("units", 0) for f in state.flights}
    return srm(observed, expected_shares(state.flights))


def test_decisions_before_each_worker_applied_the_flight_do_not_count(tmp_path, world, phishing):
    home = tmp_path / "home"
    with _registry(home, world) as reg, Telemetry(SegmentLog(home), system=phishing) as t1, \
            Telemetry(SegmentLog(home), system=phishing) as t2:
        reg.deploy(phishing, world.H.version, actor="a", reason="first")
        w1, w2 = Runtime(phishing, world.H, telemetry=t1), Runtime(phishing, world.H, telemetry=t2)
        reg.refresh(w1), reg.refresh(w2)
        _decide(w1, 500, seed=1)
        flight = reg.deploy(phishing, world.A.version, actor="a", reason="try A", flight="a", share=0.3)
        _decide(w1, 1500, seed=2), _decide(w2, 1500, seed=3)  # both still serve H alone: no poll yet
        assert reg.refresh(w1)["applied"]
        _decide(w1, 3000, seed=4)
        _decide(w2, 1000, seed=5)  # the second worker polls later still
        assert reg.refresh(w2)["applied"]
        _decide(w2, 3000, seed=6)
        t1.flush(), t2.flush()
        state = reg.state("phishing")
        start = reg.flight_started("phishing", "a")
        assert _naive(home, state, start)["mismatch"]  # counting from the flight's start: a false alarm
        st = reg.status("phishing", telemetry=TelemetryStore(home))
    s = st["telemetry"]["srm"]
    assert (s["verdict"], s["mismatch"]) == ("ok", False) and s["p_value"] > 0.001
    assert s["since"]["change"]["id"] == flight.event_id and s["since"]["at_ns"] == start
    assert s["writers"] == {"seen": 2, "applied": 2}
    assert s["decisions"]["seen"] == 10_000 and s["decisions"]["counted"] < 6_000  # 4,000 before the reloads
    assert "from its first decision by flight a" in s["counted"]
    text = _status_text(home)
    assert "sample ratio: ok (chi2 " in text and "None" not in text


def test_too_few_units_say_so_in_words(tmp_path, world, phishing):
    home = tmp_path / "home"
    with _registry(home, world) as reg, Telemetry(SegmentLog(home), system=phishing) as tel:
        reg.deploy(phishing, world.H.version, actor="a", reason="first")
        reg.deploy(phishing, world.A.version, actor="a", reason="try A", flight="a", share=0.05)
        rt = Runtime(phishing, world.H, telemetry=tel)
        reg.refresh(rt)
        _decide(rt, 60, seed=7)
        tel.flush()
        s = reg.status("phishing", telemetry=TelemetryStore(home))["telemetry"]["srm"]
    assert s["verdict"] == "not enough data yet" and s["units_needed"] == 100  # 5 expected in the 5% arm
    assert s["note"].startswith(f"not enough data yet ({s['units']} units; the test needs 100")
    text = _status_text(home)
    assert f"sample ratio: not enough data yet ({s['units']} units; the test needs 100" in text
    assert "None" not in text and "chi2" not in text


def test_after_a_promotion_the_ended_flight_is_not_tested_against_production(tmp_path, world, phishing):
    home = tmp_path / "home"
    A, B = world.A.version, world.B.version
    with _registry(home, world) as reg, Telemetry(SegmentLog(home), system=phishing) as tel:
        reg.deploy(phishing, world.H.version, actor="a", reason="first")
        reg.deploy(phishing, A, actor="a", reason="try A", flight="a", share=0.3)
        reg.deploy(phishing, B, actor="a", reason="try B", flight="b", share=0.2, force="see it live")
        rt = Runtime(phishing, world.H, telemetry=tel)
        reg.refresh(rt)
        _decide(rt, 3000, seed=8)
        promote = reg.promote(phishing, "a", actor="a", reason="A wins")
        _decide(rt, 2000, seed=9)  # not reloaded yet: flight a and production H still decide
        assert reg.refresh(rt)["applied"]
        _decide(rt, 4000, seed=10)
        tel.flush()
        state = reg.state("phishing")
        assert (state.production, [f.name for f in state.flights]) == (A, ["b"])
        assert _naive(home, state, reg.flight_started("phishing", "b"))["mismatch"]  # the old count's alarm
        s = reg.status("phishing", telemetry=TelemetryStore(home))["telemetry"]["srm"]
        assert s["verdict"] == "ok" and {a["arm"] for a in s["arms"]} == {"production", "b"}
        assert s["since"]["change"]["id"] == promote.event_id
        assert "production " + A in s["counted"]
        prod = next(a for a in s["arms"] if a["arm"] == "production")
        assert prod["units"] > 0 and abs(prod["observed_share"] - prod["expected_share"]) < 0.05
        text = _status_text(home)
        assert "sample ratio: ok" in text and "production 0 units" not in text

        # the last flight promoted: nothing is split any more, so nothing is tested
        reg.promote(phishing, "b", actor="a", reason="B, then", force="test")
        st = reg.status("phishing", telemetry=TelemetryStore(home))
    assert st["telemetry"]["srm"] is None
    assert "sample ratio" not in _status_text(home)


def _walk(reg, state):
    """arms_change as a walk over the whole history, newest first (what it must equal)."""
    from closedloop.registry.srm import _arms
    from closedloop.registry.state import DeploymentState

    for e in reversed(reg.history("phishing", attempts=False)):
        after = DeploymentState.from_dict(e["after"])
        before = DeploymentState.from_dict(e["before"]) if e["before"] else DeploymentState("phishing")
        if _arms(before) != _arms(after):
            return e["id"] if _arms(after) == _arms(state) else None
    return None


def test_the_change_that_set_the_arms_is_found_behind_a_long_history(tmp_path, world, phishing):
    """The arms set long ago, behind more events than the first read and the second (64, 512):
    the change found is the one a walk over the whole history finds."""
    from closedloop.registry.srm import arms_change

    reg = _registry(tmp_path, world)
    reg.deploy(phishing, world.H.version, actor="a", reason="first")
    reg.deploy(phishing, world.A.version, actor="a", reason="flight", flight="a", share=0.2)
    flight_event = reg.history("phishing", attempts=False)[-1]["id"]
    for i in range(600):  # the kill switch does not change the arms
        reg.killswitch("phishing", i % 2 == 0, actor="a", reason=f"drill {i}")
    state = reg.state("phishing")
    got = arms_change(reg, "phishing", state)
    assert got is not None and got["event"]["id"] == flight_event == _walk(reg, state)
    assert [f.name for f in got["before"].flights] == []
    reg.stop("phishing", "a", actor="a", reason="end")  # set lately: found on the first read
    state = reg.state("phishing")
    assert arms_change(reg, "phishing", state)["event"]["id"] == _walk(reg, state)
    reg.close()

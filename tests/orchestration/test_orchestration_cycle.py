"""The cycle end to end: `closedloop loop run` killed (SIGKILL, a real subprocess) at every step in
turn and rerun ends with exactly one new bundle and one deployment change per cycle; the loop
in-process on a simulated clock notices a campaign shift and retrains early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from closedloop import ManualClock
from closedloop.orchestration import Cycle, DriftMonitor, LoopPlan, Rollout
from closedloop.registry import GuardPolicy, Registry
from closedloop.service.auth import Credentials
from support.orchestration import (
    DAY,
    START,
    Synth,
    compacted,
    first_bundle,
    make_system,
    open_runtime,
)

TESTS = Path(__file__).resolve().parents[1]

PLAN = """
import sys
sys.path.insert(0, {tests!r})
from datetime import timedelta
from support.orchestration import first_bundle, make_system
from closedloop.orchestration import DriftMonitor, LoopPlan, Rollout
from closedloop.registry import GuardPolicy

system = make_system()
plan = LoopPlan(system, heuristic=first_bundle(system), model="logistic", train_window=timedelta(days=6),
                drift=DriftMonitor(min_rows=300), evaluate_bootstrap=0,
                rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=1),
                                guard=GuardPolicy(min_decisions=100)))
"""

# Runs the real CLI; SIGKILLs itself just before the given step's completion is recorded — the
# step's effect (a dataset, a bundle, a registry change) has happened, its record has not.
KILLER = """
import os, signal, sys
from closedloop.orchestration import cycle as C
target = sys.argv[1]
save = C.Cycle._save
def _save(self, rec):
    st = rec["steps"].get(target)
    if st is not None and st.get("status") in ("done", "stopped"):
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, rec)
C.Cycle._save = _save
from closedloop.cli.main import app
app(sys.argv[2:], prog_name="closedloop")
"""


def _env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env["CLOSEDLOOP_TOKEN"] = token
    return env


def _iso(ns: int) -> str:
    return str(ns)


def _run(home: Path, plan: Path, now_ns: int, token: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    args = ["--home", str(home), "loop", "run", "--once", "--plan", f"{plan}:plan", "--now", _iso(now_ns)]
    cmd = [sys.executable, "-c", KILLER, kill_at, *args] if kill_at else [sys.executable, "-m", "closedloop.cli", *args]
    return subprocess.run(cmd, env=_env(token), capture_output=True, text=True, timeout=120)


def _applied(reg: Registry) -> list[dict]:
    return [h for h in reg.history("synth", attempts=False)]


def _simulate(home: Path, reg: Registry, synth: Synth, days: int) -> None:
    system = synth.system
    rt = open_runtime(home, system, reg.load_bundle(reg.state("synth").production, system))
    try:
        for _ in range(days):
            rt.apply(reg.deployment(system))
            synth.run_day(rt)
    finally:
        rt.telemetry.close()


def test_loop_run_killed_at_every_step_resumes_to_one_bundle_and_one_change_per_cycle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = tmp_path / "plan.py"
    plan.write_text(PLAN.format(tests=str(TESTS)))
    token = Credentials(home / "credentials.json").add("loop-bot", ["admin"])
    system = make_system()
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=ManualClock(START)).open()
    reg.deploy(system, first_bundle(system).signed(reg.signing_key(home)), actor="alice",
               reason="the first production", force="no data yet")
    synth = Synth(home, system, per_day=1500, seed=3)
    _simulate(home, reg, synth, 6)

    # cycle 1: dataset → train → … → shadow, killed just before each step is recorded
    steps = ["ingest", "monitor", "route", "plan", "dataset", "train", "evaluate", "gate", "register", "sanity",
             "shadow"]
    bundles0, changes0 = len(reg.bundles("synth")), len(_applied(reg))
    now1 = START + 6 * DAY
    for step in steps:
        r = _run(home, plan, now1, token, kill_at=step)
        assert r.returncode == -9, (step, r.returncode, r.stderr[-2000:])
        assert f"step {step} started" in r.stderr
    r = _run(home, plan, now1, token)
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["id"] == 1 and line["outcome"] == "shadow", line
    assert line["resumed"] == len(steps)
    assert len(reg.bundles("synth")) == bundles0 + 1
    changes = _applied(reg)
    assert len(changes) == changes0 + 1 and changes[-1]["operation"] == "deploy_shadow"
    cand = reg.state("synth").shadows[0]
    assert cand != reg.state("synth").production
    # every effect happened once: one dataset, series points and alerts without duplicates
    kept = sorted(p.name for p in (home / "orchestration" / "cycles" / "000001").iterdir() if not p.name.startswith("."))
    assert kept == ["candidate", "dataset", "report.json"]
    # counts reconcile: the world's decisions → telemetry → the dataset → the goal series
    ds = json.loads((home / "orchestration" / "cycles" / "000001" / "dataset" / "manifest.json").read_text())
    assert ds["counts"]["decisions"]["in_range"] == sum(c["decisions"] for c in synth.counts) == 6 * 1500
    assert ds["counts"]["decisions"]["rows"] + ds["counts"]["decisions"]["open"] == 6 * 1500
    assert ds["counts"]["outcomes"]["excluded_source"] > 0  # mallory, quarantined by the monitor step
    series = [json.loads(x) for x in (home / "goals" / "series.jsonl").read_text().splitlines()]
    assert {p["n"] for p in series if p["name"] == "reports"} == {1500}
    assert series and max(Counter((p["name"], p["window"]) for p in series).values()) == 1
    alerts = [json.loads(x) for x in (home / "orchestration" / "alerts.jsonl").read_text().splitlines()]
    assert max(Counter(a["id"] for a in alerts).values()) == 1
    assert any(a["kind"] == "abuse" and a["subject"] == "user:mallory" for a in alerts)

    # cycle 2: the shadow becomes a flight (killed once after the registry change)
    _simulate(home, reg, synth, 1)
    now2 = START + 7 * DAY
    for step in ("advance",):
        assert _run(home, plan, now2, token, kill_at=step).returncode == -9
    r = _run(home, plan, now2, token)
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["id"] == 2 and line["outcome"] == "flight", line
    changes = _applied(reg)
    assert len(changes) == changes0 + 2 and changes[-1]["operation"] == "deploy_flight"
    assert reg.state("synth").flight("candidate").bundle == cand

    # cycle 3: the flight ran a day with no guard breach → promoted (killed once after the change)
    _simulate(home, reg, synth, 1)
    now3 = START + 8 * DAY
    assert _run(home, plan, now3, token, kill_at="advance").returncode == -9
    r = _run(home, plan, now3, token)
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["id"] == 3 and line["outcome"] == "promoted", line
    changes = _applied(reg)
    assert len(changes) == changes0 + 3 and changes[-1]["operation"] == "promote"
    assert reg.state("synth").production == cand and not reg.state("synth").shadows
    assert len(reg.bundles("synth")) == bundles0 + 1
    assert [c["actor"] for c in changes[-3:]] == ["loop-bot"] * 3

    # loop status shows the last cycle, the goals, the alerts and the quarantined source
    st = subprocess.run([sys.executable, "-m", "closedloop.cli", "--home", str(home), "loop", "status",
                         "--plan", f"{plan}:plan", "--json"], env=_env(token), capture_output=True, text=True,
                        timeout=60)
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["last_cycle"]["id"] == 3 and status["last_cycle"]["outcome"] == "promoted"
    assert {g["name"] for g in status["goals"]} == {g.name for g in system.goals}
    assert any(g["value"] is not None for g in status["goals"])
    assert [s["source"] for s in status["quarantined"]] == ["user:mallory"]
    assert status["deployment"]["production"] == cand
    human = subprocess.run([sys.executable, "-m", "closedloop.cli", "--home", str(home), "loop", "status",
                            "--plan", f"{plan}:plan"], env=_env(token), capture_output=True, text=True, timeout=60)
    assert human.returncode == 0 and "user:mallory quarantined" in human.stdout and "promoted" in human.stdout
    reg.close()


def test_loop_run_needs_an_admin_credential(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = tmp_path / "plan.py"
    plan.write_text(PLAN.format(tests=str(TESTS)))
    token = Credentials(home / "credentials.json").add("reader", ["decide"])
    r = _run(home, plan, START, token)
    assert r.returncode == 1 and "admin" in r.stderr


@pytest.fixture
def shifted_loop(tmp_path: Path):
    home = tmp_path / "home"
    system = make_system()
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    yield home, system, clock, reg
    reg.close()


def test_a_campaign_shift_raises_a_drift_alert_and_an_early_retrain(shifted_loop) -> None:
    home, system, clock, reg = shifted_loop
    shift_day, within = 9, 3  # the declared bound: the alert and an early retrain within 3 cycles
    plan = LoopPlan(system, heuristic=first_bundle(system), model="logistic", train_window=timedelta(days=7),
                    retrain_every=timedelta(days=30), evaluate_bootstrap=0,
                    drift=DriftMonitor(feature_threshold=0.03, min_rows=300),
                    rollout=Rollout(shadow_for=timedelta(days=1), flight_for=timedelta(days=1),
                                    guard=GuardPolicy(min_decisions=100)))
    cycle = Cycle(plan, home, reg, clock=clock)
    assert cycle.run_once()["outcome"] == "bootstrapped"
    synth = Synth(home, system, per_day=1500, seed=5, shift_day=shift_day, phish_share=0.15)
    rt = open_runtime(home, system, reg.load_bundle(reg.state("synth").production, system))
    records = []
    try:
        for day in range(shift_day + within + 1):
            rt.apply(reg.deployment(system))
            synth.run_day(rt)
            clock.set_ns(START + (day + 1) * DAY)
            records.append(cycle.run_once())
    finally:
        rt.telemetry.close()
    trained = [r for r in records if r["steps"].get("train", {}).get("status") == "done"]
    before = [r for r in trained if r["now_ns"] <= START + shift_day * DAY]
    assert before and before[0]["steps"]["plan"]["result"]["why"] == "no candidate was trained yet"
    assert len(before) == 1  # retrain_every is 30 days: nothing else was due before the shift
    after = records[shift_day:]
    drift = [a for r in after for a in r["alerts"] if a["kind"] == "feature_drift"]
    assert "z" in {a["subject"] for a in drift} and {a["action"] for a in drift} == {"retrain"}
    assert records.index(next(r for r in after if any(a["kind"] == "feature_drift" for a in r["alerts"]))) <= shift_day + within
    early = [r for r in trained if r["now_ns"] > START + shift_day * DAY]
    assert early, [(r["outcome"], r["reason"]) for r in after]
    why = early[0]["steps"]["plan"]["result"]["why"]
    assert why.startswith("alert(s) say retrain") and "feature 'z' drifted" in why
    assert records.index(early[0]) <= shift_day + within
    # the counts reconcile: every decision made is in telemetry, and the goal series counted them
    store = compacted(home)
    import pyarrow.parquet as pq

    n = sum(pq.read_metadata(f).num_rows for f in store.decision_files())
    assert n == sum(c["decisions"] for c in synth.counts)

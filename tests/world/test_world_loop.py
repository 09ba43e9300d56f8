"""A small world through the real loop: Runtime.decide_batch with Telemetry on simulated time,
outcomes delivered when due, then loop.build_dataset and creation.train — counts reconcile, the
selective labels hold, the same seed gives the same run, and no ground truth ever reaches a file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle, DecisionIds, ManualClock, Runtime, SpecError
from closedloop.datasets import build_dataset
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.training import train
from closedloop.world import PhishingWorld, WorldConfig, deliver_until, run_day, run_days

DAYS = 4
#: what the world knows and the loop must never see: truth columns and world-internal names
TRUTH_MARKERS = (
    b"is_phish", b"campaign_id", b"abusive", b"legit_kind", b"unblock", b"smear", b"victim",
    b"lookalike", b"throwaway", b"free_hosted", b"platform_abuse", b"ip_host", b"login_service",
    b"free_personal", b"sso_portal",
)
TRUTH_COLUMNS = {"known", "is_phish", "campaign_id", "generation", "template", "brand", "legit_kind", "abusive_source"}


def simulate(home: Path, phishing, seed: int = 5):
    from examples.phishing.heuristic import heuristic_intelligence

    cfg = WorldConfig.load(overrides={"world": {"visits_per_day": 3000}, "users": {"count": 600}})
    world = PhishingWorld(cfg, seed=seed)
    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6})
    clock = ManualClock(world.day_start_ns(0))
    with Telemetry(SegmentLog(home), system=phishing, clock=clock.now_ns) as tel:
        rt = Runtime(phishing, bundle, clock=clock, ids=DecisionIds(seed), telemetry=tel)
        runs = run_days(world, rt, tel, clock, DAYS)
        late = deliver_until(world, tel, clock, world.day_start_ns(DAYS + 8))
        stats = tel.stats()
    return world, runs, late, stats


@pytest.fixture(scope="module")
def sim(tmp_path_factory, phishing):
    home = tmp_path_factory.mktemp("world-home")
    world, runs, late, stats = simulate(home, phishing)
    store = TelemetryStore(home)
    store.compact()
    return home, world, runs, late, stats, store


def test_counts_reconcile_from_world_to_telemetry_to_dataset(sim, phishing):
    home, world, runs, late, stats, store = sim
    decisions = store.read("decisions")
    outcomes = store.read("outcomes")
    assert [r.day for r in runs] == list(range(DAYS))
    assert sum(r.visits for r in runs) == sum(r.decisions for r in runs) == decisions.num_rows == stats["logged"]
    assert all(r.visits == r.measure["decided"] for r in runs)
    delivered = sum(r.outcomes_delivered for r in runs) + late
    assert not any(r.outcomes_rejected for r in runs)
    assert delivered == outcomes.num_rows == stats["outcomes"] and stats["unlogged_errors"] == 0
    assert world.pending_outcomes == 0 or world.queue.peek()["deliver_ns"].to_numpy().min() > world.day_start_ns(DAYS + 8)
    # records are stamped in simulated time: each hour's records when the hour ends
    ts = decisions["timestamp_ns"].to_numpy()
    ingest = decisions["ingest_ns"].to_numpy()
    assert np.all(ingest > ts) and np.all(ingest - ts <= 3600 * 10**9)
    assert np.all(outcomes["ingest_ns"].to_numpy() >= outcomes["event_ns"].to_numpy())
    # the dataset sees every delivered outcome, each exactly once in its counts
    ds = build_dataset(
        phishing, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
        since_ns=world.day_start_ns(0), until_ns=world.day_start_ns(DAYS), cutoff_ns=world.day_start_ns(DAYS + 8),
        out=home / "datasets" / "d1",
    )
    c = ds.counts
    assert c["decisions"]["in_range"] == c["decisions"]["rows"] == decisions.num_rows and c["decisions"]["open"] == 0
    o = c["outcomes"]
    assert o["read"] == delivered and o["duplicates"] == 0 and o["unknown_id"] == 0 and o["unlinked"] == 0
    assert o["matched"] + o["other_kind"] + o["after_window"] == delivered
    table = pq.read_table(ds.data_path)
    assert table.num_rows == decisions.num_rows
    labels = table["label"].to_pylist()
    assert labels.count("phish") > 0 and labels.count("legit") > 0


def test_selective_labels_hold_in_telemetry(sim):
    home, world, runs, late, stats, store = sim
    dec = store.read("decisions")
    out = store.read("outcomes")
    action = dict(zip(dec["decision_id"].to_pylist(), dec["action"].to_pylist(), strict=True))
    t = world.truth(out["decision_id"])
    kinds = np.asarray(out["kind"].to_pylist(), dtype=object)
    acts = np.array([action[d] for d in out["decision_id"].to_pylist()], dtype=object)
    honest = ~np.asarray(t["abusive_source"])
    phish = np.asarray(t["is_phish"])
    # a blocked page yields no user outcome: honest users' blocked phishing pages only get analyst labels
    assert set(kinds[honest & phish & (acts == "block")]) <= {"analyst_label"}
    # choices come only from warnings, false-block reports only from blocks
    assert set(acts[np.isin(kinds, ["chose:continue", "chose:go_back"])]) == {"warn"}
    assert set(acts[honest & (kinds == "reported_false_block")]) <= {"block"}
    # allowed phishing is reported by some victims, later
    assert ((kinds == "reported_phish") & phish & honest & (acts == "allow")).sum() > 0
    # the truth agrees with what the runtime did (the world was handed the real decisions)
    t2 = world.truth(dec["decision_id"])
    assert t2["action"].to_pylist() == dec["action"].to_pylist() and all(t2["known"].to_pylist())


def test_no_ground_truth_reaches_telemetry_datasets_or_bundles(sim, phishing):
    home, world, runs, late, stats, store = sim
    # a dataset and a model trained on it, saved: the loop's whole output
    ds_dir = home / "datasets" / "scan"
    build_dataset(
        phishing, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
        since_ns=world.day_start_ns(0), until_ns=world.day_start_ns(DAYS), cutoff_ns=world.day_start_ns(DAYS + 8),
        out=ds_dir,
    )
    run = train(phishing, ds_dir, model="logistic")
    run.bundle.save(home / "bundles" / run.bundle.version)
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "manifest.json" for p in files)
    assert any("segments" in p.parts for p in files) or any("telemetry" in p.parts for p in files)
    fields = {f.name for f in phishing.schema.fields}
    for p in files:
        data = p.read_bytes()
        for marker in TRUTH_MARKERS:
            assert marker not in data, (p, marker)
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            assert not TRUTH_COLUMNS & set(t.column_names), p
            if "context_json" in t.column_names:
                for c in t["context_json"].drop_null().to_pylist()[:500]:
                    assert set(json.loads(c)) <= fields
            if "source" in t.column_names:
                assert all(re.fullmatch(r"client|user:u\d{7}|analyst:\d+", s) for s in t["source"].to_pylist())
    # abusive reporters' reports are in telemetry, indistinguishable by their source format
    out = store.read("outcomes")
    abusive = np.asarray(world.truth(out["decision_id"])["abusive_source"]) & pc.starts_with(
        out["source"], "user:").to_numpy(zero_copy_only=False)
    assert abusive.sum() > 0


def test_the_same_seed_gives_the_same_run(sim, tmp_path, phishing):
    home, world, runs, late, stats, store = sim
    world2, runs2, late2, _ = simulate(tmp_path / "again", phishing)
    assert [r.measure for r in runs] == [r.measure for r in runs2] and late == late2
    s2 = TelemetryStore(tmp_path / "again")
    a, b = store.read("decisions"), s2.read("decisions")
    cols = ["decision_id", "unit", "timestamp_ns", "ingest_ns", "context_json", "action", "scores"]
    assert a.select(cols).sort_by("decision_id").equals(b.select(cols).sort_by("decision_id"))
    oc = ["outcome_id", "decision_id", "kind", "value", "event_ns", "ingest_ns", "source"]
    assert store.read("outcomes").select(oc).sort_by("outcome_id").equals(s2.read("outcomes").select(oc).sort_by("outcome_id"))


def test_the_driver_refuses_wall_clock_telemetry_or_another_clock(tmp_path, phishing):
    from examples.phishing.heuristic import heuristic_intelligence

    cfg = WorldConfig.load(overrides={"world": {"visits_per_day": 3000}, "users": {"count": 600}})
    world = PhishingWorld(cfg, seed=1)
    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6})
    clock = ManualClock(world.day_start_ns(0))
    with Telemetry(SegmentLog(tmp_path), system=phishing) as tel:  # wall-clock ingest times
        rt = Runtime(phishing, bundle, clock=clock, telemetry=tel)
        with pytest.raises(SpecError, match=r"Telemetry\(\.\.\., clock=clock.now_ns\)"):
            run_day(world, rt, tel, clock)
    with Telemetry(SegmentLog(tmp_path / "b"), system=phishing, clock=clock.now_ns) as tel:
        with pytest.raises(SpecError, match="same ManualClock"):
            run_day(world, Runtime(phishing, bundle, telemetry=tel), tel, clock)
        with pytest.raises(SpecError, match="must log its decisions"):
            run_day(world, Runtime(phishing, bundle, clock=clock), tel, clock)


def test_after_slice_runs_at_each_slice_end_with_the_clock_there(tmp_path, phishing):
    from examples.phishing.heuristic import heuristic_intelligence

    cfg = WorldConfig.load(overrides={"world": {"visits_per_day": 2000}, "users": {"count": 500}})
    world = PhishingWorld(cfg, seed=2)
    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.6})
    clock = ManualClock(world.day_start_ns(0))
    seen = []
    with Telemetry(SegmentLog(tmp_path), system=phishing, clock=clock.now_ns) as tel:
        rt = Runtime(phishing, bundle, clock=clock, telemetry=tel)
        run_day(world, rt, tel, clock, slices=4, after_slice=lambda i, end: seen.append((i, end, clock.now_ns())))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3]
    assert all(end == now for _, end, now in seen)
    assert [end - world.day_start_ns(0) for _, end, _ in seen] == [k * 6 * 3600 * 10**9 for k in (1, 2, 3, 4)]

"""Flights in the runtime: stable unit assignment, decide ≡ decide_batch per arm, atomic apply,
and the flight recorded in decisions and telemetry."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from test_runtime import heuristic_bundle, logistic_bundle  # tests/runtime/test_runtime.py

from closedloop import Runtime, SpecError
from closedloop.experience.guardrails import BlockList
from closedloop.runtime.deployment import (
    Deployment,
    Flight,
    assign_flight,
    expected_shares,
    flight_bucket,
)
from closedloop.telemetry import MemorySink, Telemetry


def contexts(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append({
            "user_id": f"user-{int(rng.integers(0, n // 3 + 1))}",
            "url": "http://10.0.0.1/login" if rng.random() < 0.3 else f"https://site{i % 50}.example/a",
            "domain": "evil.example" if rng.random() < 0.1 else f"site{i % 50}.example",
            "page_brand": "PayPal" if rng.random() < 0.4 else "",
            "domain_age_days": float(rng.integers(0, 4000)),
            "has_password_field": bool(rng.random() < 0.5),
        })
    return out


def test_assignment_is_stable_across_processes_and_within_a_binomial_bound():
    units = [f"u{i}" for i in range(100_000)]
    share = 0.2
    inside = sum(flight_bucket("b-test", u) < share for u in units)
    sd = math.sqrt(len(units) * share * (1 - share))
    assert abs(inside - share * len(units)) < 4.5 * sd
    # Another process (another hash seed) puts the same units in the same arm.
    code = "from closedloop.runtime.deployment import flight_bucket; print([flight_bucket('b-test', f'u{i}') for i in range(20)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert eval(out) == [flight_bucket("b-test", f"u{i}") for i in range(20)]  # noqa: S307 - our own output
    # Different flight names split units independently.
    a = np.array([flight_bucket("one", u) < 0.5 for u in units[:20_000]])
    b = np.array([flight_bucket("two", u) < 0.5 for u in units[:20_000]])
    assert abs((a & b).mean() - 0.25) < 0.02


def test_expected_shares_follow_the_order_of_flights(phishing):
    b = heuristic_bundle(phishing)
    fl = (Flight("a", b, 0.2), Flight("b", b, 0.5))
    assert expected_shares(fl) == pytest.approx({"a": 0.2, "b": 0.4, None: 0.4})
    got = [assign_flight(fl, f"u{i}") for i in range(40_000)]
    assert np.mean(np.array(got) == 1) == pytest.approx(0.4, abs=0.015)


def test_flight_values_are_validated(phishing):
    b = heuristic_bundle(phishing)
    with pytest.raises(SpecError, match="'share' parameter of Flight must be a number in \\(0, 1\\]. Got 1.5"):
        Flight("x", b, 1.5)
    with pytest.raises(SpecError, match="'name' parameter of Flight"):
        Flight("Bad Name", b, 0.1)
    with pytest.raises(SpecError, match="distinct names"):
        Deployment(b, flights=(Flight("x", b, 0.1), Flight("x", b, 0.2)))


def test_decide_equals_decide_batch_with_flights_and_records_the_arm(phishing):
    prod = heuristic_bundle(phishing)
    # The flight's bundle carries a guardrail of its own: reasons and guardrail names merge.
    cand = logistic_bundle(phishing, guardrails=[BlockList("hotfix", "domain", ["evil.example"], action="block")])
    shadow = logistic_bundle(phishing)
    rt = Runtime(phishing, prod, flights=[Flight("cand", cand, 0.3)], shadows=[shadow])
    cs = contexts(600)
    ids = [f"{i:032x}" for i in range(len(cs))]
    ts = [1_700_000_000_000_000_000 + i for i in range(len(cs))]
    singles = [rt.decide(c, decision_id=i, timestamp_ns=t) for c, i, t in zip(cs, ids, ts, strict=True)]
    rt2 = Runtime(phishing, prod, flights=[Flight("cand", cand, 0.3)], shadows=[shadow])
    batch = rt2.decide_batch({k: [c.get(k) for c in cs] for k in cs[0]}, decision_ids=ids, timestamps_ns=ts)
    assert [d.to_dict() for d in singles] == batch.to_pylist()
    flights = [d.flight for d in singles]
    assert {None, "cand"} == set(flights)
    assert any(d.guardrail == "hotfix" for d in singles) and any(d.shadows for d in singles)
    for d in singles:
        want = "cand" if flight_bucket("cand", d.unit) < 0.3 else None
        assert d.flight == want
        assert d.bundle_version == (cand.version if want else prod.version)
    table = batch.to_arrow()
    assert table["flight"].to_pylist() == flights
    assert table["bundle_version"].to_pylist() == [d.bundle_version for d in singles]


def test_apply_swaps_everything_at_once_and_reuses_bound_plans(phishing):
    prod, cand = heuristic_bundle(phishing), logistic_bundle(phishing)
    rt = Runtime(phishing, prod)
    plan = rt._serving.plan
    rt.apply(Deployment(prod, flights=(Flight("cand", cand, 1.0),), revision=7))
    assert rt._serving.plan is plan  # production unchanged: its bound plan is reused
    assert rt.deployment.revision == 7 and rt.flights[0].name == "cand"
    d = rt.decide(contexts(3)[0])
    assert d.flight == "cand" and d.bundle_version == cand.version
    rt.apply(Deployment(prod, killswitch=True, flights=(Flight("cand", cand, 1.0),)))
    k = rt.decide(contexts(3)[0])
    assert k.killswitch and k.flight is None and k.bundle_version == prod.version
    rt.set_killswitch(False)
    assert rt.decide(contexts(3)[0]).flight == "cand"
    with pytest.raises(SpecError, match="Runtime.apply needs a closedloop.Deployment"):
        rt.apply(prod)


def test_telemetry_records_flight_and_bundle_per_row(phishing):
    prod, cand = heuristic_bundle(phishing), logistic_bundle(phishing)
    sink = MemorySink()
    tel = Telemetry(sink, system=phishing, flush_interval_ms=10_000)
    rt = Runtime(phishing, prod, flights=[Flight("cand", cand, 0.5)], telemetry=tel)
    cs = contexts(300, seed=3)
    batch = rt.decide_batch(pa.table({k: [c.get(k) for c in cs] for k in cs[0]}))
    single = rt.decide(cs[0])
    tel.flush()
    t = sink.table("decisions")
    assert t.num_rows == 301
    rows = {r["decision_id"]: r for r in t.to_pylist()}
    for d in [*batch, single]:
        assert rows[d.decision_id]["flight"] == d.flight
        assert rows[d.decision_id]["bundle_version"] == d.bundle_version
    tel.close()

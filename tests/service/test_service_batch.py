"""The service's batch path: decoded contexts → ``Schema.columns`` → ``Runtime.decide_batch`` →
``DecisionBatch.decisions()``, logged with ``Telemetry.log_batch``. Each step must give exactly
what one decision per context gives: the same decisions (bitwise scores, flights, guardrails and
frequency caps applied row by row in order) and the same telemetry records."""

from __future__ import annotations

import dataclasses
import re
import struct
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import numpy as np
import pyarrow as pa
import pytest

from closedloop import Bundle, Client, FrequencyCap, LogisticModel, Runtime, System, Thresholds
from closedloop.context.schema import Columns
from closedloop.errors import BatchContextError
from closedloop.runtime.deployment import Deployment, Flight
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.service.sources import StaticSource
from closedloop.settings import Settings
from closedloop.telemetry import MemorySink, Telemetry, TelemetryStore
from support.service import serve_in_thread

KEY = b"k" * 32


def variant(phishing: System, *, cap: bool = True, hashed: bool = False) -> System:
    """The phishing system with a frequency cap on warnings and (optionally) a hashed field."""
    fields = [dataclasses.replace(f, sensitive="hash") if hashed and f.name == "referrer_domain" else f
              for f in phishing.schema.fields]
    exp = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow")
    return System(
        "phishing", context=fields, unit=phishing.unit,
        features={f.name: f.expr for f in phishing.features.features},
        actions=list(phishing.action_specs.values()), experience=exp, labels=phishing.labels,
        guardrails=[FrequencyCap("warn", 2, timedelta(hours=1), fallback="allow")] if cap else [],
    )


def bundle(system: System, seed: int, bias: float) -> Bundle:
    rng = np.random.default_rng(seed)
    w = {n: float(x) for n, x in zip(system.features.names, rng.normal(0, 0.4, len(system.features)), strict=True)}
    return Bundle.build(system, LogisticModel(w, bias, output="phish"))


def contexts(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Parsed-JSON contexts: few users (so caps bite), absent fields (defaults), ints for floats."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c: dict[str, Any] = {
            "user_id": f"user-{int(rng.integers(0, 12))}",
            "url": "http://10.0.0.1/login" if rng.random() < 0.3 else f"https://site{i % 40}.example/a?q=\"{i}\"",
            "domain": f"site{i % 40}.example",
            "domain_age_days": int(rng.integers(0, 4000)) if i % 3 else float(rng.random() * 900),
            "referrer_domain": f"ref{i % 5}.example",
            "has_password_field": bool(rng.random() < 0.5),
            "unknown_key": i,
        }
        if i % 4:
            c["page_brand"] = "PayPal" if rng.random() < 0.5 else "Ünïcödé"
        if i % 5 == 0:
            c["num_links"] = int(rng.integers(0, 100))
        out.append(c)
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` whose labels include ``labels`` (Prometheus text)."""
    pat = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.M)
    want = {f'{k}="{v}"' for k, v in labels.items()}
    return sum(float(m.group(2)) for m in pat.finditer(text) if want <= set((m.group(1) or "").split(",")))


def same_scores(a: dict[str, float], b: dict[str, float]) -> bool:
    return list(a) == list(b) and all(struct.pack("<d", a[k]) == struct.pack("<d", b[k]) for k in a)


# -- Columns of validated contexts ---------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [True, False])
def test_columns_of_validated_contexts_equal_validate_batch(phishing, compiled, monkeypatch):
    import closedloop.context.columns

    if not compiled:  # the pure-Python gather gives the same columns
        monkeypatch.setattr(closedloop.context.columns, "_kernels", None)
    else:
        assert closedloop.context.columns._kernels is not None
    schema = phishing.schema
    cs = contexts(60)
    cs[7]["domain_age_days"] = float("inf")  # nonfinite='default': the slow path puts the default
    structs = [schema.validate(c) for c in cs]
    cols = schema.columns(structs)
    ref = schema.validate_batch({k: [c.get(k) for c in cs] for k in {k for c in cs for k in c} - {"unknown_key"}})
    assert isinstance(cols, Columns) and cols.n == ref.n == 60 and cols.contexts == structs
    assert cols.names() == ref.names() == [f.name for f in schema.fields]
    assert "url" in cols and "nope" not in cols
    for name in ref.names():
        a, b = cols[name], ref[name]
        if isinstance(b, pa.Array):
            assert a.type == b.type and a.equals(b), name
        else:
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert cols.pylist(name) == ref.pylist(name)
    idx = np.array([5, 0, 59, 5])
    part = cols.take(idx)
    assert part.contexts == [structs[i] for i in idx] and part.row(2) == ref.row(59)
    assert np.array_equal(part["domain_age_days"], ref["domain_age_days"][idx])
    # Plain mappings are validated (one by one); a bad one names its row.
    assert schema.columns(cs[:3]).contexts == structs[:3]
    with pytest.raises(BatchContextError, match="row 1") as e:
        schema.columns([cs[0], {**cs[1], "domain_age_days": -1}])
    assert e.value.errors[0].field == "domain_age_days"


# -- the runtime: decide_batch of Columns ≡ decide per context --------------------------------------------
@pytest.mark.parametrize("hashed", [False, True])
def test_decide_batch_of_columns_equals_decide_per_context(phishing, hashed):
    system = variant(phishing, hashed=hashed)
    prod, cand, shadow = bundle(system, 1, 0.9), bundle(system, 2, 0.5), bundle(system, 3, 0.0)
    cs = contexts(300, seed=1)
    structs = [system.schema.validate(c) for c in cs]
    ids = [f"{i:032x}" for i in range(len(cs))]
    ts = [1_000_000 + 1_000 * i for i in range(len(cs))]
    sinks = MemorySink(), MemorySink()
    tels = [Telemetry(s, system=system, key=KEY, flush_interval_ms=10_000) for s in sinks]
    rts = [Runtime(system, prod, shadows=[shadow], flights=[Flight("cand", cand, 0.4)], telemetry=t) for t in tels]
    singles = [rts[0].decide(c, decision_id=i, timestamp_ns=t) for c, i, t in zip(cs, ids, ts, strict=True)]
    db = rts[1].decide_batch(system.schema.columns(structs), decision_ids=ids, timestamps_ns=ts)
    many = db.decisions()
    assert many == [db[i] for i in range(len(db))] == list(db)
    tally: dict[tuple[str, str, str | None], int] = {}
    for d in many:
        tally[(d.action, d.bundle_version, d.flight)] = tally.get((d.action, d.bundle_version, d.flight), 0) + 1
    assert db.counts() == tally and len({k[2] for k in tally}) == 2
    assert len(many) == len(singles)
    for a, b in zip(singles, many, strict=True):
        assert (a.decision_id, a.unit, a.action, a.why, a.guardrail, a.flight, a.bundle_version, a.propensity) == (
            b.decision_id, b.unit, b.action, b.why, b.guardrail, b.flight, b.bundle_version, b.propensity)
        assert same_scores(a.scores, b.scores)
        assert [(s.bundle_version, s.action) for s in a.shadows] == [(s.bundle_version, s.action) for s in b.shadows]
        assert all(same_scores(x.scores, y.scores) for x, y in zip(a.shadows, b.shadows, strict=True))
    # The cap and the flight both bit, row by row in order.
    assert {d.guardrail for d in singles} >= {None, "cap_warn"}
    assert {d.flight for d in singles} == {None, "cand"}
    for t in tels:
        t.flush()
        t.close()
    a, b = (s.table("decisions").drop(["ingest_ns", "writer"]) for s in sinks)
    assert a.num_rows == b.num_rows == len(cs)
    assert a.to_pylist() == b.to_pylist()
    ctx = msgspec.json.decode(b.column("context_json")[0].as_py())
    assert "unknown_key" not in ctx and ctx["num_forms"] == 0  # validated: defaults in, unknown keys out
    if hashed:
        assert all(r["referrer_domain"] != "ref0.example" for r in map(msgspec.json.decode, b.column("context_json").to_pylist()))


def test_decisions_of_a_killswitched_batch_equal_row_by_row(phishing):
    system = variant(phishing, cap=False)
    rt = Runtime(system, bundle(system, 1, 0.0), killswitch=True)
    db = rt.decide_batch(system.schema.columns(contexts(20)))
    assert db.decisions() == [db[i] for i in range(20)] and all(d.killswitch for d in db.decisions())
    assert db.counts() == {(system.default_action, db.bundle_version, None): 20}
    assert rt.decide_batch(system.schema.columns([])).decisions() == []


# -- the service ---------------------------------------------------------------------------------------
def _server(phishing: System, tmp, name: str):
    system = variant(phishing)
    prod, cand = bundle(system, 1, 0.9), bundle(system, 2, 0.5)
    home = tmp / name
    token = Credentials(home / "credentials.json").add("app", ["decide"])
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", bundle="unused")
    src = StaticSource(Deployment(prod, flights=(Flight("cand", cand, 0.4),)))
    return serve_in_thread(create_app(st, system=system, source=src)), home, token


def test_a_service_batch_decides_and_logs_as_one_decision_per_context(phishing, tmp_path):
    cs = contexts(120, seed=2)
    bad = {2: {**cs[2], "domain_age_days": -3}, 50: "not an object", 51: {**cs[51], "url": 42}}
    batch = [bad.get(i, c) for i, c in enumerate(cs)]
    good = [i for i in range(len(cs)) if i not in bad]
    one_ctx, one_home, one_token = _server(phishing, tmp_path, "one")
    many_ctx, many_home, many_token = _server(phishing, tmp_path, "many")
    with one_ctx as one, many_ctx as many:
        with Client(one, one_token) as cl:
            singles = [cl.decide(cs[i]) for i in good]
        with Client(many, many_token) as cl:
            res = cl.decide_batch(batch)
        text = httpx.get(many + "/metrics").text
    assert sorted(e["index"] for e in res.errors) == sorted(bad)
    assert {e["index"]: e["field"] for e in res.errors}[2] == "domain_age_days"
    got = [res.decisions[i] for i in good]
    assert all(d is not None for d in got) and all(res.decisions[i] is None for i in bad)
    for a, b in zip(singles, got, strict=True):
        assert (a.unit, a.action, a.why, a.guardrail, a.flight, a.bundle_version, a.propensity) == (
            b.unit, b.action, b.why, b.guardrail, b.flight, b.bundle_version, b.propensity)
        assert same_scores(a.scores, b.scores)
    assert {d.guardrail for d in got} >= {None, "cap_warn"} and {d.flight for d in got} == {None, "cand"}
    for action in ("allow", "warn", "block"):
        for flight in ("", "cand"):
            n = sum(d.action == action and (d.flight or "") == flight for d in got)
            assert metric(text, "closedloop_decisions_total", action=action, flight=flight) == n
    assert metric(text, "closedloop_invalid_contexts_total") == len(bad)
    keep = ["unit", "bundle_version", "flight", "context_json", "features", "score_names", "scores", "action",
            "propensity", "sample_prob", "why", "guardrail", "shadows_json", "killswitch"]
    rows = []
    for home, ds in ((one_home, singles), (many_home, got)):
        t = TelemetryStore(home).read("decisions")
        by_id = {r["decision_id"]: r for r in t.select(["decision_id", *keep]).to_pylist()}
        assert len(by_id) == len(good)
        rows.append([{k: by_id[d.decision_id][k] for k in keep} for d in ds])
    assert rows[0] == rows[1]


def test_a_serving_worker_keeps_freed_memory_on_glibc():
    """The worker sets glibc's mmap and trim thresholds (a batch's megabytes are reused, not
    page-faulted in again each request); elsewhere it says it did not."""
    import platform

    from closedloop.service.app import _keep_freed_memory

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert _keep_freed_memory() is glibc

"""Telemetry's encoding on its own: known buffer items → record batches, checked column by column
(no sink, no committer thread)."""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa

from closedloop import Bundle, F, Float, Int, LogisticModel, Runtime, Str, System, Thresholds
from closedloop.runtime.decision import Decision
from closedloop.telemetry import DECISION_SCHEMA, OUTCOME_SCHEMA, Sanitizer, to_decision_schema
from closedloop.telemetry.compact import CONTEXT
from closedloop.telemetry.encoding import BATCH, DECISION, OUTCOME, Encoder, item_count

KEY = b"k" * 32
T0 = 20_718 * 86_400 * 10**9
NOW = T0 + 10**9


def system(sensitive: bool = False) -> System:
    ctx = [Str("user", sensitive="hash" if sensitive else None), Str("email", default="", sensitive="drop" if sensitive else None),
           Float("x", default=0.0), Int("n", default=3)]
    return System("enc", context=ctx, unit="user", features={"f0": F.col("x"), "f1": F.col("n") * 1.0},
                  actions=["allow", "block"], experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"))


def encoder(sys_: System, compact: bool = True, sensitive: bool = False) -> Encoder:
    return Encoder(sys_, Sanitizer(sys_.schema, sys_.unit, KEY if sensitive else None), "w1", compact)


def test_single_decisions_become_decision_schema_rows_column_by_column():
    sys_ = system()
    enc = encoder(sys_)
    c0 = sys_.schema.validate({"user": "u1", "x": 0.5})
    d0 = Decision("a" * 32, "enc", "u1", T0, "v1", {"p": 0.25}, "allow", 1.0, "p < 0.5")
    d1 = Decision("b" * 32, "enc", "u2", T0 + 1, "v1", {"p": 0.75}, "block", 0.9, "p ≥ 0.5", guardrail="cap", flight="cand")
    items = [(10, DECISION, d0, c0, (0.5, 3.0), 1.0), (11, DECISION, d1, {"user": "u2", "x": 2}, None, 0.5)]
    (batch,) = enc.decision_tables(items, NOW)
    assert batch.schema.equals(DECISION_SCHEMA)
    col = lambda name: batch.column(name).to_pylist()  # noqa: E731
    assert col("seq") == [10, 11]
    assert col("writer") == ["w1", "w1"] and col("system") == ["enc", "enc"]
    assert col("decision_id") == ["a" * 32, "b" * 32] and col("unit") == ["u1", "u2"]
    assert col("timestamp_ns") == [T0, T0 + 1] and col("ingest_ns") == [NOW, NOW]
    assert col("bundle_version") == ["v1", "v1"] and col("flight") == [None, "cand"]
    assert col("schema_version") == [sys_.schema.version] * 2 and col("feature_fingerprint") == [sys_.features.fingerprint] * 2
    assert col("context_json") == [msgspec.json.encode(c0).decode(), '{"user":"u2","x":2}']
    assert col("features") == [[0.5, 3.0], None]
    assert col("score_names") == [["p"], ["p"]] and col("scores") == [[0.25], [0.75]]
    assert col("action") == ["allow", "block"] and col("propensity") == [1.0, 0.9]
    assert col("sample_prob") == [1.0, 0.5] and col("why") == ["p < 0.5", "p ≥ 0.5"]
    assert col("guardrail") == [None, "cap"] and col("shadows_json") == [None, None]
    assert col("killswitch") == [False, False]
    assert [item_count(it) for it in items] == [1, 1]


def test_a_decision_batch_becomes_the_compact_form_and_reads_back_as_its_rows():
    sys_ = system(sensitive=True)
    bundle = Bundle.build(sys_, LogisticModel({"f0": 1.0, "f1": 0.1}, -0.2, output="p"))
    rows = [{"user": f"u{i}", "email": f"e{i}@x.org", "x": float(i) - 1.5, "n": i} for i in range(4)]
    good = [sys_.schema.validate(r) for r in rows]
    cols = sys_.schema.columns(good)
    db = Runtime(sys_, bundle).decide_batch(cols, decision_ids=[f"{i:032x}" for i in range(4)], timestamps_ns=[T0 + i for i in range(4)])
    X = sys_.features.batch(cols)
    item = (20, BATCH, db, cols, X, np.array([0, 2, 3]), np.array([0.5, 0.5, 1.0]))  # row 1 sampled out
    assert item_count(item) == 3
    enc = encoder(sys_, sensitive=True)
    (raw,) = enc.decision_tables([item], NOW)
    assert CONTEXT in raw.schema.names and isinstance(raw.schema.field("writer").type, pa.RunEndEncodedType)
    ctx = raw.column(CONTEXT)
    assert [f.name for f in ctx.type] == ["user", "x", "n"]  # the dropped field is not written
    assert ctx.field("user").to_pylist() == [enc.sanitizer.hash(f"u{i}") for i in (0, 2, 3)]
    assert ctx.field("x").to_pylist() == [-1.5, 0.5, 1.5] and ctx.field("n").to_pylist() == [0, 2, 3]
    t = to_decision_schema(raw)
    col = lambda name: t.column(name).to_pylist()  # noqa: E731
    assert col("seq") == [20, 21, 22] and col("writer") == ["w1"] * 3 and col("ingest_ns") == [NOW] * 3
    assert col("decision_id") == [f"{i:032x}" for i in (0, 2, 3)]
    assert col("unit") == [enc.sanitizer.unit(f"u{i}") for i in (0, 2, 3)]
    assert col("timestamp_ns") == [T0, T0 + 2, T0 + 3]
    assert col("features") == np.asarray(X)[[0, 2, 3]].tolist()
    assert col("score_names") == [["p"]] * 3 and col("scores") == db.score_matrix[[0, 2, 3]].tolist()
    assert col("action") == [db[i].action for i in (0, 2, 3)] and col("why") == [db[i].why for i in (0, 2, 3)]
    assert col("sample_prob") == [0.5, 0.5, 1.0] and col("flight") == [None] * 3 and col("killswitch") == [False] * 3
    assert col("context_json")[0] == msgspec.json.encode({"user": enc.sanitizer.hash("u0"), "x": -1.5, "n": 0}).decode()
    # compact=False: the same rows, written in DECISION_SCHEMA as they are
    (plain,) = encoder(sys_, compact=False, sensitive=True).decision_tables([item], NOW)
    assert plain.schema.equals(DECISION_SCHEMA) and plain.to_pylist() == t.to_pylist()


def test_outcomes_become_outcome_schema_rows():
    enc = encoder(system())
    items = [(5, OUTCOME, "o" * 32, "a" * 32, None, "bad", 1.0, T0, "src", "item-3"),
             (6, OUTCOME, "p" * 32, None, "u1", "good", 2.5, T0 + 9, "s2", None)]
    batch = enc.outcome_batch(items, NOW)
    assert batch.schema.equals(OUTCOME_SCHEMA)
    assert batch.to_pylist() == [
        dict(zip(OUTCOME_SCHEMA.names, row, strict=True))
        for row in [(5, "w1", "o" * 32, "a" * 32, "enc", None, "bad", 1.0, T0, NOW, "src", "item-3"),
                    (6, "w1", "p" * 32, None, "enc", "u1", "good", 2.5, T0 + 9, NOW, "s2", None)]
    ]

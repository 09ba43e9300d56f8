"""Ranking decisions through telemetry: one decision row each (slot 1 as the action), the ranking
in the nullable ranking columns; outcomes linked to a slot; records written before those columns
existed still read."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from examples.feed.data import columnar, generate
from examples.feed.system import feed, model

from closedloop import Bundle, Runtime
from closedloop.errors import OutcomeError, SpecError
from closedloop.telemetry import DECISION_SCHEMA, OUTCOME_SCHEMA, SegmentLog, Telemetry, TelemetryStore, to_decision_schema
from closedloop.telemetry.records import RANKING_COLUMNS


def _run(home, candidates="full"):
    tel = Telemetry(SegmentLog(home), system=feed, candidates=candidates)
    rt = Runtime(feed, Bundle.build(feed, model), telemetry=tel)
    ctxs = generate(7, [6, 3, 0, 8, 5, 2, 4], seed=3)
    singles = [rt.decide(c, decision_id=f"d{i}", timestamp_ns=10**18 + i) for i, c in enumerate(ctxs[:3])]
    req, cand = columnar(ctxs[3:])
    batch = rt.decide_batch(req, candidates=cand, decision_ids=[f"d{i}" for i in range(3, 7)],
                            timestamps_ns=[10**18 + i for i in range(3, 7)])
    return tel, ctxs, [*singles, *batch]


def test_ranking_decisions_are_logged_single_and_batch(tmp_path):
    tel, ctxs, decided = _run(tmp_path)
    tel.close()
    rows = {r["decision_id"]: r for r in TelemetryStore(tmp_path).read("decisions").to_pylist()}
    assert sorted(rows) == [f"d{i}" for i in range(7)]
    for ctx, d in zip(ctxs, decided, strict=True):
        r = rows[d.decision_id]
        assert r["slate"] == d.ranking and r["slot_propensities"] == d.slot_propensities
        assert r["candidate_ids"] == d.candidates and r["candidate_scores"] == d.scores
        assert r["action"] == (d.ranking[0] if d.ranking else "")
        assert r["propensity"] == (d.slot_propensities[0] if d.ranking else 1.0)
        assert r["bundle_version"] == d.bundle_version and r["why"] == d.why and r["sample_prob"] == 1.0
        assert json.loads(r["context_json"]) == {k: v for k, v in ctx.items() if k != "candidates"}
        logged = json.loads(r["candidates_json"])
        assert [c["item_id"] for c in logged] == d.candidates
        assert logged == [{"is_new": False, **c} for c in ctx["candidates"]]  # validated: defaults filled
        assert r["candidates_digest"] == hashlib.sha256(r["candidates_json"].encode()).hexdigest()
        assert r["scores"] is None and r["features"] is None and r["flight"] is None


def test_digest_mode_keeps_ids_and_digest_only(tmp_path):
    tel, _, _ = _run(tmp_path / "a", "digest")
    tel.close()
    tel2, _, _ = _run(tmp_path / "b", "full")
    tel2.close()
    a = {r["decision_id"]: r for r in TelemetryStore(tmp_path / "a").read("decisions").to_pylist()}
    b = {r["decision_id"]: r for r in TelemetryStore(tmp_path / "b").read("decisions").to_pylist()}
    assert all(r["candidates_json"] is None for r in a.values())
    assert {k: r["candidates_digest"] for k, r in a.items()} == {k: r["candidates_digest"] for k, r in b.items()}
    assert {k: r["candidate_ids"] for k, r in a.items()} == {k: r["candidate_ids"] for k, r in b.items()}
    with pytest.raises(SpecError, match="'candidates' must be one of"):
        Telemetry(SegmentLog(tmp_path / "c"), system=feed, candidates="some")


def test_outcomes_name_their_slot_and_bad_slots_are_refused(tmp_path):
    tel, _, decided = _run(tmp_path)
    d = decided[0]
    tel.log_outcome(d.decision_id, kind="click", event_ns=10**18 + 5, source="app", slot=2)
    tel.log_outcome(decided[4].decision_id, kind="click", event_ns=10**18 + 5, source="app", candidate=decided[4].ranking[-1])
    with pytest.raises(OutcomeError, match=r"'slot' must be an integer in 1\.\.5 .* Got 6 instead"):
        tel.log_outcome(d.decision_id, kind="click", event_ns=10**18 + 5, source="app", slot=6)
    with pytest.raises(OutcomeError, match=r"'candidate' must be one of the candidates .* Got 'nope' instead"):
        tel.log_outcome(d.decision_id, kind="click", event_ns=10**18 + 5, source="app", candidate="nope")
    with pytest.raises(OutcomeError, match="'candidate' must be the candidate in slot 1"):
        tel.log_outcome(d.decision_id, kind="click", event_ns=10**18 + 5, source="app", candidate=d.ranking[1], slot=1)
    with pytest.raises(OutcomeError, match="'slot' must be given for a ranking decision this telemetry logged"):
        tel.log_outcome("other", kind="click", event_ns=10**18 + 5, source="app", slot=1)
    # a decision this writer does not know: the candidate is written, the dataset build judges it
    tel.log_outcome("other", kind="click", event_ns=10**18 + 5, source="app", candidate="x")
    tel.close()
    got = TelemetryStore(tmp_path).read("outcomes").to_pylist()
    assert [(o["decision_id"], o["candidate_id"]) for o in got] == [
        (d.decision_id, d.ranking[1]), (decided[4].decision_id, decided[4].ranking[-1]), ("other", "x")]


def test_records_of_schema_version_1_read_with_the_new_columns_null(tmp_path):
    n_old = len(DECISION_SCHEMA) - len(RANKING_COLUMNS)
    old_schema = pa.schema(list(DECISION_SCHEMA)[:n_old])
    row = {"seq": 0, "writer": "w", "decision_id": "d", "system": "feed", "unit": "u", "timestamp_ns": 1,
           "ingest_ns": 2, "bundle_version": "v", "schema_version": "1", "feature_fingerprint": "f",
           "action": "a", "propensity": 1.0, "sample_prob": 1.0, "why": "w", "killswitch": False}
    old = pa.RecordBatch.from_pylist([row], schema=old_schema)
    new = to_decision_schema(old)
    assert new.schema.equals(DECISION_SCHEMA) and all(new.column(c).null_count == 1 for c in RANKING_COLUMNS)
    old_out = pa.RecordBatch.from_pylist(
        [{"seq": 0, "writer": "w", "outcome_id": "o", "decision_id": "d", "system": "feed", "unit": None, "kind": "click",
          "value": 1.0, "event_ns": 3, "ingest_ns": 4, "source": "s"}], schema=pa.schema(list(OUTCOME_SCHEMA)[:-1]))
    assert to_decision_schema(old_out).to_pylist()[0]["candidate_id"] is None
    # a compacted file of the old schema reads through the store
    d = tmp_path / "telemetry" / "parquet" / "decisions" / "day=1970-01-01"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([old]), d / "part-00000000000000000002-abc.parquet")
    t = TelemetryStore(tmp_path).read("decisions")
    assert t.num_rows == 1 and t.schema.equals(DECISION_SCHEMA) and t["slate"].to_pylist() == [None]

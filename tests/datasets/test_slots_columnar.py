"""The columnar slot rows and candidate sets of build_reward_dataset are row for row what the
per-decision Python loop they replaced gave on a seeded log: rows, order, rewards, propensities,
weights, fields, features, manifest counts — per slot and per decision, with and without a default,
with the candidates' fields or their digest only. The loop is kept here as the reference."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from examples.feed import system as feed_module
from examples.feed.data import columnar, generate

from closedloop import Bundle, Reward, RewardPolicy, Runtime, System
from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, _joined, candidate_sets_table
from closedloop.datasets.importer import _json_rows, context_columns
from closedloop.datasets.slots import build_reward_dataset, first_by, link_outcomes, read_records
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

T0 = 1_700_000_000 * 10**9
S = 10**9
CUTOFF = T0 + 10**5 * S


def reference_rows(dec: pa.Table, policy: Any, linked: dict[Any, Any], system: System, *, full: bool) -> tuple[pa.Table, Counter[str]]:
    """The slot rows as the per-decision loop built them (the reference)."""
    cnames = [f.name for f in system.candidate_schema.fields] if full else []  # type: ignore[union-attr]
    rnames = [f.name for f in system.schema.fields]
    cols: dict[str, list[Any]] = {k: [] for k in ("decision_id", "position", "unit", "timestamp_ns", "action", "reward",
                                                  "propensity", "sample_prob", "candidates_digest")}
    fields: dict[str, list[Any]] = {n: [] for n in [*rnames, *cnames]}
    counts: Counter[str] = Counter()
    for d in dec.select(["decision_id", "unit", "timestamp_ns", "slate", "slot_propensities", "sample_prob",
                         "context_json", "candidates_json", "candidates_digest"]).to_pylist():
        req = msgspec.json.decode(d["context_json"]) if d["context_json"] else {}
        cands = {c[system.candidate_id]: c for c in msgspec.json.decode(d["candidates_json"])} if full else {}
        for j, (cid, p) in enumerate(zip(d["slate"], d["slot_propensities"], strict=True)):
            r = policy.reward(linked.get((d["decision_id"], cid if policy.per == "slot" else None), ()), d["timestamp_ns"])
            if r is None:
                counts["no_reward"] += 1
                continue
            for k, v in (("decision_id", d["decision_id"]), ("position", j + 1), ("unit", d["unit"]),
                         ("timestamp_ns", d["timestamp_ns"]), ("action", cid), ("reward", r), ("propensity", p),
                         ("sample_prob", d["sample_prob"]), ("candidates_digest", d["candidates_digest"])):
                cols[k].append(v)
            for name in rnames:
                fields[name].append(req.get(name))
            for name in cnames:
                fields[name].append(cands[cid].get(name))
    n = len(cols["decision_id"])
    schema = system.features.schema if full else system.schema
    validated = schema.validate_batch({k: fields[k] for k in [*rnames, *cnames]})
    prop, sp = np.asarray(cols["propensity"], dtype=np.float64), np.asarray(cols["sample_prob"], dtype=np.float64)
    data: dict[str, Any] = {
        "decision_id": pa.array(cols["decision_id"], pa.string()), "position": pa.array(cols["position"], pa.int32()),
        "unit": pa.array(cols["unit"], pa.string()), "timestamp_ns": pa.array(cols["timestamp_ns"], pa.int64()),
        "action": pa.array(cols["action"], pa.string()), "reward": pa.array(cols["reward"], pa.float64()),
        "propensity": pa.array(prop, pa.float64()), "weight": pa.array(1.0 / (prop * sp), pa.float64()),
        "sample_prob": pa.array(sp, pa.float64()),
    }
    if full:
        data.update(context_columns(validated, system))
    else:
        data.update({"context_json": _json_rows(validated, rnames), "candidates_digest": pa.array(cols["candidates_digest"], pa.string()),
                     "schema_version": pa.array([system.schema_version] * n, pa.string()),
                     "feature_fingerprint": pa.array([system.feature_fingerprint] * n, pa.string())})
    return pa.table(data), counts


def reference_sets(decisions: pa.Table, shown: set[str]) -> pa.Table:
    """The candidate-set rows as the loop per candidate built them (the reference)."""
    sel = decisions.filter(pc.is_in(decisions["decision_id"], value_set=pa.array(sorted(shown), pa.string())))
    raw: list[Any] = msgspec.json.decode(_joined(sel["candidates_json"])) if sel.num_rows else []
    lens = np.fromiter((len(c) if isinstance(c, list) else 0 for c in raw), dtype=np.int64, count=len(raw))
    flat = [c if isinstance(c, dict) else {} for lst in raw if isinstance(lst, list) for c in lst]
    scores = sel["candidate_scores"].to_pylist()
    logged = [float(x) if x is not None else np.nan for sc, n in zip(scores, lens, strict=True)
              for x in (sc if sc is not None and len(sc) == n else [None] * int(n))]
    return pa.table({
        "decision_id": pa.array(np.repeat(np.asarray(sel["decision_id"].to_pylist(), dtype=object), lens), pa.string()),
        "index": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in lens]), pa.int32()),
        "logged_score": pa.array(logged, pa.float64()),
        "candidate": pa.array(flat),
    })


def _same_sets(got: pa.Table, want: pa.Table) -> bool:
    """Equal candidate-set tables (a NaN score equal to a NaN)."""
    return (got.schema == want.schema and got.num_rows == want.num_rows
            and all(got[c].to_pylist() == want[c].to_pylist() for c in ("decision_id", "index", "candidate"))
            and np.array_equal(got["logged_score"].to_numpy(), want["logged_score"].to_numpy(), equal_nan=True))


def _system(per: str, default: float | None) -> System:
    f = feed_module
    return System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                  features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
                  rewards=RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=10), per=per,
                                       default=default))


def _log(home: Any, system: System, candidates: str, n: int = 240) -> TelemetryStore:
    """A seeded log: decisions one by one and in a batch (one with a kill switch: no scores), clicks
    and buys on some slots, some outside the window, one repeated, one for a candidate not shown."""
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, candidates=candidates)
    rt = Runtime(system, Bundle.build(system, feed_module.model), telemetry=tel, clock=clock)
    ctxs = generate(n, 7, seed=3)
    decided = [rt.decide(c, timestamp_ns=T0 + i * S) for i, c in enumerate(ctxs[: n // 2])]
    req, cand = columnar(ctxs[n // 2:])
    decided += list(rt.decide_batch(req, candidates=cand, timestamps_ns=[T0 + (n // 2 + i) * S for i in range(n - n // 2)]))
    rng = np.random.default_rng(7)
    for d in decided:
        for j, cid in enumerate(d.ranking):
            if rng.random() < 0.25:
                tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 5 * S, source="app", candidate=cid)
                if rng.random() < 0.3:
                    tel.log_outcome(d.decision_id, kind="buy", value=2.5, event_ns=d.timestamp_ns + 9 * S, source="app", slot=j + 1)
                    tel.log_outcome(d.decision_id, kind="buy", value=1.0, event_ns=d.timestamp_ns + 20 * 60 * S, source="app", slot=j + 1)
    d0 = decided[0]
    for _ in range(2):
        tel.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + S, source="app", candidate=d0.ranking[0])
    tel.close()
    other = Telemetry(SegmentLog(home), system=system, clock=lambda: T0 + 10**4 * S)  # knows no slate: not refused here
    other.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + S, source="app", candidate="never")
    other.close()
    store = TelemetryStore(home)
    store.compact()
    return store


@pytest.mark.parametrize(("per", "default", "candidates"), [
    ("slot", 0.0, "full"), ("slot", None, "full"), ("decision", 0.0, "full"), ("decision", None, "full"), ("slot", 0.0, "digest")])
def test_slot_rows_and_candidate_sets_are_the_reference_loops(tmp_path, per, default, candidates):
    system = _system(per, default)
    store = _log(tmp_path / "home", system, candidates)
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=CUTOFF, out=tmp_path / "ds")
    dec = first_by(read_records(store.decision_files(), DECISION_SCHEMA, "feed", CUTOFF), "decision_id")
    outs = first_by(read_records(store.outcome_files(), OUTCOME_SCHEMA, "feed", CUTOFF), "outcome_id")
    counts: Counter[str] = Counter()
    linked = link_outcomes(outs, dec, system.rewards, 600 * S, set(dec["decision_id"].to_pylist()), None, counts)
    want, want_counts = reference_rows(dec, system.rewards, linked, system, full=candidates == "full")
    got = pq.read_table(tmp_path / "ds" / "data.parquet")
    assert got.num_rows > 0 and got.column_names == want.column_names
    for name in want.column_names:
        assert got[name].to_pylist() == want[name].to_pylist(), name
    assert m.counts["slots"].get("no_reward", 0) == want_counts["no_reward"]
    assert (want_counts["no_reward"] > 0) == (default is None)
    assert m.counts["slots"]["rows"] == want.num_rows and m.counts["decisions"] == len(set(want["decision_id"].to_pylist()))
    if candidates == "full":
        sets = pq.read_table(tmp_path / "ds" / CANDIDATE_SETS_FILE)
        ref = reference_sets(dec, set(want["decision_id"].to_pylist()))
        assert _same_sets(sets, ref) and sets.num_rows > want.num_rows
    else:
        assert not (tmp_path / "ds" / CANDIDATE_SETS_FILE).exists()


def test_candidate_sets_table_logged_scores_only_when_one_per_candidate():
    """A decision logging one score per candidate keeps them (a missing one NaN); one logging none
    or a list of another length (the kill switch, a bad record) has NaN for all its candidates."""
    dec = pa.table({
        "decision_id": ["a", "b", "c", "d", "e"],
        "candidates_json": ['[{"id": "x"}, {"id": "y"}]', '[{"id": "z"}]', None, '[{"id": "w"}, {"id": "v"}]', '[{"id": "u"}]'],
        "candidate_scores": pa.array([[1.0, None], None, [3.0], [4.0], [5.0]], pa.list_(pa.float64())),
    })
    got = candidate_sets_table(dec, {"a", "b", "c", "d", "e"})
    assert got["decision_id"].to_pylist() == ["a", "a", "b", "d", "d", "e"]
    assert got["index"].to_pylist() == [0, 1, 0, 0, 1, 0]
    assert np.array_equal(got["logged_score"].to_numpy(), [1.0, np.nan, np.nan, np.nan, np.nan, 5.0], equal_nan=True)
    assert _same_sets(got, reference_sets(dec, {"a", "b", "c", "d", "e"}))
    assert candidate_sets_table(dec, {"d"})["decision_id"].to_pylist() == ["d", "d"]

"""The join: decisions × outcomes under a label policy → a dataset (closedloop.datasets.dataset)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import F, Float, LabelPolicy, OutcomeRule, SpecError, Str, System, Thresholds
from closedloop.datasets import DatasetError, DatasetManifest, build_dataset, load_dataset
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

S = 1_000_000_000  # one second in ns
W = 100  # the window, in seconds
T0 = 1_000 * S


def make_system(policy=None, context=None, version="1"):
    return System(
        "demo",
        context=context or [Str("user"), Float("age", ge=0, default=1.0)],
        schema_version=version,
        unit="user",
        features={"young": F.col("age") < 30, "age2": F.col("age") * 2},
        actions=["allow", "warn", "block"],
        experience=Thresholds("score", {"block": 0.9, "warn": 0.5}, otherwise="allow"),
        labels=("legit", "bad"),
        label_policy=policy
        if policy is not None
        else LabelPolicy(
            timedelta(seconds=W),
            [
                OutcomeRule("analyst", label=None, aggregate="latest"),
                OutcomeRule("report", label="bad", aggregate="any"),
                OutcomeRule("appeal", label="legit", aggregate="sum"),
            ],
            default="legit",
        ),
    )


# -- fixtures in the store's Parquet layout ---------------------------------------------------

_seq = iter(range(1, 10**9))


def decision(did, ts, *, unit="u1", ingest=None, ctx=None, fp=None, system="demo", version="1", **kw):
    rec = dict(
        seq=next(_seq), writer="w1", decision_id=did, system=system, unit=unit, timestamp_ns=ts,
        ingest_ns=ts + S if ingest is None else ingest, bundle_version="b1", flight=None,
        schema_version=version, feature_fingerprint=fp or SYSTEM.feature_fingerprint,
        context_json=json.dumps(ctx if ctx is not None else {"user": unit, "age": 20.0}),
        features=[1.0, 40.0], score_names=["score"], scores=[0.3], action="allow",
        propensity=1.0, sample_prob=0.5, why="threshold", guardrail=None, shadows_json=None,
        killswitch=False,
    )
    rec.update(kw)
    return rec


def outcome(oid, kind, event, *, did=None, unit=None, value=1.0, ingest=None, system="demo"):
    return dict(
        seq=next(_seq), writer="w2", outcome_id=oid, decision_id=did, system=system, unit=unit,
        kind=kind, value=value, event_ns=event, ingest_ns=event + S if ingest is None else ingest,
        source="test",
    )


def write(home: Path, decisions=(), outcomes=()):
    """Write records as the store does: telemetry/parquet/{decisions,outcomes}/day=…/*.parquet."""
    files: dict[str, list[Path]] = {"decisions": [], "outcomes": []}
    for name, rows, schema in (("decisions", decisions, DECISION_SCHEMA), ("outcomes", outcomes, OUTCOME_SCHEMA)):
        if not rows:
            continue
        d = home / "telemetry" / "parquet" / name / "day=1970-01-01"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"part-{len(list(d.iterdir()))}.parquet"
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), p)
    for name in files:
        files[name] = sorted((home / "telemetry" / "parquet" / name).glob("day=*/*.parquet"))
    return files["decisions"], files["outcomes"]


SYSTEM = make_system()


def build(tmp_path, decisions, outcomes, *, system=SYSTEM, since=0, until=10**6 * S, cutoff=10**5 * S, out="ds", **kw):
    dfiles, ofiles = write(tmp_path / "home", decisions, outcomes)
    m = build_dataset(
        system, decision_files=dfiles, outcome_files=ofiles, since_ns=since, until_ns=until,
        cutoff_ns=cutoff, out=tmp_path / out, **kw,
    )
    rows = {r["decision_id"]: r for r in pq.read_table(m.data_path).to_pylist()}
    return m, rows


# -- the window -------------------------------------------------------------------------------

def test_window_edges_are_inclusive_and_outcomes_outside_are_counted(tmp_path):
    ds = [decision(f"d{i}", T0, unit=f"u{i}") for i in range(4)]
    os_ = [
        outcome("o0", "report", T0, did="d0"),  # at the decision: counts
        outcome("o1", "report", T0 + W * S, did="d1"),  # at the window's end: counts
        outcome("o2", "report", T0 + W * S + 1, did="d2"),  # 1 ns after: does not
        outcome("o3", "report", T0 - 1, did="d3"),  # 1 ns before the decision: does not
    ]
    m, rows = build(tmp_path, ds, os_)
    assert [rows[f"d{i}"]["label"] for i in range(4)] == ["bad", "bad", "legit", "legit"]
    assert rows["d0"]["label_value"] == 1 and rows["d2"]["label_value"] == 0
    o = m.counts["outcomes"]
    assert (o["matched"], o["after_window"], o["before_decision"]) == (2, 1, 1)


# -- aggregation, per kind ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "aggregate, expected",
    [("earliest", 0.0), ("latest", 2.0), ("sum", 5.0), ("max", 3.0), ("any", 1.0)],
)
def test_each_aggregation(tmp_path, aggregate, expected):
    policy = LabelPolicy(timedelta(seconds=W), [OutcomeRule("score", label=None, aggregate=aggregate)], default=None)
    system = make_system(policy)
    ds = [decision("d", T0)]
    os_ = [
        outcome("a", "score", T0 + 10 * S, did="d", value=0.0),
        outcome("b", "score", T0 + 30 * S, did="d", value=3.0),
        outcome("c", "score", T0 + 50 * S, did="d", value=2.0),
        outcome("z", "score", T0 + 500 * S, did="d", value=100.0),  # after the window
    ]
    _, rows = build(tmp_path, ds, os_, system=system)
    assert rows["d"]["outcome:score"] == expected
    assert rows["d"]["label"] == ("bad" if expected else "legit")


def test_any_of_only_zero_values_is_zero_and_value_rule_maps_zero_to_negative(tmp_path):
    policy = LabelPolicy(timedelta(seconds=W), [OutcomeRule("score", label=None, aggregate="any")])
    _, rows = build(tmp_path, [decision("d", T0)], [outcome("a", "score", T0 + S, did="d", value=0.0)], system=make_system(policy))
    assert rows["d"]["outcome:score"] == 0.0 and rows["d"]["label"] == "legit" and rows["d"]["label_value"] == 0


# -- precedence, defaults, unlabeled ------------------------------------------------------------

def test_the_first_rule_with_a_counted_outcome_decides(tmp_path):
    ds = [decision(d, T0, unit=d) for d in ("a", "b", "c")]
    os_ = [
        # a: analyst (first rule) says 0 → legit, even though a report (second rule) says bad
        outcome("a1", "analyst", T0 + 5 * S, did="a", value=0.0),
        outcome("a2", "report", T0 + 1 * S, did="a"),
        # b: report (second) beats appeal (third)
        outcome("b1", "appeal", T0 + 1 * S, did="b"),
        outcome("b2", "report", T0 + 2 * S, did="b"),
        # c: only an appeal → legit; the analyst's later verdict is after the window
        outcome("c1", "appeal", T0 + 1 * S, did="c"),
        outcome("c2", "analyst", T0 + (W + 1) * S, did="c", value=1.0),
    ]
    _, rows = build(tmp_path, ds, os_)
    assert (rows["a"]["label"], rows["b"]["label"], rows["c"]["label"]) == ("legit", "bad", "legit")
    assert rows["a"]["outcome:analyst"] == 0.0 and rows["a"]["outcome:report"] == 1.0
    assert rows["b"]["outcome:appeal"] == 1.0 and rows["c"]["outcome:analyst"] is None


def test_default_versus_unlabeled(tmp_path):
    base = make_system().label_policy
    unlabeled = make_system(LabelPolicy(base.window, base.rules, default=None))
    _, with_default = build(tmp_path, [decision("d", T0)], [], out="a")
    _, without = build(tmp_path, [decision("d", T0)], [], system=unlabeled, out="b")
    assert with_default["d"]["label"] == "legit" and with_default["d"]["label_value"] == 0
    assert without["d"]["label"] is None and without["d"]["label_value"] is None


def test_open_windows_are_left_out_and_counted(tmp_path):
    cutoff = T0 + W * S
    ds = [decision("closed", T0), decision("open", T0 + 1), decision("late", T0 + 2 * W * S, ingest=T0)]
    os_ = [outcome("o", "report", T0 + 2, did="open", ingest=T0 + 3)]
    m, rows = build(tmp_path, ds, os_, cutoff=cutoff)
    assert set(rows) == {"closed"}  # closes exactly at the cut-off; "open" 1 ns later
    c = m.counts["decisions"]
    assert (c["in_range"], c["rows"], c["open"]) == (3, 1, 2)
    assert m.counts["outcomes"]["open"] == 1


def test_early_labels_take_open_decisions_that_already_have_an_outcome(tmp_path):
    """``early_labels=True``: an open decision with a counted outcome is in, labeled by its rule —
    never by the default (its silence is not over); open and silent ones stay out."""
    cutoff = T0 + W * S
    ds = [decision("closed", T0), decision("open_reported", T0 + 1, unit="u2"),
          decision("open_appealed", T0 + 2, unit="u3"), decision("open_silent", T0 + 3, unit="u4"),
          decision("open_other_kind", T0 + 4, unit="u5")]
    os_ = [outcome("o1", "report", T0 + 5, did="open_reported", ingest=T0 + 6),
           outcome("o2", "appeal", T0 + 5, did="open_appealed", ingest=T0 + 6),
           outcome("o3", "chose:go_back", T0 + 5, did="open_other_kind", ingest=T0 + 6),
           outcome("o4", "report", T0 + 5, did="open_silent", ingest=cutoff + 1)]  # arrives after the cut-off
    m, rows = build(tmp_path, ds, os_, cutoff=cutoff, early_labels=True)
    assert set(rows) == {"closed", "open_reported", "open_appealed"}
    assert rows["open_reported"]["label"] == "bad" and rows["open_appealed"]["label"] == "legit"
    assert rows["closed"]["label"] == "legit"
    c = m.counts["decisions"]
    assert (c["in_range"], c["rows"], c["early"], c["open"]) == (5, 3, 2, 2)
    assert m.content["early_labels"] is True
    m2, rows2 = build(tmp_path / "plain", ds, os_, cutoff=cutoff)
    assert set(rows2) == {"closed"} and "early_labels" not in m2.content and "early" not in m2.counts["decisions"]
    with pytest.raises(DatasetError, match="'early_labels' must be True or False. Got 'yes'"):
        build(tmp_path / "bad", ds, os_, cutoff=cutoff, early_labels="yes")


def test_entity_labels_reach_the_entitys_decisions_without_an_outcome(tmp_path):
    """``LabelPolicy(entity="url")``: an outcome judges the page; a visit with no outcome of its
    own takes the label most of the page's labeled visits got (a tie: none), before the default;
    its own outcome always wins."""
    base = SYSTEM.label_policy
    policy = LabelPolicy(base.window, base.rules, default="legit", action_defaults={"warn": None}, entity="url")
    system = make_system(policy, context=[Str("user"), Str("url"), Float("age", ge=0, default=1.0)])

    def visit(did, url, action="warn"):
        return decision(did, T0, unit=did, ctx={"user": did, "url": url, "age": 20.0}, action=action,
                        fp=system.feature_fingerprint)

    ds = [visit("p1", "http://bad"), visit("p2", "http://bad"), visit("p3", "http://bad", "allow"),
          visit("p4", "http://bad"), visit("g1", "http://good"), visit("g2", "http://good"),
          visit("t1", "http://tied"), visit("t2", "http://tied"), visit("t3", "http://tied"),
          visit("n1", "http://none")]
    os_ = [outcome("o1", "analyst", T0 + 5, did="p1", value=1.0), outcome("o2", "report", T0 + 5, did="p2"),
           outcome("o3", "analyst", T0 + 5, did="p4", value=0.0),  # outvoted, but its own label stands
           outcome("o4", "analyst", T0 + 5, did="g1", value=0.0),
           outcome("o5", "analyst", T0 + 5, did="t1", value=1.0), outcome("o6", "analyst", T0 + 5, did="t2", value=0.0)]
    m, rows = build(tmp_path, ds, os_, system=system)
    label = {k: r["label"] for k, r in rows.items()}
    assert label == {"p1": "bad", "p2": "bad", "p3": "bad", "p4": "legit", "g1": "legit", "g2": "legit",
                     "t1": "bad", "t2": "legit", "t3": None, "n1": None}
    assert m.counts["decisions"]["entity_labeled"] == 2  # p3 (allowed: not its default 'legit') and g2
    assert m.content["policy"]["entity"] == "url"
    with pytest.raises(SpecError, match="'entity' must be a string context field of System 'demo'. Got 'age'"):
        make_system(LabelPolicy(base.window, base.rules, entity="age"))
    with pytest.raises(SpecError, match="an 'audit' or an 'entity', not both"):
        LabelPolicy(base.window, base.rules, audit="analyst", entity="url")


def test_time_range_is_half_open_and_outcomes_of_other_decisions_are_counted(tmp_path):
    ds = [decision("before", T0 - 1), decision("first", T0), decision("last", T0 + 10 * S - 1), decision("after", T0 + 10 * S)]
    os_ = [outcome("o", "report", T0, did="before")]
    m, rows = build(tmp_path, ds, os_, since=T0, until=T0 + 10 * S)
    assert set(rows) == {"first", "last"}
    assert m.counts["outcomes"]["out_of_range"] == 1


# -- point in time -----------------------------------------------------------------------------

def test_rebuilding_with_the_same_cutoff_gives_the_same_rows(tmp_path):
    cutoff = T0 + 2 * W * S
    ds = [decision("d1", T0), decision("d2", T0 + S, unit="u2")]
    os_ = [outcome("o1", "report", T0 + 5 * S, did="d1", ingest=T0 + 6 * S)]
    m1, rows1 = build(tmp_path, ds, os_, cutoff=cutoff, out="first")
    # later: a late outcome (inside d2's window, ingested after the cut-off) and a late decision
    late_o = [outcome("o2", "report", T0 + 10 * S, did="d2", ingest=cutoff + 1)]
    late_d = [decision("d3", T0 + 2 * S, ingest=cutoff + 5)]
    m2, rows2 = build(tmp_path, late_d, late_o, cutoff=cutoff, out="second")
    assert rows1 == rows2 and rows2["d2"]["label"] == "legit"
    assert m1.id == m2.id and m1.counts == m2.counts
    m3, rows3 = build(tmp_path, [], [], cutoff=cutoff + 10, out="third")
    assert rows3["d2"]["label"] == "bad" and "d3" in rows3 and m3.id != m1.id


# -- deduplication -----------------------------------------------------------------------------

def test_retried_writes_never_count_twice(tmp_path):
    d = decision("d", T0)
    retry = dict(d, seq=next(_seq), ingest_ns=d["ingest_ns"] + 5, writer="w9", bundle_version="retry")
    policy = LabelPolicy(timedelta(seconds=W), [OutcomeRule("clicks", label=None, aggregate="sum")])
    o = outcome("o", "clicks", T0 + S, did="d", value=2.0)
    o_retry = dict(o, seq=next(_seq), ingest_ns=o["ingest_ns"] + 7, value=5.0)
    m, rows = build(tmp_path, [retry, d], [o, o_retry], system=make_system(policy))
    assert len(rows) == 1 and rows["d"]["bundle_version"] == "b1"  # the first ingested copy
    assert rows["d"]["outcome:clicks"] == 2.0
    assert m.counts["decisions"]["duplicates"] == 1 and m.counts["outcomes"]["duplicates"] == 1
    assert m.counts["outcomes"]["read"] == 2 and m.counts["outcomes"]["matched"] == 1


# -- unknown ids, linking by unit and time ------------------------------------------------------

def test_unknown_ids_and_other_kinds_are_counted(tmp_path):
    os_ = [outcome("o1", "report", T0, did="nope"), outcome("o2", "clicked", T0 + S, did="d")]
    m, rows = build(tmp_path, [decision("d", T0)], os_)
    o = m.counts["outcomes"]
    assert (o["unknown_id"], o["other_kind"], o["matched"], o["read"]) == (1, 1, 0, 2)
    assert rows["d"]["label"] == "legit"


def test_outcomes_without_a_decision_id_link_by_unit_and_time(tmp_path):
    ds = [
        decision("early", T0, unit="u1"),
        decision("later", T0 + 50 * S, unit="u1"),
        decision("other", T0 + 55 * S, unit="u2"),
    ]
    os_ = [
        outcome("a", "report", T0 + 60 * S, unit="u1"),  # → "later" (latest of u1 at or before)
        outcome("b", "report", T0 + 50 * S, unit="u2"),  # u2 has no decision at or before → unlinked
        outcome("c", "appeal", T0 + 10 * S, unit="u1"),  # → "early"
        outcome("d", "report", T0 + 50 * S + (W + 1) * S, unit="u1"),  # after "later"'s window
        outcome("e", "report", T0, unit="nobody"),
    ]
    m, rows = build(tmp_path, ds, os_)
    assert rows["later"]["label"] == "bad" and rows["early"]["label"] == "legit"
    assert rows["early"]["outcome:appeal"] == 1.0 and rows["other"]["outcome:report"] is None
    o = m.counts["outcomes"]
    assert (o["matched"], o["unlinked"], o["after_window"]) == (2, 2, 1)


def test_other_systems_and_ingest_after_cutoff_are_not_read(tmp_path):
    ds = [decision("d", T0), decision("x", T0, system="other")]
    os_ = [outcome("o", "report", T0, did="d", ingest=10**5 * S + 1), outcome("p", "report", T0, did="x", system="other")]
    m, rows = build(tmp_path, ds, os_)
    assert set(rows) == {"d"} and rows["d"]["label"] == "legit" and m.counts["outcomes"]["read"] == 0


# -- the columns, the manifest -------------------------------------------------------------------

def test_rows_keep_what_learning_needs(tmp_path):
    m, rows = build(tmp_path, [decision("d", T0, flight="f1")], [outcome("o", "report", T0 + S, did="d")])
    r = rows["d"]
    assert json.loads(r["context_json"]) == {"user": "u1", "age": 20.0}
    assert r["features"] == [1.0, 40.0] and r["young"] == 1.0 and r["age2"] == 40.0
    assert r["scores"] == [0.3] and r["action"] == "allow" and r["propensity"] == 1.0
    assert r["sample_prob"] == 0.5 and r["weight"] == 2.0
    assert (r["bundle_version"], r["flight"], r["schema_version"], r["unit"], r["timestamp_ns"]) == ("b1", "f1", "1", "u1", T0)
    manifest = json.loads((m.path / "manifest.json").read_text())
    assert manifest["id"] == m.id and len(m.id) == 64 and manifest["cutoff_ns"] == 10**5 * S
    assert manifest["policy"] == SYSTEM.label_policy.describe() and manifest["system"] == "demo"
    assert DatasetManifest.read(m.path).counts == m.counts
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_feature_columns_follow_each_fingerprint(tmp_path):
    ds = [decision("new", T0), decision("old", T0, fp="oldfp", features=[7.0])]
    names = {SYSTEM.feature_fingerprint: ["young", "age2"], "oldfp": ["age2"]}
    _, rows = build(tmp_path, ds, [], feature_names=names)
    assert (rows["new"]["age2"], rows["old"]["age2"], rows["old"]["young"]) == (40.0, 7.0, None)


def test_an_existing_output_is_refused_and_no_files_is_empty(tmp_path):
    m, rows = build(tmp_path, [], [])
    assert rows == {} and m.counts["decisions"]["rows"] == 0
    with pytest.raises(DatasetError, match="already exists"):
        build_dataset(SYSTEM, decision_files=[], outcome_files=[], since_ns=0, until_ns=1, cutoff_ns=1, out=m.path)


# -- schema evolution ------------------------------------------------------------------------------

def test_an_added_field_takes_its_default_in_the_current_schema(tmp_path):
    # logged under v1 (user, age); the current v2 adds "country" with a default
    v2 = make_system(context=[Str("user"), Float("age", ge=0, default=1.0), Str("country", default="zz")], version="2")
    ds = [
        decision("old", T0, ctx={"user": "u1", "age": 20.0}, version="1"),
        decision("new", T0, ctx={"user": "u2", "age": 30.0, "country": "fr"}, version="2"),
    ]
    m, _ = build(tmp_path, ds, [], system=v2)
    table, cols = load_dataset(m.path, v2)
    by_id = dict(zip(table["decision_id"].to_pylist(), range(table.num_rows), strict=True))
    country = cols.pylist("country")
    assert country[by_id["old"]] == "zz" and country[by_id["new"]] == "fr"
    assert cols["age"][by_id["old"]] == 20.0 and cols.n == 2


def test_a_removed_field_is_ignored(tmp_path):
    # logged under v1 with "referrer"; the current v2 dropped it
    v2 = make_system(version="2")
    ds = [decision("old", T0, ctx={"user": "u1", "age": 20.0, "referrer": "x.com"}, version="1")]
    m, rows = build(tmp_path, ds, [], system=v2)
    table, cols = load_dataset(m.path, v2)
    assert cols.names() == ["user", "age"] and cols.pylist("user") == ["u1"]
    assert table["schema_version"].to_pylist() == ["1"] and rows["old"]["label"] == "legit"


# -- end to end, through the telemetry writer and the embedded store --------------------------------

def test_a_dataset_from_the_store(tmp_path):
    import time

    from closedloop.datasets import read_feature_sets
    from closedloop.runtime.decision import Decision
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

    day = 86_400 * S
    t0 = (time.time_ns() // day - 30) * day
    tel = Telemetry(SegmentLog(tmp_path), system=SYSTEM, flush_interval_ms=10_000)
    ids = []
    for i, unit in enumerate(["a", "b", "c"]):
        c = SYSTEM.schema.validate({"user": unit, "age": 20.0 + i})
        d = Decision(f"{i:032x}", "demo", unit, t0 + i * S, "v1", {"score": 0.3}, "allow", 1.0, "score < 0.5")
        tel.log_decision(d, c, SYSTEM.features.one(c))
        if i == 0:
            tel.log_decision(d, c, SYSTEM.features.one(c))  # a retried write
        ids.append(d.decision_id)
    tel.log_outcome(ids[0], kind="report", event_ns=t0 + 10 * S, source="user")
    tel.log_outcome(ids[0], kind="report", event_ns=t0 + 10 * S, source="user")  # retried: same id
    tel.log_outcome(unit="b", kind="analyst", value=0.0, event_ns=t0 + 20 * S, source="analyst")
    tel.close()
    store = TelemetryStore(tmp_path)
    store.compact()
    m = build_dataset(
        SYSTEM, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
        since_ns=t0, until_ns=t0 + day, cutoff_ns=time.time_ns(), out=tmp_path / "ds",
        feature_names=read_feature_sets(tmp_path),
    )
    rows = {r["unit"]: r for r in pq.read_table(m.data_path).to_pylist()}
    assert {u: r["label"] for u, r in rows.items()} == {"a": "bad", "b": "legit", "c": "legit"}
    assert rows["b"]["outcome:analyst"] == 0.0 and rows["c"]["age2"] == 44.0
    assert m.counts["decisions"]["duplicates"] == 1 and m.counts["outcomes"]["matched"] == 2
    table, cols = load_dataset(m.path, SYSTEM)
    assert sorted(cols.pylist("user")) == ["a", "b", "c"]

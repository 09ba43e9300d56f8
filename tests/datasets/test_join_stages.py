"""The join's stages one at a time (closedloop.datasets.join): each on a tiny hand-made input,
its output checked alone — select, dedupe, link, label, write, counts."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import msgspec
import pyarrow.parquet as pq
import pytest
from test_join import SYSTEM, T0, S, W, decision, make_system, outcome, write

from closedloop import LabelPolicy, OutcomeRule
from closedloop.datasets.join.columns import feature_column, feature_columns
from closedloop.datasets.join.counts import count
from closedloop.datasets.join.dedupe import dedupe_decisions
from closedloop.datasets.join.inputs import check_inputs
from closedloop.datasets.join.label import aggregate_sql, default_sql, label
from closedloop.datasets.join.link import link_outcomes
from closedloop.datasets.join.select import connect, outcome_filter, select
from closedloop.datasets.join.write import manifest_content, row_select, write_rows, written_columns
from closedloop.errors import DatasetError

CUTOFF = 10**5 * S


def _inputs(tmp_path, decisions, outcomes, *, system=SYSTEM, **kw):
    dfiles, ofiles = write(tmp_path / "home", decisions, outcomes)
    args = dict(policy=None, since_ns=0, until_ns=10**6 * S, cutoff_ns=CUTOFF, early_labels=False, exclude_sources=(),
                source_weights=None, exclude_ingested=(), decision_files=dfiles, outcome_files=ofiles,
                out=tmp_path / "ds", feature_names=None)
    args.update(kw)
    return check_inputs(system, **args)


def _stages(tmp_path, decisions, outcomes, *, upto="link", **kw):
    """Run the stages up to ``upto`` → (connection, inputs, selection)."""
    inputs = _inputs(tmp_path, decisions, outcomes, **kw)
    con = connect("200MB", tmp_path / "spill")
    sel = select(con, inputs)
    if upto in ("dedupe", "link"):
        dedupe_decisions(con, sel)
    if upto == "link":
        link_outcomes(con, sel, [r.kind for r in inputs.policy.rules], inputs.early_labels)
    return con, inputs, sel


# -- inputs and select --------------------------------------------------------------------------

def test_inputs_are_checked_and_the_files_sorted(tmp_path):
    inputs = _inputs(tmp_path, [decision("d1", T0)], [], decision_files=["b.parquet", "a.parquet"],
                     exclude_sources=["y", "x", "y"], source_weights={"x": 1})
    assert inputs.decision_files == ["a.parquet", "b.parquet"]
    assert inputs.excluded == ["x", "y"] and inputs.weights == {"x": 1.0}
    assert inputs.window_ns == W * S and inputs.policy is SYSTEM.label_policy
    with pytest.raises(DatasetError, match=r"'since_ns' must be an integer \(ns\). Got 1.5 instead"):
        _inputs(tmp_path, [], [], since_ns=1.5)
    with pytest.raises(DatasetError, match=r"until_ns > since_ns. Got \[5, 5\) instead"):
        _inputs(tmp_path, [], [], since_ns=5, until_ns=5)


def test_select_reads_the_systems_records_at_the_cutoff(tmp_path):
    ds = [decision("d1", T0), decision("d2", T0, system="other"), decision("d3", T0, ingest=CUTOFF + 1)]
    os_ = [outcome("o1", "report", T0, did="d1"), outcome("o2", "report", T0, did="d1", ingest=CUTOFF + 1)]
    con, _, sel = _stages(tmp_path, ds, os_, upto="select")
    assert con.execute(f"SELECT decision_id FROM dec_files WHERE {sel.at_cutoff()}", sel.cutoff).fetchall() == [("d1",)]
    assert con.execute(f"SELECT outcome_id FROM out_files WHERE {sel.at_cutoff()} AND {sel.outcome_ok}",
                       sel.cutoff).fetchall() == [("o1",)]


def test_the_outcome_filter_leaves_out_sources_and_ingest_ranges():
    assert outcome_filter([], []) == "TRUE"
    f = outcome_filter(["api", "it's"], [("report", 10, 20)])
    assert f == "source NOT IN ('api', 'it''s') AND NOT (kind = 'report' AND ingest_ns >= 10 AND ingest_ns < 20)"


def test_select_checks_the_excluded_ingest_ranges(tmp_path):
    inputs = _inputs(tmp_path, [decision("d1", T0)], [], exclude_ingested=[("report", 5, 5)])
    with pytest.raises(DatasetError, match=r"Each 'exclude_ingested' entry must be \(kind, start_ns, end_ns\)"):
        select(connect("200MB", tmp_path / "spill"), inputs)


# -- dedupe -------------------------------------------------------------------------------------

def test_dedupe_drops_every_copy_but_the_first_by_ingest_writer_seq(tmp_path):
    ds = [decision("d1", T0, ingest=T0 + 5 * S), decision("d1", T0, ingest=T0 + 2 * S), decision("d2", T0),
          decision("d1", T0, ingest=T0 + 2 * S, writer="w0")]
    con, _, _ = _stages(tmp_path, ds, [], upto="dedupe")
    dropped = con.execute("SELECT file_row_number FROM dup ORDER BY 1").fetchall()
    assert dropped == [(0,), (1,)]  # the copy written by w0 at the same time is the first


# -- link ---------------------------------------------------------------------------------------

def test_link_classifies_each_outcome_once(tmp_path):
    ds = [decision("d1", T0, unit="u1"), decision("d2", T0 + 10 * S, unit="u2")]
    os_ = [
        outcome("o1", "report", T0 + S, did="d1"),
        outcome("o1", "report", T0 + 2 * S, did="d1", ingest=T0 + 9 * S),  # a later copy: dropped
        outcome("o2", "report", T0 + 11 * S, unit="u2"),  # by unit and time → d2
        outcome("o3", "report", T0, did="nope"),
        outcome("o4", "report", T0, unit="u9"),
        outcome("o5", "report", T0 - S, did="d1"),
        outcome("o6", "report", T0 + (W + 1) * S, did="d1"),
        outcome("o7", "elsewhere", T0 + S, did="d1"),
    ]
    con, _, _ = _stages(tmp_path, ds, os_)
    got = dict(con.execute("SELECT outcome_id, (decision_id, status, event_ns) FROM lo").fetchall())
    assert got == {
        "o1": ("d1", "matched", T0 + S), "o2": ("d2", "matched", T0 + 11 * S), "o3": (None, "unknown_id", T0),
        "o4": (None, "unlinked", T0), "o5": ("d1", "before_decision", T0 - S),
        "o6": ("d1", "after_window", T0 + (W + 1) * S), "o7": ("d1", "other_kind", T0 + S),
    }


def test_link_calls_an_open_window_open_unless_early_labels(tmp_path):
    ds, os_ = [decision("d1", CUTOFF - 10 * S)], [outcome("o1", "report", CUTOFF - 9 * S, did="d1", ingest=CUTOFF)]
    con, _, _ = _stages(tmp_path, ds, os_)
    assert con.execute("SELECT status FROM lo").fetchall() == [("open",)]
    con, _, _ = _stages(tmp_path / "early", ds, os_, early_labels=True)
    assert con.execute("SELECT status FROM lo").fetchall() == [("matched",)]


# -- label --------------------------------------------------------------------------------------

def _labels(con, labeling):
    """decision id → (label, weight) of each row in the dataset, from the label stage's SQL alone."""
    rows = con.execute(
        f"""WITH {labeling.labels_cte}
        SELECT d.decision_id, {labeling.label_expr}, {labeling.weight_expr}
        FROM dec_files d LEFT JOIN l ON d.decision_id = l.decision_id {labeling.entity_join}
        WHERE {labeling.rows_where}""", {"cutoff": CUTOFF, "window": W * S, "since": 0, "until": 10**6 * S},
    ).fetchall()
    return {k: (lab, w) for k, lab, w in rows}


def test_label_takes_the_first_rule_with_an_outcome_else_the_default(tmp_path):
    ds = [decision(f"d{i}", T0, unit=f"u{i}", action=a) for i, a in enumerate(["allow", "allow", "block", "allow"])]
    os_ = [outcome("o1", "analyst", T0, did="d0", value=0.0), outcome("o2", "report", T0, did="d0"),
           outcome("o3", "report", T0, did="d1"), outcome("o4", "appeal", T0, did="d3", value=2.0)]
    policy = LabelPolicy(timedelta(seconds=W), SYSTEM.label_policy.rules, default="legit", action_defaults={"block": None})
    con, inputs, sel = _stages(tmp_path, ds, os_, policy=policy, source_weights={"test": 0.5})
    got = _labels(con, label(con, sel, inputs))
    # analyst (value 0 → legit) before report; no outcome: per action; weight 1/(0.5 * 1) × source 0.5
    assert got == {"d0": ("legit", 1.0), "d1": ("bad", 1.0), "d2": (None, 2.0), "d3": ("legit", 1.0)}


def test_label_of_an_entity_reaches_its_silent_decisions(tmp_path):
    from closedloop import Float, Str

    system = make_system(LabelPolicy(timedelta(seconds=W), SYSTEM.label_policy.rules, default="legit", entity="url"),
                         context=[Str("user"), Str("url"), Float("age", default=1.0)])
    ds = [decision(f"d{i}", T0, unit=f"u{i}", ctx={"user": f"u{i}", "url": "p"}) for i in range(3)]
    os_ = [outcome("o1", "report", T0, did="d0")]
    con, inputs, sel = _stages(tmp_path, ds, os_, system=system)
    labeling = label(con, sel, inputs)
    assert con.execute("SELECT e, elabel, n_silent FROM ent").fetchall() == [("p", "bad", 2)]
    assert {k: v[0] for k, v in _labels(con, labeling).items()} == {"d0": "bad", "d1": "bad", "d2": "bad"}


def test_the_aggregates_and_defaults_as_sql():
    assert aggregate_sql("sum", "x") == "sum(value) FILTER (WHERE kind = 'x')"
    assert default_sql(LabelPolicy(timedelta(seconds=1), [OutcomeRule("x")], default=None)) == "NULL::VARCHAR"
    p = LabelPolicy(timedelta(seconds=1), [OutcomeRule("x")], default="a", action_defaults={"block": None, "allow": "b"})
    assert default_sql(p) == "CASE d.action WHEN 'allow' THEN 'b' WHEN 'block' THEN NULL::VARCHAR ELSE 'a' END"


# -- write and counts ---------------------------------------------------------------------------

def test_feature_columns_are_renamed_on_a_clash():
    assert [feature_column(n) for n in ("age", "label", "outcome:x")] == ["age", "feature:label", "feature:outcome:x"]
    cols = feature_columns({"f1": ["a", "b"], "f2": ["b"]})
    assert cols == [("a", "CASE d.feature_fingerprint WHEN 'f1' THEN d.features[1] END"),
                    ("b", "CASE d.feature_fingerprint WHEN 'f1' THEN d.features[2] WHEN 'f2' THEN d.features[1] END")]


def test_write_then_count_then_the_manifest(tmp_path):
    ds = [decision("d1", T0), decision("d1", T0, ingest=T0 + 9 * S), decision("d2", T0 + S, unit="u2")]
    os_ = [outcome("o1", "report", T0, did="d1"), outcome("o2", "report", T0, did="zz")]
    con, inputs, sel = _stages(tmp_path, ds, os_)
    labeling = label(con, sel, inputs)
    feats = feature_columns(inputs.feature_names)
    with pytest.raises(DatasetError, match=r"'columns' must be columns of the dataset .* Got \['nope'\] instead"):
        written_columns(["nope"], feats, inputs.policy)
    written = written_columns(["decision_id", "label_value"], feats, inputs.policy)
    assert written == ["decision_id", "label_value", "label"]
    data = tmp_path / "data.parquet"
    write_rows(con, sel, labeling, row_select(labeling, feats, inputs.policy, "bad", "legit"), written, data)
    assert pq.read_table(data).to_pylist() == [
        {"decision_id": "d1", "label_value": 1, "label": "bad"}, {"decision_id": "d2", "label_value": 0, "label": "legit"},
    ]
    counts = count(con, sel, inputs, data, written)
    assert counts["decisions"] == {"in_range": 2, "rows": 2, "labeled": 2, "unlabeled": 0, "open": 0, "duplicates": 1}
    assert (counts["outcomes"]["read"], counts["outcomes"]["matched"], counts["outcomes"]["unknown_id"]) == (2, 1, 1)
    content = manifest_content(inputs, sel, feats, counts, labeling.audit, written)
    rest = {k: v for k, v in content.items() if k != "id"}
    assert content["id"] == hashlib.sha256(msgspec.json.encode(rest, order="sorted")).hexdigest()
    assert content["written_columns"] == written and "early_labels" not in content

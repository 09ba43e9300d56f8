"""The join on Spark (``build_dataset(engine="spark")``) against DuckDB's on one seeded lake: the
same rows, labels, weights, columns and manifest (docs/datasets.md, "Spark").

One SparkSession (local[2]) serves the module: the builds use the session already active.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from closedloop import F, Float, LabelPolicy, OutcomeRule, Str, System, Thresholds
from closedloop.cli.main import app
from closedloop.datasets import DatasetError, DatasetManifest, build_dataset
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

S = 1_000_000_000
W = 100  # the window, in seconds
T0 = 1_000 * S
UNITS = [f"u{i}" for i in range(12)]
ACTIONS = ["allow", "warn", "block"]
SINCE, UNTIL, CUTOFF = T0, T0 + 900 * S, T0 + 950 * S  # decisions run to T0 + 1050 s: some out of range, some open


def make_system(policy: LabelPolicy) -> System:
    return System(
        "demo",
        context=[Str("user"), Float("age", ge=0, default=1.0)],
        unit="user",
        features={"young": F.col("age") < 30, "age2": F.col("age") * 2},
        actions=ACTIONS,
        experience=Thresholds("score", {"block": 0.9, "warn": 0.5}, otherwise="allow"),
        labels=("legit", "bad"),
        label_policy=policy,
    )


ENTITY = LabelPolicy(
    timedelta(seconds=W),
    [OutcomeRule("analyst", label=None, aggregate="latest"), OutcomeRule("report", label="bad", aggregate="any"),
     OutcomeRule("appeal", label="legit", aggregate="sum")],
    default="legit", action_defaults={"warn": "bad"}, entity="user",
)
AUDIT = LabelPolicy(
    timedelta(seconds=W),
    [OutcomeRule("audit", label=None, aggregate="earliest"), OutcomeRule("report", label="bad", aggregate="max")],
    default="legit", action_defaults={"block": None}, audit="audit",
)
FP = make_system(ENTITY).feature_fingerprint
PHISHING = "examples.phishing.system:phishing"


def seeded_lake(home: Path, seed: int = 7) -> tuple[list[Path], list[Path]]:
    """Decisions in three day files (retried writes among them, some of another system, some
    ingested after the cut-off) and outcomes in two: linked by id and by unit + time, copies,
    unknown ids, other kinds, before the decision and after the window, three sources."""
    rng = random.Random(seed)
    seq = iter(range(1, 10**9))
    files: dict[str, list[list[dict]]] = {"decisions": [[], [], []], "outcomes": [[], []]}
    decisions = []
    for i in range(150):
        unit = rng.choice(UNITS)
        ts = T0 + i * 7 * S + rng.randrange(S)
        age = rng.choice([12.0, 25.0, 40.0, 61.5])
        rec = dict(
            seq=next(seq), writer="w1", decision_id=f"d{i}", system="other" if i % 37 == 5 else "demo", unit=unit,
            timestamp_ns=ts, ingest_ns=ts + S if i % 41 != 3 else CUTOFF + S, bundle_version="b1", flight=None,
            schema_version="1", feature_fingerprint=FP, context_json=json.dumps({"user": unit, "age": age}),
            features=[float(age < 30), age * 2 + rng.random()], score_names=["score"], scores=[rng.random()],
            action=rng.choice(ACTIONS), propensity=rng.choice([1.0, 0.8, 0.3]), sample_prob=rng.choice([1.0, 0.5, 0.25]),
            why="threshold", guardrail=None, shadows_json=None, killswitch=False,
        )
        decisions.append(rec)
        files["decisions"][i * 3 // 150].append(rec)
        if i % 13 == 0:  # a retried write, in another file, written later (another bundle: the first copy is kept)
            copy = dict(rec, seq=next(seq), writer="w9", ingest_ns=rec["ingest_ns"] + 2 * S, bundle_version="b2")
            files["decisions"][(i * 3 // 150 + 1) % 3].append(copy)
    kinds = ["analyst", "report", "appeal", "audit", "clicked"]
    for j in range(260):
        d = rng.choice(decisions)
        kind = rng.choice(kinds)
        event = d["timestamp_ns"] + rng.randrange(-20 * S, (W + 30) * S)
        how = rng.random()
        rec = dict(
            seq=next(seq), writer="w2", outcome_id=f"o{j}", decision_id=d["decision_id"], system="demo", unit=d["unit"],
            kind=kind, value=float(rng.choice([0, 1, 1, 2])) if kind != "analyst" else float(rng.randrange(2)),
            event_ns=event, ingest_ns=event + S if j % 29 != 1 else CUTOFF + 5 * S,
            source=rng.choice(["user", "user", "crowd", "spam"]), candidate_id=None,
        )
        if how < 0.25:  # by unit + time
            rec["decision_id"] = None
        elif how < 0.30:
            rec["decision_id"] = f"zz{j}"  # an unknown id
        files["outcomes"][j % 2].append(rec)
        if j % 17 == 0:  # a copy of the outcome, ingested later
            files["outcomes"][(j + 1) % 2].append(dict(rec, seq=next(seq), ingest_ns=rec["ingest_ns"] + S))
    for j, unit in enumerate(["u0", "u99"]):  # by unit, before any decision of the unit / of a unit without any: unlinked
        files["outcomes"][j].append(dict(
            seq=next(seq), writer="w2", outcome_id=f"early{j}", decision_id=None, system="demo", unit=unit, kind="report",
            value=1.0, event_ns=T0 - 50 * S, ingest_ns=T0, source="user", candidate_id=None))
    out: dict[str, list[Path]] = {}
    for name, parts in files.items():
        schema = DECISION_SCHEMA if name == "decisions" else OUTCOME_SCHEMA
        out[name] = []
        for k, rows in enumerate(parts):
            d = home / "telemetry" / "parquet" / name / f"day=1970-01-0{k + 1}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "part-0.parquet")
            out[name].append(d / "part-0.parquet")
    return out["decisions"], out["outcomes"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    from closedloop.datasets.join.spark import spark_session

    with spark_session("local[2]", tmp_path_factory.mktemp("spark-local")) as session:
        # small data: one task per shuffle, no adaptive re-planning, no code generation (each costs more than it saves)
        for k, v in {"spark.sql.shuffle.partitions": "1", "spark.sql.adaptive.enabled": "false",
                     "spark.sql.codegen.wholeStage": "false"}.items():
            session.conf.set(k, v)
        yield session


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return seeded_lake(tmp_path_factory.mktemp("lake") / "glob chars [a] {b}")  # Spark takes paths as globs: escaped


def build_both(tmp_path: Path, lake, policy: LabelPolicy, **kw) -> dict[str, tuple[dict, pa.Table]]:
    dfiles, ofiles = lake
    out = {}
    for engine in ("duckdb", "spark"):
        m = build_dataset(
            make_system(policy), decision_files=dfiles, outcome_files=ofiles, since_ns=SINCE, until_ns=UNTIL,
            cutoff_ns=CUTOFF, out=tmp_path / engine, engine=engine, **kw,
        )
        out[engine] = (m.content, pq.read_table(m.data_path))
    return out


def assert_same(built: dict[str, tuple[dict, pa.Table]]) -> None:
    (m_duck, t_duck), (m_spark, t_spark) = built["duckdb"], built["spark"]
    assert m_spark == m_duck  # the counts, the audit's figures, the columns: the same dataset id
    # The types of the columns; not their required flag, which DuckDB takes from the Parquet statistics it reads
    assert [(f.name, f.type) for f in t_spark.schema] == [(f.name, f.type) for f in t_duck.schema]
    t_duck, t_spark = (t.sort_by("decision_id") for t in (t_duck, t_spark))
    for name in t_duck.column_names:
        a, b = t_duck[name].combine_chunks(), t_spark[name].combine_chunks()
        assert a.to_pylist() == b.to_pylist(), name
        if pa.types.is_floating(a.type):  # bit for bit
            bits = [np.asarray(x.fill_null(0.0)).view(np.uint64) for x in (a, b)]
            assert np.array_equal(*bits), name


#: the system of the CLI's builds (``--system test_dataset_spark:CLI_SYSTEM``: this module, as pytest imported it)
CLI_SYSTEM = make_system(ENTITY)


def test_dataset_build_engine_spark_builds_duckdbs_dataset_with_entity_labels(spark, lake, tmp_path, capfd):
    home = lake[0][0].parents[4]
    built = {}
    for engine in ("duckdb", "spark"):
        r = CliRunner().invoke(app, ["--home", str(home), "dataset", "build", "--system", "test_dataset_spark:CLI_SYSTEM",
                                     "--since", str(SINCE), "--until", str(UNTIL), "--cutoff", str(CUTOFF),
                                     "--engine", engine, "--out", str(tmp_path / engine)])
        assert r.exit_code == 0, r.output
        m = DatasetManifest.read(tmp_path / engine)
        assert json.loads(r.stdout.strip().splitlines()[-1])["id"] == m.id
        built[engine] = (m.content, pq.read_table(m.data_path))
    err = capfd.readouterr().err
    assert "ERROR" not in err and "WARN" not in err, err  # Spark's log is quiet
    assert_same(built)
    counts, table = built["spark"][0]["counts"], built["spark"][1]
    # the lake exercises what the join decides: each of these happened at least once
    assert counts["decisions"]["duplicates"] > 0 and counts["decisions"]["entity_labeled"] > 0
    assert counts["decisions"]["open"] > 0
    for k in ("matched", "duplicates", "unknown_id", "unlinked", "before_decision", "after_window", "out_of_range", "other_kind"):
        assert counts["outcomes"][k] > 0, k
    assert set(table["bundle_version"].to_pylist()) == {"b1"}  # the first copy of a retried write
    assert not spark.catalog.tableExists("lo")  # the build left the shared session as it found it


def test_audit_weights_sources_early_labels_and_a_projection_are_the_same_on_spark(spark, lake, tmp_path):
    built = build_both(tmp_path, lake, AUDIT, exclude_ingested=[("report", T0 + 300 * S, T0 + 500 * S)],
                       source_weights={"crowd": 0.5}, exclude_sources=["spam"], early_labels=True,
                       columns=["decision_id", "timestamp_ns", "action", "label_value", "weight", "outcome:audit"])
    assert_same(built)
    manifest = built["spark"][0]
    assert manifest["audit"]["actions"]["block"]["audited"] > 0
    assert manifest["counts"]["decisions"]["early"] > 0 and manifest["counts"]["outcomes"]["excluded_source"] > 0
    table = built["spark"][1]
    assert table.column_names == ["decision_id", "timestamp_ns", "action", "label_value", "weight", "outcome:audit", "label"]
    assert len(set(table["weight"].to_pylist())) > 3


def test_a_bad_engine_is_refused_naming_the_field_and_the_choices(lake, tmp_path):
    dfiles, ofiles = lake
    with pytest.raises(DatasetError, match=r"'engine' must be one of 'duckdb', 'spark'. Got 'flink' instead"):
        build_dataset(make_system(ENTITY), decision_files=dfiles, outcome_files=ofiles, since_ns=SINCE, until_ns=UNTIL,
                      cutoff_ns=CUTOFF, out=tmp_path / "x", engine="flink")
    with pytest.raises(DatasetError, match="'spark_master' is for engine='spark' only"):
        build_dataset(make_system(ENTITY), decision_files=dfiles, outcome_files=ofiles, since_ns=SINCE, until_ns=UNTIL,
                      cutoff_ns=CUTOFF, out=tmp_path / "x", spark_master="local[1]")
    r = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "dataset", "build", "--system", PHISHING, "--since",
                                 "2026-01-01", "--until", "2026-01-02", "--spark-master", "local[1]"])
    assert r.exit_code == 2 and "'--spark-master'" in r.output and "is for --engine spark only" in r.output
    r = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "dataset", "build", "--system",
                                 PHISHING, "--since", "2026-01-01", "--until", "2026-01-02", "--engine", "flink"])
    assert r.exit_code == 2
    assert "'--engine'" in r.output and "'flink' is not one of 'duckdb', 'spark'" in r.output
    assert not (tmp_path / "x").exists()


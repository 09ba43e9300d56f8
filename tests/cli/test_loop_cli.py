"""The loop end to end through the CLI: decide with telemetry, ingest outcomes (one bad line),
build a dataset, look at stats, forget a unit."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from closedloop import Bundle, DecisionIds, LogisticModel, ManualClock, Runtime
from closedloop.cli.main import app
from closedloop.telemetry import SegmentLog, Telemetry

DAY = 86_400 * 10**9
T0 = 1_767_225_600 * 10**9  # 2026-01-01
SYSTEM = "examples.phishing.system:phishing"


def test_decide_log_ingest_build_stats_forget(phishing, tmp_path):
    home = tmp_path / "home"
    bundle = Bundle.build(phishing, LogisticModel({n: 0.1 for n in phishing.features.names}, -1.0, output="phish"))
    clock = ManualClock(T0, step_ns=60 * 10**9)
    with Telemetry(SegmentLog(home), system=phishing) as tel:
        rt = Runtime(phishing, bundle, clock=clock, ids=DecisionIds(seed=1), telemetry=tel)
        decisions = [
            rt.decide({"user_id": f"u{i % 5}", "url": f"https://site{i}.example/", "domain": f"site{i}.example"})
            for i in range(20)
        ]
        assert tel.flush() >= 19

    lines = [
        {"decision_id": decisions[0].decision_id, "kind": "reported_phish", "source": "user", "event_ns": T0 + DAY},
        {"decision_id": decisions[1].decision_id, "kind": "analyst_label", "value": 0, "source": "analyst", "event_ns": T0 + DAY},
        {"decision_id": "nope", "kind": "reported_phish", "source": "user", "event_ns": T0 + DAY},
        {"kind": "reported_phish", "source": "user"},  # bad: no decision_id or unit, no time
        {"decision_id": decisions[2].decision_id, "kind": "reported_phish", "source": "user", "event_ns": T0 + 30 * DAY},
    ]
    f = tmp_path / "outcomes.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    runner = CliRunner()
    r = runner.invoke(app, ["--home", str(home), "outcomes", "ingest", str(f), "--system", SYSTEM])
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ingested"] == 4 and report["rejected"] == 1
    assert "line 4" in r.stderr

    out = tmp_path / "ds"
    r = runner.invoke(app, [
        "--home", str(home), "dataset", "build", "--system", SYSTEM, "--since", "2026-01-01",
        "--until", "2026-01-02", "--out", str(out),  # cut-off: now (ingest times are wall-clock)
    ])
    assert r.exit_code == 0, r.output
    built = json.loads(r.stdout)
    table = pq.read_table(out / "data.parquet")
    labels = dict(zip(table.column("decision_id").to_pylist(), table.column("label").to_pylist(), strict=True))
    assert len(labels) == 20
    assert labels[decisions[0].decision_id] == "phish"
    assert labels[decisions[1].decision_id] == "legit"
    assert labels[decisions[2].decision_id] == "legit"  # reported after the 7-day window: the default
    counts = built["counts"]
    assert json.dumps(counts)  # the manifest reports unknown ids and late outcomes
    flat = json.dumps(counts)
    assert "unknown" in flat and "after" in flat

    r = runner.invoke(app, ["--home", str(home), "telemetry", "stats", "--window-days", "7"])
    assert r.exit_code == 0, r.output
    assert "20" in r.stdout

    r = runner.invoke(app, ["--home", str(home), "telemetry", "forget", "--unit", "u0"])
    assert r.exit_code == 0, r.output
    out2 = tmp_path / "ds2"
    r = runner.invoke(app, [
        "--home", str(home), "dataset", "build", "--system", SYSTEM, "--since", "2026-01-01",
        "--until", "2026-01-02", "--out", str(out2),
    ])
    assert r.exit_code == 0, r.output
    units = set(pq.read_table(out2 / "data.parquet").column("unit").to_pylist())
    assert "u0" not in units and len(units) == 4


def test_retention_is_a_declared_setting(phishing, tmp_path):
    home = tmp_path / "home"
    import time

    new = time.time_ns()  # retention counts back from now
    old = new - 400 * DAY  # far older than the declared 90 days
    bundle = Bundle.build(phishing, LogisticModel({n: 0.0 for n in phishing.features.names}, 0.0, output="phish"))
    with Telemetry(SegmentLog(home), system=phishing) as tel:
        rt = Runtime(phishing, bundle, telemetry=tel)
        for t in (old, new):
            rt.decide({"user_id": "u1", "url": "https://a.example/", "domain": "a.example"}, timestamp_ns=t)
    assert phishing.retention_days == 90
    runner = CliRunner()
    r = runner.invoke(app, ["--home", str(home), "telemetry", "compact"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--home", str(home), "telemetry", "retain", "--system", SYSTEM])
    assert r.exit_code == 0, r.output
    from closedloop.telemetry import TelemetryStore

    assert TelemetryStore(home).read("decisions").column("timestamp_ns").to_pylist() == [new]


def test_dataset_import_through_the_cli(tmp_path):
    import pyarrow as pa
    from examples.phishing import data

    columns, labels = data.generate(300, seed=3)
    table = pa.table({**{k: list(v) if not isinstance(v, list) else v for k, v in columns.items()}, "is_phish": labels})
    f = tmp_path / "corpus.parquet"
    pq.write_table(table, f)
    r = CliRunner().invoke(app, [
        "--home", str(tmp_path / "home"), "dataset", "import", str(f), "--system", SYSTEM,
        "--label", "is_phish", "--unit", "user_id",
    ])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["counts"]["decisions"]["rows"] == 300
    assert (tmp_path / "home" / "datasets" / out["id"] / "manifest.json").is_file()


def test_import_then_train_through_the_cli(tmp_path):
    import pyarrow as pa
    from examples.phishing import data

    from closedloop import Bundle

    columns, labels = data.generate(1500, seed=5, phish_rate=0.3)
    f = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({**{k: list(v) for k, v in columns.items()}, "is_phish": labels}), f)
    home = tmp_path / "home"
    runner = CliRunner()
    r = runner.invoke(app, ["--home", str(home), "dataset", "import", str(f), "--system", SYSTEM,
                            "--label", "is_phish", "--unit", "user_id"])
    assert r.exit_code == 0, r.output
    dataset_id = json.loads(r.stdout)["id"]
    r = runner.invoke(app, ["--home", str(home), "train", "--system", SYSTEM, "--dataset", dataset_id,
                            "--model", "logistic", "--param", "C=0.5"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    from examples.phishing.system import phishing

    bundle = Bundle.load(out["path"], phishing)
    assert bundle.metrics["lineage"]["dataset_id"] == dataset_id
    assert bundle.metrics["heldout"]["auc"] > 0.85

    report = tmp_path / "report.json"
    r = runner.invoke(app, ["--home", str(home), "evaluate", "--system", SYSTEM, "--bundle", out["path"],
                            "--bundle", out["path"], "--dataset", dataset_id, "--out", str(report)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["gate"] == "pass"  # a bundle never fails against itself
    body = json.loads(report.read_text())
    assert body["schema_version"] == 1 and body["bundles"][0]["quality"]["auc"] > 0.85

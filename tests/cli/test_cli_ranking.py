"""A ranking system through the CLI: ``closedloop decide`` reads requests with their candidates
(JSON lines) and writes their rankings as the service answers them; ``closedloop outcomes ingest``
takes outcomes that name a slot (by candidate id or 1-based slot), checks them against the slates
the project home's telemetry logged, and keeps the good lines while naming the bad ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from examples.feed.data import generate
from examples.feed.system import feed, model
from typer.testing import CliRunner

from closedloop import Bundle, Runtime
from closedloop.cli.main import app
from closedloop.telemetry import TelemetryStore

runner = CliRunner()
SYSTEM = "examples.feed.system:feed"


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, Bundle, Path]:
    bundle = Bundle.build(feed, model)
    h = tmp_path / "home"
    return h, bundle, bundle.save(h / "bundles" / bundle.version)


def _bits(xs: list[float]) -> list[bytes]:
    return [struct.pack("<d", x) for x in xs]


def _decide(h: Path, path: Path, lines: list[str], *extra: str) -> Any:
    return runner.invoke(app, ["--home", str(h), "decide", "--system", SYSTEM, "--bundle", str(path), "--seed", "3",
                               *extra], input="\n".join(lines) + "\n")


def test_decide_prints_each_ranking_and_names_a_bad_line(home):
    h, bundle, path = home
    reqs = generate(3, 30, seed=1)
    bad = json.loads(json.dumps(reqs[2]))
    bad["candidates"][5]["category"] = "weather"
    res = _decide(h, path, [json.dumps(reqs[0]), json.dumps(reqs[1]), json.dumps(bad), "not json"])
    assert res.exit_code == 1
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(out) == 4 and "decided 2, failed 2" in res.stderr
    rt = Runtime(feed, bundle)
    for req, a in zip(reqs[:2], out[:2], strict=True):
        d = rt.decide(req, decision_id=a["decision_id"], timestamp_ns=a["timestamp_ns"])
        assert a["slate"] == d.ranking and len(a["slate"]) == 5
        assert _bits(a["slot_propensities"]) == _bits(d.slot_propensities)
        assert _bits(list(a["scores"].values())) == _bits(d.scores) and list(a["scores"]) == d.candidates
    assert out[2] == {"line": 3, "error": {**out[2]["error"], "field": "candidates[5].category"}}
    assert out[3]["line"] == 4 and out[3]["error"]["type"] == "JSONError"


def test_outcomes_ingest_takes_slots_checked_against_the_logged_slates(home, tmp_path):
    h, _, path = home
    res = _decide(h, path, [json.dumps(r) for r in generate(2, 12, seed=2)], "--log")
    assert res.exit_code == 0, res.output
    a, b = (json.loads(x) for x in res.stdout.splitlines())
    not_shown = next(c for c in a["scores"] if c not in a["slate"])
    lines = [
        {"decision_id": a["decision_id"], "kind": "clicked", "source": "app", "slot": 1, "event_time": 1},
        {"decision_id": a["decision_id"], "kind": "clicked", "source": "app", "candidate_id": not_shown, "event_time": 1},
        {"decision_id": b["decision_id"], "kind": "clicked", "source": "app", "candidate_id": b["slate"][3], "event_time": 1},
        {"decision_id": b["decision_id"], "kind": "clicked", "source": "app", "slot": 6, "event_time": 1},
        {"decision_id": b["decision_id"], "kind": "clicked", "source": "app", "slot": 2, "candidate_id": "x"},
        {"decision_id": a["decision_id"], "kind": "shared", "source": "app", "event_time": 1},  # the whole decision
    ]
    f = tmp_path / "outcomes.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = runner.invoke(app, ["--home", str(h), "outcomes", "ingest", str(f), "--system", SYSTEM])
    assert res.exit_code == 1  # some lines were rejected; the others are durable
    summary = json.loads(res.stdout.splitlines()[-1])
    assert (summary["ingested"], summary["durable"], summary["rejected"]) == (3, 3, 3)
    assert f"line 2: 'candidate_id' must be one of the candidates decision {a['decision_id']!r} showed" in res.stderr
    assert "line 4: 'slot' must be an integer in 1..5" in res.stderr
    assert "line 5: 'slot' must be absent when 'candidate_id' is given" in res.stderr
    t = TelemetryStore(h).read("outcomes", columns=["decision_id", "candidate_id", "kind"])
    assert set(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True)) == {
        (a["decision_id"], a["slate"][0], "clicked"), (b["decision_id"], b["slate"][3], "clicked"),
        (a["decision_id"], None, "shared")}
    assert t.num_rows == 3

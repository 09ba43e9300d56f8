"""One outcome rule set everywhere: the service (``POST /v1/outcomes``), ``closedloop outcomes
ingest`` (read_outcomes) and the loop's inbox judge a report the same way, name a refused field
with its rule and value (never the decoder's words), and default a missing ``event_time`` to
when the report was received."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import msgspec
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from closedloop import Bundle
from closedloop.datasets import read_outcomes
from closedloop.service.auth import Credentials
from closedloop.service.bodies import OutcomeReport, check_outcome
from support.service import serve_in_thread

VALUE_RULE = "a finite number"
EVENT_TIME_RULE = "nanoseconds since the epoch (an integer ≥ 0) or an ISO-8601 time"
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z

#: Reports and the field each must be refused for (None: accepted) — at every boundary.
CASES: list[tuple[dict, str | None]] = [
    ({"decision_id": "d1", "kind": "reported_phish", "source": "u"}, None),  # no event_time: defaulted
    ({"unit": 42, "kind": "k", "source": "u", "event_time": "2026-01-01T00:00:00Z", "value": 0}, None),
    ({"decision_id": "d", "kind": "k", "source": "u", "value": "high"}, "value"),
    ({"decision_id": "d", "kind": "k", "source": "u", "value": True}, "value"),
    ({"decision_id": "d", "kind": "k", "source": "u", "value": [1]}, "value"),
    ({"decision_id": "d", "kind": "k", "source": "u", "value": 10**400}, "value"),
    ({"decision_id": "d", "kind": 5, "source": "u"}, "kind"),
    ({"decision_id": "d", "kind": "k", "source": 7}, "source"),
    ({"decision_id": 3, "kind": "k", "source": "u"}, "decision_id"),
    ({"unit": True, "kind": "k", "source": "u"}, "unit"),
    ({"unit": 1.5, "kind": "k", "source": "u"}, "unit"),
    ({"kind": "k", "source": "u"}, "decision_id"),
    ({"decision_id": "d", "kind": "k", "source": "u", "outcome_id": 9}, "outcome_id"),
    ({"decision_id": "d", "kind": "k", "source": "u", "event_time": "yesterday"}, "event_time"),
    ({"decision_id": "d", "kind": "k", "source": "u", "event_time": -1}, "event_time"),
    ({"decision_id": "d", "kind": "k", "source": "u", "event_time": 1.5e18}, "event_time"),
    ({"decision_id": "d", "kind": "k", "source": "u", "event_time": False}, "event_time"),
    # a ranking decision's slot: by candidate id or 1-based slot, one of them, with the decision id
    ({"decision_id": "d", "kind": "k", "source": "u", "candidate_id": "item-1"}, None),
    ({"decision_id": "d", "kind": "k", "source": "u", "candidate_id": 7}, "candidate_id"),
    ({"decision_id": "d", "kind": "k", "source": "u", "candidate_id": ""}, "candidate_id"),
    ({"decision_id": "d", "kind": "k", "source": "u", "slot": 0}, "slot"),
    ({"decision_id": "d", "kind": "k", "source": "u", "slot": True}, "slot"),
    ({"decision_id": "d", "kind": "k", "source": "u", "slot": "2"}, "slot"),
    ({"decision_id": "d", "kind": "k", "source": "u", "slot": 10**30}, "slot"),  # past any slate (and int64)
    ({"decision_id": "d", "kind": "k", "source": "u", "slot": 1, "candidate_id": "item-1"}, "slot"),
    ({"unit": "u1", "kind": "k", "source": "u", "slot": 1}, "decision_id"),
    ({"unit": "u1", "kind": "k", "source": "u", "candidate_id": "item-1"}, None),  # linked by unit and time
]


@pytest.fixture(scope="module")
def served(phishing, tmp_path_factory):
    from examples.phishing.heuristic import heuristic_intelligence

    from closedloop.service import RateLimit, ServiceSettings, create_app
    from closedloop.settings import Settings

    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})
    home = tmp_path_factory.mktemp("rules") / "home"
    path = bundle.save(home / "bundles" / bundle.version)
    token = Credentials(home / "credentials.json").add("app", ["decide", "report"])
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", bundle=str(path),
                         outcome_rate_per_unit=RateLimit(float("inf"), 0.0),
                         outcome_rate_per_source=RateLimit(float("inf"), 0.0))
    with serve_in_thread(create_app(st, system=phishing)) as base:
        yield base, {"Authorization": f"Bearer {token}"}


def _post(base: str, auth: dict, body: object) -> httpx.Response:
    return httpx.post(base + "/v1/outcomes", content=json.dumps(body).encode(), timeout=30,
                      headers={**auth, "Content-Type": "application/json"})


def test_a_bad_value_is_named_by_field_rule_and_value(served):
    base, auth = served
    r = _post(base, auth, {"decision_id": "d", "kind": "reported_phish", "source": "user", "value": "high"})
    assert r.status_code == 422, r.text
    p = r.json()
    assert (p["field"], p["rule"], p["value"]) == ("value", "a finite number", "high")
    assert p["detail"] == "Outcome field 'value' must be a finite number. Got 'high' instead."
    assert "Expected" not in r.text and "$." not in r.text  # not the decoder's words
    # in a batch, the same problem with its index; the good report is accepted
    r = _post(base, auth, [{"decision_id": "d", "kind": "reported_phish", "source": "user", "value": 1},
                           {"decision_id": "d", "kind": "reported_phish", "source": "user", "value": "high"},
                           {"decision_id": "d", "kind": "reported_phish", "source": "user", "value": True}])
    assert r.status_code == 202, r.text
    got = r.json()
    assert got["accepted"] == 1
    assert [(e["index"], e["field"], e["rule"], e["value"]) for e in got["rejected"]] == [
        (1, "value", VALUE_RULE, "high"), (2, "value", VALUE_RULE, True)]


def test_the_service_and_ingest_judge_every_report_alike(served, tmp_path):
    base, auth = served
    reports = [r for r, _ in CASES]
    # the service: one batch, each refusal listed with its index
    r = _post(base, auth, reports)
    assert r.status_code == 202, r.text
    service = {e["index"]: e["field"] for e in r.json()["rejected"]}
    for e in r.json()["rejected"]:
        assert e["detail"].startswith(f"Outcome field '{e['field']}' must be "), e
    # ingest: one line a report
    p = tmp_path / "o.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in reports))
    table, errors = read_outcomes(p)
    ingest = {line - 1: reason.split("'")[1] for line, reason in errors}
    expected = {i: field for i, (_, field) in enumerate(CASES) if field is not None}
    assert service == expected
    assert ingest == expected
    assert table.num_rows == len(CASES) - len(expected) == r.json()["accepted"]
    # the reasons are the service's words too
    reasons = dict(errors)
    assert reasons[3] == "'value' must be a finite number. Got 'high' instead."
    assert reasons[14] == f"'event_time' must be {EVENT_TIME_RULE}. Got 'yesterday' instead."


def test_a_missing_event_time_is_when_the_report_was_received(tmp_path, phishing):
    # the service: when it receives the report
    o = msgspec.json.decode(b'{"decision_id": "d1", "kind": "reported_phish", "source": "u"}', type=OutcomeReport)
    got = check_outcome(o, "phishing", T0 + 5, None)
    assert got == ("d1", None, "reported_phish", 1.0, T0 + 5, "u", None, None, None)  # no candidate_id, no slot
    # ingest: when the file was received (its modification time) — the same at every reading,
    # so ingesting a file again gives the same outcomes (the same derived ids)
    p = tmp_path / "o.jsonl"
    p.write_text(json.dumps({"decision_id": "d1", "kind": "reported_phish", "source": "u"}) + "\n"
                 + json.dumps({"decision_id": "d2", "kind": "reported_phish", "source": "u", "event_time": 7}) + "\n")
    os.utime(p, ns=(T0 + 9, T0 + 9))
    for _ in range(2):
        table, errors = read_outcomes(p)
        assert errors == [] and table["event_ns"].to_pylist() == [T0 + 9, 7]
    table, _ = read_outcomes(p, default_event_ns=T0 + 1)
    assert table["event_ns"].to_pylist() == [T0 + 1, 7]
    from closedloop import SpecError

    with pytest.raises(SpecError, match="'default_event_ns' parameter of read_outcomes must be"):
        read_outcomes(p, default_event_ns=-1)


def test_parquet_rows_follow_the_same_rules_and_take_timestamps(tmp_path):
    import datetime as dt

    import pyarrow as pa

    p = tmp_path / "o.parquet"
    pq.write_table(pa.table({
        "decision_id": ["d1", "d2", "d3"],
        "kind": ["k", "k", "k"],
        "source": ["s", "s", "s"],
        "value": ["1", "x", "2"],  # a string column: every value refused by name
        "event_time": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 3, type=pa.timestamp("us", tz="UTC")),
    }), p)
    table, errors = read_outcomes(p)
    assert table.num_rows == 0 and [e[0] for e in errors] == [1, 2, 3]
    assert errors[1][1] == "'value' must be a finite number. Got 'x' instead."
    pq.write_table(pa.table({
        "decision_id": ["d1", "d2"], "kind": ["k", "k"], "source": ["s", "s"], "value": [1.0, 0.0],
        "event_time": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None], type=pa.timestamp("us", tz="UTC")),
    }), p)
    os.utime(p, ns=(T0 + 3, T0 + 3))
    table, errors = read_outcomes(p)
    assert errors == [] and table["event_ns"].to_pylist() == [T0, T0 + 3]


def test_the_cycles_inbox_takes_the_same_default(tmp_path: Path):
    from closedloop import ManualClock
    from closedloop.orchestration import Cycle, LoopPlan
    from closedloop.registry import Registry
    from closedloop.telemetry import TelemetryStore
    from support.orchestration import DAY, START, make_system

    home = tmp_path / "home"
    (home / "inbox").mkdir(parents=True)
    f = home / "inbox" / "outcomes.jsonl"
    f.write_text("".join(json.dumps({"decision_id": f"d{i}", "kind": "reported_phish", "source": "user"}) + "\n"
                         for i in range(3)))
    os.utime(f, ns=(START + 11, START + 11))
    clock = ManualClock(START + DAY)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    try:
        rec = Cycle(LoopPlan(make_system()), home, reg, actor="test", clock=clock).run_once()
    finally:
        reg.close()
    step = rec["steps"]["ingest"]["result"]
    assert step["rejected"] == [] and step["durable"] == 3, step
    times = []
    for part in TelemetryStore(home).outcome_files():
        times += pc.cast(pq.read_table(part, columns=["event_ns"])["event_ns"], "int64").to_pylist()
    assert times == [START + 11] * 3

"""Bounded strings at every boundary: a string context field holds at most
8,192 characters unless it declares another bound; outcome strings have theirs; a refusal names
the field and the rule and shows the value clipped (its start and its length), never whole."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from closedloop import Bundle, ContextError, Float, Schema, SpecError, Str
from closedloop.context.schema import DEFAULT_MAX_LENGTH
from closedloop.errors import BatchContextError, OutcomeError
from closedloop.telemetry import MemorySink, Telemetry

BIG = "u" * (7 << 20)  # a 7 MB user id


def _schema(**kw) -> Schema:
    return Schema([Str("user"), Str("url", default="", max_length=4096), Float("x", default=0.0)], **kw)


def _small(e: ContextError) -> None:
    """The error, its message and its JSON form are small, and show the length."""
    assert len(str(e)) < 300
    assert len(json.dumps(e.to_dict())) < 1000
    assert isinstance(e.value, str) and len(e.value) < 100 and str(7 << 20) in e.value


def test_the_default_bound_is_8192_characters_and_one_past_it_is_refused():
    s = _schema()
    assert DEFAULT_MAX_LENGTH == 8192
    assert s.validate({"user": "é" * 8192}).user == "é" * 8192  # characters, not bytes
    with pytest.raises(ContextError) as ei:
        s.validate({"user": "u" * 8193})
    e = ei.value
    assert e.field == "user" and e.rule == "a string of at most 8192 characters"
    assert "8193" in e.value and e.value.startswith("u" * 40)
    # a wrong type keeps its plain rule
    with pytest.raises(ContextError) as ei:
        s.validate({"user": 7})
    assert ei.value.rule == "a string" and ei.value.value == 7


def test_a_declared_bound_replaces_the_default():
    s = _schema()
    assert s.validate({"user": "u", "url": "h" * 4096}).url == "h" * 4096
    with pytest.raises(ContextError) as ei:
        s.validate({"user": "u", "url": "h" * 4097})
    assert ei.value.field == "url" and ei.value.rule == "a string of at most 4096 characters"
    big = Schema([Str("doc", max_length=100_000)])
    assert len(big.validate({"doc": "d" * 50_000}).doc) == 50_000


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10", 2**70])
def test_the_max_length_parameter_is_validated(bad):
    with pytest.raises(SpecError, match=r"'max_length' .* must be an integer in \[1, .*Got"):
        Str("url", max_length=bad)


def test_a_7mb_value_is_refused_with_a_small_error_on_every_path():
    s = _schema()
    for call in (lambda: s.validate({"user": BIG}),
                 lambda: s.decode_json(json.dumps({"user": BIG}).encode())):
        with pytest.raises(ContextError) as ei:
            call()
        assert ei.value.field == "user" and "8192" in ei.value.rule
        _small(ei.value)
    # a huge value for a number, and a huge undeclared key of a 'forbid' schema, are clipped too
    with pytest.raises(ContextError) as ei:
        s.validate({"user": "u", "x": BIG})
    assert ei.value.field == "x"
    _small(ei.value)
    with pytest.raises(ContextError) as ei:
        _schema(extra="forbid").validate({"user": "u", BIG: 1})
    assert len(ei.value.field) < 100 and len(str(ei.value)) < 300


@pytest.mark.parametrize("as_table", [False, True])
def test_the_batch_path_refuses_the_same_rows(as_table):
    s = _schema()
    cols = {"user": ["a", "u" * 8192, "u" * 8193, BIG], "x": [1.0, 2.0, 3.0, 4.0]}
    batch = pa.table(cols) if as_table else cols
    with pytest.raises(BatchContextError) as ei:
        s.validate_batch(batch)
    assert [(e.row, e.field) for e in ei.value.errors] == [(2, "user"), (3, "user")]
    assert ei.value.errors[0].rule == "a string of at most 8192 characters"
    _small(ei.value.errors[1])
    kept = s.validate_batch(batch, errors="skip")
    assert kept.rows.tolist() == [0, 1]


def test_outcome_strings_are_bounded_and_shown_clipped_in_log_outcome(phishing):
    tel = Telemetry(MemorySink(), system=phishing)
    try:
        for field, kw in (("unit", {"unit": BIG}), ("decision_id", {"decision_id": BIG}),
                          ("source", {"decision_id": "d", "source": BIG}),
                          ("outcome_id", {"decision_id": "d", "outcome_id": BIG}),
                          ("kind", {"decision_id": "d", "kind": "k" * (7 << 20)})):
            args = {"kind": "reported", "event_ns": 1, "source": "analyst", **kw}
            with pytest.raises(OutcomeError) as ei:
                tel.log_outcome(**args)
            assert ei.value.field == field and "at most" in ei.value.rule
            _small(ei.value)
    finally:
        tel.close()


def test_ingest_refuses_a_huge_unit_with_a_short_reason(tmp_path: Path):
    from closedloop.datasets import read_outcomes

    p = tmp_path / "o.jsonl"
    p.write_text(json.dumps({"unit": BIG, "kind": "reported", "source": "a", "event_time": 1}) + "\n"
                 + json.dumps({"unit": "u1", "kind": "reported", "source": "a", "event_time": 1}) + "\n")
    table, errors = read_outcomes(p)
    assert table.num_rows == 1 and [line for line, _ in errors] == [1]
    assert "'unit'" in errors[0][1] and len(errors[0][1]) < 300


@pytest.fixture(scope="module")
def served(phishing, tmp_path_factory):
    from examples.phishing.heuristic import heuristic_intelligence

    from closedloop.service import ServiceSettings, create_app
    from closedloop.service.auth import Credentials
    from closedloop.settings import Settings
    from support.service import serve_in_thread

    bundle = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})
    home = tmp_path_factory.mktemp("limits") / "home"
    path = bundle.save(home / "bundles" / bundle.version)
    token = Credentials(home / "credentials.json").add("app", ["decide", "report"])
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", bundle=str(path))
    with serve_in_thread(create_app(st, system=phishing)) as base:
        yield base, token


def test_the_service_answers_a_7mb_user_id_with_a_small_422(served):
    import httpx

    base, token = served
    body = json.dumps({"user_id": BIG, "url": "https://example.com/", "domain": "example.com",
                       "domain_age_days": 3}).encode()
    assert len(body) > 7_000_000
    r = httpx.post(base + "/v1/decide", content=body, timeout=60,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status_code == 422
    assert len(r.content) < 2000
    p = r.json()
    assert p["field"] == "user_id" and p["rule"] == "a string of at most 8192 characters"
    assert str(7 << 20) in p["value"] and len(p["value"]) < 100
    # one character under the bound is decided
    ok = dict(json.loads(body), user_id="u" * 8192)
    r = httpx.post(base + "/v1/decide", json=ok, timeout=60, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_the_service_answers_a_huge_outcome_unit_and_time_with_small_problems(served):
    import httpx

    base, token = served
    auth = {"Authorization": f"Bearer {token}"}
    for field, report in (("unit", {"kind": "reported_phish", "source": "user", "unit": "u" * 1_000_000}),
                          ("event_time", {"kind": "reported_phish", "source": "user", "unit": "u1",
                                          "event_time": "t" * 1_000_000})):
        r = httpx.post(base + "/v1/outcomes", json=report, timeout=60, headers=auth)
        assert r.status_code == 422, r.text[:300]
        assert len(r.content) < 2000, (field, len(r.content))
        assert r.json()["field"] == field and "1000000 characters" in r.json()["value"]

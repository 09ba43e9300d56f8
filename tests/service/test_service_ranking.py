"""A ranking system through the service: ``POST /v1/decide`` with a request and its candidates
answers the ranking the runtime makes in-process (bitwise scores, same slate and propensities for
the same decision id and time), a batch decides each request as alone and keeps the good ones,
bad candidates are refused by field, rule and value, and an outcome names its slot (by candidate
id or 1-based slot) — checked against the decision's slate and logged with the candidate's id."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import pytest
from examples.feed.data import generate
from examples.feed.system import feed, model

from closedloop import Bundle, Client, Runtime
from closedloop.errors import ContextError, ServiceError
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.service.ranked import Ranked
from closedloop.settings import Settings
from closedloop.telemetry import TelemetryStore
from support.service import serve_in_thread

MAX_CANDIDATES = 50


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("ranking") / "home"
    bundle = Bundle.build(feed, model)
    path = bundle.save(home / "bundles" / bundle.version)
    token = Credentials(home / "credentials.json").add("app", ["decide", "report"])
    st = ServiceSettings(project=Settings(home=home), system="examples.feed.system:feed", bundle=str(path),
                         max_candidates=MAX_CANDIDATES)
    app = create_app(st, system=feed)
    with serve_in_thread(app) as base:
        yield {"base": base, "token": token, "auth": {"Authorization": f"Bearer {token}"}, "home": home,
               "bundle": bundle, "app": app}


def _post(s: dict[str, Any], path: str, body: Any) -> httpx.Response:
    return httpx.post(s["base"] + path, content=json.dumps(body).encode(), timeout=30,
                      headers={**s["auth"], "Content-Type": "application/json"})


def _bits(xs: list[float]) -> list[bytes]:
    return [struct.pack("<d", x) for x in xs]


def _in_process(bundle: Bundle, request: dict[str, Any], answer: dict[str, Any]) -> Any:
    """The runtime's ranking of ``request`` with the answer's decision id and time."""
    return Runtime(feed, bundle).decide(request, decision_id=answer["decision_id"], timestamp_ns=answer["timestamp_ns"])


def _assert_same(answer: dict[str, Any], d: Any) -> None:
    assert answer["slate"] == d.ranking
    assert _bits(answer["slot_propensities"]) == _bits(d.slot_propensities)
    assert _bits([answer["propensity"]]) == _bits([d.propensity])
    assert list(answer["scores"]) == d.candidates  # every candidate, in the request's order
    assert _bits(list(answer["scores"].values())) == _bits(d.scores)
    assert (answer["unit"], answer["bundle_version"], answer["why"], answer["killswitch"]) == (
        d.unit, d.bundle_version, d.why, False)
    assert answer["flight"] is None


def test_a_ranking_over_http_is_the_in_process_ranking(served):
    for req in generate(5, 40, seed=3):
        r = _post(served, "/v1/decide", req)
        assert r.status_code == 200, r.text
        a = r.json()
        assert len(a["slate"]) == 5 and len(set(a["slate"])) == 5
        _assert_same(a, _in_process(served["bundle"], req, a))


def test_a_batch_decides_each_request_as_alone_and_keeps_the_good_ones(served):
    reqs = generate(4, 12, seed=4)
    bad = json.loads(json.dumps(reqs[1]))
    bad["candidates"][3]["item_ctr"] = 2.0  # out of its declared range
    r = _post(served, "/v1/decide", [reqs[0], bad, reqs[2], 7, reqs[3]])
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["index"] == [0, 2, 4]
    assert [(e["index"], e["field"]) for e in got["errors"]] == [(1, "candidates[3].item_ctr"), (3, "<context>")]
    assert got["errors"][0]["value"] == 2.0
    for i, a in zip(got["index"], got["decisions"], strict=True):
        _assert_same(a, _in_process(served["bundle"], [reqs[0], None, reqs[2], None, reqs[3]][i], a))
    # every request refused: 422, each listed
    r = _post(served, "/v1/decide", [bad, bad])
    assert r.status_code == 422 and [e["index"] for e in r.json()["errors"]] == [0, 1]


@pytest.mark.parametrize(("change", "field", "rule"), [
    (lambda q: q["candidates"][2].pop("category"), "candidates[2].category", "present"),
    (lambda q: q["candidates"][1].update(age_hours="old"), "candidates[1].age_hours", None),
    (lambda q: q["candidates"][4].update(item_id=q["candidates"][0]["item_id"]), "candidates[4].item_id",
     "unique among the request's candidates"),
    (lambda q: q.pop("candidates"), "candidates", "present"),
    (lambda q: q.update(candidates={"a": 1}), "candidates", "a list of candidate objects"),
    (lambda q: q.pop("hour"), "hour", "present"),
])
def test_a_bad_request_is_refused_by_field_rule_and_value(served, change, field, rule):
    req = json.loads(json.dumps(generate(1, 8, seed=5)[0]))
    change(req)
    r = _post(served, "/v1/decide", req)
    assert r.status_code == 422, r.text
    p = r.json()
    assert p["field"] == field
    if rule is not None:
        assert p["rule"] == rule
    assert "value" in p and p["detail"]


def test_too_many_candidates_is_413_before_the_runtime(served):
    req = generate(1, MAX_CANDIDATES + 1, seed=6)[0]
    r = _post(served, "/v1/decide", req)
    assert r.status_code == 413, r.text
    p = r.json()
    assert (p["field"], p["value"]) == ("candidates", MAX_CANDIDATES + 1)
    assert p["rule"].startswith(f"at most {MAX_CANDIDATES} candidates")
    assert _post(served, "/v1/decide", generate(1, MAX_CANDIDATES, seed=6)[0]).status_code == 200
    # in a batch: that request refused, the others decided
    r = _post(served, "/v1/decide", [req, generate(1, 3, seed=7)[0]])
    assert r.status_code == 200 and r.json()["index"] == [1] and r.json()["errors"][0]["field"] == "candidates"


def _outcomes(home) -> dict[str, list[Any]]:
    t = TelemetryStore(home).read("outcomes", columns=["decision_id", "candidate_id", "kind"])
    return {k: t.column(k).to_pylist() for k in t.column_names}


def test_an_outcome_names_its_slot_and_is_logged_with_the_candidate(served):
    a = _post(served, "/v1/decide", generate(1, 20, seed=8)[0]).json()
    did = a["decision_id"]
    one = {"decision_id": did, "kind": "clicked", "source": "app"}
    r = _post(served, "/v1/outcomes", {**one, "slot": 2})
    assert r.status_code == 202, r.text
    r = _post(served, "/v1/outcomes", {**one, "candidate_id": a["slate"][4], "kind": "dwelled"})
    assert r.status_code == 202, r.text
    logged = _outcomes(served["home"])
    mine = sorted((k, c) for d, c, k in zip(logged["decision_id"], logged["candidate_id"], logged["kind"], strict=True)
                  if d == did)
    assert mine == [("clicked", a["slate"][1]), ("dwelled", a["slate"][4])]
    # a candidate the decision did not show, a slot past its slate, both at once: refused by name
    not_shown = next(c for c in a["scores"] if c not in a["slate"])
    for body, field, value in [({**one, "candidate_id": not_shown}, "candidate_id", not_shown),
                               ({**one, "slot": 6}, "slot", 6),
                               ({**one, "slot": 0}, "slot", 0),
                               ({**one, "slot": 1, "candidate_id": a["slate"][0]}, "slot", 1)]:
        r = _post(served, "/v1/outcomes", body)
        assert r.status_code == 422, r.text
        p = r.json()
        assert (p["field"], p["value"]) == (field, value), p
        assert p["detail"].startswith(f"Outcome field '{field}' must be ")
    # a batch: the good ones kept, the bad ones listed with their index
    r = _post(served, "/v1/outcomes", [{**one, "slot": 5, "kind": "shared"}, {**one, "candidate_id": not_shown},
                                       {**one, "slot": 3, "kind": "shared"}])
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2
    assert [(e["index"], e["field"]) for e in r.json()["rejected"]] == [(1, "candidate_id")]


def test_the_client_decides_rankings_and_reports_slots(served):
    reqs = generate(3, 15, seed=9)
    with Client(served["base"], token=served["token"]) as cl:
        d = cl.decide(reqs[0])
        assert isinstance(d, Ranked)
        _assert_same(d.to_dict(), _in_process(served["bundle"], reqs[0], d.to_dict()))
        assert cl.report(d, kind="clicked", source="client", slot=3) == 1
        assert cl.report(d, kind="clicked", source="client", candidate_id=d.slate[0]) == 1
        with pytest.raises(ServiceError) as e:
            cl.report(d, kind="clicked", source="client", slot=9)
        assert e.value.status == 422 and e.value.problem["errors"][0]["field"] == "slot"
        batch = cl.decide_batch([reqs[1], {"user_id": "u"}, reqs[2]])
        assert batch.decisions[1] is None and batch.errors[0]["index"] == 1
        assert all(isinstance(x, Ranked) for x in (batch.decisions[0], batch.decisions[2]))
        with pytest.raises(ContextError) as ce:
            cl.decide({**reqs[1], "hour": 30})
        assert ce.value.field == "hour"
    logged = _outcomes(served["home"])
    assert (d.decision_id, d.slate[2]) in set(zip(logged["decision_id"], logged["candidate_id"], strict=True))


def test_metrics_readiness_and_the_openapi_document_know_rankings(served):
    _post(served, "/v1/decide", generate(1, 5, seed=10)[0])
    metrics = httpx.get(served["base"] + "/metrics").text
    assert 'closedloop_decisions_total{action="(ranking)"' in metrics
    assert "item-" not in metrics  # candidate ids never become label values
    assert httpx.get(served["base"] + "/readyz").json()["status"] == "ready"
    doc = httpx.get(served["base"] + "/openapi.json").json()["components"]["schemas"]
    assert "candidates" in doc["Context"]["required"]
    assert doc["Context"]["properties"]["candidates"]["items"] == {"$ref": "#/components/schemas/Candidate"}
    assert {"slate", "slot_propensities", "scores"} <= set(doc["Decision"]["properties"])
    assert {"candidate_id", "slot"} <= set(doc["OutcomeReport"]["properties"])


def test_under_the_kill_switch_the_first_k_candidates_are_shown_unscored(served):
    req = generate(1, 9, seed=11)[0]
    rt = served["app"].state.holder["svc"].runtime
    rt.set_killswitch(True)
    try:
        a = _post(served, "/v1/decide", req).json()
    finally:
        rt.set_killswitch(False)
    assert a["killswitch"] is True and a["scores"] == {}
    assert a["slate"] == [c["item_id"] for c in req["candidates"][:5]] and a["slot_propensities"] == [1.0] * 5
    assert _post(served, "/v1/decide", req).json()["killswitch"] is False

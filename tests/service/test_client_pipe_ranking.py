"""The pipe for a ranking system: ``GET /v1/bundles/current`` serves its bundle (the client form
ranks), the client runtime ranks in Node, ``POST /v1/decisions`` takes the rankings back (validated
item by item: the request with its candidates, the slate, the slot propensities) and logs them as
the service's own, and a reward dataset built from them and slot outcomes has their rows — against
a real server on loopback."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq

from closedloop import Bundle, Runtime
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.exploration import SquareCB
from closedloop.runtime.deployment import Deployment
from closedloop.runtime.signing import home_key
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.service.client_bundles import verify_document
from closedloop.service.sources import StaticSource
from closedloop.settings import Settings
from closedloop.telemetry import TelemetryStore
from support.node_runtime import run_node
from support.service import serve_in_thread

CATS = ("news", "sports", "local", "tech")
#: The SDK ranks in Node against the server: a client for unit u3 ranks the requests and flushes its
#: telemetry; prints the decisions and the client's status.
SDK_RANK = """
import { createClient } from "./src/sdk/index.js";
const [base, token, key, reqs] = process.argv.slice(1);
const c = createClient({ baseUrl: base, token, unit: "u3", publicKeys: [key], checkEveryMs: 0, flushEveryMs: 0 });
await c.ready();
const out = JSON.parse(reqs).map((r) => c.rank(r));
await c.flush();
console.log(JSON.stringify({ out, status: c.status() }));
await c.close();
"""


def _requests(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        cands = [{"item_id": f"i{i}-{j}", "category": CATS[int(rng.integers(0, 4))], "age_hours": float(rng.exponential(10)),
                  "item_ctr": float(rng.beta(1, 10)), "is_new": bool(rng.random() < 0.2)} for j in range(int(rng.integers(2, 9)))]
        out.append({"user_id": f"u{i}", "hour": int(rng.integers(0, 24)), "user_age_days": int(rng.integers(0, 9)),
                    "topic_1": "news", "topic_2": "tech", "candidates": cands})
    return out


def test_a_ranking_systems_bundle_ranks_in_node_and_its_rankings_come_back_as_telemetry(tmp_path: Path) -> None:
    from closedloop.world.feed_system import feed_system, heuristic

    system = feed_system(CATS, k=3, explore=SquareCB(50.0), name="feed_client", window=timedelta(minutes=30))
    home = tmp_path / "home"
    key = home_key(home).key
    bundle = Bundle.build(system, heuristic()).signed(key)
    token = Credentials(home / "credentials.json").add("web", ["client", "report"])
    h = {"Authorization": f"Bearer {token}"}
    st = ServiceSettings(project=Settings(home=home), system="examples.feed.system:feed", flush_interval_ms=2)
    app = create_app(st, system=system, source=StaticSource(Deployment(bundle)))
    requests = _requests(24)
    with serve_in_thread(app) as base:
        r = httpx.get(base + "/v1/bundles/current", params={"unit": "u1"}, headers=h)
        assert r.status_code == 200, r.text
        form = json.loads(verify_document(r.content, [key.public_key]))
        assert form["experience"]["kind"] == "ranking" and form["bundle"]["id"] == bundle.version
        (tmp_path / "b.json").write_bytes(r.content)
        now = time.time_ns()
        ids = [f"{0x19000000000 + i:012x}{i:020x}" for i in range(len(requests))]
        with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as fh:
            for i, (q, d) in enumerate(zip(requests, ids, strict=True)):
                fh.write(json.dumps({"r": q, "id": d, "ts": str(now + i)}) + "\n")
        run_node("tools/rank-file.mjs", str(tmp_path / "b.json"), str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"))
        ranked = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
        items = [{"decision_id": d, "bundle_id": bundle.version, "system": system.name, "unit": q["user_id"], "context": q,
                  "slate": js["slate"], "slot_propensities": js["slots"], "candidate_scores": js["scores"], "why": js["why"],
                  "timestamp": now + i} for i, (q, d, js) in enumerate(zip(requests, ids, ranked, strict=True))]
        q0 = requests[0]
        broken = {**q0, "candidates": [q0["candidates"][0], {**q0["candidates"][1], "item_ctr": 2}]}
        bad = [
            {**items[0], "decision_id": "b1", "slate": ["nope", *items[0]["slate"][1:]]},
            {**items[0], "decision_id": "b2", "slot_propensities": [0.5]},
            {**items[0], "decision_id": "b3", "context": broken},
            {**items[0], "decision_id": "b4", "unit": "someone-else"},
            {**items[0], "decision_id": "b5", "candidate_scores": [0.1]},
        ]
        resp = httpx.post(base + "/v1/decisions", json=items[:4] + bad + items[4:], headers=h, timeout=30)
        assert resp.status_code == 202, resp.text
        assert resp.json()["accepted"] == len(items)
        assert [(p["index"], p["field"]) for p in resp.json()["rejected"]] == [
            (4, "slate"), (5, "slot_propensities"), (6, "context.candidates[1].item_ctr"), (7, "unit"), (8, "candidate_scores")]
        clicks = [{"decision_id": it["decision_id"], "kind": "click", "source": "user", "slot": 1} for it in items[:10]]
        rr = httpx.post(base + "/v1/outcomes", json=clicks, headers=h)
        assert rr.status_code == 202, rr.text
        svc = app.state.holder["svc"]
        svc.runtime.set_killswitch(True)
        try:
            doc = json.loads(verify_document(httpx.get(base + "/v1/bundles/current", params={"unit": "u1"}, headers=h).content,
                                             [key.public_key]))
            assert doc["ranking"]["k"] == 3 and doc["default_action"] is None and doc["ranking"]["candidate_id"] == "item_id"
        finally:
            svc.runtime.set_killswitch(False)
        # the SDK: rank locally, then the kill switch's ranking (first k in input order), telemetry flushed
        mine = [{**q, "user_id": "u3"} for q in requests[:3]]
        sdk = json.loads(run_node("--input-type=module", "-e", SDK_RANK, base, token, key.public_key, json.dumps(mine)))
        py = Runtime(system, bundle)
        for r, q in zip(sdk["out"], mine, strict=True):  # as Python ranks with the same decision id
            d = py.decide(q, decision_id=r["decisionId"], timestamp_ns=0)
            assert r["slate"] == d.ranking and r["why"] == d.why and r["bundleId"] == bundle.version and not r["killswitch"]
        assert sdk["status"]["queue"] == 0 and sdk["status"]["bundleId"] == bundle.version, sdk["status"]
        svc.runtime.set_killswitch(True)  # a client that starts under the kill switch ranks by its document
        try:
            killed = json.loads(run_node("--input-type=module", "-e", SDK_RANK, base, token, key.public_key, json.dumps(mine[:1])))
        finally:
            svc.runtime.set_killswitch(False)
        k0 = killed["out"][0]
        assert k0["killswitch"] and k0["slate"] == [c["item_id"] for c in mine[0]["candidates"][:3]] and k0["slotPropensities"] == [1, 1, 1]
        sdk["out"].append(k0)
    store = TelemetryStore(home)
    store.compact()
    dec = {d["decision_id"]: d for d in pq.read_table(store.decision_files()).to_pylist()}
    for it in items:  # the columns a ranking of the service fills
        row = dec[it["decision_id"]]
        assert row["slate"] == it["slate"] and row["slot_propensities"] == it["slot_propensities"]
        assert row["candidate_ids"] == [c["item_id"] for c in it["context"]["candidates"]] and row["candidates_digest"]
        assert row["action"] == it["slate"][0] and row["bundle_version"] == bundle.version
    for r in sdk["out"]:
        row = dec[r["decisionId"]]
        assert row["slate"] == r["slate"] and row["unit"] == "u3" and row["killswitch"] == r["killswitch"]
    end = time.time_ns()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=0, until_ns=end + 1, cutoff_ns=end + 10**9 * 86400 * 30, out=tmp_path / "ds")
    rows = pq.read_table(Path(m.path) / "data.parquet").to_pylist()
    assert len(rows) == sum(len(it["slate"]) for it in items) + sum(len(r["slate"]) for r in sdk["out"])
    by = {(r["decision_id"], r["action"]): r for r in rows}
    for n, it in enumerate(items):
        for j, (cid, p) in enumerate(zip(it["slate"], it["slot_propensities"], strict=True)):
            row = by[(it["decision_id"], cid)]
            assert row["propensity"] == p
            assert row["reward"] == (1.0 if n < 10 and j == 0 else 0.0), (n, j, row)

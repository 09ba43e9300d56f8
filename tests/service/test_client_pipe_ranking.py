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

from closedloop import Bundle
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
            assert doc["ranking"]["k"] == 3 and doc["default_action"] is None
        finally:
            svc.runtime.set_killswitch(False)
    store = TelemetryStore(home)
    store.compact()
    dec = {d["decision_id"]: d for d in pq.read_table(store.decision_files()).to_pylist()}
    for it in items:  # the columns a ranking of the service fills
        row = dec[it["decision_id"]]
        assert row["slate"] == it["slate"] and row["slot_propensities"] == it["slot_propensities"]
        assert row["candidate_ids"] == [c["item_id"] for c in it["context"]["candidates"]] and row["candidates_digest"]
        assert row["action"] == it["slate"][0] and row["bundle_version"] == bundle.version
    end = time.time_ns()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=0, until_ns=end + 1, cutoff_ns=end + 10**9 * 86400 * 30, out=tmp_path / "ds")
    rows = pq.read_table(Path(m.path) / "data.parquet").to_pylist()
    assert len(rows) == sum(len(it["slate"]) for it in items)
    by = {(r["decision_id"], r["action"]): r for r in rows}
    for n, it in enumerate(items):
        for j, (cid, p) in enumerate(zip(it["slate"], it["slot_propensities"], strict=True)):
            row = by[(it["decision_id"], cid)]
            assert row["propensity"] == p
            assert row["reward"] == (1.0 if n < 10 and j == 0 else 0.0), (n, j, row)

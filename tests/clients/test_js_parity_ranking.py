"""Parity of the JavaScript client runtime's rankings with Python's: the feed example's bundles,
exported for clients, rank generated requests with their candidates in Node (``runtime.rank``, one
run over a JSON-lines file) and in Python (``Runtime.decide``): the same slates and reasons, slot
propensities and candidate scores equal within a relative 1e-12 — exact where no ``Math.exp`` is
on the path (ε-greedy, greedy); a Softmax slot probability and a sigmoid score pass through
JavaScript's ``Math.exp``, which may differ from the C library's in the last bit. Counted: the
(request, candidate) pairs scored, ≥ 100,000 in all. Invalid requests and candidates are refused by
both naming the same field, and the kill switch ranks alike.

The bundles: the feed example's hand-set logistic model (Softmax over slates), and the feed world's
system (what ``examples/feed/demo.py`` runs) with an affinity model trained on two small simulated
days as ``train(model="affinity")`` trains it, exploring with SquareCB, ε-greedy, and greedily."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from closedloop import Bundle, Runtime
from closedloop.errors import ContextError
from closedloop.experience.exploration import EpsilonGreedy, SquareCB
from closedloop.runtime.export_js import export_client_bundle
from closedloop.runtime.signing import SigningKey
from support.feed_logged import logged_feed_days
from support.node_runtime import run_node

T0 = 1_760_000_000_000_000_000
DAY_SIZE = {"world": {"sessions_per_day": 1500}, "users": {"count": 300, "new_per_day": 10}, "items": {"per_day": 300}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The feed world and an affinity model trained on two small days it logged under SquareCB."""
    from closedloop.training.train import train

    w, system, path = logged_feed_days(tmp_path_factory.mktemp("ranking-parity"), size=DAY_SIZE, days=2)
    model = train(system, path, model="affinity", params={"keys": ["user_id", "category"]}).bundle.intelligence
    assert len(model.pairs) > 500
    return w, model


def _ids(n: int, seed: int) -> list[str]:
    """Decision ids: 32 hex digits (splitmix64) for most, other text (BLAKE2b) for every fifth."""
    rng = np.random.default_rng(seed)
    hi, lo = rng.integers(0, 2**63, size=n), rng.integers(0, 2**63, size=n)
    return [f"req-{i}-é" if i % 5 == 0 else f"{int(h):016x}{int(q):016x}" for i, (h, q) in enumerate(zip(hi, lo, strict=True))]


def _candidates(rng: np.random.Generator, cats: tuple[str, ...], n: int) -> list[dict[str, Any]]:
    out = []
    for j in range(n):
        c: dict[str, Any] = {"item_id": f"i{int(rng.integers(0, 10**6))}-{j}", "category": cats[int(rng.integers(0, len(cats)))],
                             "item_ctr": float(rng.beta(1.0, 12.0)), "age_hours": float(rng.exponential(20.0))}
        if rng.random() < 0.8:
            c["is_new"] = bool(rng.random() < 0.2)
        if rng.random() < 0.05:
            c["age_hours"] = int(rng.integers(0, 50))  # an integer for a Float field
        out.append(c)
    if n > 3 and rng.random() < 0.1:  # equal scores: ties go to the lower index
        out[2] = {**out[1], "item_id": out[1]["item_id"] + "-twin"}
    return out


def _feed_requests(n: int, seed: int) -> list[dict[str, Any]]:
    from examples.feed.system import CATEGORIES

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r: dict[str, Any] = {"user_id": f"u{int(rng.integers(0, 500))}", "hour": int(rng.integers(0, 24))}
        if rng.random() < 0.7:
            r["country"] = ["de", "fr", ""][int(rng.integers(0, 3))]
        r["candidates"] = _candidates(rng, CATEGORIES, int(rng.integers(0, 21)))
        out.append(r)
    return out


def _world_requests(cats: tuple[str, ...], n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):  # users u0… (the trained table's and beyond it: an unknown user adds no offset)
        t1, t2 = rng.choice(len(cats), size=2, replace=False)
        out.append({"user_id": f"u{int(rng.integers(0, 400))}", "hour": int(rng.integers(0, 24)),
                    "user_age_days": int(rng.integers(0, 30)), "topic_1": cats[int(t1)], "topic_2": cats[int(t2)],
                    "candidates": _candidates(rng, cats, int(rng.integers(0, 21)))})
    return out


def _invalid(system: Any, valid: list[dict[str, Any]], n: int, seed: int) -> list[Any]:
    """Requests that break one rule each: a request field, a candidate field (bad type, bound, choice,
    length, missing, null), a candidate that is no object, a repeated candidate id, the list itself."""
    from parity_systems import invalid_contexts

    from closedloop import Bool, Float, Int, Str

    rng = np.random.default_rng(seed)
    with_cands = [r for r in valid if len(r["candidates"]) > 2]
    out: list[Any] = list(invalid_contexts(system, with_cands, n // 4, seed))
    fields = system.candidate_schema.fields
    while len(out) < n:
        r = dict(with_cands[int(rng.integers(0, len(with_cands)))])
        cands = [dict(c) for c in r["candidates"]]
        i = int(rng.integers(0, len(cands)))
        what = int(rng.integers(0, 10))
        if what == 0:
            cands[i] = ["not", "an", "object"]
        elif what == 1:
            cands[i]["item_id"] = cands[0]["item_id"] if i else cands[1]["item_id"]
        elif what == 2:
            r["candidates"] = {"item_id": "x"} if rng.random() < 0.5 else None
        else:
            f = fields[int(rng.integers(0, len(fields)))]
            kind = int(rng.integers(0, 4))
            if isinstance(f, Str):
                bad: Any = [None, 7, "x" * (f.limit + 1), "a\ud800b"][kind] if f.choices is None else [None, 7, "zz", True][kind]
            elif isinstance(f, Bool):
                bad = [None, 1, "true", 0.0][kind]
            elif isinstance(f, Int):
                bad = [None, 2.5, "3", -1][kind]
            else:
                assert isinstance(f, Float)
                bad = [None, "1.0", True, -1.0][kind]
            if bad is None and kind % 2:
                cands[i].pop(f.name, None)
            else:
                cands[i][f.name] = bad
            if rng.random() < 0.3 and i + 1 < len(cands):  # a later candidate broken too: the first is named
                cands[i + 1]["category"] = 3
        if "candidates" not in r or isinstance(r["candidates"], list):
            r["candidates"] = cands
        out.append(r)
    return out


def _write(path: Path, requests: list[Any], ids: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for k, (r, i) in enumerate(zip(requests, ids, strict=True)):
            fh.write(json.dumps({"r": r, "id": i, "ts": str(T0 + k)}) + "\n")


def _node(tmp: Path, exported: Path, requests: list[Any], ids: list[str], kill: bool = False) -> list[dict[str, Any]]:
    rows, out = tmp / "in.jsonl", tmp / "out.jsonl"
    _write(rows, requests, ids)
    run_node("tools/rank-file.mjs", str(exported), str(rows), str(out), *(["kill"] if kill else []))
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _python(rt: Runtime, requests: list[Any], ids: list[str]) -> list[Any]:
    out: list[Any] = []
    for k, (r, i) in enumerate(zip(requests, ids, strict=True)):
        try:
            out.append(rt.decide(r, decision_id=i, timestamp_ns=T0 + k))
        except ContextError as e:
            out.append(e.field)
    return out


def _rel(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), np.finfo(float).tiny))) if x.size else 0.0


def _compare(name: str, js: list[dict[str, Any]], py: list[Any], exact: bool) -> dict[str, Any]:
    """Asserts parity; returns what it covered (pairs scored, explored requests, the largest relative difference)."""
    assert len(js) == len(py), name
    pairs = explored = same = 0
    worst = 0.0
    for k, (j, d) in enumerate(zip(js, py, strict=True)):
        assert "refused" not in j, (name, k, j)
        assert j["slate"] == d.ranking and j["why"] == d.why, (name, k, j, d)
        rel = max(_rel(j["slots"], d.slot_propensities), _rel(j["scores"], d.scores), _rel([j["p"]], [d.propensity]))
        assert rel <= 1e-12, (name, k, rel)
        if exact:  # no Math.exp on the slot propensities' path
            assert j["slots"] == d.slot_propensities, (name, k)
        worst = max(worst, rel)
        pairs += len(d.scores)
        same += sum(a == b for a, b in zip(j["scores"], d.scores, strict=True))
        explored += "differ from the greedy order" in d.why
    return {"pairs": pairs, "explored": explored, "worst": worst, "scores_bit_equal": same / max(pairs, 1)}


def test_feed_bundles_rank_alike_in_node_and_python(tmp_path: Path, world: tuple[Any, Any]) -> None:
    from examples.feed.system import feed, model

    w, affinity = world
    cats = w.config.categories
    key = SigningKey.generate()
    cases = [  # (name, system, intelligence, requests, exact slot propensities)
        ("feed_softmax", feed, model, _feed_requests(10_000, seed=1), False),
        ("world_affinity_squarecb", w.system(k=5, explore=SquareCB(50.0)), affinity, _world_requests(cats, 10_000, seed=2), False),
        ("world_affinity_epsilon", w.system(k=5, explore=EpsilonGreedy(0.3, 0.05, 0.9)), affinity,
         _world_requests(cats, 4_000, seed=3), True),
        ("world_heuristic_greedy", w.system(k=4, explore=None), w.heuristic_bundle(w.system(k=4)).intelligence,
         _world_requests(cats, 4_000, seed=4), True),
    ]
    covered: dict[str, dict[str, Any]] = {}
    for name, system, intel, requests, exact in cases:
        bundle = Bundle.build(system, intel)
        exported = tmp_path / f"{name}.json"
        exported.write_bytes(export_client_bundle(system, bundle, key))
        ids = _ids(len(requests), seed=len(name))
        covered[name] = _compare(name, _node(tmp_path, exported, requests, ids), _python(Runtime(system, bundle), requests, ids), exact)
        bad = _invalid(system, requests, 600, seed=5)
        js_bad = _node(tmp_path, exported, bad, ids[: len(bad)])
        py_bad = _python(Runtime(system, bundle), bad, ids[: len(bad)])
        py_fields = [f if isinstance(f, str) else None for f in py_bad]  # a null for a field with a default is no error
        assert sum(f is not None for f in py_fields) > 450, name
        assert [j.get("refused") for j in js_bad] == py_fields, name
    print(json.dumps(covered))  # what the parity covered (pytest -s shows it)
    assert sum(c["pairs"] for c in covered.values()) >= 100_000, covered
    for name in ("feed_softmax", "world_affinity_squarecb", "world_affinity_epsilon"):
        assert covered[name]["explored"] > 500, covered
    assert covered["world_heuristic_greedy"]["explored"] == 0


def test_the_kill_switch_ranks_alike(tmp_path: Path) -> None:
    from examples.feed.system import feed, model

    bundle = Bundle.build(feed, model)
    exported = tmp_path / "feed.json"
    exported.write_bytes(export_client_bundle(feed, bundle))
    requests = _feed_requests(500, seed=7)
    ids = _ids(len(requests), seed=7)
    js = _node(tmp_path, exported, requests, ids, kill=True)
    py = _python(Runtime(feed, bundle, killswitch=True), requests, ids)
    for j, d in zip(js, py, strict=True):
        assert d.killswitch and j["slate"] == d.ranking and j["slots"] == d.slot_propensities and j["why"] == d.why
        assert j["scores"] == d.scores == [] and j["p"] == d.propensity == 1.0

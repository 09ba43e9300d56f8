"""Decisions already logged replay the same: a fixed set of seeded ranking decisions — the feed
example's ``decide`` and ``decide_batch`` (logistic bundle, softmax), and ``rank`` / ``rank_rows``
on seeded scores (softmax, ε-greedy in and out of its band, SquareCB, greedy; NaN and ±inf among them) —
gives the rankings, slot propensities and propensities recorded in ranking_replay.json, bit for
bit (floats as their hex form).

The file was recorded from the code before the compiled ranking kernels (the SquareCB entries when
SquareCB was added, the other entries unchanged); re-record it only for an
intended change of the draw, never to make this test pass:
``PYTHONPATH=src python tests/experience/test_ranking_kernel_replay.py --record``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from closedloop import Bundle, DecisionIds, Runtime
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB, uniform_batch
from closedloop.experience.ranking import rank
from closedloop.experience.ranking_kernel import rank_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # examples/

from examples.feed import data as feed_data  # noqa: E402
from examples.feed.system import feed  # noqa: E402
from examples.feed.system import model as feed_model  # noqa: E402

FILE = Path(__file__).with_name("ranking_replay.json")
NOW_NS = 1_800_000_000_000_000_000


class _FixedClock:
    """Seeded decision ids at one fixed time, so that the ids (and so the draws) repeat."""

    def __init__(self, seed: int) -> None:
        self._ids = DecisionIds(seed=seed)

    def next_id(self, now_ns: int) -> str:
        return self._ids.next_id(NOW_NS)

    def next_ids(self, n: int, now_ns: int) -> Any:
        return self._ids.next_ids(n, NOW_NS)


def _hex(xs: Any) -> list[str]:
    return [float(x).hex() for x in xs]


def _policies() -> list[tuple[str, Softmax | EpsilonGreedy | SquareCB | None]]:
    return [
        ("softmax_0.1", Softmax(0.1)),
        ("softmax_2", Softmax(2.0)),
        ("eps_0.2", EpsilonGreedy(0.2)),
        ("eps_band", EpsilonGreedy(0.5, low=-1.0, high=1.0)),
        ("squarecb_0.5", SquareCB(0.5)),
        ("squarecb_50", SquareCB(50.0)),
        ("greedy", None),
    ]


def _score_sets() -> list[list[float]]:
    rng = np.random.default_rng(20)
    sets = [rng.normal(0, 2, size=n).tolist() for n in (1, 3, 7, 20, 80, 150)]
    sets.append([0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5])  # ties
    sets.append([1.0, math.inf, math.nan, math.inf, -math.inf, 0.0, -2.0])
    sets.append([math.nan, 0.2, math.nan, 0.1, -math.inf])
    sets.append([-math.inf, math.nan, -math.inf])
    return sets


def _kernel_outcomes() -> dict[str, Any]:
    out: dict[str, Any] = {}
    sets = _score_sets()
    for name, policy in _policies():
        for k in (1, 5, 12):
            rows = []
            for i, s in enumerate(sets):
                order, slots, p, explored = rank(s, k, policy, f"{i:032x}")
                rows.append([order, _hex(slots), float(p).hex(), explored])
            out[f"rank/{name}/k{k}"] = rows
        # many requests in one padded matrix (the batch path's kernel)
        R, N = len(sets), max(len(s) for s in sets)
        S = np.full((R, N), 3.0)
        for i, s in enumerate(sets):
            S[i, : len(s)] = s
        counts = np.array([len(s) for s in sets], dtype=np.int64)
        dids = [f"{i:032x}" for i in range(R)]
        m = min(5, N)
        U = np.column_stack([uniform_batch(dids, salt=j) for j in range(m)])
        picks, slots, explored, props = rank_rows(S, counts, 5, policy, U)
        out[f"rank_rows/{name}"] = [
            [picks[i, : min(5, c)].tolist(), _hex(slots[i, : min(5, c)]), float(props[i]).hex()] for i, c in enumerate(counts.tolist())
        ]
    return out


def _feed_outcomes() -> dict[str, Any]:
    contexts = feed_data.generate(40, 80, seed=21)
    rt = Runtime(feed, Bundle.build(feed, feed_model), ids=_FixedClock(22))
    single = []
    for cx in contexts:
        d = rt.decide(cx)
        single.append([d.decision_id, d.ranking, _hex(d.slot_propensities), float(d.propensity).hex()])
    ragged = feed_data.generate(60, [1 + (i * 7) % 90 for i in range(60)], seed=23)
    requests, candidates = feed_data.columnar(ragged)
    rtb = Runtime(feed, Bundle.build(feed, feed_model), ids=_FixedClock(24))
    batch = [[d.decision_id, d.ranking, _hex(d.slot_propensities), float(d.propensity).hex()]
             for d in (b for b in rtb.decide_batch(requests, candidates=candidates))]
    return {"feed/decide": single, "feed/decide_batch": batch}


def outcomes() -> dict[str, Any]:
    return {**_kernel_outcomes(), **_feed_outcomes()}


def _without_extension(monkeypatch: Any) -> None:
    """Every compiled loop the ranking path reaches set aside, as on an install without a C compiler."""
    import closedloop.base.numeric as numeric
    import closedloop.context.columns as columns
    import closedloop.experience.exploration as exploration
    import closedloop.experience.ranking_inputs as inputs
    import closedloop.experience.ranking_kernel as kernel
    import closedloop.intelligence.linear as linear

    monkeypatch.setattr(numeric, "_kernels", None)
    monkeypatch.setattr(columns, "_kernels", None)
    monkeypatch.setattr(kernel, "_C_RANK_ONE", None)
    monkeypatch.setattr(kernel, "_C_RANK_ROWS", None)
    monkeypatch.setattr(exploration, "_C_UNIFORM", None)
    monkeypatch.setattr(linear, "_C_LINEAR", None)
    monkeypatch.setattr(inputs, "_C_REPEAT", None)
    monkeypatch.setattr(inputs, "_C_GATHER_LIST", None)


@pytest.mark.parametrize("extension", [True, False], ids=["compiled", "pure-python"])
def test_recorded_decisions_replay_the_same(extension, monkeypatch):
    if not extension:
        _without_extension(monkeypatch)
    recorded = json.loads(FILE.read_text())
    now = outcomes()
    assert sorted(now) == sorted(recorded)
    for key in recorded:
        assert now[key] == recorded[key], key


if __name__ == "__main__" and "--record" in sys.argv:
    FILE.write_text(json.dumps(outcomes(), separators=(",", ":")) + "\n")
    print(f"recorded {FILE}")

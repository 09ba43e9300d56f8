"""Agreement measures: a shadow against production from real telemetry (the heuristic in production,
its apprentice and a bundle ranking by something unrelated as shadows, deployed through a
registry and decided through the Runtime), the greedy order's rules, the interval by unit, and the
refusals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from closedloop import Bundle, LogisticModel, Runtime
from closedloop.errors import SpecError
from closedloop.evaluation.agreement import SHADOW_COLUMNS, greedy_order, shadow_agreement, share_interval
from closedloop.experience.exploration import Softmax
from closedloop.registry import Registry
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.ids import DecisionIds
from closedloop.runtime.signing import SigningKey
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.training.apprentice import train_apprentice
from closedloop.world.bandit import BanditWorld
from support.apprentice import contexts, log_dataset

FORCE = "a test bundle without an evaluation report"
KEY = SigningKey.generate()
N, K = 6, 3
T0 = 1_800_000_000 * 10**9


def _greedy_first(scores) -> int:
    """The index of the highest score, the lower index on ties (no NaN here)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The heuristic in production (exploring), its apprentice and a bundle ranking by age as shadows."""
    tmp = tmp_path_factory.mktemp("shadow")
    world = BanditWorld(seed=2, n_candidates=N)
    system = world.system(k=K, explore=Softmax(0.05))
    heuristic = Bundle.build(system, world.heuristic()).signed(KEY)
    m = log_dataset(world, system, heuristic, contexts(world, 4000, seed=1), tmp / "log", seed=1)
    apprentice = train_apprentice(system, m.path).bundle.signed(KEY)
    by_age = Bundle.build(system, LogisticModel({"age": 0.1}, intercept=0.0, output="score"), version="by-age").signed(KEY)
    home = tmp / "live"
    clock = ManualClock(T0)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open()
    reg.trust_key(KEY.public_key, name="tests", actor="a")
    with reg, Telemetry(SegmentLog(home), system=system, clock=clock.now_ns) as tel:
        for b in (heuristic, apprentice, by_age):
            reg.add_bundle(b, actor="a")
        reg.deploy(system, heuristic.version, actor="a", reason="the heuristic", force=FORCE)
        reg.deploy(system, apprentice.version, actor="a", reason="apprentice", shadow=True, force=FORCE)
        reg.deploy(system, by_age.version, actor="a", reason="by age", shadow=True, force=FORCE)
        rt = Runtime(system, heuristic, telemetry=tel, clock=clock, ids=DecisionIds(seed=5))
        assert reg.refresh(rt)["applied"]
        ctxs = contexts(world, 1200, seed=5)
        decided = [rt.decide(c, timestamp_ns=T0 + i * 10**9) for i, c in enumerate(ctxs[:600])]
        req = {f: [c[f] for c in ctxs[600:]] for f in ("user_id", "segment", "hour")}
        cands = {f: [x[f] for c in ctxs[600:] for x in c["candidates"]] for f in ("item_id", "category", "quality", "age_hours")}
        cands["request"] = np.repeat(np.arange(600), N)
        decided += list(rt.decide_batch(req, candidates=cands, timestamps_ns=[T0 + (600 + i) * 10**9 for i in range(600)]))
    decisions = TelemetryStore(home).read("decisions", list(SHADOW_COLUMNS))
    return system, decided, decisions, apprentice.version


def test_shadow_agreement_from_telemetry_is_the_share_counted_from_the_decisions(live):
    system, decided, decisions, apprentice = live
    assert decisions.num_rows == len(decided) == 1200
    for version in (apprentice, "by-age"):
        got = shadow_agreement(system, decisions, version)
        shadow = [next(s for s in d.shadows if s.bundle_version == version) for d in decided]
        hits = [d.candidates[_greedy_first(d.scores)] == sh.ranking[0] for d, sh in zip(decided, shadow, strict=True)]
        shown = [d.ranking[0] == sh.ranking[0] for d, sh in zip(decided, shadow, strict=True)]
        assert got["n"] == 1200 and got["shadow"] == version
        assert got["agreement"] == pytest.approx(float(np.mean(hits)), abs=1e-12)
        assert got["shown_agreement"] == pytest.approx(float(np.mean(shown)), abs=1e-12)
        assert got["interval"][0] <= got["agreement"] <= got["interval"][1]
    mine, other = shadow_agreement(system, decisions, apprentice), shadow_agreement(system, decisions, "by-age")
    assert mine["agreement"] >= 0.9 and other["agreement"] < 0.35 and mine["interval"][0] > other["interval"][1]
    assert mine["top_k_overlap"] > 0.85 > 0.6 > other["top_k_overlap"]
    assert mine["shown_agreement"] < mine["agreement"]  # production's draw left its top candidate on some decisions


def test_since_and_a_version_no_decision_carried(live):
    system, decided, decisions, apprentice = live
    late = shadow_agreement(system, decisions, apprentice, since_ns=T0 + 900 * 10**9)
    assert late["n"] == 300
    none = shadow_agreement(system, decisions, "never-deployed")
    assert none["n"] == 0 and none["agreement"] is None and none["interval"] == [None, None]


def test_greedy_order_sorts_by_score_ties_to_the_lower_index_and_nan_last():
    scores = np.array([0.2, np.nan, 0.9, 0.2, 0.5, 0.5, 0.1])
    offsets = np.array([0, 4, 7])
    assert greedy_order(scores, offsets).tolist() == [2, 0, 3, 1, 4, 5, 6]


def test_the_interval_widens_when_a_units_decisions_agree_together():
    rng = np.random.default_rng(0)
    hits = (rng.random(400) < 0.7).astype(float)
    alone = share_interval(hits, [f"u{i}" for i in range(400)])
    clustered = share_interval(np.repeat(hits[:40], 10), np.repeat([f"u{i}" for i in range(40)], 10))
    assert alone["n"] == clustered["n"] == 400 and clustered["units"] == 40
    assert alone["low"] < alone["share"] < alone["high"]
    assert clustered["high"] - clustered["low"] > 2 * (alone["high"] - alone["low"])
    everyone = share_interval(np.ones(50), [f"u{i}" for i in range(50)])
    assert everyone["share"] == everyone["high"] == 1.0 and 0.9 < everyone["low"] < 1.0


def test_shadow_agreement_refuses_what_it_cannot_read(live):
    system, _, decisions, _ = live
    with pytest.raises(SpecError, match=r"'decisions' parameter of shadow_agreement must have .* Got no \['shadows_json'\]"):
        shadow_agreement(system, decisions.drop(["shadows_json"]), "v")
    with pytest.raises(SpecError, match=r"'decisions' parameter of shadow_agreement must be a pyarrow Table"):
        shadow_agreement(system, decisions.to_pylist(), "v")
    with pytest.raises(SpecError, match=r"'shadow_version' parameter of shadow_agreement must be a non-empty string. Got ''"):
        shadow_agreement(system, decisions, "")
    with pytest.raises(SpecError, match=r"'since_ns' parameter of shadow_agreement must be an int or None. Got 1.5"):
        shadow_agreement(system, decisions, "v", since_ns=1.5)
    assert isinstance(decisions, pa.Table)

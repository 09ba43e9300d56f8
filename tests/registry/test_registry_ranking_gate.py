"""A ranking candidate through the registry's gate: an evaluation report on a per-slot reward
dataset judges the candidate by its policy value against production; the registry's 'gate' check
reads that verdict — a passed gate lets the deploy through (the report's golden decisions replay bit for
bit through the runtime: the parity check), a failed one refuses it with the reason; a golden
decision that does not replay is refused by the parity check."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from examples.feed import system as feed_module

from closedloop import Bundle, LogisticModel
from closedloop.datasets.importer import import_dataset
from closedloop.errors import SanityCheckError
from closedloop.evaluation.report import evaluate
from closedloop.registry import Registry
from closedloop.runtime.signing import SigningKey

KEY = SigningKey.generate()
FIRST = "the first production of the test"
EXAMINATION = np.array([1.0, 0.6, 0.4, 0.25, 0.15])


def _dataset(tmp_path):
    """3,000 feed impressions: 5 of 10 recurring items in a uniformly random order (propensity 1/5
    at every slot); a click's probability is the item's ctr times the slot's examination."""
    rng = np.random.default_rng(3)
    n_dec, items = 3000, 10
    ctr, age = np.linspace(0.05, 0.8, items), rng.exponential(20.0, items)
    shown = np.argsort(rng.random((n_dec, items)), axis=1)[:, :5].ravel()
    dec, slot = np.repeat(np.arange(n_dec), 5), np.tile(np.arange(5), n_dec)
    table = pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 2}" for d in dec], "hour": rng.integers(0, 24, n_dec)[dec],
        "country": ["fr"] * dec.size, "item": [f"it{i}" for i in shown], "slot": slot + 1,
        "click": (rng.random(dec.size) < ctr[shown] * EXAMINATION[slot]).astype(np.float64), "p": np.full(dec.size, 0.2),
        "ts": 10**18 + dec * 10**9, "category": ["news"] * dec.size, "item_ctr": ctr[shown], "age_hours": age[shown],
        "is_new": [False] * dec.size,
    })
    pq.write_table(table, tmp_path / "log.parquet")
    return import_dataset(tmp_path / "log.parquet", feed_module.feed, action="item", position="slot", reward="click",
                          propensity="p", decision="impression", unit="user_id", time="ts", out=tmp_path / "ds")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranking-gate")
    feed = feed_module.feed
    good = Bundle.build(feed, feed_module.model, version="informative").signed(KEY)
    noise = Bundle.build(feed, LogisticModel({"age_log": 1.0}, intercept=-3.0, output="score"), version="noise").signed(KEY)
    ds = _dataset(tmp)
    better = evaluate(feed, [noise, good], ds.path, split="all", bootstrap=100, seed=1)
    worse = evaluate(feed, [good, noise], ds.path, split="all", bootstrap=100, seed=1)
    assert better["gate"]["passed"] and not worse["gate"]["passed"]
    return feed, good, noise, better, worse


def _registry(home, *bundles):
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open()
    reg.trust_key(KEY.public_key, name="tests", actor="a")
    for b in bundles:
        reg.add_bundle(b, actor="a")
    return reg


def test_a_ranking_candidate_whose_gate_passed_passes_the_registrys_gate_check(tmp_path, setup):
    feed, good, noise, better, _ = setup
    with _registry(tmp_path, good, noise) as reg:
        reg.add_report(better, actor="a")
        reg.deploy(feed, noise.version, actor="a", reason="first", force=FIRST)
        change = reg.deploy(feed, good.version, actor="a", reason="better by its policy value")  # no force
        checks = {c["name"]: c for c in change.detail["checks"]}
        assert checks["gate"]["passed"] and "the gate passed against production noise" in checks["gate"]["detail"]
        assert checks["parity"]["passed"] and "50 golden rows reproduced exactly" in checks["parity"]["detail"]
        assert reg.deployment(feed).production.version == good.version


def test_a_golden_ranking_that_does_not_replay_is_refused_by_the_parity_check(tmp_path, setup):
    import copy

    feed, good, noise, better, _ = setup
    tampered = copy.deepcopy(better)
    part = next(b for b in tampered["bundles"] if b["version"] == good.version)
    row = part["golden"][3]
    row["ranking"] = row["ranking"][::-1]  # what the evaluation saw is not what the runtime does
    with _registry(tmp_path, good, noise) as reg:
        reg.add_report(tampered, actor="a")
        reg.deploy(feed, noise.version, actor="a", reason="first", force=FIRST)
        with pytest.raises(SanityCheckError, match=r"parity: golden row 3 .*slate .* at runtime, the evaluation recorded") as exc:
            reg.deploy(feed, good.version, actor="a", reason="better by its policy value")
        assert exc.value.failed == ["parity"]


def test_a_ranking_candidate_whose_gate_failed_is_refused_by_the_gate_check_with_the_reason(tmp_path, setup):
    feed, good, noise, _, worse = setup
    with _registry(tmp_path, good, noise) as reg:
        reg.add_report(worse, actor="a")
        reg.deploy(feed, good.version, actor="a", reason="first", force=FIRST)
        with pytest.raises(SanityCheckError, match=r"gate: the gate failed against informative: the candidate's policy "
                                                   r"value by snips is -[0-9.e-]+ against the baseline's") as exc:
            reg.deploy(feed, noise.version, actor="a", reason="worse by its policy value")
        assert "gate" in exc.value.failed
        assert reg.deployment(feed).production.version == good.version

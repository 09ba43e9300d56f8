"""A feed log for the policy-value tests: items of a small catalogue recur across decisions; each
decision shows 5 of them in a uniformly random order (every candidate's propensity at every slot
is 1/5 given the decision's candidates); a click's probability is the item's ctr times the slot's
examination, so a policy that puts high-ctr items first earns more per slot."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from closedloop import Bundle, LogisticModel
from closedloop.datasets.importer import import_dataset

LOGGED = {"action": "item", "position": "slot", "reward": "click", "propensity": "p", "decision": "impression",
          "unit": "user_id", "time": "ts"}
EXAMINATION = np.array([1.0, 0.6, 0.4, 0.25, 0.15])
N_ITEMS, SLOTS = 10, 5


def feed_log(n_dec: int, seed: int = 0, countries: tuple[str, ...] = ("fr",)) -> pa.Table:
    rng = np.random.default_rng(seed)
    item_ctr = np.linspace(0.05, 0.8, N_ITEMS)
    item_age = rng.exponential(20.0, N_ITEMS)
    shown = np.argsort(rng.random((n_dec, N_ITEMS)), axis=1)[:, :SLOTS].ravel()  # 5 distinct items, random order
    dec = np.repeat(np.arange(n_dec), SLOTS)
    slot = np.tile(np.arange(SLOTS), n_dec)
    click = (rng.random(dec.size) < item_ctr[shown] * EXAMINATION[slot]).astype(np.float64)
    country = np.asarray(countries)[rng.integers(0, len(countries), n_dec)][dec]
    return pa.table({
        "impression": [f"i{d}" for d in dec], "user_id": [f"u{d // 2}" for d in dec],
        "hour": rng.integers(0, 24, n_dec)[dec], "country": country.tolist(),
        "item": [f"it{i}" for i in shown], "slot": slot + 1, "click": click, "p": np.full(dec.size, 1.0 / SLOTS),
        "ts": 10**18 + dec * 10**9, "category": ["news"] * dec.size, "item_ctr": item_ctr[shown],
        "age_hours": item_age[shown], "is_new": [False] * dec.size,
    })


def feed_dataset(tmp_path, table: pa.Table, name: str = "ds"):
    from examples.feed.system import feed

    pq.write_table(table, tmp_path / f"{name}.parquet")
    return import_dataset(tmp_path / f"{name}.parquet", feed, **LOGGED, out=tmp_path / name)


def feed_bundles():
    from examples.feed.system import feed, model

    good = Bundle.build(feed, model, version="informative")
    noise = Bundle.build(feed, LogisticModel({"age_log": 1.0}, intercept=-3.0, output="score"), version="noise")
    return feed, good, noise


# -- the tests ------------------------------------------------------------------------------------
import json  # noqa: E402

import pytest  # noqa: E402

from closedloop.errors import SpecError  # noqa: E402
from closedloop.evaluation.gate import Gate  # noqa: E402
from closedloop.evaluation.ope import estimate  # noqa: E402
from closedloop.evaluation.ope_policy import logged_feedback, target_action_dist  # noqa: E402
from closedloop.evaluation.report import evaluate  # noqa: E402


def test_each_bundles_estimates_are_those_of_target_action_dist_and_estimate_on_the_same_rows(tmp_path):
    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(400, seed=1))
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=30, seed=2)
    json.dumps(rep, allow_nan=False)
    pv = rep["policy_value"]
    assert pv["n_rows"] == rep["rows"]["n"] == 2000 and pv["units"] == 200 and pv["estimators"] == ["ips", "snips"]
    assert not any(pv["excluded"].values())
    for bundle, part in zip((noise, good), pv["bundles"], strict=True):
        tad = target_action_dist(feed, bundle, m.path)
        lf = logged_feedback(feed, m.path, tad.actions)
        alone = estimate(lf.reward, lf.action, lf.pscore, tad.action_dist, position=lf.position, units=lf.units,
                         n_bootstrap=30)
        assert part["version"] == bundle.version
        for name in ("ips", "snips"):
            mine = part["estimates"][name]
            assert mine["value"] == pytest.approx(alone[name].value, rel=1e-12), name
            assert mine["ess"] == pytest.approx(alone[name].ess, rel=1e-12)
            assert mine["support"]["share"] == pytest.approx(alone[name].support.share, abs=1e-12)
            assert mine["support"]["passed"] and mine["interval"] == "bootstrap by unit"
    assert pv["logged"]["value"] == pytest.approx(float(feed_log(400, seed=1)["click"].to_numpy().mean()))


def test_a_better_ranking_is_above_the_baseline_beyond_its_interval_and_passes_the_gate(tmp_path):
    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(3000, seed=3))
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=100, seed=1)
    d = rep["policy_value"]["comparison"][0]
    assert (d["baseline"], d["candidate"]) == ("noise", "informative")
    snips = d["differences"]["snips"]
    assert snips["low"] > 0.0 and snips["interval"] == "paired bootstrap by unit"
    g = rep["gate"]
    assert g["passed"] and g["reasons"] == [] and g["estimator"] == "snips"
    assert (g["baseline"], g["candidate"]) == ("noise", "informative") and g["ci"][0] == snips["low"] > 0
    worse = evaluate(feed, [good, noise], m.path, split="all", bootstrap=100, seed=1)
    g = worse["gate"]
    assert not g["passed"] and g["difference"] < 0
    assert any("policy value by snips" in r and "lower bound is below" in r for r in g["reasons"]), g["reasons"]


def test_with_a_reward_model_the_doubly_robust_estimators_are_reported_and_dr_judges(tmp_path):
    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(3000, seed=3))
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=60, reward_model=good)
    pv = rep["policy_value"]
    assert pv["estimators"] == ["ips", "snips", "dm", "dr", "sndr", "switch_dr"] and pv["reward_model"] == "informative"
    assert set(pv["bundles"][1]["estimates"]) == set(pv["estimators"])
    assert rep["gate"]["estimator"] == "dr" and rep["gate"]["passed"]
    assert rep["gate"]["difference"] == pv["comparison"][0]["differences"]["dr"]["value"]
    tolerant = evaluate(feed, [good, noise], m.path, split="all", bootstrap=60, reward_model=good,
                        gate=Gate(policy_estimator="ips", policy_tolerance=1.0))
    assert tolerant["gate"]["passed"] and tolerant["gate"]["estimator"] == "ips"


def test_a_bundle_against_itself_differs_by_exactly_zero(tmp_path):
    feed, good, _ = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(300, seed=4))
    rep = evaluate(feed, [good, good], m.path, split="all", bootstrap=40)
    for d in rep["policy_value"]["comparison"][0]["differences"].values():
        assert d["value"] == 0.0 and (d["low"], d["high"]) == (0.0, 0.0)
    assert rep["gate"]["passed"]  # a lower bound of exactly 0 is not below −0


def test_slices_are_estimated_and_small_ones_only_counted(tmp_path):
    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(600, seed=5, countries=("fr",) * 4 + ("de",) * 4 + ("it",)))
    pv = evaluate(feed, [noise, good], m.path, split="all", bootstrap=20)["policy_value"]
    by = {e["value"]: e for e in pv["slices"]["country"]}
    assert sum(e["n_rows"] for e in by.values()) == pv["n_rows"]
    small = [e for e in by.values() if e["small"]]
    big = [e for e in by.values() if not e["small"]]
    assert small and big and all(e["n_rows"] < 500 and "bundles" not in e for e in small)
    for e in big:
        assert e["n_rows"] >= 500 and [b["version"] for b in e["bundles"]] == ["noise", "informative"]
        assert e["comparison"][0]["differences"]["snips"]["n"] == e["n_rows"]


def test_the_support_check_fails_when_each_item_was_logged_at_one_slot_and_the_gate_says_so(tmp_path):
    feed, good, noise = feed_bundles()
    t = feed_log(300, seed=6)
    unique = [f"{i}-{d}" for i, d in zip(t["item"].to_pylist(), t["impression"].to_pylist(), strict=True)]
    m = feed_dataset(tmp_path, t.set_column(t.schema.get_field_index("item"), "item", pa.array(unique)))
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=20, gate=Gate(policy_tolerance=1.0))
    sup = rep["policy_value"]["bundles"][1]["estimates"]["snips"]["support"]
    assert not sup["passed"] and sup["share"] > 0.5
    assert rep["policy_value"]["bundles"][1]["estimates"]["snips"]["warning"].startswith("the support check failed")
    assert not rep["gate"]["passed"]
    assert rep["gate"]["reasons"] == [f"the candidate's support check failed: {sup['detail']}"]


def test_off_without_propensities_and_the_refusals(tmp_path):
    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(100, seed=7))
    off = evaluate(feed, [noise, good], m.path, split="all", bootstrap=10, policy_value=False)
    assert off["policy_value"] is None and off["gate"] is None
    with pytest.raises(SpecError, match="needs policy_value=True"):
        evaluate(feed, [noise, good], m.path, split="all", policy_value=False, gate=Gate())
    with pytest.raises(SpecError, match="'policy_estimator' of Gate 'dr' needs a reward model"):
        evaluate(feed, [noise, good], m.path, split="all", gate=Gate(policy_estimator="dr"))
    with pytest.raises(SpecError, match="'policy_estimator' of Gate must be None or one of"):
        Gate(policy_estimator="magic")
    with pytest.raises(SpecError, match="'policy_tolerance' of Gate must be a number ≥ 0"):
        Gate(policy_tolerance=-0.1)
    with pytest.raises(SpecError, match="'reward_model' parameter of evaluate must be a Bundle"):
        evaluate(feed, [noise, good], m.path, split="all", reward_model="informative")
    # a per-slot dataset whose data holds no propensity column (the reward dataset's columns otherwise)
    data = pq.read_table(m.data_path)
    pq.write_table(data.drop(["propensity"]), m.data_path)
    nop = m
    rep = evaluate(feed, [noise, good], nop.path, split="all", bootstrap=10)
    assert rep["policy_value"] is None and rep["gate"] is None
    judged = evaluate(feed, [noise, good], nop.path, split="all", bootstrap=10, gate=Gate())
    assert not judged["gate"]["passed"] and "no logged propensities" in judged["gate"]["reasons"][0]


def test_the_cli_prints_the_policy_value_and_the_gate(tmp_path):
    from typer.testing import CliRunner

    from closedloop.cli import app

    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(3000, seed=3))
    paths = [noise.save(tmp_path / "n"), good.save(tmp_path / "g")]
    r = CliRunner().invoke(app, [
        "--home", str(tmp_path / "home"), "evaluate", "--system", "examples.feed.system:feed", "--dataset", str(m.path),
        "--bundle", str(paths[0]), "--bundle", str(paths[1]), "--all-rows", "--bootstrap", "60",
        "--reward-model", str(paths[1]), "--out", str(tmp_path / "r.json"),
    ])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "r.json").read_text())
    pv = out["policy_value"]
    assert pv["reward_model"] == "informative" and pv["n_rows"] == 15000
    assert [b["version"] for b in pv["bundles"]] == ["noise", "informative"]
    dr = report["policy_value"]["bundles"][1]["estimates"]["dr"]
    assert pv["bundles"][1]["dr"] == {"value": dr["value"], "ci": [dr["low"], dr["high"]], "ess": dr["ess"], "support": "ok"}
    assert pv["comparison"][0]["dr"]["ci"][0] > 0
    assert out["gate"] == "pass" and out["gate_reasons"] == [] and report["gate"]["estimator"] == "dr"
    assert "Policy value" in (tmp_path / "r.html").read_text()


def test_the_html_page_has_the_policy_value_and_renders_without_it(tmp_path):
    from closedloop.evaluation.html import render_html

    feed, good, noise = feed_bundles()
    m = feed_dataset(tmp_path, feed_log(300, seed=8, countries=("fr",) * 4 + ("it",)))
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=20)
    page = render_html(rep)
    assert "<h2>Policy value</h2>" in page and "paired" in page and "Gate: " in page
    assert f"{rep['policy_value']['bundles'][1]['estimates']['snips']['value']:.4f}" in page
    assert "too few to estimate" in page  # 'it' is a small slice
    for gone in ({**rep, "policy_value": None, "gate": None}, {k: v for k, v in rep.items() if k != "policy_value"}):
        assert "No policy value" in render_html(gone)


def test_the_estimates_find_each_policys_true_value_per_slot(tmp_path):
    """The log's click model is known (the item's ctr times the slot's examination), so each policy's
    true value per slot on these decisions is Σ_k Σ_a P(a at k) ctr(a) exam(k) / 5 — IPS and SNIPS
    land within three standard errors of it, for a policy that differs from the logger's."""
    feed, good, noise = feed_bundles()
    table = feed_log(4000, seed=9)
    m = feed_dataset(tmp_path, table)
    rep = evaluate(feed, [noise, good], m.path, split="all", bootstrap=200)
    ctr = dict(zip(table["item"].to_pylist(), table["item_ctr"].to_pylist(), strict=True))
    for bundle, part in zip((noise, good), rep["policy_value"]["bundles"], strict=True):
        tad = target_action_dist(feed, bundle, m.path)
        lf = logged_feedback(feed, m.path, tad.actions)
        item_ctr = np.array([ctr[a] for a in tad.actions])
        # every decision shows all its 5 slots once: the mean over rows of the value at each row's position
        at_pos = tad.action_dist[np.arange(lf.position.size), :, lf.position]
        truth = float((at_pos @ item_ctr * EXAMINATION[lf.position]).mean())
        for name in ("ips", "snips"):
            e = part["estimates"][name]
            se = (e["high"] - e["low"]) / (2 * 1.96)
            assert abs(e["value"] - truth) < 3 * se, (bundle.version, name, e["value"], truth, se)
    logged_truth = float((table["item_ctr"].to_numpy() * EXAMINATION[table["slot"].to_numpy() - 1]).mean())
    good_truth = truth
    assert good_truth > logged_truth + 0.01  # the informative policy is worth more than the random logger

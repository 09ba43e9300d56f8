"""The evaluation report of a choice system (BestAction): each bundle's policy value estimated from a
logged bandit dataset, its exact action distribution checked against the runtime's propensities,
the gate by the policy value, golden rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import (
    BestAction,
    BlockList,
    Bundle,
    DatasetError,
    EpsilonGreedy,
    F,
    Float,
    FrequencyCap,
    HardLimit,
    Reward,
    RewardPolicy,
    Softmax,
    SpecError,
    SquareCB,
    Str,
    System,
)
from closedloop.evaluation.choice_report import action_distribution
from closedloop.evaluation.gate import Gate
from closedloop.evaluation.report import evaluate
from closedloop.intelligence import Intelligence, Scorer

ACTIONS = ("a", "b", "c", "d")
#: the true click model: P(reward | x, action j) = sigmoid(B[j] + W[j]·(x1, x2))
W = np.array([[1.5, 0.0], [-1.5, 0.0], [0.0, 1.5], [0.0, -1.5]])
B = np.array([-1.0, -1.0, -1.0, -1.2])
T0 = 1_700_000_000 * 10**9


class _PerActionScorer(Scorer):
    def __init__(self, features: Any, idx: list[int], weights: list[list[float]], bias: list[float]) -> None:
        self.features, self.idx, self.weights, self.bias = features, idx, weights, bias
        self.outputs = ACTIONS

    def batch(self, X: np.ndarray, cols: Any) -> np.ndarray:
        out = np.empty((X.shape[0], len(ACTIONS)))
        for j in range(len(ACTIONS)):
            s = np.full(X.shape[0], self.bias[j])
            for k, i in enumerate(self.idx):
                s = s + self.weights[j][k] * X[:, i]
            with np.errstate(over="ignore"):  # the registry's generated contexts reach far: exp overflows to inf, the score to 0
                out[:, j] = 1.0 / (1.0 + np.exp(-s))
        return out

    def one(self, x: tuple[float, ...], c: Any) -> tuple[float, ...]:
        return tuple(self.batch(np.asarray([x], dtype=np.float64), c)[0].tolist())


class PerAction(Intelligence):
    """One logistic score per action over named features (a test intelligence, saved as JSON)."""

    kind = "per_action"

    def __init__(self, names: list[str], weights: list[list[float]], bias: list[float]) -> None:
        self.names, self.weights, self.bias = list(names), [list(map(float, w)) for w in weights], list(map(float, bias))

    @property
    def outputs(self) -> tuple[str, ...]:
        return ACTIONS

    def inputs(self) -> tuple[str, ...]:
        return tuple(self.names)

    def bind(self, features: Any) -> Scorer:
        return _PerActionScorer(features, self._indices(features, self.names), self.weights, self.bias)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {"kind": self.kind, "names": self.names, "weights": self.weights, "bias": self.bias}

    @classmethod
    def from_dict(cls, spec: Any, files: Any, kinds: Any) -> PerAction:
        return cls(spec["names"], spec["weights"], spec["bias"])


def choice_system(explore: Any = None, name: str = "offer", guardrails: Any = ()) -> System:
    return System(name, guardrails=list(guardrails), context=[Str("user"), Float("x1", default=0.0), Float("x2", default=0.0),
                                 Float("z", default=0.0), Str("country", default="fr")],
                  unit="user", features={"x1": F.col("x1"), "x2": F.col("x2"), "z": F.col("z")},
                  actions=list(ACTIONS), experience=BestAction(explore=explore), slices=["country"],
                  rewards=RewardPolicy([Reward("buy")], window=timedelta(days=1), per="decision", default=0.0))


def informative() -> PerAction:
    return PerAction(["x1", "x2"], W.tolist(), B.tolist())


def noise() -> PerAction:
    return PerAction(["z"], [[1.0], [-1.0], [0.5], [-0.5]], [0.0, 0.0, 0.0, 0.0])


def true_probs(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(B[None, :] + x1[:, None] * W[None, :, 0] + x2[:, None] * W[None, :, 1])))


def write_log(path: Any, system: System, n: int = 12_000, seed: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
    """A uniform logger over the four actions; rewards drawn from the true model. → (dataset dir, the columns)."""
    from closedloop.datasets.importer import import_dataset

    rng = np.random.default_rng(seed)
    x1, x2, z = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    shown = rng.integers(0, len(ACTIONS), n)
    reward = (rng.random(n) < true_probs(x1, x2)[np.arange(n), shown]).astype(np.float64)
    users = np.asarray([f"u{i}" for i in rng.integers(0, n // 2, n)])
    country = rng.choice(["fr", "de"], n)
    cols = {"user": users, "x1": x1, "x2": x2, "z": z, "country": country, "shown": np.asarray(ACTIONS)[shown],
            "value": reward, "prob": np.full(n, 1.0 / len(ACTIONS)), "ts": T0 + np.arange(n) * 10**9}
    pq.write_table(pa.table(cols), path / "log.parquet")
    import_dataset(path / "log.parquet", system, action="shown", reward="value", propensity="prob", unit="user",
                   time="ts", out=path / "ds")
    return path / "ds", cols


def test_an_informative_policy_beats_noise_and_finds_its_true_value(tmp_path):
    system = choice_system()
    ds, cols = write_log(tmp_path, system)
    good, bad = Bundle.build(system, informative(), version="good"), Bundle.build(system, noise(), version="noise")
    report = evaluate(system, [bad, good], ds, bootstrap=200, seed=1)
    assert report["kind"] == "choice" and report["rows"]["n"] == report["policy_value"]["n_rows"]
    pv = report["policy_value"]
    est = {b["version"]: b["estimates"] for b in pv["bundles"]}
    diff = pv["comparison"][0]["differences"]["snips"]
    assert diff["low"] > 0, diff
    assert est["good"]["snips"]["value"] > est["noise"]["snips"]["value"] + 0.1
    # the true value of the informative greedy policy on the held-out contexts: the mean of the best action's probability
    held = np.isin(np.arange(cols["x1"].size).astype(str), _held_out_ids(system, ds))  # decision ids: the file's row numbers
    assert held.sum() == report["rows"]["n"]
    truth = float(true_probs(cols["x1"][held], cols["x2"][held]).max(axis=1).mean())
    for name in ("ips", "snips"):
        e = est["good"][name]
        se = (e["high"] - e["low"]) / (2 * 1.96)
        assert abs(e["value"] - truth) < 3 * se, (name, e, truth)
    assert abs(pv["logged"]["value"] - float(cols["value"][held].mean())) < 1e-12
    assert report["bundles"][1]["greedy_agreement"] == pytest.approx(0.25, abs=0.03)  # uniform logger
    assert {s["value"] for s in pv["slices"]["country"]} == {"de", "fr"}
    assert report["gate"]["passed"] and report["gate"]["estimator"] == "snips"
    worse = evaluate(system, [good, bad], ds, bootstrap=200, seed=1)
    assert not worse["gate"]["passed"] and "lower bound is below" in worse["gate"]["reasons"][0]


def _held_out_ids(system: System, ds: Any) -> list[Any]:
    from closedloop.datasets.dataset import load_dataset
    from closedloop.system.splits import split as split_rows

    table, _ = load_dataset(ds, system)
    _, idx = split_rows(table.select(["unit", "timestamp_ns"]), system.split)
    return table["decision_id"].take(pa.array(idx)).to_pylist()


def test_a_reward_model_adds_the_doubly_robust_estimators(tmp_path):
    system = choice_system()
    ds, _ = write_log(tmp_path, system, n=3000)
    good = Bundle.build(system, informative(), version="good")
    report = evaluate(system, [good], ds, bootstrap=50, reward_model=good)
    est = report["policy_value"]["bundles"][0]["estimates"]
    assert set(est) == {"ips", "snips", "dm", "dr", "sndr", "switch_dr"} and report["gate"] is None
    assert abs(est["dr"]["value"] - est["dm"]["value"]) < 0.05


@pytest.mark.parametrize("guarded", [False, True])
@pytest.mark.parametrize("explore", [None, Softmax(temperature=0.2), EpsilonGreedy(epsilon=0.3), SquareCB(5.0)])
def test_the_action_distribution_is_the_runtimes_propensity_bit_for_bit(tmp_path, explore, guarded):
    from closedloop import Runtime

    # with guardrails: the system never shows 'c' (→ 'd') and in Germany turns 'a' into 'b'; the bundle shows 'd' in the US
    limits = [HardLimit("de_a", F.col("country").isin(["de"]), {"a": "b"}), HardLimit("no_c", F.col("x1") > -1e9, {"c": "d"})]
    system = choice_system(explore, guardrails=limits if guarded else ())
    rng = np.random.default_rng(5)
    n = 500
    ctx = {"user": [f"u{i}" for i in range(n)], "x1": rng.normal(size=n), "x2": rng.normal(size=n), "z": rng.normal(size=n),
           "country": list(rng.choice(["fr", "de", "us"], n))}
    bundle = Bundle.build(system, informative(), guardrails=[BlockList("us_d", "country", ["us"], action="d")] if guarded else [])
    batch = Runtime(system, bundle).decide_batch(ctx, decision_ids=[f"d{i}" for i in range(n)],
                                                 timestamps_ns=T0 + np.arange(n))
    P = action_distribution(system, bundle, batch.score_matrix, system.schema.validate_batch(ctx))
    assert P.shape == (n, len(ACTIONS)) and np.allclose(P.sum(axis=1), 1.0)
    chosen = P[np.arange(n), np.asarray(batch.action_codes)]
    assert np.array_equal(chosen, np.asarray(batch.propensities))  # bit for bit
    if guarded:
        country = np.asarray(ctx["country"])
        assert (P[:, 2] == 0).all() and (P[country == "de", 0] == 0).all() and np.allclose(P[country == "us", 3], 1.0)
    if explore is None:
        assert set(np.unique(P)) == {0.0, 1.0}
    else:
        assert ((P > 0) & (P < 1)).any()


def test_golden_rows_replay_through_decide(tmp_path):
    from closedloop import Runtime

    system = choice_system(Softmax(temperature=0.5))
    ds, _ = write_log(tmp_path, system, n=2000)
    bundle = Bundle.build(system, informative(), version="good")
    golden = evaluate(system, [bundle], ds, bootstrap=20)["bundles"][0]["golden"]
    assert len(golden) == 50
    rt = Runtime(system, bundle)
    for row in golden:
        d = rt.decide(row["context"], decision_id=row["decision_id"], timestamp_ns=row["timestamp_ns"])
        assert d.action == row["action"] and dict(d.scores) == row["scores"]


def test_bad_input_is_named(tmp_path):
    system = choice_system()
    ds, _ = write_log(tmp_path, system, n=600)
    good = Bundle.build(system, informative())
    with pytest.raises(SpecError, match="'weights' parameter of evaluate must be False for a choice system"):
        evaluate(system, [good], ds, weights=True)
    with pytest.raises(SpecError, match="'bootstrap' parameter of evaluate must be an integer ≥ 0. Got -1"):
        evaluate(system, [good], ds, bootstrap=-1)
    with pytest.raises(SpecError, match="'reward_model' parameter of evaluate must be a Bundle or None. Got 3"):
        evaluate(system, [good], ds, reward_model=3)
    with pytest.raises(SpecError, match="'policy_estimator' of Gate 'dr' needs a reward model"):
        evaluate(system, [good, good], ds, gate=Gate(policy_estimator="dr"))
    with pytest.raises(SpecError, match="'split' parameter of evaluate must be a closedloop Split, 'all' or None"):
        evaluate(system, [good], ds, split="test")
    capped = choice_system(guardrails=[FrequencyCap("a", 2, timedelta(days=1), "b", name="cap")])
    with pytest.raises(SpecError, match=r"cannot value a choice system with frequency caps \['cap'\]: a cap changes"):
        evaluate(capped, [Bundle.build(capped, informative())], ds)
    other = choice_system(name="other")
    with pytest.raises(DatasetError, match="was built for system 'offer'"):
        evaluate(other, [Bundle.build(other, informative())], ds)


#: the system the CLI test names by ``path/to/this_file.py:OFFER``
OFFER = choice_system()


def test_the_cli_prints_the_policy_value_and_the_page_has_it(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from closedloop.cli import app
    from closedloop.intelligence import KINDS

    monkeypatch.setitem(KINDS, PerAction.kind, PerAction)  # type: ignore[index]  # the test kind, loadable by Bundle.load
    ds, _ = write_log(tmp_path, OFFER, n=4000)
    paths = [Bundle.build(OFFER, noise(), version="noise").save(tmp_path / "n"),
             Bundle.build(OFFER, informative(), version="good").save(tmp_path / "g")]
    r = CliRunner().invoke(app, [
        "--home", str(tmp_path / "home"), "evaluate", "--system", f"{Path(__file__)}:OFFER", "--dataset", str(ds),
        "--bundle", str(paths[0]), "--bundle", str(paths[1]), "--bootstrap", "60", "--out", str(tmp_path / "r.json"),
    ])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "r.json").read_text())
    assert out["kind"] == "choice" and out["decisions"] == report["rows"]["n"] and out["gate"] == "pass"
    snips = report["policy_value"]["bundles"][1]["estimates"]["snips"]
    assert out["policy_value"]["bundles"][1]["snips"]["value"] == snips["value"]
    assert [b["version"] for b in out["bundles"]] == ["noise", "good"]
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Policy value</h2>" in page and "value per decision" in page and "Gate: PASS" in page
    assert f"{snips['value']:.4f}" in page and "greedy agreement" in page


def test_policy_value_false_gives_none_and_refuses_a_gate(tmp_path):
    system = choice_system()
    ds, _ = write_log(tmp_path, system, n=800)
    good, bad = Bundle.build(system, informative(), version="good"), Bundle.build(system, noise(), version="noise")
    rep = evaluate(system, [bad, good], ds, bootstrap=20, policy_value=False)
    assert rep["policy_value"] is None and rep["gate"] is None and rep["bundles"][1]["greedy_agreement"] > 0
    assert "No policy value" in rep["metadata"]["notes"][-1]
    with pytest.raises(SpecError, match="judges a choice candidate by its policy value: it needs policy_value=True"):
        evaluate(system, [bad, good], ds, gate=Gate(), policy_value=False)
    with pytest.raises(SpecError, match="'policy_value' parameter of evaluate must be True or False. Got 'yes'"):
        evaluate(system, [bad, good], ds, policy_value="yes")


def test_a_guarded_policy_is_valued_with_its_guardrails(tmp_path):
    """A system that never shows 'a' in Germany: its policy's value there is that of what it shows instead."""
    from closedloop import Runtime

    limits = [HardLimit("de_a", F.col("country").isin(["de"]), {"a": "b"})]
    system = choice_system(Softmax(temperature=0.3), guardrails=limits)
    ds, _ = write_log(tmp_path, system, n=3000)
    bundle = Bundle.build(system, informative(), version="good")
    rep = evaluate(system, [bundle], ds, bootstrap=20)
    de = next(s for s in rep["policy_value"]["slices"]["country"] if s["value"] == "de")
    assert rep["bundles"][0]["action_shares"]["a"] > 0 and de["n_rows"] > 0
    rt = Runtime(system, bundle)
    for row in rep["bundles"][0]["golden"]:
        d = rt.decide(row["context"], decision_id=row["decision_id"], timestamp_ns=row["timestamp_ns"])
        assert d.action == row["action"] and not (row["context"]["country"] == "de" and d.action == "a")

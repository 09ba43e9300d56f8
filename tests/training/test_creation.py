"""closedloop.training: train_logistic and its metrics."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from closedloop import (
    BatchContextError,
    Bundle,
    DecisionIds,
    F,
    Float,
    IntelligenceError,
    LogisticModel,
    Runtime,
    SpecError,
    Str,
    System,
    Thresholds,
)
from closedloop.training import TrainResult, encode_labels, log_loss, roc_auc, train_logistic


@pytest.fixture(scope="module")
def toy() -> System:
    return System(
        "toy",
        context=[Str("uid"), Float("x"), Float("z"), Float("w", ge=0, default=1.0)],
        unit="uid",
        features={"x": F.col("x"), "z": F.col("z"), "w_log": F.log1p(F.col("w")), "big_x": F.col("x") > 1.0},
        actions=["no", "maybe", "yes"],
        experience=Thresholds("p", {"yes": 0.8, "maybe": 0.5}, otherwise="no"),
        labels=("neg", "pos"),
    )


def _data(n: int, seed: int, noise: float = 0.0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, n)
    z = rng.normal(3.0, 5.0, n)  # offset and spread so that the scaler matters
    w = rng.exponential(3.0, n)
    margin = 1.5 * x - 0.4 * z + 0.3 * np.log1p(w) + 1.0
    y = (margin + noise * rng.normal(size=n) > 0).astype(np.int64)
    cols = {"uid": [f"u{i % 50}" for i in range(n)], "x": x, "z": z, "w": w}
    return cols, y


def test_learns_a_separable_problem(toy: System) -> None:
    cols, y = _data(2000, 0)
    result = train_logistic(toy, cols, y, C=10.0)
    assert isinstance(result, TrainResult)
    assert isinstance(result.model, LogisticModel)
    assert result.model.output == "p"  # the score the experience reads
    assert set(result.model.weights) == set(toy.features.names)
    assert result.model.weights["x"] > 0 > result.model.weights["z"]
    m = result.metrics
    assert m["n"] == 2000 and m["positives"] == int(y.sum())
    assert m["train_auc"] > 0.999
    assert m["train_log_loss"] < 0.1
    assert m["converged"] is True
    # held-out
    tcols, ty = _data(1000, 1)
    cc = toy.schema.validate_batch(tcols)
    p = result.model.bind(toy.features).batch(toy.features.batch(cc), cc)[:, 0]
    assert np.mean((p >= 0.5) == (ty == 1)) > 0.98


def test_metrics_are_measured_through_the_bound_scorer(toy: System) -> None:
    cols, y = _data(1500, 2, noise=1.5)
    result = train_logistic(toy, cols, y)
    cc = toy.schema.validate_batch(cols)
    p = result.model.bind(toy.features).batch(toy.features.batch(cc), cc)[:, 0]
    assert result.metrics["train_auc"] == roc_auc(y, p)
    assert result.metrics["train_log_loss"] == log_loss(y, p)
    assert result.metrics["train_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert result.metrics["train_log_loss"] == pytest.approx(sk_log_loss(y, p), rel=1e-9)
    assert 0.7 < result.metrics["train_auc"] < 0.999


@pytest.mark.parametrize("standardize", [True, False])
def test_folded_weights_reproduce_sklearn(toy: System, standardize: bool) -> None:
    cols, y = _data(3000, 3, noise=2.0)
    result = train_logistic(toy, cols, y, standardize=standardize)
    assert (type(result.estimator).__name__ == "Pipeline") is standardize
    cc = toy.schema.validate_batch(cols)
    X = toy.features.batch(cc)
    ours = result.model.bind(toy.features).batch(X, cc)[:, 0]
    theirs = result.estimator.predict_proba(X)[:, 1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


def test_runtime_scores_equal_model_batch_scores(toy: System, tmp_path) -> None:
    cols, y = _data(800, 4, noise=1.0)
    result = train_logistic(toy, cols, y)
    bundle = Bundle.build(toy, result.model, metrics=result.metrics)
    loaded = Bundle.load(bundle.save(tmp_path / bundle.version), toy)
    assert loaded.metrics["n"] == 800
    cc = toy.schema.validate_batch(cols)
    expected = result.model.bind(toy.features).batch(toy.features.batch(cc), cc)[:, 0]
    rt = Runtime(toy, loaded, ids=DecisionIds(seed=1))
    batch = rt.decide_batch(cols)
    assert np.array_equal(batch.scores("p"), expected)
    for i in range(0, 800, 97):
        row = {k: (v[i].item() if isinstance(v, np.ndarray) else v[i]) for k, v in cols.items()}
        assert rt.decide(row).scores["p"] == expected[i]


def test_labels_by_name_and_arrow_batches(toy: System) -> None:
    cols, y = _data(600, 5, noise=1.0)
    by_number = train_logistic(toy, cols, y)
    names = np.where(y == 1, "pos", "neg").tolist()
    by_name = train_logistic(toy, pa.table(cols), names)
    assert by_name.model.weights == by_number.model.weights
    assert by_name.model.intercept == by_number.model.intercept
    bools = train_logistic(toy, cols, y.astype(bool))
    assert bools.model.weights == by_number.model.weights
    assert list(encode_labels(toy, ["neg", "pos", 1, 0.0, True])) == [0, 1, 1, 0, 1]


def test_output_override(toy: System) -> None:
    cols, y = _data(300, 6, noise=1.0)
    assert train_logistic(toy, cols, y, output="other").model.output == "other"


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"C": 0.0}, SpecError, ["'C'", "> 0", "0.0"]),
        ({"C": -1}, SpecError, ["'C'", "-1"]),
        ({"C": float("nan")}, SpecError, ["'C'", "nan"]),
        ({"C": True}, SpecError, ["'C'", "True"]),
        ({"max_iter": 0}, SpecError, ["'max_iter'", "≥ 1", "0"]),
        ({"max_iter": 2.5}, SpecError, ["'max_iter'", "2.5"]),
        ({"standardize": "yes"}, SpecError, ["'standardize'", "'yes'"]),
        ({"output": "not a name"}, SpecError, ["'output'", "'not a name'"]),
    ],
)
def test_bad_parameters_are_named(toy: System, kwargs, error, words) -> None:
    cols, y = _data(100, 7)
    with pytest.raises(error) as info:
        train_logistic(toy, cols, y, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_bad_labels_are_named(toy: System) -> None:
    cols, y = _data(100, 8)
    with pytest.raises(IntelligenceError, match=r"'labels'.*100 rows.*99 labels"):
        train_logistic(toy, cols, y[:99])
    with pytest.raises(IntelligenceError, match=r"'labels'.*both classes.*only 'neg'"):
        train_logistic(toy, cols, np.zeros(100, dtype=int))
    with pytest.raises(IntelligenceError, match=r"'labels'.*both classes.*only 'pos'"):
        train_logistic(toy, cols, ["pos"] * 100)
    bad = y.copy()
    bad[5] = 2
    with pytest.raises(IntelligenceError, match=r"'labels'.*0/1 or one of \['neg', 'pos'\]. Got 2 instead \(row 5\)"):
        train_logistic(toy, cols, bad)
    names = ["neg"] * 100
    names[7] = "spam"
    with pytest.raises(IntelligenceError, match=r"Got 'spam' instead \(row 7\)"):
        train_logistic(toy, cols, names)
    with pytest.raises(IntelligenceError, match=r"one-dimensional"):
        train_logistic(toy, cols, y.reshape(50, 2))
    with pytest.raises(IntelligenceError, match=r"array or a list"):
        train_logistic(toy, cols, "pos")
    with pytest.raises(IntelligenceError, match=r"Got nan instead \(row 0\)"):
        train_logistic(toy, cols, np.full(100, np.nan))


def test_bad_batch_and_system(toy: System) -> None:
    cols, y = _data(100, 9)
    cols["x"] = cols["x"].astype(object)
    cols["x"][3] = "oops"
    with pytest.raises(BatchContextError, match=r"'x'.*row 3"):
        train_logistic(toy, cols, y)
    with pytest.raises(SpecError, match=r"'system'"):
        train_logistic("toy", cols, y)  # type: ignore[arg-type]


def test_nonfinite_features_are_refused(toy: System) -> None:
    s = System(
        "keepnan",
        context=[Str("uid"), Float("x", nonfinite="keep")],
        unit="uid",
        features={"x": F.col("x")},
        actions=["no", "yes"],
        experience=Thresholds("p", {"yes": 0.5}, otherwise="no"),
    )
    x = np.array([0.0, 1.0, np.inf, 2.0])
    with pytest.raises(IntelligenceError, match=r"Feature 'x' must be finite.*inf.*row 2"):
        train_logistic(s, {"uid": ["a"] * 4, "x": x}, [0, 1, 0, 1])


def test_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert roc_auc([0, 1], [0.2, 0.2]) == 0.5
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    with pytest.raises(IntelligenceError, match="both classes"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(IntelligenceError, match="same length"):
        log_loss([1, 0], [0.5])


def test_sklearn_without_intercept_also_converts(toy: System) -> None:
    # The conversion itself (LogisticModel.from_sklearn) is what train_logistic relies on.
    cols, y = _data(500, 11, noise=1.0)
    cc = toy.schema.validate_batch(cols)
    X = toy.features.batch(cc)
    est = LogisticRegression(fit_intercept=False).fit(X, y)
    model = LogisticModel.from_sklearn(est, toy.features.names, output="p")
    ours = model.bind(toy.features).batch(X, cc)[:, 0]
    np.testing.assert_allclose(ours, est.predict_proba(X)[:, 1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("standardize", [True, False])
def test_sample_weights_equal_repeated_rows(toy: System, standardize: bool) -> None:
    batch, y = _data(400, seed=11, noise=0.3)
    w = np.where(np.arange(400) % 3 == 0, 3.0, 1.0)
    weighted = train_logistic(toy, batch, y, sample_weight=w, standardize=False).model
    rep = np.repeat(np.arange(400), w.astype(int))
    big = {k: np.asarray(v)[rep] for k, v in batch.items()}
    repeated = train_logistic(toy, big, y[rep], standardize=False).model
    plain = train_logistic(toy, batch, y, standardize=False).model
    a, b, c = (np.array(list(m.weights.values())) for m in (weighted, repeated, plain))
    # Weight 3 is the row three times, up to the solver's tolerance (C scales with the row count,
    # so compare against the repeated rows' fit, not the unweighted one).
    assert np.allclose(a, b, rtol=1e-3, atol=1e-4)
    assert not np.allclose(a, c, rtol=1e-3, atol=1e-4)
    if standardize:  # the Pipeline path routes the weights to the logistic step
        train_logistic(toy, batch, y, sample_weight=w, standardize=True)


def test_bad_sample_weights_are_named(toy: System) -> None:
    batch, y = _data(50, seed=1)
    with pytest.raises(SpecError, match="one weight per row \\(50\\)"):
        train_logistic(toy, batch, y, sample_weight=np.ones(49))
    with pytest.raises(SpecError, match="finite and >= 0. Got -1.0 instead \\(row 3\\)"):
        train_logistic(toy, batch, y, sample_weight=np.where(np.arange(50) == 3, -1.0, 1.0))
    with pytest.raises(SpecError, match="all zero"):
        train_logistic(toy, batch, y, sample_weight=np.zeros(50))

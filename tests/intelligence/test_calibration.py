"""Calibration: Platt and isotonic maps over any one-output intelligence — better calibrated on
held-out data, monotone, bitwise one ≡ batch, nested serialization and bundles."""

from __future__ import annotations

import json
import math

import lightgbm as lgb
import numpy as np
import pytest

from closedloop import Bundle, IntelligenceError, LinearModel, LogisticModel, SpecError, checks
from closedloop.intelligence import Calibrated, LightGBMModel, ScoringRules, load_intelligence
from closedloop.intelligence.heuristics import Rule
from closedloop.training import calibrate, train_logistic


def split(phishing, n, seed):
    from examples.phishing.data import generate

    return generate(n, seed)


@pytest.fixture(scope="module")
def miscalibrated(phishing):
    """A logistic model with its log-odds halved and shifted: it ranks as well as the trained
    one, but its probabilities are far from the truth."""
    columns, labels = split(phishing, 3000, 0)
    m = train_logistic(phishing, columns, labels).model
    return LogisticModel({k: 0.5 * w for k, w in m.weights.items()}, 0.5 * m.intercept + 0.5, output="phish")


@pytest.fixture(scope="module")
def gbm(phishing):
    columns, labels = split(phishing, 3000, 0)
    cols = phishing.schema.validate_batch(columns)
    X = phishing.features.batch(cols)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, labels, feature_name=list(phishing.features.names)), num_boost_round=40,
    )
    return LightGBMModel.from_booster(booster, output="phish")


def probabilities(phishing, intelligence, columns):
    cols = phishing.schema.validate_batch(columns)
    X = phishing.features.batch(cols)
    return intelligence.bind(phishing.features).batch(X, cols)[:, 0]


def brier(p, y):
    return float(np.mean((p - y) ** 2))


def ece(p, y, bins=10):
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean() for b in range(bins) if (idx == b).any()))


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_fixes_a_miscalibrated_score_on_held_out_data(phishing, miscalibrated, method):
    fit_cols, fit_y = split(phishing, 4000, 1)
    test_cols, test_y = split(phishing, 4000, 2)
    calibrated = calibrate(phishing, miscalibrated, fit_cols, fit_y, method)
    assert isinstance(calibrated, Calibrated) and calibrated.method == method
    assert calibrated.outputs == ("phish",)
    raw = probabilities(phishing, miscalibrated, test_cols)
    cal = probabilities(phishing, calibrated, test_cols)
    assert ece(raw, test_y) > 0.1  # the premise: the raw score is badly calibrated
    assert ece(cal, test_y) < 0.2 * ece(raw, test_y)
    assert brier(cal, test_y) < brier(raw, test_y)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_conformance(phishing, miscalibrated, gbm, method):
    columns, labels = split(phishing, 2000, 1)
    for base in (miscalibrated, gbm):
        checks.check_intelligence(phishing, calibrate(phishing, base, columns, labels, method), n=300)


def identity_base():
    """The base score is the feature ``domain_age_log`` itself (finite, ≥ 0)."""
    return LinearModel({"domain_age_log": 1.0}, 0.0, output="phish")


def matrix(phishing, values):
    X = np.zeros((len(values), len(phishing.features)), order="F")
    X[:, phishing.features.index["domain_age_log"]] = values
    return X


@pytest.mark.parametrize(
    "calibrated",
    [
        Calibrated(identity_base(), "isotonic", x=[1.0, 2.0, 2.5, 7.0], y=[0.1, 0.1, 0.6, 0.97]),
        Calibrated(identity_base(), "isotonic", x=[0.3], y=[0.4]),
        Calibrated(identity_base(), "platt", a=1.7, b=-4.0),
        Calibrated(identity_base(), "platt", a=-0.3, b=0.5),
    ],
    ids=["isotonic", "isotonic_one_knot", "platt", "platt_decreasing"],
)
def test_one_equals_batch_bitwise_and_the_map_is_monotone(phishing, calibrated):
    rng = np.random.default_rng(0)
    knots = list(calibrated.x)
    s = np.concatenate([
        rng.uniform(-2, 9, 3000), knots, np.nextafter(knots, np.inf), np.nextafter(knots, -np.inf),
        [0.0, -0.0, 1e-300, -1e300, 1e300, math.inf, -math.inf, math.nan],
    ])
    scorer = calibrated.bind(phishing.features)
    X = matrix(phishing, s)
    S = scorer.batch(X, None)[:, 0]
    for i, x in enumerate(X.tolist()):
        (one,) = scorer.one(tuple(x), None)
        assert checks.same_float(one, float(S[i])), (s[i], one, S[i])
    order = np.argsort(s[~np.isnan(s)], kind="stable")
    p = S[~np.isnan(s)][order]
    steps = np.diff(p)
    assert (steps >= 0).all() if calibrated.method == "isotonic" or calibrated.a > 0 else (steps <= 0).all()
    assert np.isnan(S[np.isnan(s)]).all()
    assert ((p >= 0) & (p <= 1)).all()


def test_isotonic_interpolates_between_knots_and_clips_at_the_ends(phishing):
    c = Calibrated(identity_base(), "isotonic", x=[1.0, 3.0, 5.0], y=[0.2, 0.4, 0.9]).bind(phishing.features)
    s = [-5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 50.0]
    got = c.batch(matrix(phishing, s), None)[:, 0].tolist()
    assert got == pytest.approx([0.2, 0.2, 0.3, 0.4, 0.65, 0.9, 0.9], abs=1e-15)
    assert got[1] == 0.2 and got[3] == 0.4 and got[5] == 0.9  # exactly the knots' values


def test_platt_is_the_shared_sigmoid(phishing):
    from closedloop.intelligence import sigmoid

    c = Calibrated(identity_base(), "platt", a=0.75, b=-1.25).bind(phishing.features)
    s = [0.0, 1.0, 2.5, 9.0]
    got = c.batch(matrix(phishing, s), None)[:, 0].tolist()
    assert got == [sigmoid(0.75 * v - 1.25) for v in s]


def test_nested_serialization_and_bundle_round_trip(phishing, gbm, tmp_path):
    columns, labels = split(phishing, 2000, 1)
    calibrated = calibrate(phishing, gbm, columns, labels, "isotonic")
    files: dict[str, bytes] = {}
    spec = calibrated.to_dict(files)
    assert spec["kind"] == "calibrated" and spec["base"]["kind"] == "lightgbm"
    assert list(files) == [spec["base"]["model"]]  # the base's model file goes into the bundle
    again = load_intelligence(json.loads(json.dumps(spec)), files)
    assert again.x == calibrated.x and again.y == calibrated.y
    path = Bundle.build(phishing, calibrated).save(tmp_path / "b")
    loaded = Bundle.load(path, phishing)
    test_cols, _ = split(phishing, 800, 4)
    a = probabilities(phishing, calibrated, test_cols)
    b = probabilities(phishing, loaded.intelligence, test_cols)
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
    checks.check_runtime(phishing, loaded, n=150)


def test_a_lookup_reading_base_keeps_its_context_fields(phishing):
    from closedloop import LookupTable

    base = LookupTable("domain", {"evil.example": 1.0}, default=0.1, output="phish")
    c = Calibrated(base, "platt", a=2.0, b=-1.0)
    assert c.context_fields() == ("domain",) and c.inputs() == ()
    checks.check_intelligence(phishing, c, n=100)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda b: Calibrated(b, "beta"), "'method' parameter of Calibrated must be one of"),
        (lambda b: Calibrated(b, "platt", a=1.0), "needs 'a' and 'b'"),
        (lambda b: Calibrated(b, "platt", a=math.nan, b=0.0), "'a' parameter of Calibrated must be a finite number"),
        (lambda b: Calibrated(b, "platt", a=1.0, b=0.0, x=[1.0]), "takes 'a' and 'b', not knots"),
        (lambda b: Calibrated(b, "isotonic", x=[1.0, 2.0], y=[0.1]), "same length. Got 2 and 1"),
        (lambda b: Calibrated(b, "isotonic", x=[2.0, 1.0], y=[0.1, 0.2]), r"strictly increasing. Got x\[0\]=2.0, x\[1\]=1.0"),
        (lambda b: Calibrated(b, "isotonic", x=[1.0, 2.0], y=[0.3, 0.2]), "non-decreasing"),
        (lambda b: Calibrated(b, "isotonic", x=[1.0, 2.0], y=[0.3, 1.2]), r"probabilities in \[0, 1\]. Got y\[1\]=1.2"),
        (lambda b: Calibrated(b, "isotonic", x=[], y=[]), "non-empty list"),
        (lambda b: Calibrated(b, "isotonic", x=[0.0, 5e-324], y=[0.0, 1.0]), "finite slope"),
        (lambda b: Calibrated(b, "isotonic", x=[1.0], y=[0.5], a=1.0), "not 'a'/'b'"),
        (lambda b: Calibrated("base", "platt", a=1.0, b=0.0), "must be an Intelligence"),
        (lambda b: Calibrated(b, "platt", a=1.0, b=0.0, output="not valid"), "'output' parameter"),
    ],
)
def test_bad_parameters_name_the_parameter_rule_and_value(make, message):
    base = ScoringRules([Rule("ip_in_url", ">", 0.5, 0.5)], output="phish")
    with pytest.raises(IntelligenceError, match=message):
        make(base)


def test_calibrate_refuses_bad_input(phishing, miscalibrated):
    columns, labels = split(phishing, 300, 1)
    with pytest.raises(IntelligenceError, match="must contain both classes"):
        calibrate(phishing, miscalibrated, columns, np.zeros(300, dtype=int))
    with pytest.raises(SpecError, match="'method' parameter of calibrate must be one of"):
        calibrate(phishing, miscalibrated, columns, labels, "beta")
    with pytest.raises(IntelligenceError, match="one label per row"):
        calibrate(phishing, miscalibrated, columns, labels[:10])

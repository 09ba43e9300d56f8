"""LightGBM models: parsed from LightGBM's text format and scored by closedloop's own tree kernel —
equal to Booster.predict, one ≡ batch bitwise (compiled and pure-Python), bundles round-trip,
and malformed or unsupported models are refused by name."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import lightgbm as lgb
import numpy as np
import pytest

from closedloop import Bundle, BundleError, IntelligenceError, checks
from closedloop.intelligence import KINDS, LightGBMModel, load_intelligence
from closedloop.intelligence import lightgbm as lgbmod
from closedloop.intelligence.lightgbm import K_ZERO, PyForest, _make_forest, parse_lightgbm
from closedloop.runtime.bundle import _manifest_digest

D = 6
NAMES = [f"f{i}" for i in range(D)]


def train(params, X, y, rounds=100, **ds):
    return lgb.train({"verbose": -1, "num_threads": 1, **params}, lgb.Dataset(X, y, **ds), num_boost_round=rounds)


@pytest.fixture(scope="module")
def synthetic():
    """Columns with NaN, exact zeros and tiny values, so every missing-value branch is taken."""
    rng = np.random.default_rng(7)
    n = 3000
    X = rng.normal(size=(n, D))
    X[rng.random((n, D)) < 0.1] = np.nan
    X[:, 2] = np.where(rng.random(n) < 0.4, 0.0, X[:, 2])
    signal = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2]).clip(-1, 1)
    y = (signal + 0.5 * rng.normal(size=n) > 0).astype(int)
    return X, y


def probe_rows(parsed, X, seed=0):
    """Data rows, rows of special values, and each threshold with its neighbours in every column."""
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-36, -1e-36, K_ZERO, -K_ZERO, 2e-35, 5e-324]
    thr = parsed.threshold[np.isfinite(parsed.threshold)][:300]
    near = np.concatenate([thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf)])
    rows = [
        X[:1500],
        rng.choice(special, size=(400, X.shape[1])),
        np.repeat(near[:, None], X.shape[1], axis=1),
    ]
    return np.asfortranarray(np.vstack(rows))


def forest_scores(model, T, compiled=True, transform=None):
    parsed = model.parsed
    if transform is not None:
        parsed = parse_lightgbm(model.model_text)
        parsed.objective = transform
    forest = _make_forest(parsed, np.arange(T.shape[1], dtype=np.int32), T.shape[1], compiled)
    out = np.empty(T.shape[0])
    forest.batch_into(T, out)
    return forest, out


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


CASES = {
    "binary": ({"objective": "binary", "num_leaves": 31}, 100),
    "binary_zero_as_missing": ({"objective": "binary", "num_leaves": 31, "zero_as_missing": True}, 60),
    "binary_no_missing": ({"objective": "binary", "num_leaves": 15, "use_missing": False}, 60),
    "binary_sigmoid": ({"objective": "binary", "num_leaves": 15, "sigmoid": 0.7}, 60),
    "regression": ({"objective": "regression", "num_leaves": 31}, 80),
    "huber": ({"objective": "huber", "num_leaves": 7}, 40),
    "random_forest": ({"boosting": "rf", "objective": "binary", "bagging_freq": 1, "bagging_fraction": 0.5}, 30),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_equal_booster_predict(synthetic, case):
    X, y = synthetic
    params, rounds = CASES[case]
    target = y + np.nan_to_num(X[:, 3]).clip(-1, 1) if params["objective"] != "binary" else y
    booster = train(params, X, target, rounds)
    model = LightGBMModel.from_booster(booster, NAMES)
    T = probe_rows(model.parsed, X)
    ref = booster.predict(np.ascontiguousarray(T))
    forest, got = forest_scores(model, T)
    _, fallback = forest_scores(model, T, compiled=False)
    assert np.abs(got - ref).max() <= 1e-12  # the acceptance criterion
    assert np.array_equal(bits(got), bits(fallback))  # compiled ≡ pure Python, bitwise
    ones = np.array([forest.one(tuple(r), None)[0] for r in T.tolist()])
    assert np.array_equal(bits(ones), bits(got))  # one ≡ batch, bitwise
    # The raw sum (before the objective's transform) is LightGBM's own, bit for bit.
    _, raw = forest_scores(model, T, transform="identity")
    raw_ref = booster.predict(np.ascontiguousarray(T), raw_score=True)
    if model.parsed.average_output:
        raw_ref = raw_ref / model.n_trees
    assert np.array_equal(bits(raw), bits(raw_ref))
    if params["objective"] != "binary":
        assert np.array_equal(bits(got), bits(ref))


def test_a_model_of_one_constant_tree(synthetic):
    X, _ = synthetic
    booster = train({"objective": "regression"}, X, np.full(X.shape[0], 2.5), 3)
    model = LightGBMModel.from_booster(booster, NAMES)
    _, got = forest_scores(model, X[:50])
    assert np.array_equal(got, booster.predict(X[:50]))


@pytest.fixture(scope="module")
def phishing_model(phishing):
    from examples.phishing.data import generate

    columns, labels = generate(3000, 0)
    cols = phishing.schema.validate_batch(columns)
    X = phishing.features.batch(cols)
    names = list(phishing.features.names)
    booster = train({"objective": "binary", "num_leaves": 31}, X, labels, 100, feature_name=names)
    return booster, LightGBMModel.from_booster(booster, output="phish")


def test_conformance_on_the_phishing_system(phishing, phishing_model):
    _, model = phishing_model
    assert model.n_trees == 100 and model.objective == "binary"
    assert model.inputs() == tuple(phishing.features.names)
    checks.check_intelligence(phishing, model, n=400)


def test_conformance_without_the_compiled_kernel(phishing, phishing_model, monkeypatch):
    booster, model = phishing_model
    compiled = model.bind(phishing.features)
    monkeypatch.setattr(lgbmod, "_trees", None)
    scorer = model.bind(phishing.features)
    assert isinstance(scorer._forest, PyForest)
    checks.check_intelligence(phishing, model, n=200)
    from examples.phishing.data import generate

    cols = phishing.schema.validate_batch(generate(500, 3)[0])
    X = phishing.features.batch(cols)
    assert np.array_equal(bits(scorer.batch(X, cols)), bits(compiled.batch(X, cols)))


def test_equals_booster_predict_on_the_phishing_system(phishing, phishing_model):
    booster, model = phishing_model
    from examples.phishing.data import generate

    cols = phishing.schema.validate_batch(generate(2000, 11)[0])
    X = phishing.features.batch(cols)
    got = model.bind(phishing.features).batch(X, cols)[:, 0]
    assert np.abs(got - booster.predict(np.ascontiguousarray(X))).max() <= 1e-12


def test_columns_are_mapped_to_system_features_by_name(phishing):
    from examples.phishing.data import generate

    columns, labels = generate(1500, 1)
    cols = phishing.schema.validate_batch(columns)
    X = phishing.features.batch(cols)
    picked = ["url_length_log", "domain_age_log", "lure_words", "ip_in_url"]  # not the system's order
    idx = [phishing.features.index[n] for n in picked]
    booster = train({"objective": "binary", "num_leaves": 7}, X[:, idx], labels, 20)
    model = LightGBMModel.from_booster(booster, picked, output="phish")  # Column_0… → these names
    assert model.inputs() == tuple(picked)
    got = model.bind(phishing.features).batch(X, cols)[:, 0]
    assert np.abs(got - booster.predict(np.ascontiguousarray(X[:, idx]))).max() <= 1e-12
    checks.check_intelligence(phishing, model, n=100)


def test_feature_names_must_agree_with_the_model(synthetic, phishing):
    X, y = synthetic
    default = train({"objective": "binary", "num_leaves": 4}, X, y, 2)
    with pytest.raises(IntelligenceError, match="default feature names"):
        LightGBMModel.from_booster(default)
    with pytest.raises(IntelligenceError, match="must name the model's 6 columns. Got 2 names"):
        LightGBMModel.from_booster(default, ["a", "b"])
    with pytest.raises(IntelligenceError, match="must be distinct"):
        LightGBMModel.from_booster(default, ["a"] * 6)
    named = train({"objective": "binary", "num_leaves": 4}, X, y, 2, feature_name=NAMES)
    with pytest.raises(IntelligenceError, match="must equal the names the model was trained with"):
        LightGBMModel.from_booster(named, NAMES[::-1])
    assert LightGBMModel.from_booster(named).inputs() == tuple(NAMES)
    with pytest.raises(IntelligenceError, match=r"reads features \['f0', 'f1'"):
        LightGBMModel.from_booster(named).bind(phishing.features)
    with pytest.raises(IntelligenceError, match="needs a lightgbm.Booster"):
        LightGBMModel.from_booster(object(), NAMES)


def test_the_sklearn_api_model_is_accepted(synthetic):
    X, y = synthetic
    clf = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(X, y)
    model = LightGBMModel.from_booster(clf, NAMES)
    _, got = forest_scores(model, X[:300])
    assert np.abs(got - clf.predict_proba(X[:300])[:, 1]).max() <= 1e-12


def test_bundle_round_trip(phishing, phishing_model, tmp_path):
    booster, model = phishing_model
    bundle = Bundle.build(phishing, model, metrics={"trees": model.n_trees})
    (name,) = [f for f in bundle.manifest["files"] if f.endswith(".lgb.txt")]
    path = bundle.save(tmp_path / "b")
    assert (path / name).read_text() == booster.model_to_string()  # LightGBM's own text, verbatim
    spec = json.loads((path / "intelligence.json").read_text())
    assert spec == {
        "kind": "lightgbm", "output": "phish", "model": name, "features": list(phishing.features.names),
        "objective": "binary", "trees": 100,
    }
    loaded = Bundle.load(path, phishing)
    assert loaded.version == bundle.version
    from examples.phishing.data import generate

    cols = phishing.schema.validate_batch(generate(800, 5)[0])
    X = phishing.features.batch(cols)
    a = model.bind(phishing.features).batch(X, cols)
    b = loaded.intelligence.bind(phishing.features).batch(X, cols)
    assert np.array_equal(bits(a), bits(b))
    checks.check_runtime(phishing, loaded, n=200)


def test_loading_needs_no_lightgbm(phishing, phishing_model, monkeypatch):
    _, model = phishing_model
    files: dict[str, bytes] = {}
    spec = model.to_dict(files)
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # any `import lightgbm` now fails
    again = load_intelligence(json.loads(json.dumps(spec)), files, KINDS)
    checks.check_intelligence(phishing, again, n=50)


# -- refusals ----------------------------------------------------------------------------------


SMALL = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=5
objective=binary sigmoid:1
feature_names=f0 f1 f2 f3 f4 f5
feature_infos=[-3:3] [-3:4] [-3:2] [-3:3] [-3:3] [-3:3]

Tree=0
num_leaves=4
num_cat=0
split_feature=0 1 2
split_gain=1037.59 213.771 50.2823
threshold=-0.12263329013743074 0.31762031259428275 1.0000000180025095e-35
decision_type=8 10 2
left_child=2 -2 -1
right_child=1 -3 -4
leaf_value=-0.22362493214724877 -0.026453425619737424 0.11417665697577548 -0.14293348252011306
leaf_weight=167.6 192.8 245.8 143.1
leaf_count=671 772 984 573
internal_value=-0.0466751 0.0523507 -0.186458
internal_weight=749.592 438.761 310.831
internal_count=3000 1756 1244
is_linear=0
shrinkage=1


Tree=1
num_leaves=4
num_cat=0
split_feature=0 3 5
split_gain=850.828 196.033 27.6525
threshold=-0.19886708949428991 0.43072333391997991 -0.6902631095403432
decision_type=8 6 0
left_child=2 -2 -1
right_child=1 -3 -4
leaf_value=-0.16124961709650504 0.022400401143733133 0.15339562934373371 -0.098606081710212554
leaf_weight=165.6 240.2 217.7 122.6
leaf_count=671 962 874 493
internal_value=-2.0609e-05 0.0846829 -0.134605
internal_weight=746.357 458.064 288.293
internal_count=3000 1836 1164
is_linear=0
shrinkage=0.1


end of trees

feature_importances:
f0=2

parameters:
[boosting: gbdt]
[objective: binary]
end of parameters

pandas_categorical:null
"""


@pytest.fixture(scope="module")
def small_text():
    """A hand-written model: both trees split with missing types NaN, zero and none."""
    return SMALL


def test_a_hand_written_model_scores_as_lightgbm_loads_it(synthetic, small_text):
    X, _ = synthetic
    booster = lgb.Booster(model_str=small_text)
    model = LightGBMModel(small_text)
    assert model.inputs() == tuple(NAMES) and model.n_trees == 2
    T = probe_rows(model.parsed, X)
    forest, got = forest_scores(model, T)
    assert np.abs(got - booster.predict(np.ascontiguousarray(T))).max() <= 1e-12
    _, raw = forest_scores(model, T, transform="identity")
    assert np.array_equal(bits(raw), bits(booster.predict(np.ascontiguousarray(T), raw_score=True)))


def edit_tree(text, key, new, tree=0):
    head, sep, rest = text.partition(f"Tree={tree}\n")
    lines = rest.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(key + "="):
            lines[i] = f"{key}={new}"
            break
    else:
        raise AssertionError(key)
    return head + sep + "\n".join(lines)


def edit_header(text, key, new):
    return "\n".join(f"{key}={new}" if line.startswith(key + "=") else line for line in text.split("\n"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("tree\n", "forest\n", 1), "start with the line 'tree'"),
        (lambda t: edit_header(t, "version", "v9"), "version"),
        (lambda t: edit_header(t, "num_class", "3"), "num_class=1"),
        (lambda t: edit_header(t, "objective", "poisson"), "use an objective closedloop scores exactly"),
        (lambda t: edit_header(t, "objective", "regression sqrt"), "without options"),
        (lambda t: edit_header(t, "objective", "binary sigmoid:-1"), "finite sigmoid > 0"),
        (lambda t: edit_header(t, "feature_names", "a b"), "list 6 feature_names"),
        (lambda t: edit_tree(t, "num_cat", "1"), "no categorical splits"),
        (lambda t: edit_tree(t, "decision_type", "1 2 2"), "no categorical splits"),
        (lambda t: edit_tree(t, "decision_type", "14 2 2"), "missing type none, zero or NaN"),
        (lambda t: edit_tree(t, "split_feature", "0 6 1"), "split on features 0…5"),
        (lambda t: edit_tree(t, "left_child", "1 -2 -1"), r"reach every node once|after its node"),
        (lambda t: edit_tree(t, "left_child", "0 -2 -1"), "after its node"),
        (lambda t: edit_tree(t, "right_child", "1 -3 -9"), "leaves ~0…~3"),
        (lambda t: edit_tree(t, "right_child", "1 -1 -4"), "reach every leaf once"),
        (lambda t: edit_tree(t, "leaf_value", "0.1 0.2 0.3"), "hold num_leaves=4 leaf_value entries"),
        (lambda t: edit_tree(t, "leaf_value", "0.1 0.2 0.3 nan"), "finite leaf values"),
        (lambda t: edit_tree(t, "threshold", "0.1 nan 0.3"), "thresholds that are numbers"),
        (lambda t: edit_tree(t, "threshold", "0.1 x 0.3"), "hold numbers in 'threshold'"),
        (lambda t: edit_tree(t, "split_feature", "0 1"), "num_leaves - 1 = 3 'split_feature'"),
        (lambda t: edit_tree(t, "is_linear", "1"), "no linear trees"),
        (lambda t: t.replace("Tree=1\n", "Tree=5\n"), "number its trees"),
        (lambda t: t.replace("end of trees", "the end"), "end its trees"),
        (lambda t: t[: t.index("Tree=0")] + "end of trees\n", "at least one tree"),
    ],
)
def test_malformed_or_unsupported_text_is_refused_by_name(small_text, edit, message):
    bad = edit(small_text)
    assert bad != small_text
    with pytest.raises(IntelligenceError, match=message):
        LightGBMModel(bad, NAMES)


def test_categorical_models_are_refused(synthetic):
    X, y = synthetic
    Xc = X.copy()
    Xc[:, 4] = np.random.default_rng(0).integers(0, 6, size=X.shape[0])
    y2 = (y + (Xc[:, 4] == 3)).clip(0, 1)
    booster = train({"objective": "binary", "num_leaves": 15, "min_data_per_group": 5, "cat_smooth": 1}, Xc, y2, 10,
                    categorical_feature=[4])
    with pytest.raises(IntelligenceError, match="categorical"):
        LightGBMModel.from_booster(booster, NAMES)


def test_multiclass_models_are_refused(synthetic):
    X, y = synthetic
    booster = train({"objective": "multiclass", "num_class": 3, "num_leaves": 4}, X, (y + (X[:, 3] > 1)).astype(int), 2)
    with pytest.raises(IntelligenceError, match="num_class=1"):
        LightGBMModel.from_booster(booster, NAMES)


def test_a_bundle_with_a_malformed_model_file_fails_the_intelligence_check(phishing, phishing_model, tmp_path):
    _, model = phishing_model
    path = Bundle.build(phishing, model).save(tmp_path / "b")
    (name,) = [f for f in os.listdir(path) if f.endswith(".lgb.txt")]
    text = (path / name).read_text()
    first = text.split("split_feature=", 1)[1].split("\n", 1)[0].split()
    rewrite(path, name, edit_tree(text, "split_feature", " ".join(["99", *first[1:]])).encode())
    with pytest.raises(BundleError) as err:
        Bundle.load(path, phishing)
    assert err.value.check == "intelligence"
    assert "split on features" in str(err.value)


def test_a_bundle_whose_spec_names_a_missing_model_file_fails(phishing, phishing_model, tmp_path):
    _, model = phishing_model
    path = Bundle.build(phishing, model).save(tmp_path / "b")
    spec = json.loads((path / "intelligence.json").read_text())
    spec["model"] = "other.lgb.txt"
    rewrite(path, "intelligence.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="must name a file of the bundle") as err:
        Bundle.load(path, phishing)
    assert err.value.check == "intelligence"


def rewrite(path, name, data):
    """Replace a bundle file *and* its checksums: tampering the manifest cannot catch."""
    p = path / name
    os.chmod(p, 0o644)
    p.write_bytes(data)
    m = json.loads((path / "manifest.json").read_text())
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    m["digest"] = _manifest_digest(m)
    os.chmod(path / "manifest.json", 0o644)
    (path / "manifest.json").write_text(json.dumps(m))


def test_the_compiled_forest_refuses_bad_arrays_and_inputs(phishing_model, phishing):
    if not lgbmod.COMPILED:
        pytest.skip("the compiled kernel is not built")
    from closedloop import _trees

    one = np.zeros(1, dtype=np.int32)
    ok = dict(
        roots=np.array([0], dtype=np.int32), feature=one, threshold=np.zeros(1), flags=np.zeros(1, dtype=np.uint8),
        left=np.array([-1], dtype=np.int32), right=np.array([-2], dtype=np.int32), leaves=np.array([0.0, 1.0]),
        n_inputs=1, transform=0, scale=1.0, divisor=0.0, error=IntelligenceError,
    )
    f = _trees.Forest(**ok)
    assert f.one((0.0,)) == (0.0,) and f.one([5.0], None) == (1.0,)
    for key, value in [
        ("left", np.array([0], dtype=np.int32)),  # a cycle
        ("right", np.array([-3], dtype=np.int32)),  # no such leaf
        ("feature", np.array([1], dtype=np.int32)),  # no such input
        ("roots", np.array([4], dtype=np.int32)),
        ("flags", np.array([6], dtype=np.uint8)),  # missing type 3
        ("threshold", np.array([np.nan])),
    ]:
        with pytest.raises(ValueError):
            _trees.Forest(**{**ok, key: value})
    with pytest.raises(TypeError):
        _trees.Forest(**{**ok, "feature": np.zeros(1, dtype=np.int64)})
    with pytest.raises(IntelligenceError, match="must hold 1 numbers. Got 2"):
        f.one((0.0, 1.0))
    with pytest.raises(IntelligenceError, match="must be a number"):
        f.one(("x",))
    with pytest.raises(IntelligenceError, match="tuple or list"):
        f.one(3.0)
    with pytest.raises(IntelligenceError, match="must have 1 columns"):
        f.batch_into(np.zeros((2, 2)), np.zeros(2))

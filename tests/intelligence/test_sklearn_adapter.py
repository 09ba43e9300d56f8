"""Any scikit-learn estimator through skops: conformance (one ≡ batch bitwise) for a histogram
gradient boosting model, a random forest and a scaler + logistic pipeline; bundle round trips;
trust that an edited manifest cannot widen; crafted tree structures refused."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from closedloop import Bundle, BundleError, IntelligenceError, checks
from closedloop.intelligence import KINDS, SklearnModel, load_intelligence
from closedloop.intelligence.sklearn import TRUSTED_TYPES, check_trusted, skops_references
from closedloop.runtime.bundle import _manifest_digest


@pytest.fixture(scope="module")
def data(phishing):
    from examples.phishing.data import generate

    columns, labels = generate(2000, 0)
    cols = phishing.schema.validate_batch(columns)
    return phishing.features.batch(cols), labels


@pytest.fixture(scope="module")
def held_out(phishing):
    from examples.phishing.data import generate

    cols = phishing.schema.validate_batch(generate(600, 9)[0])
    return cols, phishing.features.batch(cols)


ESTIMATORS = {
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=25, max_depth=8, n_jobs=2, random_state=0),
    "scaled_logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
}
MODES = {"hist_gradient_boosting": "vectorized", "random_forest": "vectorized", "scaled_logistic": "rowwise"}


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return {name: make().fit(X, y) for name, make in ESTIMATORS.items()}


@pytest.fixture(scope="module")
def models(phishing, fitted):
    names = list(phishing.features.names)
    return {name: SklearnModel(est, names, output="phish") for name, est in fitted.items()}


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_conformance(phishing, models, name):
    model = models[name]
    assert model.batch_mode_resolved == MODES[name]
    checks.check_intelligence(phishing, model, n=150)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_scores_are_the_estimators_own(phishing, models, fitted, held_out, name):
    cols, X = held_out
    got = models[name].bind(phishing.features).batch(X, cols)[:, 0]
    est = fitted[name]
    if MODES[name] == "vectorized":
        jobs = est.get_params().get("n_jobs")
        if jobs is not None:  # with more jobs a forest adds its trees in the order threads finish
            est.set_params(n_jobs=1)
        try:
            assert np.array_equal(bits(got), bits(est.predict_proba(np.ascontiguousarray(X))[:, 1]))
        finally:
            if jobs is not None:
                est.set_params(n_jobs=jobs)
    else:  # row by row: exactly what the estimator says for each row on its own
        rows = np.array([est.predict_proba(np.array([r]))[0, 1] for r in X[:100].tolist()])
        assert np.array_equal(bits(got[:100]), bits(rows))
        assert np.abs(got - est.predict_proba(X)[:, 1]).max() < 1e-12


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bundle_round_trip(phishing, models, held_out, tmp_path, name):
    model = models[name]
    bundle = Bundle.build(phishing, model)
    path = bundle.save(tmp_path / "b")
    loaded = Bundle.load(path, phishing)
    assert loaded.version == bundle.version
    assert isinstance(loaded.intelligence, SklearnModel)
    spec = json.loads((path / "intelligence.json").read_text())
    data = (path / spec["model"]).read_bytes()
    assert spec["trusted"] == skops_references(data)  # every name the file references …
    assert set(sio.get_untrusted_types(data=data)) <= set(spec["trusted"]) <= TRUSTED_TYPES  # … all allow-listed
    cols, X = held_out
    a = model.bind(phishing.features).batch(X, cols)
    b = loaded.intelligence.bind(phishing.features).batch(X, cols)
    assert np.array_equal(bits(a), bits(b))
    c = phishing.schema.validate({"user_id": "u", "url": "http://10.0.0.1/login", "domain": "10.0.0.1"})
    x = phishing.features.one(c)
    assert model.bind(phishing.features).one(x, c) == loaded.intelligence.bind(phishing.features).one(x, c)


def test_the_same_estimator_builds_the_same_bundle(phishing, models):
    model = models["hist_gradient_boosting"]
    assert Bundle.build(phishing, model).version == Bundle.build(phishing, model).version


def test_runtime_on_a_forest_bundle(phishing, models):
    checks.check_runtime(phishing, Bundle.build(phishing, models["random_forest"]), n=100)


def test_forests_score_with_one_job(models):
    assert models["random_forest"].estimator.n_jobs == 1


def test_the_model_is_a_snapshot(phishing, data):
    X, y = data
    est = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    model = SklearnModel(est, list(phishing.features.names))
    before = model.estimator.predict_proba(X[:20])
    est.set_params(max_iter=10).fit(X[::-1], 1 - y)  # refitting the original changes nothing here
    assert np.array_equal(model.estimator.predict_proba(X[:20]), before)


# -- trust -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "sklearnx.Evil", "posix.system", "sklearn..x"],
)
def test_a_widened_trusted_list_is_refused(models, extra):
    files: dict[str, bytes] = {}
    spec = models["hist_gradient_boosting"].to_dict(files)
    spec["trusted"] = [*spec["trusted"], extra]
    with pytest.raises(IntelligenceError, match="must each be one of the allow-listed names"):
        load_intelligence(json.loads(json.dumps(spec)), files, KINDS)


def test_a_narrowed_trusted_list_is_refused(models):
    # every reference is allow-listed (checked before skops reads the file); skops then applies
    # the spec's own, narrower list and refuses
    files: dict[str, bytes] = {}
    spec = models["hist_gradient_boosting"].to_dict(files)
    spec["trusted"] = []
    with pytest.raises(IntelligenceError, match="could not be loaded with the trusted types"):
        load_intelligence(spec, files, KINDS)


def test_a_tampered_trusted_list_in_a_saved_bundle_fails_the_intelligence_check(phishing, models, tmp_path):
    path = Bundle.build(phishing, models["random_forest"]).save(tmp_path / "b")
    spec = json.loads((path / "intelligence.json").read_text())
    spec["trusted"].append("os.system")
    rewrite(path, "intelligence.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="os.system") as err:
        Bundle.load(path, phishing)
    assert err.value.check == "intelligence"


def test_a_swapped_skops_file_with_untrusted_types_is_refused(phishing, models, tmp_path):
    def evil(x):  # a function of this test module: skops would have to import and trust it
        return x

    est = make_pipeline(FunctionTransformer(evil), LogisticRegression()).fit(np.eye(19), np.arange(19) % 2)
    path = Bundle.build(phishing, models["scaled_logistic"]).save(tmp_path / "b")
    spec = json.loads((path / "intelligence.json").read_text())
    rewrite(path, spec["model"], sio.dumps(est))
    with pytest.raises(BundleError, match="only allow-listed types.*evil") as err:
        Bundle.load(path, phishing)
    assert err.value.check == "intelligence"


def test_saving_an_estimator_that_needs_other_types_is_refused(phishing):
    def mine(x):
        return x

    est = make_pipeline(FunctionTransformer(mine), LogisticRegression()).fit(np.eye(19), np.arange(19) % 2)
    with pytest.raises(IntelligenceError, match=r"outside the allow-list .*test_sklearn_adapter\.mine"):
        SklearnModel(est, list(phishing.features.names))


def test_the_allow_list():
    assert check_trusted(["sklearn.tree._tree.Tree", "numpy.dtype", "builtins.dict"]) == [
        "sklearn.tree._tree.Tree", "numpy.dtype", "builtins.dict"
    ]
    for name in ("numpy.testing._private.utils.runstring", "numpy.load", "sklearn.utils._testing.ignore_warnings",
                 "collections.OrderedDict", "scipy.io.loadmat"):
        with pytest.raises(IntelligenceError, match="allow-listed names"):  # no prefix is trusted
            check_trusted([name])
    with pytest.raises(IntelligenceError, match="must be a list of type names"):
        check_trusted("sklearn.tree._tree.Tree")


def test_crafted_tree_structures_are_refused(phishing, data):
    X, y = data
    names = list(phishing.features.names)
    est = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    est._predictors[1][0].nodes["left"][0] = 10_000  # predict would read past the node array
    with pytest.raises(IntelligenceError, match="gradient-boosting tree must have left children"):
        SklearnModel(est, names)
    est = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    nodes = est._predictors[0][0].nodes
    nodes["feature_idx"][~nodes["is_leaf"].astype(bool)] = 40
    with pytest.raises(IntelligenceError, match="split on features 0…18"):
        SklearnModel(est, names)


def rewrite(path, name, data):
    """Replace a bundle file and its checksums (what a deliberate tamperer would do)."""
    p = path / name
    os.chmod(p, 0o644)
    p.write_bytes(data)
    m = json.loads((path / "manifest.json").read_text())
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    m["digest"] = _manifest_digest(m)
    os.chmod(path / "manifest.json", 0o644)
    (path / "manifest.json").write_text(json.dumps(m))


# -- parameters ----------------------------------------------------------------------------------


def test_parameters_are_checked_by_name(phishing, fitted):
    names = list(phishing.features.names)
    forest = fitted["random_forest"]
    with pytest.raises(IntelligenceError, match="must name the estimator's 19 input columns. Got 2"):
        SklearnModel(forest, names[:2])
    with pytest.raises(IntelligenceError, match="'method' parameter of SklearnModel must be one of"):
        SklearnModel(forest, names, method="transform")
    with pytest.raises(IntelligenceError, match="has no method 'decision_function'"):
        SklearnModel(forest, names, method="decision_function")
    with pytest.raises(IntelligenceError, match="must pick one of the 2 columns of predict_proba. Got 2"):
        SklearnModel(forest, names, column=2)
    with pytest.raises(IntelligenceError, match="must be None or 0"):
        SklearnModel(fitted["scaled_logistic"], names, method="decision_function", column=1)
    with pytest.raises(IntelligenceError, match="'batch_mode' parameter"):
        SklearnModel(forest, names, batch_mode="fast")
    with pytest.raises(IntelligenceError, match="needs a fitted scikit-learn estimator"):
        SklearnModel(object(), names)
    with pytest.raises(IntelligenceError, match="must be distinct"):
        SklearnModel(forest, [names[0]] * 19)


def test_a_decision_function_score(phishing, fitted):
    model = SklearnModel(fitted["scaled_logistic"], list(phishing.features.names), "phish", method="decision_function")
    checks.check_intelligence(phishing, model, n=100, score_range=None)


def test_trusted_types_are_in_the_manifest_and_nothing_else_loads(phishing, models, tmp_path):
    path = Bundle.build(phishing, models["random_forest"]).save(tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    spec = json.loads((path / "intelligence.json").read_text())
    assert manifest["intelligence"]["trusted_types"] == sorted(spec["trusted"])
    # widened inside the allow-list, but beyond what the manifest fixed at save time
    spec["trusted"].append("sklearn.pipeline.Pipeline")
    rewrite(path, "intelligence.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="manifest does not list") as err:
        Bundle.load(path, phishing)
    assert err.value.check == "intelligence"

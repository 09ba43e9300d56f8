"""The skops allow-list: every supported estimator's references are covered (a scikit-learn or
skops upgrade that needs a new name fails here, naming it), and every allow-listed name is a
class — or a vetted pure function — never something that evaluates code, imports, or touches
files or the OS. This file is also how TRUSTED_TYPES was derived: the union of
``skops_references`` over ``SUPPORTED``."""

from __future__ import annotations

import builtins
import importlib
import warnings

import numpy as np
import pytest
import skops.io as sio
from sklearn import ensemble, impute, linear_model, pipeline, preprocessing, tree

from closedloop.intelligence import SklearnModel
from closedloop.intelligence.sklearn import (
    ELEMENTWISE,
    ROW_INDEPENDENT,
    SKOPS_NODE_KINDS,
    SKOPS_PROTOCOL,
    TRUSTED_FUNCTIONS,
    TRUSTED_TYPES,
    skops_references,
)

_rng = np.random.default_rng(0)
X = _rng.normal(size=(120, 4))
X[::7, 1] = np.nan  # missing values: imputers, histogram gradient boosting
XF = np.nan_to_num(X)
Y2 = (XF[:, 0] > 0).astype(int)
Y3 = np.digitize(XF[:, 0], [-0.5, 0.5])
YS = np.array(["no", "yes"])[Y2]
YR = XF[:, 0] * 2 + XF[:, 2]
XCAT = np.c_[X[:, :3], (np.abs(XF[:, 3]) * 3).astype(int)]


def _short(name):
    return name.rsplit(".", 1)[1]


def _supported():
    """(id, estimator, X, y): every supported estimator, in the configurations that change what
    its skops file names (labels, losses, weights, early stopping, categorical features, …)."""
    out = []
    for full in ROW_INDEPENDENT:
        module, cls = full.rsplit(".", 1)
        make = getattr(importlib.import_module(module), cls)
        kw = {"random_state": 0}
        if "Forest" in cls or "Trees" in cls:
            kw["n_estimators"] = 3
        if cls.startswith("GradientBoosting"):
            kw["n_estimators"] = 3
        if cls.startswith("HistGradientBoosting"):
            kw["max_iter"] = 3
        data = X if cls.startswith("Hist") else XF
        if cls.endswith("Classifier"):
            for label, y in (("binary", Y2), ("multiclass", Y3), ("strings", YS)):
                out.append((f"{cls}-{label}", make(**kw), data, y))
        else:
            out.append((cls, make(**kw), data, YR))
    out += [
        ("DecisionTree-class_weight", tree.DecisionTreeClassifier(class_weight={0: 1, 1: 2}), XF, Y2),
        ("RandomForest-balanced", ensemble.RandomForestClassifier(n_estimators=2, class_weight="balanced_subsample"), XF, Y2),
        ("RandomForest-RandomState", ensemble.RandomForestClassifier(n_estimators=2, random_state=np.random.RandomState(0)), XF, Y2),
        ("DecisionTree-float32", tree.DecisionTreeClassifier(), XF.astype(np.float32), Y2.astype(np.float32)),
        ("GradientBoosting-exponential", ensemble.GradientBoostingClassifier(n_estimators=2, loss="exponential"), XF, Y2),
        ("GradientBoosting-init-zero", ensemble.GradientBoostingClassifier(n_estimators=2, init="zero"), XF, Y2),
        ("GradientBoosting-early-stopping", ensemble.GradientBoostingClassifier(
            n_estimators=5, subsample=0.5, n_iter_no_change=2, random_state=0), XF, Y2),
        ("HistGradientBoosting-early-stopping", ensemble.HistGradientBoostingClassifier(
            max_iter=20, early_stopping=True, n_iter_no_change=2, random_state=0), X, Y2),
        ("HistGradientBoosting-categorical", ensemble.HistGradientBoostingClassifier(max_iter=3, categorical_features=[3]), XCAT, Y2),
        ("HistGradientBoosting-class_weight", ensemble.HistGradientBoostingClassifier(max_iter=2, class_weight={0: 1.0, 1: 3.0}), X, Y2),
        ("HistGradientBoosting-constraints", ensemble.HistGradientBoostingClassifier(
            max_iter=2, monotonic_cst=[1, 0, 0, 0], interaction_cst=[[0, 1], [2, 3]]), X, Y2),
    ]
    for loss in ("absolute_error", "huber", "quantile"):
        out.append((f"GradientBoostingRegressor-{loss}", ensemble.GradientBoostingRegressor(n_estimators=2, loss=loss), XF, YR))
    for loss, y, kw in (("absolute_error", YR, {}), ("poisson", np.abs(YR) + 0.1, {}), ("gamma", np.abs(YR) + 0.1, {}),
                        ("quantile", YR, {"quantile": 0.5})):
        out.append((f"HistGradientBoostingRegressor-{loss}", ensemble.HistGradientBoostingRegressor(max_iter=2, loss=loss, **kw), X, y))
    for step in ELEMENTWISE:
        module, cls = step.rsplit(".", 1)
        first = getattr(importlib.import_module(module), cls)()
        pre = [first] if cls == "SimpleImputer" else [impute.SimpleImputer(), first]
        out.append((f"Pipeline-{cls}", pipeline.make_pipeline(*pre, ensemble.RandomForestClassifier(n_estimators=2)), X, Y2))
    for strategy in ("median", "most_frequent", "constant"):
        out.append((f"Pipeline-SimpleImputer-{strategy}-indicator", pipeline.make_pipeline(
            impute.SimpleImputer(strategy=strategy, add_indicator=True), tree.DecisionTreeClassifier()), X, Y2))
    out.append(("Pipeline-passthrough", pipeline.Pipeline(
        [("a", "passthrough"), ("b", None), ("c", ensemble.HistGradientBoostingClassifier(max_iter=2))]), X, Y2))
    for label, y in (("binary", Y2), ("multiclass", Y3), ("strings", YS), ("int32", Y2.astype(np.int32)), ("bool", Y2.astype(bool))):
        out.append((f"LogisticRegression-{label}", linear_model.LogisticRegression(max_iter=500), XF, y))
        out.append((f"Pipeline-StandardScaler-LogisticRegression-{label}", pipeline.make_pipeline(
            preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=500)), XF, y))
    out += [
        ("LinearRegression", linear_model.LinearRegression(), XF, YR),
        ("Ridge", linear_model.Ridge(), XF, YR),
        ("RidgeClassifier", linear_model.RidgeClassifier(), XF, Y2),
        ("SGDClassifier", linear_model.SGDClassifier(loss="log_loss", random_state=0), XF, Y2),
        ("SGDRegressor", linear_model.SGDRegressor(random_state=0), XF, YR),
    ]
    return out


SUPPORTED = _supported()


@pytest.mark.parametrize(("name", "est", "X", "y"), SUPPORTED, ids=[s[0] for s in SUPPORTED])
def test_each_supported_estimator_needs_only_allow_listed_names(name, est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    data = sio.dumps(est)
    refs = skops_references(data)
    missing = sorted(set(refs) - TRUSTED_TYPES)
    assert not missing, (
        f"{name} needs {missing}, which closedloop.intelligence.sklearn.TRUSTED_TYPES does not list: a "
        "scikit-learn/skops upgrade changed what its skops file names. Vet each name (a class, no code "
        "evaluation, imports, files or OS) before adding it."
    )
    assert set(sio.get_untrusted_types(data=data)) <= set(refs)  # ours is a superset of skops' own audit
    model = SklearnModel(est, [f"f{i}" for i in range(X.shape[1])], method="predict")  # saves and loads
    assert model.trusted == refs


_PURE_BUILTINS = {"bool", "dict", "float", "int", "list", "slice", "str", "tuple"}
_FORBIDDEN = {
    # evaluate code, import, touch files or the OS, or reach any of these
    builtins.eval, builtins.exec, builtins.compile, builtins.open, builtins.__import__, builtins.getattr,
    builtins.setattr, builtins.delattr, builtins.globals, builtins.vars, builtins.input, builtins.breakpoint,
    importlib.import_module, np.load, np.save, np.fromfile, np.loadtxt, np.genfromtxt, np.memmap,
}
_FORBIDDEN_MODULES = ("os", "posix", "sys", "subprocess", "importlib", "pickle", "shutil", "io", "pathlib", "runpy",
                      "code", "ctypes", "socket", "tempfile", "marshal", "shelve", "webbrowser", "numpy.testing", "numpy.lib.npyio")


@pytest.mark.parametrize("name", sorted(TRUSTED_TYPES))
def test_each_allow_listed_name_is_a_class_or_a_vetted_pure_function(name):
    module, _, attr = name.rpartition(".")
    assert module.split(".")[0] in ("builtins", "functools", "numpy", "sklearn"), name
    assert not any(module == m or module.startswith(m + ".") for m in _FORBIDDEN_MODULES), name
    obj = getattr(importlib.import_module(module), attr)
    if name in TRUSTED_FUNCTIONS:
        assert callable(obj) and not isinstance(obj, type)
    else:
        assert isinstance(obj, type), f"{name} is a {type(obj).__name__}, not a class"
    if module == "builtins":
        assert attr in _PURE_BUILTINS, name
    assert obj not in _FORBIDDEN, name
    assert not any(w in attr.lower() for w in ("eval", "exec", "load", "open", "import", "system", "run", "file")), name


def test_the_vetted_functions_and_node_kinds_are_skops_own():
    from skops.io._audit import NODE_TYPE_MAPPING
    from skops.io._protocol import PROTOCOL

    assert TRUSTED_FUNCTIONS == {"sklearn.utils.validation.check_array"} and TRUSTED_FUNCTIONS <= TRUSTED_TYPES
    assert SKOPS_PROTOCOL == PROTOCOL, "skops writes another protocol now: re-read its loaders before trusting it"
    kinds = {kind for kind, protocol in NODE_TYPE_MAPPING if protocol == PROTOCOL}
    assert SKOPS_NODE_KINDS <= kinds
    for never in ("MethodNode", "OperatorFuncNode", "ConstructorFromReduceNode", "CachedNode", "BytesNode"):
        assert never not in SKOPS_NODE_KINDS

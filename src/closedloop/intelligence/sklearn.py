"""Any scikit-learn estimator, stored with skops (never pickle).

``SklearnModel(estimator, feature_names, method="predict_proba", column=1)`` scores one column of
``estimator.<method>(X)`` where column j of ``X`` is the system feature ``feature_names[j]``.

Saving and loading
------------------
The estimator is written with ``skops.io.dumps`` into its own bundle file
(``model-<hash>.skops``, checksummed like every bundle file). Supported estimators: the tree
models of :data:`ROW_INDEPENDENT`, alone or after :data:`ELEMENTWISE` steps in a ``Pipeline``
(histogram gradient boosting with categorical features included), ``LogisticRegression`` alone
or after a ``StandardScaler``, ``LinearRegression``, ``Ridge``, ``RidgeClassifier``,
``SGDClassifier`` and ``SGDRegressor``. A skops file is a zip of
``schema.json`` — a tree of nodes, each naming a type or function by module and name, which
skops imports and calls, instantiates or returns when loading — and NumPy arrays (``.npy``, read
with ``allow_pickle=False``). Whatever a node names is code that runs, so trust is an explicit
allow-list, :data:`TRUSTED_TYPES`: the exact type names (and one vetted function,
``sklearn.utils.validation.check_array``) that the supported estimators need — never a module
prefix, and nothing that evaluates code, imports, or touches files or the OS. It was derived by
dumping every estimator this module supports (see below) in the configurations its tests cover
and collecting what the files name (``tests/intelligence/test_sklearn_trust.py`` re-derives it and fails,
naming the type, when a scikit-learn or skops upgrade needs a new one).

Saving collects every name the file references (:func:`skops_references`) and refuses the
estimator, naming the type, unless all are allow-listed (e.g. a class or function of your own in
a pipeline); the names are written into the spec (``intelligence.json``) as ``"trusted"``, and the
bundle's manifest lists them as ``intelligence.trusted_types``.

Loading checks *before skops reads or constructs anything*: the skops zip is parsed here (a
stored, uncompressed zip of bounded size and member count; ``schema.json`` at most
:data:`MAX_SKOPS_SCHEMA_BYTES`, nested at most :data:`MAX_SKOPS_DEPTH` deep; only the node kinds
in :data:`SKOPS_NODE_KINDS`, of the one skops protocol read here), every type, function, method
and bit-generator reference of its schema tree is collected, and the file is refused unless each
is in :data:`TRUSTED_TYPES`; the spec's ``"trusted"`` list must be allow-listed too
(:func:`check_trusted`; the bundle also refuses a ``"trusted"`` list wider than its manifest's).
Only then is ``skops.io.loads(data, trusted=…)`` called, which applies that list once more. Anything unparseable is
refused with an :class:`~closedloop.errors.IntelligenceError`.

skops warns that scikit-learn's tree structures (``sklearn.tree._tree.Tree`` and
``HistGradientBoosting``'s ``TreePredictor``) are indexed without bounds checks when predicting,
so a crafted file could crash the process. After loading, every such structure reachable from the
estimator is validated (children after their parent and in range, features in range, categorical
bitsets in range) and a bad one is refused with an :class:`~closedloop.errors.IntelligenceError`.

That trust boundary — the allow-list, the skops file read without skops, the tree checks — is
one module, :mod:`closedloop.intelligence.sklearn_trust` (its names are importable from here too);
this module is the adapter: saving, the loading stages, and scoring.

The estimator is snapshotted when the model is created: it is dumped once and the scoring copy is
the one loaded back from those bytes, so the saved bytes, the scoring estimator and a bundle
loaded later are the same thing (refitting your estimator afterwards changes nothing here). On
that copy every ``n_jobs`` parameter is set to 1 (see below).

One ≡ batch
-----------
``Scorer.one`` must return bitwise the batch's row. Whether scikit-learn computes a row
independently of the other rows of its batch depends on the estimator:

* **Tree models** (decision trees, random forests, extra trees, gradient boosting and histogram
  gradient boosting, alone or behind element-wise scalers/imputers in a ``Pipeline``) compute
  each row on its own: a walk down each tree, the trees' values added to that row's accumulator
  in a fixed order, then element-wise arithmetic (division by the number of trees, ``expit``).
  Forests add the trees' probabilities in the order their worker threads finish when
  ``n_jobs > 1``, which changes the last bit from run to run — hence ``n_jobs=1`` on the scoring
  copy, making the order the trees' order. For these ``batch_mode="vectorized"``: the batch is
  one call on the whole (C-contiguous) matrix and ``one`` is the same call on a one-row matrix.
* **Anything with a matrix product** (linear models, ``Pipeline(StandardScaler,
  LogisticRegression)``, …) does not: NumPy hands a one-row product to
  BLAS ``ddot`` and a many-row product to ``dgemv``/``dgemm``, whose blocking and vector lanes
  add the terms in a different order, so many rows differ in the last bit (docs/performance.md,
  "scikit-learn models"). For these ``batch_mode="rowwise"``: the batch calls the estimator on
  each row with the very code ``one`` runs (a one-row C-contiguous matrix built from the row's
  values), so the two are equal by construction — at the price of scikit-learn's per-call
  overhead on every row. For a fast linear model use
  :meth:`closedloop.intelligence.LogisticModel.from_sklearn` instead.

``batch_mode="auto"`` (the default) picks ``vectorized`` for the tree models listed in
:data:`ROW_INDEPENDENT` (final step) and :data:`ELEMENTWISE` (preceding pipeline steps, by exact
class), ``rowwise`` for everything else; ``"vectorized"`` can be forced for an estimator you have
verified (``closedloop.runtime.checks.check_intelligence`` will tell you if it is not).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_output, spec_get
from closedloop.intelligence.sklearn_trust import MAX_SKOPS_DEPTH as MAX_SKOPS_DEPTH
from closedloop.intelligence.sklearn_trust import MAX_SKOPS_MEMBERS as MAX_SKOPS_MEMBERS
from closedloop.intelligence.sklearn_trust import MAX_SKOPS_SCHEMA_BYTES as MAX_SKOPS_SCHEMA_BYTES
from closedloop.intelligence.sklearn_trust import (
    SKOPS_NODE_KINDS,
    TRUSTED_FUNCTIONS,
    TRUSTED_TYPES,
    _check_references,
    _check_trees,
    check_trusted,
    skops_references,
)
from closedloop.intelligence.sklearn_trust import SKOPS_PROTOCOL as SKOPS_PROTOCOL

__all__ = [
    "ELEMENTWISE", "ROW_INDEPENDENT", "SKOPS_NODE_KINDS", "TRUSTED_FUNCTIONS", "TRUSTED_TYPES", "SklearnModel",
    "check_trusted", "skops_references",
]

#: Final estimators (exact class, by public name) whose rows are scored independently of each other.
ROW_INDEPENDENT = (
    "sklearn.tree.DecisionTreeClassifier", "sklearn.tree.DecisionTreeRegressor",
    "sklearn.tree.ExtraTreeClassifier", "sklearn.tree.ExtraTreeRegressor",
    "sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor",
    "sklearn.ensemble.ExtraTreesClassifier", "sklearn.ensemble.ExtraTreesRegressor",
    "sklearn.ensemble.GradientBoostingClassifier", "sklearn.ensemble.GradientBoostingRegressor",
    "sklearn.ensemble.HistGradientBoostingClassifier", "sklearn.ensemble.HistGradientBoostingRegressor",
)
#: Pipeline steps before the final estimator that transform each value on its own.
ELEMENTWISE = (
    "sklearn.preprocessing.StandardScaler", "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.MaxAbsScaler", "sklearn.preprocessing.RobustScaler",
    "sklearn.impute.SimpleImputer",
)
_METHODS = ("predict_proba", "decision_function", "predict")
_MODES = ("auto", "vectorized", "rowwise")


def _classes(names: Sequence[str]) -> tuple[type, ...]:
    import importlib

    out = []
    for name in names:
        module, _, cls = name.rpartition(".")
        out.append(getattr(importlib.import_module(module), cls))
    return tuple(out)


def _is(obj: Any, names: Sequence[str]) -> bool:
    return type(obj) in _classes(names)  # the exact class: a subclass may score differently


def _row_independent(estimator: Any) -> bool:
    if _is(estimator, ("sklearn.pipeline.Pipeline",)):
        *pre, (_, last) = estimator.steps
        return all(s in (None, "passthrough") or _is(s, ELEMENTWISE) for _, s in pre) and _row_independent(last)
    if _is(estimator, ("sklearn.ensemble.GradientBoostingClassifier", "sklearn.ensemble.GradientBoostingRegressor")):
        if getattr(estimator, "init", None) not in (None, "zero"):
            return False  # an init estimator of its own may multiply matrices
    return _is(estimator, ROW_INDEPENDENT)


# -- the stages of loading an estimator -----------------------------------------------------------

def _check_parameters(owner: str, method: Any, batch_mode: Any, feature_names: Any, column: Any) -> None:
    """Refuse a ``method``, ``batch_mode``, ``feature_names`` or ``column`` outside its rule."""
    if method not in _METHODS:
        raise IntelligenceError(f"The 'method' parameter of {owner} must be one of {list(_METHODS)}. Got {method!r} instead.")
    if batch_mode not in _MODES:
        raise IntelligenceError(f"The 'batch_mode' parameter of {owner} must be one of {list(_MODES)}. Got {batch_mode!r} instead.")
    if isinstance(feature_names, str) or not isinstance(feature_names, Sequence) or not feature_names or not all(
        isinstance(n, str) and n for n in feature_names
    ):
        raise IntelligenceError(
            f"The 'feature_names' parameter of {owner} must be a non-empty list of feature names. Got {feature_names!r} instead."
        )
    if len(set(feature_names)) != len(feature_names):
        raise IntelligenceError(f"The 'feature_names' of {owner} must be distinct. Got {list(feature_names)} instead.")
    if column is not None and (isinstance(column, bool) or not isinstance(column, int) or column < 0):
        raise IntelligenceError(f"The 'column' parameter of {owner} must be an integer ≥ 0 or None. Got {column!r} instead.")


def _load_trusted(data: bytes, trusted: list[str], owner: str) -> Any:
    """The estimator in the skops bytes ``data``: every name the file references is checked
    against the allow-list first, then skops loads it with ``trusted`` (which it applies again)."""
    _check_references(data, trusted, owner)  # before skops reads or imports anything
    sio = _skops()
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:
        raise IntelligenceError(f"The skops file of {owner} could not be loaded with the trusted types {trusted}: {exc}") from None


def _check_inputs(estimator: Any, feature_names: tuple[str, ...], owner: str) -> None:
    """Refuse ``feature_names`` unless they match the estimator's input columns (their number, and
    their names when it was fitted on named columns)."""
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is not None and n_in != len(feature_names):
        raise IntelligenceError(
            f"The 'feature_names' of {owner} must name the estimator's {n_in} input columns. "
            f"Got {len(feature_names)} names instead."
        )
    own = getattr(estimator, "feature_names_in_", None)
    if own is not None and [str(n) for n in own] != list(feature_names):
        raise IntelligenceError(
            f"The 'feature_names' of {owner} must equal the names the estimator was fitted with, "
            f"in order ({[str(n) for n in own]}). Got {list(feature_names)} instead."
        )


def _single_threaded(estimator: Any) -> None:
    """Set every ``n_jobs`` parameter of the (own, loaded) estimator to 1."""
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    jobs = {k: 1 for k in params if k == "n_jobs" or k.endswith("__n_jobs")}
    if jobs:
        estimator.set_params(**jobs)  # our own copy: trees' contributions add in a fixed order


def _result_column(fn: Any, name: str, n_features: int, method: str, column: Any, owner: str) -> int | None:
    """The column of ``method``'s result that is the score (None for a one-dimensional result):
    the shape of the result on a row of zeros decides it."""
    try:
        probe = np.asarray(fn(np.zeros((1, n_features))))
    except Exception as exc:
        raise IntelligenceError(f"The estimator {name} could not score a row of zeros: {exc}") from None
    if probe.ndim == 2:
        col = column if column is not None else (1 if method == "predict_proba" else None)
        if col is None or col >= probe.shape[1]:
            raise IntelligenceError(
                f"The 'column' parameter of {owner} must pick one of the {probe.shape[1]} columns of "
                f"{method}. Got {column!r} instead."
            )
        return col
    if probe.ndim == 1:
        if column not in (None, 0):
            raise IntelligenceError(
                f"The 'column' parameter of {owner} must be None or 0: {method} returns one value per row. Got {column!r} instead."
            )
        return None
    raise IntelligenceError(f"{method} of {name} must return one or two dimensions. Got {probe.ndim}.")


# -- the scorer ----------------------------------------------------------------------------------

class _SklearnScorer(Scorer):
    def __init__(self, features: FeatureSet, model: SklearnModel, idx: list[int]) -> None:
        self.features = features
        self.outputs = (model.output,)
        self._fn = getattr(model.estimator, model.method)
        self._column = model._column_index
        self._idx = idx
        self._identity = idx == list(range(len(features))) and len(idx) == len(features)
        self._vectorized = model.batch_mode_resolved == "vectorized"
        self._quiet = hasattr(model.estimator, "feature_names_in_")
        self._name = model._estimator_name

    def _call(self, A: np.ndarray) -> np.ndarray:
        try:
            if self._quiet:  # fitted on named columns; we pass the same columns as an array
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    r = self._fn(A)
            else:
                r = self._fn(A)
        except (ValueError, TypeError, IndexError) as exc:
            raise IntelligenceError(f"The scikit-learn estimator {self._name} could not score its input: {exc}") from exc
        r = np.asarray(r)
        if r.dtype.kind not in "biuf":
            raise IntelligenceError(f"The scikit-learn estimator {self._name} must return numbers. Got {r.dtype} instead.")
        return r

    def _pick(self, r: np.ndarray) -> np.ndarray:
        return (r[:, self._column] if r.ndim == 2 else r).astype(np.float64, copy=False)

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        row = x if self._identity else [x[i] for i in self._idx]
        A = np.array((row,), dtype=np.float64)  # one C-contiguous row: the rowwise batch builds the same
        return (float(self._pick(self._call(A))[0]),)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self._vectorized:
            A = np.ascontiguousarray(X if self._identity else X[:, self._idx])
            out = np.array(self._pick(self._call(A)), dtype=np.float64) if A.shape[0] else np.empty(0)
        else:
            out = np.empty(X.shape[0], dtype=np.float64)
            for i, row in enumerate(X.tolist()):
                out[i] = self.one(tuple(row), None)[0]
        return out.reshape(-1, 1)


# -- the intelligence ----------------------------------------------------------------------------

def _skops() -> Any:
    import skops.io as sio

    return sio


class SklearnModel(Intelligence):
    """A fitted scikit-learn estimator (or pipeline), saved with skops and scored through it.

    Parameters
    ----------
    estimator:
        The fitted estimator. It is snapshotted (dumped with skops and loaded back) now.
    feature_names:
        The system feature of each column the estimator was fitted on, in order. When the
        estimator was fitted on named columns (``feature_names_in_``) they must be the same.
    output:
        The name of the score.
    method:
        ``"predict_proba"`` (default), ``"decision_function"`` or ``"predict"``.
    column:
        The column of a two-dimensional result (by default 1 for ``predict_proba``: the positive
        class of a binary classifier); must be None or 0 for a one-dimensional result.
    batch_mode:
        ``"auto"``, ``"vectorized"`` or ``"rowwise"`` — see the module docstring.
    """

    kind: ClassVar[str] = "sklearn"

    def __init__(
        self, estimator: Any, feature_names: Sequence[str], output: str = "score", method: str = "predict_proba",
        column: int | None = None, *, batch_mode: str = "auto",
    ) -> None:
        data, trusted = self._dump(estimator)
        self._setup(data, trusted, feature_names, output, method, column, batch_mode)

    @classmethod
    def _dump(cls, estimator: Any) -> tuple[bytes, list[str]]:
        sio = _skops()
        if not callable(getattr(estimator, "fit", None)):
            raise IntelligenceError(f"{cls.__name__} needs a fitted scikit-learn estimator. Got {estimator!r} instead.")
        try:
            data = sio.dumps(estimator)
        except Exception as exc:
            raise IntelligenceError(f"{cls.__name__} could not save {type(estimator).__name__} with skops: {exc}") from exc
        try:
            trusted = skops_references(data, cls.__name__)
        except IntelligenceError as exc:  # e.g. a node kind closedloop never loads
            raise IntelligenceError(f"{cls.__name__} cannot save {type(estimator).__name__}: {exc}") from None
        outside = [t for t in trusted if t not in TRUSTED_TYPES]
        if outside:
            raise IntelligenceError(
                f"{cls.__name__} cannot save {type(estimator).__name__}: it needs types outside the allow-list "
                f"(closedloop.intelligence.sklearn.TRUSTED_TYPES): {outside}."
            )
        return data, trusted

    def _setup(
        self, data: bytes, trusted: list[str], feature_names: Any, output: Any, method: Any, column: Any,
        batch_mode: Any,
    ) -> None:
        """Check the parameters, load the estimator from its skops bytes through the trust checks
        (:mod:`closedloop.intelligence.sklearn_trust`), check it against the parameters, and bind
        what scoring reads: the single-threaded copy, the batch mode and the result's column."""
        owner = type(self).__name__
        self.output = check_output(output, owner)
        _check_parameters(owner, method, batch_mode, feature_names, column)
        self.trusted = check_trusted(trusted, owner)
        estimator = _load_trusted(data, self.trusted, owner)
        self.data = data
        self.estimator = estimator
        self.feature_names = tuple(feature_names)
        self.method = method
        self.column = column
        self.batch_mode = batch_mode
        self._estimator_name = type(estimator).__name__
        fn = getattr(estimator, method, None)
        if not callable(fn):
            raise IntelligenceError(f"The estimator {self._estimator_name} has no method {method!r}.")
        _check_inputs(estimator, self.feature_names, owner)
        _check_trees(estimator)
        _single_threaded(estimator)
        self.batch_mode_resolved = batch_mode if batch_mode != "auto" else (
            "vectorized" if _row_independent(estimator) else "rowwise"
        )
        self._column_index: int | None = _result_column(fn, self._estimator_name, len(self.feature_names), method, column, owner)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return self.feature_names

    def bind(self, features: FeatureSet) -> Scorer:
        return _SklearnScorer(features, self, self._indices(features, self.feature_names))

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        name = f"model-{hashlib.sha256(self.data).hexdigest()[:16]}.skops"
        if files.get(name, self.data) != self.data:  # pragma: no cover - a 64-bit hash prefix collision
            raise IntelligenceError(f"Two different estimators would be saved as {name!r}.")
        files[name] = self.data
        return {
            "kind": self.kind,
            "output": self.output,
            "model": name,
            "estimator": self._estimator_name,
            "features": list(self.feature_names),
            "method": self.method,
            "column": self.column,
            "batch_mode": self.batch_mode,
            "trusted": list(self.trusted),
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        owner = cls.__name__
        trusted = check_trusted(spec_get(spec, "trusted", owner), owner)  # before any bytes are read
        name = spec_get(spec, "model", owner)
        if not isinstance(name, str) or name not in files:
            raise IntelligenceError(f"The saved 'model' of {owner} must name a file of the bundle. Got {name!r} instead.")
        self = cls.__new__(cls)
        self._setup(
            files[name], trusted, spec_get(spec, "features", owner), spec_get(spec, "output", owner),
            spec_get(spec, "method", owner), spec_get(spec, "column", owner), spec_get(spec, "batch_mode", owner),
        )
        return self

    def __repr__(self) -> str:
        return f"SklearnModel({self._estimator_name}, method={self.method!r}, outputs={self.outputs})"

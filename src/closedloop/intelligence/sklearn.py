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
import io
import json
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_output, spec_get

__all__ = [
    "ELEMENTWISE", "ROW_INDEPENDENT", "SKOPS_NODE_KINDS", "TRUSTED_FUNCTIONS", "TRUSTED_TYPES", "SklearnModel",
    "check_trusted", "skops_references",
]

#: The exact names a saved estimator may reference (types; one vetted pure function). Derived
#: by dumping, with skops 0.16 / scikit-learn 1.9 / NumPy 2.4, every supported estimator (see the
#: module docstring) fitted for binary, multiclass and string labels, regression losses, class
#: weights, early stopping, categorical features, imputers with indicators, float32 data — the
#: configurations of ``tests/intelligence/test_sklearn_trust.py`` — and collecting every reference of each
#: file (:func:`skops_references`, a superset of ``skops.io.get_untrusted_types``). NumPy's
#: numeric scalar types and Python's ``int``/``float``/``bool`` (dict key types) complete the
#: families the derivation met. Nothing here evaluates code, imports, or touches files or the OS.
TRUSTED_TYPES = frozenset({
    # Python containers and scalars (skops' dict, list, tuple, slice, JSON and key-type nodes)
    "builtins.bool", "builtins.dict", "builtins.float", "builtins.int", "builtins.list", "builtins.slice",
    "builtins.str", "builtins.tuple",
    # partial(check_array, …): HistGradientBoosting's categorical preprocessor
    "functools.partial", "sklearn.utils.validation.check_array",
    # NumPy arrays, dtypes, numeric scalars, random state
    "numpy.ndarray", "numpy.dtype", "numpy.bool", "numpy.float16", "numpy.float32", "numpy.float64",
    "numpy.int8", "numpy.int16", "numpy.int32", "numpy.int64", "numpy.uint8", "numpy.uint16", "numpy.uint32",
    "numpy.uint64", "numpy.random.mtrand.RandomState", "numpy.random._generator.Generator", "numpy.random.PCG64",
    # scikit-learn estimators and the internals they hold
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier", "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier", "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.impute._base.MissingIndicator", "sklearn.impute._base.SimpleImputer",
    "sklearn.linear_model._base.LinearRegression", "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.Ridge", "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier", "sklearn.linear_model._stochastic_gradient.SGDRegressor",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.MaxAbsScaler", "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.RobustScaler", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OrdinalEncoder", "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelBinarizer", "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier", "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.HalfLogitLink", "sklearn._loss.link.IdentityLink", "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogLink", "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.AbsoluteError", "sklearn._loss.loss.ExponentialLoss", "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfGammaLoss", "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.HuberLoss", "sklearn._loss.loss.PinballLoss",
    "sklearn._loss._loss.CyAbsoluteError", "sklearn._loss._loss.CyExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfGammaLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss", "sklearn._loss._loss.CyHalfPoissonLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyHuberLoss", "sklearn._loss._loss.CyPinballLoss",
})
#: The functions among :data:`TRUSTED_TYPES` (everything else is a class): pure input validation.
TRUSTED_FUNCTIONS = frozenset({"sklearn.utils.validation.check_array"})
#: The skops node kinds (``__loader__``) a saved estimator may use — those the supported estimators
#: need. Bound methods (``MethodNode``), ``operator`` getters/callers, bytes, sets, sparse matrices,
#: cached references and reduce-constructed objects are refused outright.
SKOPS_NODE_KINDS = frozenset({
    "DictNode", "DTypeNode", "FunctionNode", "JsonNode", "ListNode", "LossNode", "NdArrayNode", "ObjectNode",
    "PartialNode", "RandomGeneratorNode", "RandomStateNode", "SliceNode", "TreeNode", "TupleNode", "TypeNode",
})
#: The one skops file protocol read here (older protocols route nodes to older loaders).
SKOPS_PROTOCOL = 2
#: The largest ``schema.json`` read (a 200-tree random forest's is ~3 MB).
MAX_SKOPS_SCHEMA_BYTES = 64 * 1024 * 1024
#: The deepest nesting of ``schema.json`` (supported estimators stay under 30).
MAX_SKOPS_DEPTH = 200
#: The most members of a skops zip (a 200-tree random forest has ~1,000).
MAX_SKOPS_MEMBERS = 200_000
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


def check_trusted(trusted: Any, owner: str = "SklearnModel") -> list[str]:
    """The list of types to trust, refused unless every entry is in :data:`TRUSTED_TYPES`."""
    if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
        raise IntelligenceError(f"The 'trusted' types of {owner} must be a list of type names. Got {trusted!r} instead.")
    for t in trusted:
        if t not in TRUSTED_TYPES:
            raise IntelligenceError(
                f"The 'trusted' types of {owner} must each be one of the allow-listed names "
                f"(closedloop.intelligence.sklearn.TRUSTED_TYPES). Got {t!r} instead."
            )
    return list(trusted)


# -- what a skops file names, read without skops --------------------------------------------------

def _skops_error(owner: str, rule: str, value: Any) -> IntelligenceError:
    return IntelligenceError(f"The skops file of {owner} must {rule}. Got {value} instead.")


def skops_references(data: bytes, owner: str = "SklearnModel") -> list[str]:
    """Every type, function, method and bit generator the skops file ``data`` names, sorted — read
    with :mod:`zipfile` and :mod:`json` alone (skops reads and imports nothing here).

    Refused with an :class:`~closedloop.errors.IntelligenceError`: anything that is not a stored
    (uncompressed, unencrypted) zip with unique member names, at most :data:`MAX_SKOPS_MEMBERS`
    members and a ``schema.json`` of at most :data:`MAX_SKOPS_SCHEMA_BYTES`; a schema that is not
    JSON, not of protocol :data:`SKOPS_PROTOCOL`, nested deeper than :data:`MAX_SKOPS_DEPTH`, or
    holding a node kind outside :data:`SKOPS_NODE_KINDS`, a node without a string module and name,
    or an array file the zip does not hold. Every node names ``module.name`` (what skops imports
    and instantiates, calls or returns); a ``RandomGeneratorNode`` also names the bit generator
    ``numpy.random.<name>`` its state holds as a string.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _skops_error(owner, "be bytes", type(data).__name__)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise _skops_error(owner, "be a zip archive", repr(str(exc))) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_SKOPS_MEMBERS:
            raise _skops_error(owner, f"hold at most {MAX_SKOPS_MEMBERS} members", len(infos))
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in members:
                raise _skops_error(owner, "name each member once", repr(info.filename))
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or info.file_size != info.compress_size:
                raise _skops_error(owner, "store its members uncompressed and unencrypted (as skops.io.dumps does)",
                                   repr(info.filename))
            members[info.filename] = info
        schema_info = members.get("schema.json")
        if schema_info is None:
            raise _skops_error(owner, "hold a schema.json", sorted(members)[:5])
        if schema_info.file_size > MAX_SKOPS_SCHEMA_BYTES:
            raise _skops_error(owner, f"have a schema.json of at most {MAX_SKOPS_SCHEMA_BYTES} bytes",
                               schema_info.file_size)
        try:
            with zf.open(schema_info) as fh:
                raw = fh.read(MAX_SKOPS_SCHEMA_BYTES + 1)
            schema = json.loads(raw)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError, RecursionError) as exc:
            raise _skops_error(owner, "have a readable JSON schema.json", repr(str(exc)[:200])) from None
    if not isinstance(schema, dict):
        raise _skops_error(owner, "have a JSON object in schema.json", type(schema).__name__)
    protocol = schema.get("protocol")
    if type(protocol) is not int or protocol != SKOPS_PROTOCOL:
        raise _skops_error(owner, f"be of skops protocol {SKOPS_PROTOCOL}", repr(protocol))
    refs: set[str] = set()
    stack: list[tuple[Any, int]] = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SKOPS_DEPTH:
            raise _skops_error(owner, f"nest its schema at most {MAX_SKOPS_DEPTH} deep", "deeper")
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        if "__loader__" in node or node is schema:
            kind, module, name = node.get("__loader__"), node.get("__module__"), node.get("__class__")
            if kind not in SKOPS_NODE_KINDS:
                raise _skops_error(owner, f"use only the node kinds {sorted(SKOPS_NODE_KINDS)}", repr(kind))
            if not (isinstance(module, str) and module and isinstance(name, str) and name):
                raise _skops_error(owner, "give each node a module and a name", repr((module, name)))
            refs.add(f"{module}.{name}")
            if kind == "RandomGeneratorNode":
                refs.add(f"numpy.random.{_bit_generator(node, owner)}")
            if kind == "NdArrayNode" and node.get("type") == "numpy" and node.get("file") not in members:
                raise _skops_error(owner, "hold every array its schema names", repr(node.get("file")))
        stack.extend((v, depth + 1) for v in node.values())
    return sorted(refs)


def _bit_generator(node: Mapping[str, Any], owner: str) -> str:
    """The bit generator class name a ``RandomGeneratorNode`` holds (where skops reads it)."""
    try:
        name = json.loads(node["content"]["bit_generator"]["content"]["bit_generator"]["content"])
    except (KeyError, TypeError, ValueError):
        name = None
    if not isinstance(name, str):
        raise _skops_error(owner, "name the bit generator of each numpy Generator", "none")
    return name


def _check_references(data: bytes, trusted: Sequence[str], owner: str) -> list[str]:
    """Refuse ``data`` unless every name it references is allow-listed and in ``trusted``."""
    refs = skops_references(data, owner)
    outside = [r for r in refs if r not in TRUSTED_TYPES]
    if outside:
        raise IntelligenceError(
            f"The skops file of {owner} must reference only allow-listed types "
            f"(closedloop.intelligence.sklearn.TRUSTED_TYPES). Got {outside} instead."
        )
    # The allow-list is the boundary. The spec's own 'trusted' list is not asked to name every
    # reference: bundles saved before the exact allow-list listed only what skops reports as
    # untrusted (get_untrusted_types), not the arrays, dicts, random states and losses skops loads
    # with nodes of its own, and those bundles must stay loadable (rollback). skops still applies
    # the spec's list itself in loads(trusted=...).
    return refs


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


# -- validating tree structures after loading ------------------------------------------------------

def _check_trees(estimator: Any) -> None:
    """Validate every scikit-learn tree structure reachable from ``estimator`` (see the module
    docstring): a crafted file must not make ``predict`` index out of bounds."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    seen: set[int] = set()
    stack: list[tuple[Any, Any]] = [(estimator, None)]
    while stack:
        obj, owner = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            _check_sklearn_tree(obj)
        elif isinstance(obj, TreePredictor):
            _check_predictor(obj, owner)
        if isinstance(obj, list | tuple):
            stack.extend((o, owner) for o in obj)
        elif isinstance(obj, dict):
            stack.extend((o, owner) for o in obj.values())
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend((o, owner) for o in obj.ravel().tolist())
        elif type(obj).__module__.startswith("sklearn.") and hasattr(obj, "__dict__"):
            inner = obj if hasattr(obj, "_predictors") else owner
            stack.extend((o, inner) for o in vars(obj).values())


def _tree_error(what: str, rule: str, value: Any) -> IntelligenceError:
    return IntelligenceError(f"The saved estimator's {what} must {rule}. Got {value!r} instead.")


def _check_children(left: np.ndarray, right: np.ndarray, leaf: np.ndarray, what: str) -> None:
    n = left.shape[0]
    idx = np.arange(n)
    for name, child in (("left", left), ("right", right)):
        bad = ~leaf & ((child <= idx) | (child >= n))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _tree_error(what, f"have {name} children after their node and below {n} (node {i})", int(child[i]))


def _check_sklearn_tree(tree: Any) -> None:
    left = np.asarray(tree.children_left)
    right = np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    n = int(tree.node_count)
    if not (left.shape == right.shape == feature.shape == (n,)) or n < 1:
        raise _tree_error("tree", f"have {n} entries per node array", (left.shape, right.shape, feature.shape))
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise _tree_error("tree", "mark leaves in both children arrays", "a half leaf")
    _check_children(left, right, leaf, "tree")
    bad = ~leaf & ((feature < 0) | (feature >= int(tree.n_features)))
    if bad.any():
        raise _tree_error("tree", f"split on features 0…{int(tree.n_features) - 1}", int(feature[bad][0]))
    if np.asarray(tree.value).shape[0] != n:
        raise _tree_error("tree", f"hold {n} values", np.asarray(tree.value).shape)


def _check_predictor(p: Any, owner: Any) -> None:
    what = "gradient-boosting tree"
    nodes = p.nodes
    n = nodes.shape[0]
    if n < 1:
        raise _tree_error(what, "have at least one node", n)
    leaf = nodes["is_leaf"].astype(bool)
    _check_children(nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf, what)
    n_features = getattr(owner, "n_features_in_", None)
    if n_features is None:
        raise _tree_error(what, "belong to a fitted HistGradientBoosting estimator", type(owner).__name__)
    fidx = nodes["feature_idx"][~leaf].astype(np.int64)
    if fidx.size and (fidx.min() < 0 or fidx.max() >= n_features):
        raise _tree_error(what, f"split on features 0…{n_features - 1}", int(fidx.max() if fidx.min() >= 0 else fidx.min()))
    cat = ~leaf & nodes["is_categorical"].astype(bool)
    if cat.any():
        # the trees index the preprocessed columns, which put the categorical features first
        is_cat = getattr(owner, "_is_categorical_remapped", None)
        if is_cat is None:
            is_cat = getattr(owner, "is_categorical_", None)
        bits = int(np.asarray(p.raw_left_cat_bitsets).shape[0])
        bidx = nodes["bitset_idx"][cat].astype(np.int64)
        cfeat = nodes["feature_idx"][cat].astype(np.int64)
        if (
            is_cat is None or not np.asarray(is_cat, dtype=bool)[cfeat].all() or (bidx < 0).any()
            or (bidx >= bits).any() or int(np.asarray(p.binned_left_cat_bitsets).shape[0]) != bits
        ):
            raise _tree_error(what, f"split categories only on categorical features, within its {bits} bitsets", bidx.tolist()[:5])


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
        owner = type(self).__name__
        self.output = check_output(output, owner)
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
        self.trusted = check_trusted(trusted, owner)
        _check_references(data, self.trusted, owner)  # before skops reads or imports anything
        sio = _skops()
        try:
            estimator = sio.loads(data, trusted=self.trusted)
        except Exception as exc:
            raise IntelligenceError(f"The skops file of {owner} could not be loaded with the trusted types {self.trusted}: {exc}") from None
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
        n_in = getattr(estimator, "n_features_in_", None)
        if n_in is not None and n_in != len(self.feature_names):
            raise IntelligenceError(
                f"The 'feature_names' of {owner} must name the estimator's {n_in} input columns. "
                f"Got {len(self.feature_names)} names instead."
            )
        own = getattr(estimator, "feature_names_in_", None)
        if own is not None and [str(n) for n in own] != list(self.feature_names):
            raise IntelligenceError(
                f"The 'feature_names' of {owner} must equal the names the estimator was fitted with, "
                f"in order ({[str(n) for n in own]}). Got {list(self.feature_names)} instead."
            )
        _check_trees(estimator)
        params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
        jobs = {k: 1 for k in params if k == "n_jobs" or k.endswith("__n_jobs")}
        if jobs:
            estimator.set_params(**jobs)  # our own copy: trees' contributions add in a fixed order
        self.batch_mode_resolved = batch_mode if batch_mode != "auto" else (
            "vectorized" if _row_independent(estimator) else "rowwise"
        )
        # the shape of the result decides the column
        try:
            probe = np.asarray(fn(np.zeros((1, len(self.feature_names)))))
        except Exception as exc:
            raise IntelligenceError(f"The estimator {self._estimator_name} could not score a row of zeros: {exc}") from None
        if probe.ndim == 2:
            col = column if column is not None else (1 if method == "predict_proba" else None)
            if col is None or col >= probe.shape[1]:
                raise IntelligenceError(
                    f"The 'column' parameter of {owner} must pick one of the {probe.shape[1]} columns of "
                    f"{method}. Got {column!r} instead."
                )
            self._column_index: int | None = col
        elif probe.ndim == 1:
            if column not in (None, 0):
                raise IntelligenceError(
                    f"The 'column' parameter of {owner} must be None or 0: {method} returns one value per row. Got {column!r} instead."
                )
            self._column_index = None
        else:
            raise IntelligenceError(f"{method} of {self._estimator_name} must return one or two dimensions. Got {probe.ndim}.")

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

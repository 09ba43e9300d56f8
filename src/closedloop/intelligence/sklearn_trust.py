"""The trust boundary of :class:`~closedloop.intelligence.sklearn.SklearnModel`: what a skops file
may name, read before skops reads or imports anything, and what a loaded estimator's tree
structures must satisfy before it predicts.

* :data:`TRUSTED_TYPES` — the exact allow-list (one cohesive table; how it was derived is said
  above it), with the skops node kinds, protocol and size bounds a file is held to;
* :func:`check_trusted` — a ``"trusted"`` list refused unless every entry is allow-listed;
* :func:`skops_references` — every name a skops file references, read with :mod:`zipfile` and
  :mod:`json` alone (the zip read within bounds, then its schema tree walked);
  ``_check_references`` refuses a file that names anything outside the allow-list;
* ``_check_trees`` — every scikit-learn ``Tree`` and ``TreePredictor`` reachable from a loaded
  estimator validated (children, features and categorical bitsets in range), since scikit-learn
  indexes them without bounds checks.

The rules are told in full in :mod:`closedloop.intelligence.sklearn`'s docstring; every name
here stays importable from there.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from closedloop.errors import IntelligenceError

__all__ = [
    "MAX_SKOPS_DEPTH", "MAX_SKOPS_MEMBERS", "MAX_SKOPS_SCHEMA_BYTES", "SKOPS_NODE_KINDS", "SKOPS_PROTOCOL",
    "TRUSTED_FUNCTIONS", "TRUSTED_TYPES", "check_trusted", "skops_references",
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
    schema, members = _read_schema(data, owner)
    return _schema_references(schema, members, owner)


def _read_schema(data: bytes, owner: str) -> tuple[dict[str, Any], dict[str, zipfile.ZipInfo]]:
    """The skops zip, read within bounds: (its ``schema.json`` parsed — a JSON object of protocol
    :data:`SKOPS_PROTOCOL` — and its members by name)."""
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
    return schema, members


def _schema_references(schema: dict[str, Any], members: Mapping[str, zipfile.ZipInfo], owner: str) -> list[str]:
    """Every name the schema tree references, sorted: each node's ``module.name`` (and a
    ``RandomGeneratorNode``'s bit generator), walked at most :data:`MAX_SKOPS_DEPTH` deep, each
    node of a kind in :data:`SKOPS_NODE_KINDS`, each array it names held by the zip."""
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


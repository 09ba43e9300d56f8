"""LightGBM models, stored as LightGBM's own text format and scored without LightGBM.

:meth:`LightGBMModel.from_booster` takes a trained ``lightgbm.Booster`` (or a fitted
``LGBMClassifier``/``LGBMRegressor``) and keeps ``booster.model_to_string()`` verbatim; a bundle
stores it as its own file (``model-<hash>.lgb.txt``) beside ``intelligence.json``, checksummed
like every bundle file. Loading *parses* that text (nothing is imported or executed; ``lightgbm``
is not needed to load or to decide) and refuses, with an :class:`~closedloop.errors.IntelligenceError`
naming the tree, the entry and the value, anything it does not score exactly:

* categorical splits (``num_cat`` > 0 or the categorical bit of ``decision_type``), linear trees,
  more than one class or tree per iteration;
* objectives other than ``binary`` (with its ``sigmoid`` parameter) and the identity-output
  regressions (``regression``, ``regression_l1``, ``huber``, ``fair``, ``quantile``, ``mape``;
  ``regression sqrt`` is refused);
* malformed trees: array lengths that do not match ``num_leaves``, feature indices outside
  ``max_feature_idx``, children that are out of range, reached twice, or not after their parent
  (a cycle), non-finite leaf values, NaN thresholds, unknown missing types.

Scoring follows LightGBM's ``Booster.predict`` for a float64 row:

* a value with ``|v| <= kZeroThreshold`` (``1e-35f`` widened to a double, as LightGBM's
  ``meta.h``) is read as 0.0 (LightGBM's predictor drops such values when it reads a row);
* per split (``Tree::NumericalDecision``): NaN goes the default direction when the split's
  missing type is NaN, and is otherwise read as 0.0; with missing type *zero*, 0.0 goes the
  default direction; otherwise ``v <= threshold`` goes left, anything else right;
* ``raw = 0.0 + leaf(tree 0) + leaf(tree 1) + …`` in the file's tree order;
  ``raw = raw / number_of_trees`` when the model has ``average_output`` (random-forest mode);
* ``binary``: ``p = sigmoid(s * raw)`` with closedloop's shared logistic function
  (:func:`closedloop.base.numeric.sigmoid`: ``z ≥ 0 ? 1/(1+exp(-z)) : e/(1+e)`` with ``e = exp(z)``,
  the C library's ``exp``), where ``s`` is the model's ``sigmoid`` parameter. LightGBM itself
  computes ``1/(1+exp(-s·raw))``; the two agree exactly for ``z ≥ 0`` and within a few units in
  the last place for ``z < 0`` (tested against ``Booster.predict`` to 1e-12 absolute);
  regressions return ``raw``.

Both decision paths run one compiled kernel (``closedloop._trees``: ``Forest.one`` converts the
feature tuple to a small buffer of doubles and calls the same row function ``Forest.batch_into``
calls for every row of the column-major feature matrix), so ``one`` ≡ ``batch`` bitwise by
construction. Without the compiled module a pure-Python forest performs the same IEEE-754
operations in the same order (same results, slower).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.base.numeric import sigmoid
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_output, spec_get

try:  # pragma: no cover - which branch runs depends on the build
    from closedloop import _trees
except ImportError:  # pragma: no cover
    _trees = None

__all__ = ["COMPILED", "LightGBMModel", "PyForest", "parse_lightgbm"]

COMPILED = _trees is not None

#: LightGBM's kZeroThreshold: the float literal 1e-35f as a double.
K_ZERO = struct.unpack("<f", struct.pack("<f", 1e-35))[0]

_IDENTITY_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
_VERSIONS = ("v2", "v3", "v4")
_DEFAULT_LEFT = 2
_CATEGORICAL = 1


def _bad(rule: str, value: Any, where: str = "") -> IntelligenceError:
    at = f" ({where})" if where else ""
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return IntelligenceError(f"The LightGBM model text must {rule}{at}. Got {text} instead.")


class ParsedForest:
    """A LightGBM text model as validated arrays (the trees concatenated, in file order).

    ``roots[t]`` is tree t's first node, or ``~leaf`` for a one-leaf tree; node arrays are
    indexed by global node number, children are global node numbers or ``~global leaf``.
    """

    __slots__ = (
        "average_output", "feature", "feature_names", "flags", "leaves", "left", "n_trees", "objective",
        "right", "roots", "sigmoid", "threshold",
    )

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    feature_names: list[str]
    objective: str  # "binary" or "identity"
    sigmoid: float
    average_output: bool
    n_trees: int
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    flags: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaves: np.ndarray


def _ints(text: str, key: str, where: str) -> list[int]:
    try:
        return [int(t) for t in text.split()]
    except ValueError:
        raise _bad(f"hold integers in '{key}'", text, where) from None


def _floats(text: str, key: str, where: str) -> list[float]:
    try:
        return [float(t) for t in text.split()]
    except ValueError:
        raise _bad(f"hold numbers in '{key}'", text, where) from None


def _int_value(entries: Mapping[str, str], key: str, where: str) -> int:
    if key not in entries:
        raise _bad(f"contain '{key}='", None, where)
    vals = _ints(entries[key], key, where)
    if len(vals) != 1:
        raise _bad(f"hold one integer in '{key}'", entries[key], where)
    return vals[0]


def _parse_objective(line: str | None) -> tuple[str, float]:
    if line is None:
        raise _bad("name its objective ('objective=…')", None, "header")
    tokens = line.split()
    if not tokens:
        raise _bad("name its objective", line, "header 'objective'")
    name, params = tokens[0], tokens[1:]
    if name == "binary":
        scale = None
        for p in params:
            key, _, val = p.partition(":")
            if key != "sigmoid" or scale is not None:
                raise _bad("give the binary objective only its 'sigmoid:' parameter", line, "header 'objective'")
            try:
                scale = float(val)
            except ValueError:
                raise _bad("give a number as the binary objective's sigmoid", line, "header 'objective'") from None
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise _bad("give the binary objective a finite sigmoid > 0", line, "header 'objective'")
        return "binary", scale
    if name in _IDENTITY_OBJECTIVES:
        if params:
            raise _bad(
                f"use the '{name}' objective without options (closedloop scores its raw output; "
                f"'sqrt' and the like are not supported)", line, "header 'objective'",
            )
        return "identity", 1.0
    raise _bad(
        f"use an objective closedloop scores exactly: 'binary' or one of {list(_IDENTITY_OBJECTIVES)}",
        line, "header 'objective'",
    )


def parse_lightgbm(text: str) -> ParsedForest:
    """Parse and validate LightGBM's text model format (``Booster.model_to_string()``)."""
    if not isinstance(text, str):
        raise _bad("be text", type(text).__name__)
    lines = text.splitlines()
    if not lines or lines[0].strip() != "tree":
        raise _bad("start with the line 'tree'", lines[0] if lines else "")
    header: dict[str, str] = {}
    flags_seen: set[str] = set()
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree=") and lines[i].strip() != "end of trees":
        line = lines[i].strip()
        if line:
            key, eq, val = line.partition("=")
            if eq:
                header[key] = val
            else:
                flags_seen.add(line)
        i += 1
    if header.get("version") not in _VERSIONS:
        raise _bad(f"be a LightGBM model of version {list(_VERSIONS)}", header.get("version"), "header 'version'")
    for key in ("num_class", "num_tree_per_iteration"):
        if _int_value(header, key, "header") != 1:
            raise _bad(
                f"have {key}=1 (one score; multi-class models are not supported)", header[key], "header"
            )
    max_idx = _int_value(header, "max_feature_idx", "header")
    if max_idx < 0:
        raise _bad("have max_feature_idx ≥ 0", max_idx, "header")
    n_features = max_idx + 1
    names = header.get("feature_names", "").split()
    if len(names) != n_features:
        raise _bad(f"list {n_features} feature_names (max_feature_idx + 1)", names, "header")
    objective, scale = _parse_objective(header.get("objective"))

    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    flags: list[int] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[float] = []
    t = 0
    while i < len(lines) and lines[i].startswith("Tree="):
        where = f"tree {t}"
        if lines[i].strip() != f"Tree={t}":
            raise _bad(f"number its trees 0, 1, 2, … in order; expected 'Tree={t}'", lines[i].strip(), where)
        i += 1
        entries: dict[str, str] = {}
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("Tree="):
            key, eq, val = lines[i].strip().partition("=")
            if not eq:
                raise _bad("hold key=value lines in a tree", lines[i].strip(), where)
            entries[key] = val
            i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        node_base, leaf_base = len(feature), len(leaves)
        root = _parse_tree(entries, n_features, where, feature, threshold, flags, left, right, leaves, node_base, leaf_base)
        roots.append(root)
        t += 1
    if i >= len(lines) or lines[i].strip() != "end of trees":
        raise _bad("end its trees with the line 'end of trees'", lines[i].strip() if i < len(lines) else "<end of text>")
    if t == 0:
        raise _bad("hold at least one tree", 0)
    sizes = header.get("tree_sizes")
    if sizes is not None and len(sizes.split()) != t:
        raise _bad(f"list one tree size per tree ({t} trees)", sizes, "header 'tree_sizes'")
    return ParsedForest(
        feature_names=names,
        objective=objective,
        sigmoid=scale,
        average_output="average_output" in flags_seen,
        n_trees=t,
        roots=np.asarray(roots, dtype=np.int32),
        feature=np.asarray(feature, dtype=np.int32),
        threshold=np.asarray(threshold, dtype=np.float64),
        flags=np.asarray(flags, dtype=np.uint8),
        left=np.asarray(left, dtype=np.int32),
        right=np.asarray(right, dtype=np.int32),
        leaves=np.asarray(leaves, dtype=np.float64),
    )


def _parse_tree(
    e: Mapping[str, str], n_features: int, where: str, feature: list[int], threshold: list[float],
    flags: list[int], left: list[int], right: list[int], leaves: list[float], node_base: int, leaf_base: int,
) -> int:
    n_leaves = _int_value(e, "num_leaves", where)
    if n_leaves < 1:
        raise _bad("have num_leaves ≥ 1", n_leaves, where)
    if "num_cat" in e and _int_value(e, "num_cat", where) != 0:
        raise _bad("have no categorical splits (num_cat=0); closedloop scores numerical splits only", e["num_cat"], where)
    if "is_linear" in e and _int_value(e, "is_linear", where) != 0:
        raise _bad("have no linear trees (is_linear=0)", e["is_linear"], where)
    if "leaf_value" not in e:
        raise _bad("contain 'leaf_value='", None, where)
    vals = _floats(e["leaf_value"], "leaf_value", where)
    if len(vals) != n_leaves:
        raise _bad(f"hold num_leaves={n_leaves} leaf_value entries", len(vals), where)
    for k, v in enumerate(vals):
        if not math.isfinite(v):
            raise _bad("hold finite leaf values", v, f"{where}, leaf {k}")
    n_int = n_leaves - 1
    arrays: dict[str, list[Any]] = {}
    for key in ("split_feature", "threshold", "decision_type", "left_child", "right_child"):
        raw = e.get(key, "")
        if key not in e and n_int:
            raise _bad(f"contain '{key}='", None, where)
        arr: list[Any] = _floats(raw, key, where) if key == "threshold" else _ints(raw, key, where)
        if len(arr) != n_int:
            raise _bad(f"hold num_leaves - 1 = {n_int} '{key}' entries", len(arr), where)
        arrays[key] = arr
    seen_nodes = [False] * n_int
    seen_leaves = [False] * n_leaves
    for node in range(n_int):
        at = f"{where}, node {node}"
        f = arrays["split_feature"][node]
        if not 0 <= f < n_features:
            raise _bad(f"split on features 0…{n_features - 1} (max_feature_idx)", f, at)
        thr = arrays["threshold"][node]
        if math.isnan(thr):
            raise _bad("have thresholds that are numbers", thr, at)
        dt = arrays["decision_type"][node]
        if dt & _CATEGORICAL:
            raise _bad("have no categorical splits (decision_type bit 1); closedloop scores numerical splits only", dt, at)
        if not 0 <= dt < 16 or (dt >> 2) & 3 == 3:
            raise _bad("have a decision_type of missing type none, zero or NaN (0…11)", dt, at)
        children = []
        for key in ("left_child", "right_child"):
            c = arrays[key][node]
            if c >= 0:
                if not node < c < n_int:
                    raise _bad(f"have {key} after its node and below num_leaves - 1 = {n_int}", c, at)
                if seen_nodes[c]:
                    raise _bad("reach every node once (a tree, not a graph)", c, at)
                seen_nodes[c] = True
                children.append(node_base + c)
            else:
                leaf = ~c
                if leaf >= n_leaves:
                    raise _bad(f"have {key} leaves ~0…~{n_leaves - 1}", c, at)
                if seen_leaves[leaf]:
                    raise _bad("reach every leaf once (a tree, not a graph)", c, at)
                seen_leaves[leaf] = True
                children.append(~(leaf_base + leaf))
        feature.append(f)
        threshold.append(thr)
        missing = (dt >> 2) & 3
        flags.append((1 if dt & _DEFAULT_LEFT else 0) | (missing << 1))
        left.append(children[0])
        right.append(children[1])
    if n_int and (seen_nodes[0] or not all(seen_nodes[1:]) or not all(seen_leaves)):
        raise _bad("reach every node and leaf from node 0", "unreachable parts", where)
    leaves.extend(vals)
    return node_base if n_int else ~leaf_base


class PyForest:
    """The pure-Python forest: the same operations as ``closedloop._trees.Forest`` (the
    fallback when the compiled module is missing, and the reference it is tested against)."""

    def __init__(
        self, roots: np.ndarray, feature: np.ndarray, threshold: np.ndarray, flags: np.ndarray,
        left: np.ndarray, right: np.ndarray, leaves: np.ndarray, n_inputs: int, transform: int,
        scale: float, divisor: float, error: type[Exception],
    ) -> None:
        self._roots = [int(r) for r in roots]
        self._nodes = list(zip(
            feature.tolist(), threshold.tolist(), flags.tolist(), left.tolist(), right.tolist(), strict=True
        ))
        self._leaves = leaves.tolist()
        self._used = sorted(set(feature.tolist()))
        self.n_inputs = n_inputs
        self.n_trees = len(self._roots)
        self._transform = transform
        self._scale = scale
        self._divisor = divisor
        self._error = error

    def _score(self, row: Sequence[float]) -> float:
        raw = 0.0
        nodes = self._nodes
        for node in self._roots:
            while node >= 0:
                f, thr, fl, lo, hi = nodes[node]
                v = row[f]
                missing = (fl >> 1) & 3
                if v != v:
                    if missing == 2:
                        node = lo if fl & 1 else hi
                        continue
                    v = 0.0
                elif abs(v) <= K_ZERO:
                    v = 0.0
                if missing == 1 and v == 0.0:
                    node = lo if fl & 1 else hi
                    continue
                node = lo if v <= thr else hi
            raw = raw + self._leaves[~node]
        if self._divisor > 0.0:
            raw = raw / self._divisor
        if self._transform == 1:
            return sigmoid(self._scale * raw)
        return raw

    def one(self, x: Sequence[Any], context: Any = None) -> tuple[float]:
        if not isinstance(x, tuple | list) or len(x) != self.n_inputs:
            raise self._error(
                f"The feature vector given to a tree model must be a tuple or list of {self.n_inputs} "
                f"numbers. Got {type(x).__name__} of length {len(x) if isinstance(x, tuple | list) else '?'} instead."
            )
        row = [0.0] * self.n_inputs
        for j in self._used:
            try:
                row[j] = float(x[j])
            except (TypeError, ValueError):
                raise self._error(
                    f"Feature {j} given to a tree model must be a number. Got {type(x[j]).__name__} instead."
                ) from None
        return (self._score(row),)

    def batch_into(self, X: np.ndarray, out: np.ndarray) -> None:
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise self._error(
                f"The feature matrix given to a tree model must have {self.n_inputs} columns. Got shape {X.shape} instead."
            )
        for i, row in enumerate(X.tolist()):
            out[i] = self._score(row)


def _make_forest(parsed: ParsedForest, columns: np.ndarray, n_inputs: int, compiled: bool = True) -> Any:
    cls = _trees.Forest if (compiled and _trees is not None) else PyForest
    return cls(
        parsed.roots, np.ascontiguousarray(columns[parsed.feature], dtype=np.int32), parsed.threshold,
        parsed.flags, parsed.left, parsed.right, parsed.leaves, n_inputs,
        1 if parsed.objective == "binary" else 0, parsed.sigmoid,
        float(parsed.n_trees) if parsed.average_output else 0.0, IntelligenceError,
    )


class _TreeScorer(Scorer):
    def __init__(self, features: FeatureSet, forest: Any, output: str) -> None:
        self.features = features
        self.outputs = (output,)
        self._forest = forest
        self.one = forest.one  # type: ignore[method-assign]  # (x, context) -> (score,), compiled

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise IntelligenceError(f"The feature matrix must be two-dimensional. Got shape {X.shape} instead.")
        out = np.empty(X.shape[0], dtype=np.float64)
        self._forest.batch_into(X, out)
        return out.reshape(-1, 1)


def _is_default_names(names: Sequence[str]) -> bool:
    return all(n == f"Column_{i}" for i, n in enumerate(names))


class LightGBMModel(Intelligence):
    """A LightGBM model (binary classification or regression, numerical splits), stored as
    LightGBM's text format and scored by closedloop's own tree kernel.

    Parameters
    ----------
    model_text:
        ``Booster.model_to_string()``. Parsed and validated here (see the module docstring).
    feature_names:
        The system feature each model column reads, in the model's column order. By default the
        model's own feature names. When the model was trained with names of its own (not
        LightGBM's ``Column_0, Column_1, …``) they must equal ``feature_names``, so a reordered
        list cannot silently feed a model the wrong columns.
    output:
        The name of the score.
    """

    kind: ClassVar[str] = "lightgbm"

    def __init__(self, model_text: str, feature_names: Sequence[str] | None = None, output: str = "score") -> None:
        owner = type(self).__name__
        self.output = check_output(output, owner)
        self.model_text = model_text
        self.parsed = parse_lightgbm(model_text)
        own = self.parsed.feature_names
        if feature_names is None:
            if _is_default_names(own):
                raise IntelligenceError(
                    f"The model has LightGBM's default feature names ({own[0]}, …); give {owner} "
                    f"'feature_names', the system feature of each column. Got none instead."
                )
            names = list(own)
        else:
            if isinstance(feature_names, str) or not all(isinstance(n, str) and n for n in feature_names):
                raise IntelligenceError(
                    f"The 'feature_names' parameter of {owner} must be a list of feature names. Got {feature_names!r} instead."
                )
            names = list(feature_names)
            if len(names) != len(own):
                raise IntelligenceError(
                    f"The 'feature_names' parameter of {owner} must name the model's {len(own)} columns. "
                    f"Got {len(names)} names instead."
                )
            if not _is_default_names(own) and names != own:
                raise IntelligenceError(
                    f"The 'feature_names' parameter of {owner} must equal the names the model was "
                    f"trained with, in order ({own}). Got {names} instead."
                )
        if len(set(names)) != len(names):
            raise IntelligenceError(f"The 'feature_names' of {owner} must be distinct. Got {names} instead.")
        self.feature_names = tuple(names)

    @classmethod
    def from_booster(cls, booster: Any, feature_names: Sequence[str] | None = None, output: str = "score") -> LightGBMModel:
        """From a trained ``lightgbm.Booster`` or a fitted ``LGBMClassifier``/``LGBMRegressor``
        (its best iteration when it has one, as ``model_to_string`` saves it)."""
        b = getattr(booster, "booster_", booster)
        to_string = getattr(b, "model_to_string", None)
        if to_string is None:
            raise IntelligenceError(
                f"{cls.__name__}.from_booster needs a lightgbm.Booster or a fitted LGBM model. Got {booster!r} instead."
            )
        return cls(to_string(), feature_names, output)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    @property
    def n_trees(self) -> int:
        return self.parsed.n_trees

    @property
    def objective(self) -> str:
        return self.parsed.objective

    def inputs(self) -> tuple[str, ...]:
        return self.feature_names

    def bind(self, features: FeatureSet) -> Scorer:
        return _TreeScorer(features, self._forest(features), self.output)

    def _forest(self, features: FeatureSet, compiled: bool = True) -> Any:
        idx = np.asarray(self._indices(features, self.feature_names), dtype=np.int32)
        return _make_forest(self.parsed, idx, len(features), compiled)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        data = self.model_text.encode("utf-8")
        name = f"model-{hashlib.sha256(data).hexdigest()[:16]}.lgb.txt"
        if files.get(name, data) != data:  # pragma: no cover - a 64-bit hash prefix collision
            raise IntelligenceError(f"Two different LightGBM models would be saved as {name!r}.")
        files[name] = data
        return {
            "kind": self.kind,
            "output": self.output,
            "model": name,
            "features": list(self.feature_names),
            "objective": self.parsed.objective,
            "trees": self.parsed.n_trees,
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        owner = cls.__name__
        name = spec_get(spec, "model", owner)
        if not isinstance(name, str) or name not in files:
            raise IntelligenceError(
                f"The saved 'model' of {owner} must name a file of the bundle. Got {name!r} instead."
            )
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IntelligenceError(f"The LightGBM model file {name!r} must be UTF-8 text ({exc}).") from None
        features = spec_get(spec, "features", owner)
        if not isinstance(features, list):
            raise IntelligenceError(f"The saved 'features' of {owner} must be a list of names. Got {features!r} instead.")
        model = cls(text, features, spec_get(spec, "output", owner))
        for key, value in (("objective", model.parsed.objective), ("trees", model.parsed.n_trees)):
            if key in spec and spec[key] != value:
                raise IntelligenceError(
                    f"The saved '{key}' of {owner} must match its model file ({value!r}). Got {spec[key]!r} instead."
                )
        return model

    def __repr__(self) -> str:
        return f"LightGBMModel(trees={self.parsed.n_trees}, objective={self.parsed.objective!r}, outputs={self.outputs})"

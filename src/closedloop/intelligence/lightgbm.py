"""LightGBM models, stored as LightGBM's own text format and scored without LightGBM.

:meth:`LightGBMModel.from_booster` takes a trained ``lightgbm.Booster`` (or a fitted
``LGBMClassifier``/``LGBMRegressor``) and keeps ``booster.model_to_string()`` verbatim; a bundle
stores it as its own file (``model-<hash>.lgb.txt``) beside ``intelligence.json``, checksummed
like every bundle file. Loading *parses* that text (:func:`~closedloop.intelligence.lightgbm_text.parse_lightgbm`,
importable from here too; nothing is imported or executed; ``lightgbm``
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
import struct
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.base.numeric import sigmoid
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_output, spec_get
from closedloop.intelligence.lightgbm_text import ParsedForest, parse_lightgbm

try:  # pragma: no cover - which branch runs depends on the build
    from closedloop import _trees
except ImportError:  # pragma: no cover
    _trees = None

__all__ = ["COMPILED", "LightGBMModel", "PyForest", "parse_lightgbm"]

COMPILED = _trees is not None

#: LightGBM's kZeroThreshold: the float literal 1e-35f as a double.
K_ZERO = struct.unpack("<f", struct.pack("<f", 1e-35))[0]


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

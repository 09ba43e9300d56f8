"""Linear and logistic models stored as JSON weights.

``z = intercept + Σ w_j · x_j`` accumulated left to right in the declared feature order, then
``sigmoid(z)`` for :class:`LogisticModel` (or ``z`` itself for :class:`LinearModel`). The
single-decision form is generated as one unrolled Python expression with the weights as exact
literals; the batch form runs the same sum and sigmoid row by row in the compiled extension
(``linear_rows``), or without it accumulates numpy columns in the same order and applies the same
sigmoid through the shared kernel (:mod:`closedloop.base.numeric`) — so all round identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.base.numeric import compiled, sigmoid, sigmoid_array
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, check_output, spec_get

__all__ = ["LinearModel", "LogisticModel"]

_C_LINEAR = compiled("linear_rows")


class _LinearScorer(Scorer):
    def __init__(
        self,
        features: FeatureSet,
        idx: list[int],
        weights: tuple[float, ...],
        intercept: float,
        output: str,
        logistic: bool,
    ) -> None:
        self.features = features
        self.outputs = (output,)
        self._idx = idx
        self._w = weights
        self._b = intercept
        self._logistic = logistic
        self._idx_a = np.array(idx, dtype=np.int64)
        self._w_a = np.array(weights, dtype=np.float64)
        terms = "".join(f" + x[{i}] * {w!r})" for i, w in zip(idx, weights, strict=True))
        expr = "(" * len(idx) + repr(intercept) + terms
        body = f"_sigmoid({expr})" if logistic else expr
        src = f"def one(x, c):\n    return ({body},)\n"
        ns: dict[str, Any] = {"_sigmoid": sigmoid}
        exec(compile(src, "<closedloop linear>", "exec"), ns)  # generated from validated floats
        self.one = ns["one"]  # type: ignore[method-assign]  # deliberate: the generated function, no method frame

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        if _C_LINEAR is not None and X.dtype == np.float64 and X.ndim == 2:
            out = np.empty(X.shape[0], dtype=np.float64)  # row by row, the same sum and sigmoid in C
            _C_LINEAR(X, self._idx_a, self._w_a, self._b, self._logistic, out)
            return out.reshape(-1, 1)
        return self.batch_numpy(X)

    def batch_numpy(self, X: np.ndarray) -> np.ndarray:
        """:meth:`batch` without the compiled extension: a column at a time, in the same order."""
        z = np.full(X.shape[0], self._b, dtype=np.float64)
        with np.errstate(all="ignore"):  # ±inf / NaN propagate as in the scalar form
            for i, w in zip(self._idx, self._w, strict=True):
                z = z + X[:, i] * w
        if self._logistic:
            z = sigmoid_array(z)
        return z.reshape(-1, 1)


class LinearModel(Intelligence):
    """``intercept + Σ weights[f] · feature f`` (a raw score, not a probability).

    Parameters
    ----------
    weights:
        Feature name → weight (finite).
    intercept:
        The bias term.
    output:
        The name of the score.
    """

    kind: ClassVar[str] = "linear"
    _logistic: ClassVar[bool] = False

    def __init__(self, weights: Mapping[str, float], intercept: float = 0.0, output: str = "score") -> None:
        owner = type(self).__name__
        if not isinstance(weights, Mapping) or not weights:
            raise IntelligenceError(
                f"The 'weights' parameter of {owner} must be a non-empty mapping of feature name "
                f"to weight. Got {weights!r} instead."
            )
        self.weights = {str(k): check_finite(f"weights[{k!r}]", v, owner) for k, v in weights.items()}
        self.intercept = check_finite("intercept", intercept, owner)
        self.output = check_output(output, owner)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def bind(self, features: FeatureSet) -> Scorer:
        names = list(self.weights)
        idx = self._indices(features, names)
        return _LinearScorer(
            features, idx, tuple(self.weights[n] for n in names), self.intercept, self.output,
            self._logistic,
        )

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "output": self.output,
            "intercept": self.intercept,
            "weights": [[k, v] for k, v in self.weights.items()],
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        owner = cls.__name__
        pairs = spec_get(spec, "weights", owner)
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs
        ):
            raise IntelligenceError(
                f"The saved 'weights' of {owner} must be a list of [feature, weight] pairs."
            )
        return cls(
            weights=dict((k, v) for k, v in pairs),
            intercept=spec_get(spec, "intercept", owner),
            output=spec_get(spec, "output", owner),
        )

    @classmethod
    def from_sklearn(
        cls, estimator: Any, feature_names: Sequence[str], output: str = "score"
    ) -> LinearModel:
        """From a fitted scikit-learn linear model, or a ``Pipeline(StandardScaler, model)``.

        A scaler is folded into the weights (``w/σ``, ``b − Σ w·μ/σ``), so the bundle holds one
        weight per raw feature.
        """
        scale = None
        mean = None
        model = estimator
        steps = getattr(estimator, "steps", None)
        if steps is not None:
            if len(steps) == 2 and type(steps[0][1]).__name__ == "StandardScaler":
                scaler = steps[0][1]
                mean = np.asarray(getattr(scaler, "mean_", None) if scaler.with_mean else np.zeros(len(feature_names)))
                scale = np.asarray(getattr(scaler, "scale_", None) if scaler.with_std else np.ones(len(feature_names)))
                model = steps[1][1]
            else:
                raise IntelligenceError(
                    f"{cls.__name__}.from_sklearn takes a linear model or Pipeline(StandardScaler, model). "
                    f"Got steps {[name for name, _ in steps]} instead."
                )
        coef = getattr(model, "coef_", None)
        intercept = getattr(model, "intercept_", 0.0)
        if coef is None:
            raise IntelligenceError(
                f"{cls.__name__}.from_sklearn needs a fitted linear model (with coef_). Got {model!r} instead."
            )
        coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        b = float(np.asarray(intercept, dtype=np.float64).reshape(-1)[0])
        if coef.shape[0] != len(feature_names):
            raise IntelligenceError(
                f"The model has {coef.shape[0]} coefficients but {len(feature_names)} feature names were given."
            )
        if scale is not None and mean is not None:
            safe = np.where(scale == 0, 1.0, scale)
            w = coef / safe
            b = b - float(np.sum(w * mean))
            coef = w
        return cls(dict(zip(feature_names, coef.tolist(), strict=True)), b, output)


class LogisticModel(LinearModel):
    """A logistic model: ``sigmoid(intercept + Σ weights[f] · feature f)``, a probability.

    Train it with scikit-learn and keep only its weights: :meth:`from_sklearn` (or
    :func:`closedloop.training.train_logistic`).
    """

    kind: ClassVar[str] = "logistic"
    _logistic: ClassVar[bool] = True

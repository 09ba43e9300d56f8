"""Calibration: turning a score into a probability that means what it says.

:class:`Calibrated` wraps any one-output intelligence (its *base*) and maps the base's score ``s``:

``platt``
    ``p = sigmoid(a·s + b)`` — one multiplication and one addition, each rounded, then
    closedloop's shared logistic function (:func:`closedloop.base.numeric.sigmoid` on one decision,
    the compiled :func:`~closedloop.base.numeric.sigmoid_array` over a batch: the same C library
    ``exp``), so both paths round identically.
``isotonic``
    a non-decreasing piecewise-linear function through stored knots ``(x_k, y_k)``
    (``x`` strictly increasing, ``y`` non-decreasing, in [0, 1]), constant beyond the ends:
    ``s ≤ x_0 → y_0``, ``s ≥ x_last → y_last``, otherwise with ``x_{j-1} ≤ s < x_j``
    ``p = slope_j · (s − x_{j-1}) + y_{j-1}`` clipped to ``[y_{j-1}, y_j]``, where
    ``slope_j = (y_j − y_{j-1}) / (x_j − x_{j-1})`` (NumPy's ``interp`` formula). One decision finds
    ``j`` with :func:`bisect.bisect_right`, a batch with ``numpy.searchsorted(side="right")`` —
    the same index — and both evaluate the same IEEE-754 operations (subtract, multiply, add,
    compare), so they are bitwise equal. The clip keeps rounding from stepping outside the segment,
    so the map is monotone and stays in [0, 1].

A NaN base score gives a NaN probability on both paths (the experience then takes its
``otherwise`` action). The base is saved nested in the spec (``"base": base.to_dict(files)``)
and rebuilt with :func:`~closedloop.intelligence.load_intelligence`, like
:class:`~closedloop.intelligence.LookupTable`'s fallback; its files go into the same bundle.

Fit one on held-out data with :func:`closedloop.training.calibrate`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.base.numeric import sigmoid, sigmoid_array
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, check_output, spec_get

__all__ = ["Calibrated"]

_METHODS = ("platt", "isotonic")


class _PlattScorer(Scorer):
    def __init__(self, features: FeatureSet, base: Scorer, a: float, b: float, output: str) -> None:
        self.features = features
        self.outputs = (output,)
        self._base = base
        self._a = a
        self._b = b

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        s = float(self._base.one(x, context)[0])
        return (sigmoid(self._a * s + self._b),)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        s = np.asarray(self._base.batch(X, cols), dtype=np.float64)[:, 0]
        with np.errstate(all="ignore"):  # ±inf / NaN propagate as in the scalar form
            z = self._a * s + self._b
        return sigmoid_array(z).reshape(-1, 1)


class _IsotonicScorer(Scorer):
    def __init__(self, features: FeatureSet, base: Scorer, x: Sequence[float], y: Sequence[float], output: str) -> None:
        self.features = features
        self.outputs = (output,)
        self._base = base
        self._x = list(x)
        self._y = list(y)
        self._xa = np.asarray(self._x, dtype=np.float64)
        self._ya = np.asarray(self._y, dtype=np.float64)
        if len(self._x) > 1:
            self._slope_a = (self._ya[1:] - self._ya[:-1]) / (self._xa[1:] - self._xa[:-1])
        else:
            self._slope_a = np.empty(0)
        self._slope = self._slope_a.tolist()  # the same quotients, as Python floats

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        s = float(self._base.one(x, context)[0])
        xs, ys = self._x, self._y
        if s != s:
            return (math.nan,)
        if s <= xs[0]:
            return (ys[0],)
        if s >= xs[-1]:
            return (ys[-1],)
        j = bisect_right(xs, s)
        lo, hi = ys[j - 1], ys[j]
        p = self._slope[j - 1] * (s - xs[j - 1]) + lo
        if p < lo:
            p = lo
        elif p > hi:
            p = hi
        return (p,)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        s = np.asarray(self._base.batch(X, cols), dtype=np.float64)[:, 0]
        xs, ys = self._xa, self._ya
        n = xs.shape[0]
        if n == 1:
            out = np.where(np.isnan(s), np.nan, ys[0])
            return out.reshape(-1, 1)
        j = np.clip(np.searchsorted(xs, s, side="right"), 1, n - 1)
        lo, hi = ys[j - 1], ys[j]
        with np.errstate(all="ignore"):  # rows beyond the ends are replaced below
            p = self._slope_a[j - 1] * (s - xs[j - 1]) + lo
        p = np.where(p < lo, lo, np.where(p > hi, hi, p))
        p = np.where(s <= xs[0], ys[0], np.where(s >= xs[-1], ys[-1], p))
        p = np.where(np.isnan(s), np.nan, p)
        return p.reshape(-1, 1)


class Calibrated(Intelligence):
    """A one-output intelligence with its score mapped to a calibrated probability.

    Parameters
    ----------
    base:
        The intelligence whose score is calibrated (exactly one output).
    method:
        ``"platt"`` (parameters ``a``, ``b``) or ``"isotonic"`` (knots ``x``, ``y``).
    a, b:
        Platt's slope and intercept: ``sigmoid(a·s + b)``.
    x, y:
        Isotonic knots: ``x`` strictly increasing finite numbers, ``y`` non-decreasing numbers in
        [0, 1], of the same length (at least one).
    output:
        The name of the score; by default the base's.
    """

    kind: ClassVar[str] = "calibrated"

    def __init__(
        self, base: Intelligence, method: str = "platt", *, a: float | None = None, b: float | None = None,
        x: Sequence[float] | None = None, y: Sequence[float] | None = None, output: str | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(base, Intelligence):
            raise IntelligenceError(f"The 'base' of {owner} must be an Intelligence. Got {base!r} instead.")
        if len(base.outputs) != 1:
            raise IntelligenceError(f"The 'base' of {owner} must have exactly one output. Got {base.outputs} instead.")
        if method not in _METHODS:
            raise IntelligenceError(f"The 'method' parameter of {owner} must be one of {list(_METHODS)}. Got {method!r} instead.")
        self.base = base
        self.method = method
        self.output = check_output(base.outputs[0] if output is None else output, owner)
        self.a = self.b = 0.0
        self.x: tuple[float, ...] = ()
        self.y: tuple[float, ...] = ()
        if method == "platt":
            if x is not None or y is not None:
                raise IntelligenceError(f"Platt calibration of {owner} takes 'a' and 'b', not knots 'x'/'y'.")
            if a is None or b is None:
                raise IntelligenceError(f"Platt calibration of {owner} needs 'a' and 'b'. Got a={a!r}, b={b!r} instead.")
            self.a = check_finite("a", a, owner)
            self.b = check_finite("b", b, owner)
        else:
            if a is not None or b is not None:
                raise IntelligenceError(f"Isotonic calibration of {owner} takes knots 'x' and 'y', not 'a'/'b'.")
            self.x, self.y = self._knots(x, y, owner)

    @staticmethod
    def _numbers(name: str, v: Any, owner: str) -> tuple[float, ...]:
        if isinstance(v, str | bytes) or not isinstance(v, Sequence | np.ndarray) or len(v) == 0:
            raise IntelligenceError(f"The '{name}' knots of {owner} must be a non-empty list of numbers. Got {v!r} instead.")
        return tuple(
            check_finite(f"{name}[{i}]", float(e) if isinstance(e, np.floating) else e, owner) for i, e in enumerate(v)
        )

    @classmethod
    def _knots(cls, x: Any, y: Any, owner: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        xs = cls._numbers("x", x, owner)
        ys = cls._numbers("y", y, owner)
        if len(xs) != len(ys):
            raise IntelligenceError(f"The 'x' and 'y' knots of {owner} must have the same length. Got {len(xs)} and {len(ys)} instead.")
        for i, v in enumerate(ys):
            if not 0.0 <= v <= 1.0:
                raise IntelligenceError(f"The 'y' knots of {owner} must be probabilities in [0, 1]. Got y[{i}]={v!r} instead.")
        for i in range(1, len(xs)):
            if not xs[i] > xs[i - 1]:
                raise IntelligenceError(
                    f"The 'x' knots of {owner} must be strictly increasing. Got x[{i - 1}]={xs[i - 1]!r}, x[{i}]={xs[i]!r} instead."
                )
            if not ys[i] >= ys[i - 1]:
                raise IntelligenceError(
                    f"The 'y' knots of {owner} must be non-decreasing. Got y[{i - 1}]={ys[i - 1]!r}, y[{i}]={ys[i]!r} instead."
                )
            if not math.isfinite((ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])):
                raise IntelligenceError(
                    f"The 'x' knots of {owner} must be far enough apart for a finite slope. Got x[{i - 1}]={xs[i - 1]!r}, "
                    f"x[{i}]={xs[i]!r} instead."
                )
        return xs, ys

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return self.base.inputs()

    def context_fields(self) -> tuple[str, ...]:
        return self.base.context_fields()

    def bind(self, features: FeatureSet) -> Scorer:
        base = self.base.bind(features)
        if self.method == "platt":
            return _PlattScorer(features, base, self.a, self.b, self.output)
        return _IsotonicScorer(features, base, self.x, self.y, self.output)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "output": self.output, "method": self.method}
        if self.method == "platt":
            spec.update(a=self.a, b=self.b)
        else:
            spec.update(x=list(self.x), y=list(self.y))
        spec["base"] = self.base.to_dict(files)
        return spec

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]]) -> Intelligence:
        from closedloop.intelligence import load_intelligence

        o = cls.__name__
        method = spec_get(spec, "method", o)
        base = load_intelligence(spec_get(spec, "base", o), files, kinds)
        if method == "platt":
            return cls(base, "platt", a=spec_get(spec, "a", o), b=spec_get(spec, "b", o), output=spec_get(spec, "output", o))
        if method == "isotonic":
            return cls(base, "isotonic", x=spec_get(spec, "x", o), y=spec_get(spec, "y", o), output=spec_get(spec, "output", o))
        raise IntelligenceError(f"The saved 'method' of {o} must be one of {list(_METHODS)}. Got {method!r} instead.")

    def __repr__(self) -> str:
        return f"Calibrated({self.base!r}, method={self.method!r}, outputs={self.outputs})"

"""The intelligence contract.

An :class:`Intelligence` is *configuration and parameters* (weights, rules, tables): plain data
that serializes to JSON (plus named binary files for larger models) and never to code. Binding it
to a system's :class:`~closedloop.context.features.FeatureSet` gives a :class:`Scorer`, the executable form.

A scorer has one core method, :meth:`Scorer.batch` (feature matrix → score matrix); the
single-decision method :meth:`Scorer.one` is derived from it by default and may be overridden by
a faster form, which must return bitwise-equal scores — :func:`closedloop.runtime.checks.check_intelligence`
proves it for every shipped kind and for yours.

Every kind is registered in :data:`closedloop.intelligence.KINDS`, a fixed mapping of the kinds
this package ships; a bundle naming anything else is refused (nothing is imported by name from a
bundle). Your own kinds are passed explicitly: ``Bundle.load(..., kinds={**KINDS, "mine": Mine})``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from closedloop.base.numeric import sigmoid
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns, Str
from closedloop.errors import IntelligenceError

__all__ = ["Intelligence", "Scorer", "columns_from_context", "sigmoid"]


def columns_from_context(features: FeatureSet, context: Any) -> Columns:
    """A one-row :class:`Columns` from a validated context struct (for derived ``one`` paths)."""
    data: dict[str, Any] = {}
    for f in features.schema.fields:
        v = getattr(context, f.name)
        data[f.name] = pa.array([v], type=pa.string()) if isinstance(f, Str) else np.array([v])
    return Columns(data, 1, np.zeros(1, dtype=np.int64), [])


class Scorer(ABC):
    """An intelligence bound to a feature set: the executable form.

    ``outputs`` names the score columns. :meth:`batch` is the core; :meth:`one` is derived.
    """

    outputs: tuple[str, ...]
    features: FeatureSet

    @abstractmethod
    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        """Scores for a feature matrix: float64, shape (n, len(outputs))."""

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        """Scores for one feature vector (and its validated context)."""
        X = np.asarray([x], dtype=np.float64)
        return tuple(self.batch(X, columns_from_context(self.features, context))[0].tolist())


class Intelligence(ABC):
    """Base class of heuristics, models and their combinations (configuration and parameters)."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def outputs(self) -> tuple[str, ...]:
        """Names of the scores this intelligence produces."""

    @abstractmethod
    def inputs(self) -> tuple[str, ...]:
        """Names of the features it reads."""

    def context_fields(self) -> tuple[str, ...]:
        """Context fields it reads directly (lookup tables); most read none."""
        return ()

    @abstractmethod
    def bind(self, features: FeatureSet) -> Scorer:
        """The executable form for ``features``; refuses features it needs but cannot find."""

    @abstractmethod
    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        """JSON-ready parameters (``kind`` included); large binary parts go into ``files``."""

    @classmethod
    @abstractmethod
    def from_dict(
        cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]]
    ) -> Intelligence:
        """Rebuild from :meth:`to_dict`'s output; never executes code."""

    # helpers for subclasses -------------------------------------------------------------------
    def _indices(self, features: FeatureSet, names: Sequence[str]) -> list[int]:
        missing = [n for n in names if n not in features.index]
        if missing:
            raise IntelligenceError(
                f"{type(self).__name__} reads features {missing} that the system does not declare "
                f"(declared: {list(features.names)})."
            )
        return [features.index[n] for n in names]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(outputs={self.outputs})"


def check_finite(name: str, value: Any, owner: str) -> float:
    """Validate one numeric parameter: a finite float, named in the error."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IntelligenceError(
            f"The '{name}' parameter of {owner} must be a finite number. Got {value!r} instead."
        )
    return float(value)


def check_output(name: Any, owner: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise IntelligenceError(
            f"The 'output' parameter of {owner} must be an identifier. Got {name!r} instead."
        )
    return name


def spec_get(spec: Mapping[str, Any], key: str, owner: str) -> Any:
    if not isinstance(spec, Mapping) or key not in spec:
        raise IntelligenceError(f"The saved parameters of {owner} must contain '{key}'. It is missing.")
    return spec[key]

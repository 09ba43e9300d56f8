"""Feature sets: :class:`Feature` (a named expression) and :class:`FeatureSet`, the ordered
features of a system bound to its context schema — checked (numeric, unique names), fingerprinted,
and compiled once to the scalar form; the vectorized form computed per batch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from closedloop.context.features.expr import NUM, Expr
from closedloop.context.features.scalar import compile_scalar
from closedloop.context.features.vector import FeaturePlan
from closedloop.context.schema import Columns, Schema
from closedloop.errors import SpecError

__all__ = ["Feature", "FeatureSet"]


class Feature:
    """A named feature expression."""

    __slots__ = ("description", "expr", "name")

    def __init__(self, name: str, expr: Expr, description: str = "") -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"Feature names must be identifiers. Got {name!r} instead.")
        if not isinstance(expr, Expr):
            raise SpecError(f"Feature {name!r} must be a closedloop feature expression. Got {expr!r} instead.")
        self.name, self.expr, self.description = name, expr, description

    def __repr__(self) -> str:
        return f"Feature({self.name!r}, {self.expr.key})"


class FeatureSet:
    """An ordered set of features bound to a context schema.

    Parameters
    ----------
    features:
        A mapping of name → expression, or a sequence of :class:`Feature`.
    schema:
        The context schema the expressions read.
    """

    def __init__(self, features: Mapping[str, Expr] | Sequence[Feature], schema: Schema) -> None:
        if isinstance(features, Mapping):
            items = [Feature(k, v) for k, v in features.items()]
        else:
            items = list(features)
            for f in items:
                if not isinstance(f, Feature):
                    raise SpecError(f"Features must be closedloop.Feature objects. Got {f!r} instead.")
        if not items:
            raise SpecError("A system must declare at least one feature. Got none instead.")
        names = [f.name for f in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"Feature names must be unique. Got duplicates {dupes} instead.")
        for f in items:
            kind = f.expr.type_of(schema)
            if kind != NUM:
                raise SpecError(
                    f"Feature {f.name!r} must be numeric (text needs an operation such as length(), "
                    f"matches() or isin()). Got text ({f.expr.key}) instead."
                )
        self.features = tuple(items)
        self.names: tuple[str, ...] = tuple(names)
        self.schema = schema
        self.index: dict[str, int] = {n: i for i, n in enumerate(names)}
        self.fingerprint = hashlib.sha256(
            json.dumps(
                [[f.name, f.expr.describe()] for f in items], sort_keys=True, separators=(",", ":")
            ).encode()
        ).hexdigest()
        # the scalar form: one generated function
        self.source, self.one = compile_scalar(self.features, schema)
        # the vectorized form: the distinct sub-expressions in evaluation order
        self._plan = FeaturePlan(self.features, schema)

    def __len__(self) -> int:
        return len(self.features)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "expr": f.expr.describe()} for f in self.features]

    # -- the vectorized form -------------------------------------------------------------------
    def batch(self, cols: Columns) -> np.ndarray:
        """Feature matrix (n rows × len(features), float64) for a validated batch.

        Column-major (Fortran order): each feature is written, and read by scorers, contiguously.
        """
        return self._plan.matrix(cols)

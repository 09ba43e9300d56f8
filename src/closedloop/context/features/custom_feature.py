"""Custom features: :func:`custom` takes a feature whose two forms you write yourself (the
conformance suite, :func:`closedloop.runtime.checks.check_features`, proves them equal)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.context.features.expr import NUM, Expr, _Col
from closedloop.context.schema import Columns, Schema
from closedloop.errors import FeatureError, SpecError

if TYPE_CHECKING:
    from closedloop.context.features.scalar import _Gen

__all__ = ["custom"]


class _Custom(Expr):
    __slots__ = ("inputs", "name", "scalar", "vector", "version")

    def __init__(
        self,
        name: str,
        scalar: Callable[[Any], float],
        vector: Callable[[Columns], np.ndarray],
        inputs: Sequence[str],
        version: str,
    ) -> None:
        if not callable(scalar) or not callable(vector):
            raise SpecError(f"custom feature {name!r} needs callable scalar and vector forms.")
        if not isinstance(version, str) or not version:
            raise SpecError(f"custom feature {name!r} needs a non-empty version string. Got {version!r}.")
        self.name, self.scalar, self.vector = name, scalar, vector
        self.inputs, self.version = tuple(inputs), version

    def describe(self) -> Any:
        # Code cannot be fingerprinted portably: the declared version stands in for it.
        return ["custom", self.name, self.version, list(self.inputs)]

    def fields(self) -> set[str]:
        return set(self.inputs)

    def type_of(self, schema: Schema) -> str:
        for name in self.inputs:
            _Col(name)._field(schema)
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"_float({g.add(self.scalar, '_custom')}(c))"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        out = np.asarray(self.vector(cols), dtype=np.float64)
        if out.shape != (cols.n,):
            raise FeatureError(
                f"The vector form of custom feature {self.name!r} must return {cols.n} values. "
                f"Got shape {out.shape} instead."
            )
        return out


def custom(
    name: str,
    *,
    scalar: Callable[[Any], float],
    vector: Callable[[Columns], np.ndarray],
    inputs: Sequence[str],
    version: str = "1",
) -> Expr:
    """A feature whose two forms you write: ``scalar(context_struct) -> float`` and
    ``vector(columns) -> float64 array``. Bump ``version`` whenever the code changes: bundles are
    checked against it. :func:`closedloop.runtime.checks.check_features` proves the forms equal."""
    return _Custom(name, scalar, vector, inputs, version)

"""The vectorized form of a feature set: the feature matrix of a validated batch.

Each distinct sub-expression is evaluated once per batch (``Expr._vec`` on its children's columns):
numpy for arithmetic, Arrow compute for text, the compiled column loops of
:mod:`closedloop.base.numeric` for ``log1p`` and text search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.context.features.expr import Expr
from closedloop.context.schema import Columns

if TYPE_CHECKING:
    from closedloop.context.features.featureset import Feature

__all__ = ["feature_matrix"]


def feature_matrix(features: Sequence[Feature], cols: Columns) -> np.ndarray:
    """Feature matrix (n rows × len(features), float64) for a validated batch.

    Column-major (Fortran order): each feature is written, and read by scorers, contiguously.
    """
    memo: dict[str, Any] = {}

    def ev(e: Expr) -> Any:
        hit = memo.get(e.key)
        if hit is not None:
            return hit
        out = e._vec(cols, [ev(ch) for ch in e.children()])
        memo[e.key] = out
        return out

    X = np.empty((cols.n, len(features)), dtype=np.float64, order="F")
    # Overflow to ±inf and NaN from inf - inf are IEEE results, as in the scalar form.
    with np.errstate(all="ignore"):
        for j, f in enumerate(features):
            X[:, j] = ev(f.expr)
    return X

"""The vectorized form of a feature set: the feature matrix of a validated batch.

:class:`FeaturePlan` orders the distinct sub-expressions of a feature set once (children first,
each evaluated once per batch, ``Expr._vec`` on its children's columns): numpy for arithmetic,
Arrow compute for text, the compiled column loops of :mod:`closedloop.base.numeric` for ``log1p``
and text search.

A small batch (at most :data:`SMALL_ROWS` rows, as a ranking request's candidates) takes
``Expr._vec_small`` instead: text is a Python list of str and text operations run in Python, as
in the scalar form, where an Arrow compute call costs more in fixed overhead (5–15 µs) than the
whole column; numbers take the same numpy operations as a large batch. Both give the same values
bit for bit (tests/context/test_features_small.py). A text column with nulls (never in a validated
batch) takes the Arrow path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from closedloop.context.features.expr import STR, Expr, _Bin, _Cmp, _Col, _Const
from closedloop.context.schema import Columns, Schema

if TYPE_CHECKING:
    from closedloop.context.features.featureset import Feature

__all__ = ["SMALL_ROWS", "FeaturePlan", "feature_matrix"]

#: Batches of at most this many rows compute text features in Python (see the module doc).
SMALL_ROWS = 256


class FeaturePlan:
    """The distinct sub-expressions of a feature set in evaluation order, built once per
    :class:`~closedloop.context.features.featureset.FeatureSet`."""

    __slots__ = ("_large", "_small", "free", "outs", "source", "steps", "text_fields", "text_steps", "writes")

    def __init__(self, features: Sequence[Feature], schema: Schema | None = None) -> None:
        self.steps: list[tuple[Expr, tuple[int | _Const, ...]]] = []
        slot: dict[str, int] = {}
        text: set[str] = set()
        texty: set[int] = set()  # the steps whose small form differs: text, or reading text

        def add(e: Expr) -> int:
            hit = slot.get(e.key)
            if hit is not None:
                return hit
            ch = e.children()
            # a constant right operand of arithmetic or a comparison is passed as its value: numpy
            # (and Arrow) apply it to every row exactly as a column of it, without building one
            right = ch[1] if isinstance(e, _Bin | _Cmp) and not isinstance(ch[0], _Const) else None
            kids: tuple[int | _Const, ...] = (add(ch[0]), right) if isinstance(right, _Const) else tuple(add(c) for c in ch)
            if isinstance(e, _Col) and (schema is None or e.type_of(schema) == STR):
                text.add(e.name)
            if schema is None or any(x.type_of(schema) == STR for x in (e, *e.children())):
                texty.add(len(self.steps))
            slot[e.key] = len(self.steps)
            self.steps.append((e, kids))
            return slot[e.key]

        self.outs = tuple(add(f.expr) for f in features)
        self.text_fields = tuple(sorted(text))  # without a schema: every column read (checked at run time)
        self.text_steps = frozenset(texty)
        # A step's column is written into the matrix (``writes``: its feature columns) as soon as it
        # is computed, and dropped after its last reader (``free``): on a large batch, a temporary
        # kept to the end means fresh pages for every later one, which cost more than the arithmetic.
        last = list(range(len(self.steps)))
        for i, (_, kids) in enumerate(self.steps):
            for k in kids:
                if isinstance(k, int):
                    last[k] = i
        self.writes = tuple(tuple(j for j, o in enumerate(self.outs) if o == i) for i in range(len(self.steps)))
        self.free = tuple(tuple(k for k in range(len(self.steps)) if last[k] == i) for i in range(len(self.steps)))
        self.source, self._large = self._compile("_vec")
        self._small = self._compile("_vec_small")[1]

    def _compile(self, method: str) -> tuple[str, Any]:
        """The steps as one generated function ``run(cols, X)``: a call per step, its column written
        and dropped as :attr:`writes` and :attr:`free` say (no loop over the plan per batch)."""
        ns: dict[str, Any] = {}
        body = []
        for i, (e, kids) in enumerate(self.steps):
            ns[f"_f{i}"] = getattr(e, method if i in self.text_steps else "_vec")
            body.append(f"    v{i} = _f{i}(cols, [{', '.join(f'v{k}' if isinstance(k, int) else repr(k.value) for k in kids)}])")
            body.extend(f"    X[:, {j}] = v{i}" for j in self.writes[i])
            body.extend(f"    del v{k}" for k in self.free[i])
        source = "def run(cols, X):\n" + "\n".join(body) + "\n"
        exec(compile(source, "<closedloop feature plan>", "exec"), ns)  # our own generated code
        return source, ns["run"]

    def small(self, cols: Columns) -> bool:
        """Whether ``cols`` takes the small-batch path: few rows, text without nulls."""
        if cols.n > SMALL_ROWS:
            return False
        return all(cols.text_list(name) is not None or not isinstance(cols[name], pa.Array) for name in self.text_fields)

    def matrix(self, cols: Columns, *, small: bool | None = None) -> np.ndarray:
        """Feature matrix (n rows × len(features), float64, column-major) for a validated batch.
        ``small`` forces a path (tests compare them); by default :meth:`small` chooses."""
        if small is None:
            small = self.small(cols)
        X = np.empty((cols.n, len(self.outs)), dtype=np.float64, order="F")
        # Overflow to ±inf and NaN from inf - inf are IEEE results, as in the scalar form.
        with np.errstate(all="ignore"):
            (self._small if small else self._large)(cols, X)
        return X


def feature_matrix(features: Sequence[Feature], cols: Columns) -> np.ndarray:
    """Feature matrix (n rows × len(features), float64) for a validated batch.

    Column-major (Fortran order): each feature is written, and read by scorers, contiguously.
    """
    return FeaturePlan(features).matrix(cols)

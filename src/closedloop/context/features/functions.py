"""The numeric functions of the feature language — ``log1p``, ``sqrt``, ``abs_``, ``minimum``,
``maximum`` — and ``where``: their node classes and constructors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.base.numeric import log1p_array
from closedloop.context.features.expr import NUM, Expr, _need, _wrap
from closedloop.context.features.ops import _vmaximum, _vminimum, _vsqrt
from closedloop.context.schema import Columns, Schema

if TYPE_CHECKING:
    from closedloop.context.features.scalar import _Gen

__all__ = ["abs_", "log1p", "maximum", "minimum", "sqrt", "where"]


class _Where(Expr):
    __slots__ = ("a", "b", "cond")

    def __init__(self, cond: Expr, a: Expr, b: Expr) -> None:
        self.cond, self.a, self.b = cond, a, b

    def children(self) -> tuple[Expr, ...]:
        return (self.cond, self.a, self.b)

    def describe(self) -> Any:
        return ["where", self.cond.describe(), self.a.describe(), self.b.describe()]

    def type_of(self, schema: Schema) -> str:
        for e in self.children():
            _need(e, schema, NUM, "where")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"({args[1]} if {args[0]} != 0.0 else {args[2]})"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return np.where(args[0] != 0.0, args[1], args[2]).astype(np.float64, copy=False)


class _Func(Expr):
    """Unary and binary numeric functions."""

    __slots__ = ("args", "name")
    _SCALAR = {"log1p": "_log1p", "sqrt": "_sqrt", "abs": "abs", "min": "_min", "max": "_max"}
    _VEC = {"log1p": log1p_array, "sqrt": _vsqrt}

    def __init__(self, name: str, *args: Expr) -> None:
        self.name, self.args = name, args

    def children(self) -> tuple[Expr, ...]:
        return self.args

    def describe(self) -> Any:
        return [self.name, *(a.describe() for a in self.args)]

    def type_of(self, schema: Schema) -> str:
        for a in self.args:
            _need(a, schema, NUM, self.name)
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"{self._SCALAR[self.name]}({', '.join(args)})"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        if self.name in self._VEC:
            return self._VEC[self.name](args[0])
        if self.name == "abs":
            return np.abs(args[0])
        if self.name == "min":
            return _vminimum(args[0], args[1])
        return _vmaximum(args[0], args[1])


def where(cond: Any, a: Any, b: Any) -> Expr:
    """``a`` where ``cond`` is non-zero, else ``b``."""
    return _Where(_wrap(cond), _wrap(a), _wrap(b))


def log1p(x: Any) -> Expr:
    """log(1 + x); -inf at -1 and NaN below."""
    return _Func("log1p", _wrap(x))


def sqrt(x: Any) -> Expr:
    """Square root; NaN below 0."""
    return _Func("sqrt", _wrap(x))


def abs_(x: Any) -> Expr:
    return _Func("abs", _wrap(x))


def minimum(a: Any, b: Any) -> Expr:
    """The smaller value; NaN if either is NaN."""
    return _Func("min", _wrap(a), _wrap(b))


def maximum(a: Any, b: Any) -> Expr:
    """The larger value; NaN if either is NaN."""
    return _Func("max", _wrap(a), _wrap(b))

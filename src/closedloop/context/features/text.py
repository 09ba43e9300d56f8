"""The text nodes of the feature language: length, count, contains, startswith, endswith,
nonempty, matches (a regular expression), contains of another column, isin, and ASCII lower-case —
each with Python's semantics in the scalar form and Arrow's (the same) in the vectorized one. They
are built by the text methods of :class:`~closedloop.context.features.expr.Expr`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.base.numeric import contains_array, count_array, list_in_array, text_in_array
from closedloop.context.features.expr import NUM, STR, Expr, _literal, _need
from closedloop.context.features.ops import _ascii_lower_slow, _bool_f64, _f64
from closedloop.context.features.regex import _translate_regex
from closedloop.context.schema import Columns, Schema

if TYPE_CHECKING:
    from closedloop.context.features.scalar import _Gen


class _StrNum(Expr):
    """Text → number operations with one optional literal argument."""

    __slots__ = ("a", "arg", "op")

    def __init__(self, op: str, a: Expr, arg: str | None = None) -> None:
        self.op, self.a, self.arg = op, a, arg

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)

    def describe(self) -> Any:
        return [self.op, self.a.describe()] + ([] if self.arg is None else [self.arg])

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, STR, self.op)
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        s, lit = args[0], repr(self.arg)
        if self.op == "length":
            return f"_float(_len({s}))"
        if self.op == "count":
            return f"_float({s}.count({lit}))"
        if self.op == "contains":
            return f"(1.0 if {lit} in {s} else 0.0)"
        if self.op == "startswith":
            return f"(1.0 if {s}.startswith({lit}) else 0.0)"
        if self.op == "endswith":
            return f"(1.0 if {s}.endswith({lit}) else 0.0)"
        return f"(1.0 if {s} else 0.0)"  # nonempty

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        s = args[0]
        if self.op == "length":
            return pc.utf8_length(s).to_numpy(zero_copy_only=False).astype(np.float64)
        if self.op == "count":
            return count_array(s, cast(str, self.arg))  # Expr.count always gives the literal
        if self.op == "contains":
            return _bool_f64(pc.match_substring(s, self.arg))
        if self.op == "startswith":
            return _bool_f64(pc.starts_with(s, self.arg))
        if self.op == "endswith":
            return _bool_f64(pc.ends_with(s, self.arg))
        return _bool_f64(pc.greater(pc.binary_length(s), 0))

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        s: list[str] = args[0]
        n, lit = cols.n, cast(str, self.arg)
        if self.op == "length":
            return _f64(list(map(len, s)), n)
        if self.op == "count":
            return _f64([x.count(lit) for x in s], n)
        if self.op == "contains":
            return _f64([lit in x for x in s], n)
        if self.op == "startswith":
            return _f64([x.startswith(lit) for x in s], n)
        if self.op == "endswith":
            return _f64([x.endswith(lit) for x in s], n)
        return 1.0 - list_in_array(s, ("",))  # nonempty


class _Matches(Expr):
    __slots__ = ("_search", "a", "pattern", "py_pattern")

    def __init__(self, a: Expr, pattern: str) -> None:
        _literal(pattern, "matches", nonempty=True)
        self.a, self.pattern = a, pattern
        self.py_pattern = _translate_regex(pattern)
        self._search = re.compile(self.py_pattern, re.ASCII).search  # the scalar form's

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)

    def describe(self) -> Any:
        return ["matches", self.a.describe(), self.pattern]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, STR, "matches")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        name = g.add(re.compile(self.py_pattern, re.ASCII).search, "_re")
        return f"(1.0 if {name}({args[0]}) is not None else 0.0)"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return _bool_f64(pc.match_substring_regex(args[0], self.pattern))

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        search = self._search
        return _f64([search(x) is not None for x in args[0]], cols.n)


class _ContainsCol(Expr):
    __slots__ = ("a", "b")

    def __init__(self, a: Expr, b: Expr) -> None:
        self.a, self.b = a, b

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)

    def describe(self) -> Any:
        return ["contains_col", self.a.describe(), self.b.describe()]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, STR, "contains")
        _need(self.b, schema, STR, "contains")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"(1.0 if {args[1]} in {args[0]} else 0.0)"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return contains_array(args[0], args[1])

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        return _f64([y in x for x, y in zip(args[0], args[1], strict=True)], cols.n)


class _IsIn(Expr):
    __slots__ = ("_set", "a", "values")

    def __init__(self, a: Expr, values: tuple[str, ...]) -> None:
        self.a, self.values = a, values
        self._set = frozenset(values)

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)

    def describe(self) -> Any:
        return ["isin", self.a.describe(), list(self.values)]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, STR, "isin")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        name = g.add(frozenset(self.values), "_set")
        return f"(1.0 if {args[0]} in {name} else 0.0)"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        hit = text_in_array(args[0], tuple(self.values)) if isinstance(args[0], pa.Array) else None
        if hit is not None:
            return hit
        return _bool_f64(pc.is_in(args[0], value_set=pa.array(self.values, type=pa.string())))

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        return list_in_array(args[0], self.values)


class _Lower(Expr):
    __slots__ = ("a",)

    def __init__(self, a: Expr) -> None:
        self.a = a

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)

    def describe(self) -> Any:
        return ["lower", self.a.describe()]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, STR, "lower")
        return STR

    def _src(self, g: _Gen, args: list[str]) -> str:
        a = args[0]
        if a.isidentifier():  # a hoisted local: inline the ASCII fast path
            return f"({a}.lower() if {a}.isascii() else _alower_slow({a}))"
        return f"_alower({a})"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return pc.ascii_lower(args[0])

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        return [x.lower() if x.isascii() else _ascii_lower_slow(x) for x in args[0]]

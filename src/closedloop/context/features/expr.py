"""The expression tree of the feature language: :class:`Expr`, its operators, and the nodes of
numbers — a context field (:func:`col`), a constant (:func:`const`), arithmetic, comparison and
logic.

Every node says what it reads (``children``), what it is (``describe``, the canonical key), its
type over a schema (``type_of``: a number or text) and its two forms side by side: ``_src`` (its
Python source in the generated scalar function, :mod:`closedloop.context.features.scalar`) and
``_vec`` (its column over a batch, :mod:`closedloop.context.features.vector`). The text nodes are
in :mod:`closedloop.context.features.text`, the numeric functions and ``where`` in
:mod:`closedloop.context.features.functions`, custom features in
:mod:`closedloop.context.features.custom_feature`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from closedloop.context.features.ops import _bool_f64, _text_cmp, _text_eq
from closedloop.context.schema import Bool, Columns, Int, Schema, Str
from closedloop.errors import FeatureError, SpecError

if TYPE_CHECKING:
    from closedloop.context.features.scalar import _Gen

__all__ = ["NUM", "STR", "Expr", "col", "const"]

NUM = "num"
STR = "str"


class Expr:
    """A feature expression. Build them with :func:`col`, :func:`const` and the operators.

    Numeric operators: ``+ - * /`` (``/`` by zero gives 0.0; see :meth:`div`), unary ``-``,
    comparisons ``> >= < <=`` and :meth:`eq` / :meth:`ne` (1.0 or 0.0), logic ``& | ~`` (non-zero is
    true). Text methods: :meth:`length`, :meth:`count`, :meth:`matches`, :meth:`contains`,
    :meth:`startswith`, :meth:`endswith`, :meth:`isin`, :meth:`eq`, :meth:`nonempty`, :meth:`lower`.
    """

    __slots__ = ("_key",)
    _key: str  # the cached canonical description (see key)

    # -- to implement ---------------------------------------------------------------------------
    def children(self) -> tuple[Expr, ...]:
        return ()

    def describe(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def type_of(self, schema: Schema) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _src(self, g: _Gen, args: list[str]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _vec(self, cols: Columns, args: list[Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        """:meth:`_vec` on a small batch (:mod:`~closedloop.context.features.vector`): text as lists of str."""
        return self._vec(cols, args)

    # -- shared machinery -------------------------------------------------------------------------
    @property
    def key(self) -> str:
        try:
            return self._key
        except AttributeError:
            self._key = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
            return self._key

    def fields(self) -> set[str]:
        out: set[str] = set()
        for c in self.children():
            out |= c.fields()
        return out

    def __repr__(self) -> str:
        return f"Expr({self.key})"

    def __bool__(self) -> bool:
        raise FeatureError(
            "Feature expressions have no truth value; combine them with & | ~ instead of and/or/not."
        )

    # -- arithmetic -------------------------------------------------------------------------------
    def __add__(self, other: Any) -> Expr:
        return _Bin("+", self, _wrap(other))

    def __radd__(self, other: Any) -> Expr:
        return _Bin("+", _wrap(other), self)

    def __sub__(self, other: Any) -> Expr:
        return _Bin("-", self, _wrap(other))

    def __rsub__(self, other: Any) -> Expr:
        return _Bin("-", _wrap(other), self)

    def __mul__(self, other: Any) -> Expr:
        return _Bin("*", self, _wrap(other))

    def __rmul__(self, other: Any) -> Expr:
        return _Bin("*", _wrap(other), self)

    def __truediv__(self, other: Any) -> Expr:
        return _Div(self, _wrap(other), 0.0)

    def __rtruediv__(self, other: Any) -> Expr:
        return _Div(_wrap(other), self, 0.0)

    def div(self, other: Any, *, on_zero: float = 0.0) -> Expr:
        """``self / other``, or ``on_zero`` where ``other`` is 0."""
        return _Div(self, _wrap(other), float(on_zero))

    def __neg__(self) -> Expr:
        return _Neg(self)

    # -- comparisons and logic --------------------------------------------------------------------
    def __gt__(self, other: Any) -> Expr:
        return _Cmp(">", self, _wrap(other))

    def __ge__(self, other: Any) -> Expr:
        return _Cmp(">=", self, _wrap(other))

    def __lt__(self, other: Any) -> Expr:
        return _Cmp("<", self, _wrap(other))

    def __le__(self, other: Any) -> Expr:
        return _Cmp("<=", self, _wrap(other))

    def eq(self, other: Any) -> Expr:
        """1.0 where equal (numbers or text), else 0.0."""
        return _Cmp("==", self, _wrap(other))

    def ne(self, other: Any) -> Expr:
        return _Cmp("!=", self, _wrap(other))

    def __and__(self, other: Any) -> Expr:
        return _Logic("and", self, _wrap(other))

    def __rand__(self, other: Any) -> Expr:
        return _Logic("and", _wrap(other), self)

    def __or__(self, other: Any) -> Expr:
        return _Logic("or", self, _wrap(other))

    def __ror__(self, other: Any) -> Expr:
        return _Logic("or", _wrap(other), self)

    def __invert__(self) -> Expr:
        return _Not(self)

    def clip(self, lo: float, hi: float) -> Expr:
        """Bound to [lo, hi] (NaN stays NaN)."""
        from closedloop.context.features.functions import maximum, minimum

        if not lo <= hi:
            raise SpecError(f"clip() needs lo ≤ hi. Got lo={lo!r}, hi={hi!r} instead.")
        return minimum(maximum(self, lo), hi)

    # -- text (the nodes are in features.text, which imports this module: imported when built) --
    def length(self) -> Expr:
        """Number of characters (code points)."""
        from closedloop.context.features.text import _StrNum

        return _StrNum("length", self)

    def count(self, substring: str) -> Expr:
        """Non-overlapping occurrences of ``substring``."""
        from closedloop.context.features.text import _StrNum

        return _StrNum("count", self, _literal(substring, "count", nonempty=True))

    def matches(self, pattern: str) -> Expr:
        """1.0 where the regular expression is found anywhere in the text (see the module doc)."""
        from closedloop.context.features.text import _Matches

        return _Matches(self, pattern)

    def contains(self, other: Any) -> Expr:
        """1.0 where ``other`` (a literal or another text expression) occurs in the text."""
        from closedloop.context.features.text import _ContainsCol, _StrNum

        if isinstance(other, Expr):
            return _ContainsCol(self, other)
        return _StrNum("contains", self, _literal(other, "contains"))

    def startswith(self, prefix: str) -> Expr:
        from closedloop.context.features.text import _StrNum

        return _StrNum("startswith", self, _literal(prefix, "startswith"))

    def endswith(self, suffix: str) -> Expr:
        from closedloop.context.features.text import _StrNum

        return _StrNum("endswith", self, _literal(suffix, "endswith"))

    def isin(self, values: Iterable[str]) -> Expr:
        """1.0 where the text is one of ``values``."""
        from closedloop.context.features.text import _IsIn

        vals = tuple(sorted({_literal(v, "isin") for v in values}))
        if not vals:
            raise SpecError("isin() needs at least one value. Got none instead.")
        return _IsIn(self, vals)

    def nonempty(self) -> Expr:
        from closedloop.context.features.text import _StrNum

        return _StrNum("nonempty", self)

    def lower(self) -> Expr:
        """ASCII lower-case (A–Z only: identical in Python and Arrow)."""
        from closedloop.context.features.text import _Lower

        return _Lower(self)


def _literal(value: Any, op: str, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise SpecError(f"The argument of {op}() must be a string. Got {value!r} instead.")
    if nonempty and not value:
        raise SpecError(f"The argument of {op}() must be a non-empty string. Got '' instead.")
    return value


def _wrap(value: Any) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"Feature expressions combine numbers, strings and expressions. Got {value!r} instead.")
    return _Const(value)


def _need(e: Expr, schema: Schema, want: str, op: str) -> None:
    got = e.type_of(schema)
    if got != want:
        raise SpecError(
            f"The operand of '{op}' must be {'text' if want == STR else 'a number'}. "
            f"Got {'text' if got == STR else 'a number'} ({e.key}) instead."
        )


class _Col(Expr):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise SpecError(f"col() needs a context field name. Got {name!r} instead.")
        self.name = name

    def describe(self) -> Any:
        return ["col", self.name]

    def fields(self) -> set[str]:
        return {self.name}

    def _field(self, schema: Schema) -> Any:
        f = schema.by_name.get(self.name)
        if f is None:
            raise SpecError(
                f"Feature expressions must name declared context fields. Got {self.name!r} instead "
                f"(declared: {[x.name for x in schema.fields]})."
            )
        return f

    def type_of(self, schema: Schema) -> str:
        return STR if isinstance(self._field(schema), Str) else NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        f = self._field(g.schema)
        if isinstance(f, Bool):
            return f"(1.0 if c.{self.name} else 0.0)"
        if isinstance(f, Int):
            return f"_float(c.{self.name})"
        return f"c.{self.name}"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        v = cols[self.name]
        if isinstance(v, np.ndarray) and v.dtype != np.float64:
            return v.astype(np.float64)
        return v

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:  # text: a list (the plan checked: no nulls)
        return self._vec(cols, args) if (got := cols.text_list(self.name)) is None else got


class _Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value: float | int | str) -> None:
        if isinstance(value, bool):
            raise SpecError(f"const() takes a number or a string. Got {value!r} instead.")
        if isinstance(value, int | float):
            value = float(value)
            if not math.isfinite(value):
                raise SpecError(f"Feature constants must be finite. Got {value!r} instead.")
        elif not isinstance(value, str):
            raise SpecError(f"const() takes a number or a string. Got {value!r} instead.")
        self.value = value

    def describe(self) -> Any:
        return ["const", self.value]

    def type_of(self, schema: Schema) -> str:
        return STR if isinstance(self.value, str) else NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return repr(self.value)

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        if isinstance(self.value, str):  # built in C: a Python list of n references costs more than the column
            return pa.repeat(pa.scalar(self.value, type=pa.string()), cols.n)
        return np.full(cols.n, self.value, dtype=np.float64)

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:
        return [self.value] * cols.n if isinstance(self.value, str) else self._vec(cols, args)


class _Bin(Expr):
    __slots__ = ("a", "b", "op")
    _NP = {"+": np.add, "-": np.subtract, "*": np.multiply}

    def __init__(self, op: str, a: Expr, b: Expr) -> None:
        self.op, self.a, self.b = op, a, b

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)

    def describe(self) -> Any:
        return [self.op, self.a.describe(), self.b.describe()]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, NUM, self.op)
        _need(self.b, schema, NUM, self.op)
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"({args[0]} {self.op} {args[1]})"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return self._NP[self.op](args[0], args[1])


class _Neg(Expr):
    __slots__ = ("a",)

    def __init__(self, a: Expr) -> None:
        self.a = a

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)

    def describe(self) -> Any:
        return ["neg", self.a.describe()]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, NUM, "-")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"(-{args[0]})"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return np.negative(args[0])


class _Div(Expr):
    __slots__ = ("a", "b", "z")

    def __init__(self, a: Expr, b: Expr, z: float) -> None:
        if not math.isfinite(z):
            raise SpecError(f"div(on_zero=…) must be finite. Got {z!r} instead.")
        self.a, self.b, self.z = a, b, z

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)

    def describe(self) -> Any:
        return ["/", self.a.describe(), self.b.describe(), self.z]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, NUM, "/")
        _need(self.b, schema, NUM, "/")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"_div({args[0]}, {args[1]}, {self.z!r})"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        a, b = args
        out = np.full(cols.n, self.z, dtype=np.float64)
        np.divide(a, b, out=out, where=(b != 0.0))
        return out


class _Cmp(Expr):
    __slots__ = ("a", "b", "op")
    _NP = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}

    def __init__(self, op: str, a: Expr, b: Expr) -> None:
        self.op, self.a, self.b = op, a, b

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)

    def describe(self) -> Any:
        return [self.op, self.a.describe(), self.b.describe()]

    def type_of(self, schema: Schema) -> str:
        ta, tb = self.a.type_of(schema), self.b.type_of(schema)
        if self.op in ("==", "!="):
            if ta != tb:
                raise SpecError(f"'{self.op}' compares like with like. Got text and a number ({self.key}).")
        else:
            _need(self.a, schema, NUM, self.op)
            _need(self.b, schema, NUM, self.op)
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"(1.0 if {args[0]} {self.op} {args[1]} else 0.0)"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        a, b = args
        if (hit := _text_cmp(self.op == "==", a, b)) is not None:  # text: compiled against a constant, else Arrow
            return hit
        if self.op == "==":
            return _bool_f64(a == b)
        if self.op == "!=":
            return _bool_f64(a != b)
        return _bool_f64(self._NP[self.op](a, b))

    def _vec_small(self, cols: Columns, args: list[Any]) -> Any:  # text: lists, compared as the scalar form does
        const = self.b.value if isinstance(self.b, _Const) else None
        return _text_eq(self.op == "==", args, cols.n, const) if isinstance(args[0], list) else self._vec(cols, args)


class _Logic(Expr):
    __slots__ = ("a", "b", "op")

    def __init__(self, op: str, a: Expr, b: Expr) -> None:
        self.op, self.a, self.b = op, a, b

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)

    def describe(self) -> Any:
        return [self.op, self.a.describe(), self.b.describe()]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, NUM, self.op)
        _need(self.b, schema, NUM, self.op)
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"(1.0 if ({args[0]} != 0.0 {self.op} {args[1]} != 0.0) else 0.0)"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:  # true: non-zero, NaN included (``!= 0.0``)
        return (np.logical_and if self.op == "and" else np.logical_or)(args[0], args[1]).astype(np.float64)


class _Not(Expr):
    __slots__ = ("a",)

    def __init__(self, a: Expr) -> None:
        self.a = a

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)

    def describe(self) -> Any:
        return ["not", self.a.describe()]

    def type_of(self, schema: Schema) -> str:
        _need(self.a, schema, NUM, "~")
        return NUM

    def _src(self, g: _Gen, args: list[str]) -> str:
        return f"(1.0 if {args[0]} == 0.0 else 0.0)"

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        return _bool_f64(args[0] == 0.0)


def col(name: str) -> Expr:
    """The value of context field ``name`` (numbers as floats, booleans as 1.0/0.0, text as text)."""
    return _Col(name)


def const(value: float | str) -> Expr:
    return _Const(value)

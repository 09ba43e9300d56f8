"""Features: declared once as expressions, computed two ways with identical results.

A feature is a named expression over context fields::

    from closedloop.context import features as F

    features = {
        "domain_age_log": F.log1p(F.col("domain_age_days")),
        "ip_in_url": F.col("url").matches(r"^[a-z]+://\\d{1,3}(\\.\\d{1,3}){3}"),
        "brand_not_in_domain": F.col("page_brand").nonempty()
                               & ~F.col("domain").lower().contains(F.col("page_brand").lower()),
    }

Every expression has a **scalar form** (one context) and a **vectorized form** (a columnar batch).
The scalar form of a whole feature set is compiled into one Python function (field loads hoisted,
common sub-expressions computed once), so one context costs a single call. The vectorized form
uses numpy for arithmetic and Arrow compute for text.

The two forms are **bitwise equal** by construction, and :func:`closedloop.runtime.checks.check_features`
proves it on generated contexts:

* arithmetic, comparisons, min/max and abs are exactly rounded IEEE-754 operations in both forms,
  evaluated in the same order (numpy never fuses a multiply and an add across two ufunc calls);
* transcendental functions (``log1p``) call the same C library function in both forms — through
  ``math`` for one context, through a compiled column loop for a batch (:mod:`closedloop.base.numeric`);
  numpy's SIMD ``log``/``exp`` may differ from libm in the last bit, so they are not used;
* text operations have the same semantics in Python and Arrow: code-point lengths, non-overlapping
  counts, ASCII-only lower-casing, and regular expressions restricted to the subset on which
  Python's ``re`` (with ``re.ASCII``) and RE2 agree (see :func:`_translate_regex`);
* division by zero yields a declared value (0.0 by default) in both forms.

``F.custom`` takes a feature whose two forms you write yourself; the conformance suite is what
proves them equal.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.base.numeric import contains_array, count_array, log1p_array
from closedloop.base.numeric import log1p as _log1p
from closedloop.context.schema import Bool, Columns, Int, Schema, Str
from closedloop.errors import FeatureError, SpecError

__all__ = [
    "Expr",
    "Feature",
    "FeatureSet",
    "abs_",
    "col",
    "const",
    "custom",
    "log1p",
    "maximum",
    "minimum",
    "sqrt",
    "where",
]

NUM = "num"
STR = "str"


# ---------------------------------------------------------------------------------------------
# helpers shared by the two forms (the same Python function where both call one)


def _sqrt(x: float) -> float:
    if x >= 0.0:
        return math.sqrt(x)
    return math.nan


def _div(a: float, b: float, z: float) -> float:
    return a / b if b != 0.0 else z


def _minimum(a: float, b: float) -> float:
    if a != a:
        return a
    if b != b:
        return b
    return a if a < b else b


def _maximum(a: float, b: float) -> float:
    if a != a:
        return a
    if b != b:
        return b
    return a if a > b else b


_ASCII_LOWER_BYTES = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))


def _ascii_lower_slow(s: str) -> str:
    # UTF-8 bytes of non-ASCII characters are all ≥ 0x80, so only A–Z change.
    return s.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER_BYTES).decode("utf-8", "surrogatepass")


def ascii_lower(s: str) -> str:
    """Lower-case A–Z only (what Arrow's ``ascii_lower`` does); other characters are kept."""
    return s.lower() if s.isascii() else _ascii_lower_slow(s)


def _vsqrt(a: np.ndarray) -> np.ndarray:
    # sqrt is correctly rounded in libm and in numpy alike; NaN below 0 as in _sqrt.
    ok = a >= 0.0
    return np.where(ok, np.sqrt(np.where(ok, a, 0.0)), np.nan)


def _vminimum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a < b, a, b)))


def _vmaximum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a > b, a, b)))


def _bool_f64(mask: Any) -> np.ndarray:
    if isinstance(mask, pa.Array | pa.ChunkedArray):
        mask = mask.to_numpy(zero_copy_only=False)
    return np.asarray(mask, dtype=bool).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# regular expressions: the subset on which Python re (ASCII) and RE2 agree

_ALLOWED_ESCAPES = set("dDwWbB") | set(".-/\\?+*()[]{}|^$:@#&~%!=,;'\"<> _")
_REFUSED_HINT = {
    "s": "\\s differs between Python and RE2 (vertical tab); write [ \\t\\r\\n\\f] instead",
    "S": "\\S differs between Python and RE2 (vertical tab); write [^ \\t\\r\\n\\f] instead",
}


def _translate_regex(pattern: str) -> str:
    """Check ``pattern`` is in the portable subset; return its Python form.

    Refused: inline flags and look-arounds (``(?...)`` other than ``(?:``), back-references,
    ``\\s``/``\\S``, ``\\A``/``\\Z``/``\\z``, Unicode classes. A bare ``$`` (end of text in RE2) is
    translated to ``\\Z`` for Python, whose ``$`` would also match before a final newline.
    """
    out = []
    i = 0
    in_class = False
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise SpecError(f"Regular expression {pattern!r} must not end with a backslash.")
            nxt = pattern[i + 1]
            if nxt in _REFUSED_HINT:
                raise SpecError(f"Regular expression {pattern!r} uses \\{nxt}: {_REFUSED_HINT[nxt]}.")
            if nxt not in _ALLOWED_ESCAPES:
                raise SpecError(
                    f"Regular expression {pattern!r} must use only the escapes \\d \\D \\w \\W \\b \\B "
                    f"and escaped punctuation (the subset Python and RE2 agree on). Got \\{nxt} instead."
                )
            if in_class and nxt in "bB":
                raise SpecError(f"Regular expression {pattern!r} must not use \\{nxt} inside [...].")
            out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            if ch == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            if ch == "[" and i + 1 < n and pattern[i + 1] == ":":
                raise SpecError(f"Regular expression {pattern!r} must not use POSIX classes [:name:].")
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            if i + 1 < n and pattern[i + 1] == "^":
                out.append("[^")
                i += 2
            else:
                out.append("[")
                i += 1
            continue
        if ch == "(" and i + 1 < n and pattern[i + 1] == "?":
            if pattern[i + 2 : i + 3] != ":":
                raise SpecError(
                    f"Regular expression {pattern!r} must not use inline flags or look-arounds "
                    "'(?...)' (only non-capturing groups '(?:...)'); lower-case the text with "
                    ".lower() instead of (?i)."
                )
        if ch == "$":
            out.append("\\Z")
            i += 1
            continue
        if ch.isspace() and ch not in " ":
            raise SpecError(f"Regular expression {pattern!r} must not contain raw whitespace {ch!r}.")
        out.append(ch)
        i += 1
    if in_class:
        raise SpecError(f"Regular expression {pattern!r} has an unterminated character class.")
    translated = "".join(out)
    try:
        re.compile(translated, re.ASCII)
    except re.error as exc:
        raise SpecError(f"Regular expression {pattern!r} does not compile in Python: {exc}.") from exc
    try:
        pc.match_substring_regex(pa.array([""], type=pa.string()), pattern)
    except pa.ArrowInvalid as exc:
        raise SpecError(f"Regular expression {pattern!r} does not compile in RE2: {exc}.") from exc
    return translated


# ---------------------------------------------------------------------------------------------
# expressions


class _Gen:
    """Collects helper objects and hoisted statements while compiling the scalar form."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.namespace: dict[str, Any] = {
            "_log1p": _log1p,
            "_sqrt": _sqrt,
            "_div": _div,
            "_min": _minimum,
            "_max": _maximum,
            "_alower": ascii_lower,
            "_alower_slow": _ascii_lower_slow,
            "_float": float,
            "_len": len,
        }
        self.lines: list[str] = []
        self.locals: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._n = 0

    def add(self, obj: Any, prefix: str = "_k") -> str:
        self._n += 1
        name = f"{prefix}{self._n}"
        self.namespace[name] = obj
        return name

    def local(self) -> str:
        self._n += 1
        return f"v{self._n}"


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
        if not lo <= hi:
            raise SpecError(f"clip() needs lo ≤ hi. Got lo={lo!r}, hi={hi!r} instead.")
        return minimum(maximum(self, lo), hi)

    # -- text -------------------------------------------------------------------------------------
    def length(self) -> Expr:
        """Number of characters (code points)."""
        return _StrNum("length", self)

    def count(self, substring: str) -> Expr:
        """Non-overlapping occurrences of ``substring``."""
        return _StrNum("count", self, _literal(substring, "count", nonempty=True))

    def matches(self, pattern: str) -> Expr:
        """1.0 where the regular expression is found anywhere in the text (see the module doc)."""
        return _Matches(self, pattern)

    def contains(self, other: Any) -> Expr:
        """1.0 where ``other`` (a literal or another text expression) occurs in the text."""
        if isinstance(other, Expr):
            return _ContainsCol(self, other)
        return _StrNum("contains", self, _literal(other, "contains"))

    def startswith(self, prefix: str) -> Expr:
        return _StrNum("startswith", self, _literal(prefix, "startswith"))

    def endswith(self, suffix: str) -> Expr:
        return _StrNum("endswith", self, _literal(suffix, "endswith"))

    def isin(self, values: Iterable[str]) -> Expr:
        """1.0 where the text is one of ``values``."""
        vals = tuple(sorted({_literal(v, "isin") for v in values}))
        if not vals:
            raise SpecError("isin() needs at least one value. Got none instead.")
        return _IsIn(self, vals)

    def nonempty(self) -> Expr:
        return _StrNum("nonempty", self)

    def lower(self) -> Expr:
        """ASCII lower-case (A–Z only: identical in Python and Arrow)."""
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
        if isinstance(self.value, str):
            return pa.array([self.value] * cols.n, type=pa.string())
        return np.full(cols.n, self.value, dtype=np.float64)


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
        if isinstance(a, pa.Array) or isinstance(b, pa.Array):
            fn = pc.equal if self.op == "==" else pc.not_equal
            return _bool_f64(fn(a, b))
        if self.op == "==":
            return _bool_f64(a == b)
        if self.op == "!=":
            return _bool_f64(a != b)
        return _bool_f64(self._NP[self.op](a, b))


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

    def _vec(self, cols: Columns, args: list[Any]) -> Any:
        a, b = args[0] != 0.0, args[1] != 0.0
        return _bool_f64((a & b) if self.op == "and" else (a | b))


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


class _Matches(Expr):
    __slots__ = ("a", "pattern", "py_pattern")

    def __init__(self, a: Expr, pattern: str) -> None:
        _literal(pattern, "matches", nonempty=True)
        self.a, self.pattern = a, pattern
        self.py_pattern = _translate_regex(pattern)

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


class _IsIn(Expr):
    __slots__ = ("a", "values")

    def __init__(self, a: Expr, values: tuple[str, ...]) -> None:
        self.a, self.values = a, values

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
        return _bool_f64(pc.is_in(args[0], value_set=pa.array(self.values, type=pa.string())))


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


# ---------------------------------------------------------------------------------------------
# constructors


def col(name: str) -> Expr:
    """The value of context field ``name`` (numbers as floats, booleans as 1.0/0.0, text as text)."""
    return _Col(name)


def const(value: float | str) -> Expr:
    return _Const(value)


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


# ---------------------------------------------------------------------------------------------
# feature sets


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
        self.source, self.one = self._compile()

    def __len__(self) -> int:
        return len(self.features)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "expr": f.expr.describe()} for f in self.features]

    # -- the scalar form: one generated function ------------------------------------------------
    def _compile(self) -> tuple[str, Callable[[Any], tuple[float, ...]]]:
        g = _Gen(self.schema)
        counts: dict[str, int] = {}

        def count(e: Expr) -> None:
            counts[e.key] = counts.get(e.key, 0) + 1
            if counts[e.key] == 1:
                for ch in e.children():
                    count(ch)

        for f in self.features:
            count(f.expr)

        def emit(e: Expr) -> str:
            if e.key in g.locals:
                return g.locals[e.key]
            src = e._src(g, [emit(ch) for ch in e.children()])
            shared = counts.get(e.key, 0) > 1 and not isinstance(e, _Const)
            if shared or isinstance(e, _Col):
                name = g.local()
                g.lines.append(f"    {name} = {src}")
                g.locals[e.key] = name
                return name
            return src

        outs = [emit(f.expr) for f in self.features]
        body = "\n".join(g.lines)
        source = f"def features(c):\n{body}\n    return ({', '.join(outs)},)\n"
        ns = dict(g.namespace)
        exec(compile(source, "<closedloop features>", "exec"), ns)  # our own generated code
        return source, ns["features"]

    # -- the vectorized form -------------------------------------------------------------------
    def batch(self, cols: Columns) -> np.ndarray:
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

        X = np.empty((cols.n, len(self.features)), dtype=np.float64, order="F")
        # Overflow to ±inf and NaN from inf - inf are IEEE results, as in the scalar form.
        with np.errstate(all="ignore"):
            for j, f in enumerate(self.features):
                X[:, j] = ev(f.expr)
        return X


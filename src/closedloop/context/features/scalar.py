"""The scalar form of a feature set: one generated Python function over one context.

:func:`compile_scalar` writes the source of ``features(c)`` — each context field loaded once into a
local, every sub-expression used more than once computed once into a local — and compiles it; the
expressions give their own source (``Expr._src``) through a :class:`_Gen`, which holds the helper
objects the source names (compiled regexes, sets, custom functions) and the hoisted statements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from closedloop.base.numeric import log1p as _log1p
from closedloop.context.features.expr import Expr, _Col, _Const
from closedloop.context.features.ops import _ascii_lower_slow, _div, _maximum, _minimum, _sqrt, ascii_lower
from closedloop.context.schema import Schema

if TYPE_CHECKING:
    from closedloop.context.features.featureset import Feature

__all__ = ["compile_scalar"]


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


def _count_uses(features: Sequence[Feature]) -> dict[str, int]:
    """How many times each distinct sub-expression (by key) occurs in the features; the children
    of an expression are counted once, however often it occurs."""
    counts: dict[str, int] = {}

    def count(e: Expr) -> None:
        counts[e.key] = counts.get(e.key, 0) + 1
        if counts[e.key] == 1:
            for ch in e.children():
                count(ch)

    for f in features:
        count(f.expr)
    return counts


def compile_scalar(features: Sequence[Feature], schema: Schema) -> tuple[str, Callable[[Any], tuple[float, ...]]]:
    """The source of ``features(c)`` (one context struct → the tuple of feature values) and the
    compiled function: field loads and shared sub-expressions hoisted into locals."""
    g = _Gen(schema)
    counts = _count_uses(features)

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

    outs = [emit(f.expr) for f in features]
    body = "\n".join(g.lines)
    source = f"def features(c):\n{body}\n    return ({', '.join(outs)},)\n"
    ns = dict(g.namespace)
    exec(compile(source, "<closedloop features>", "exec"), ns)  # our own generated code
    return source, ns["features"]

"""A checked reader of one table of a parsed TOML file, for the world's configuration.

:class:`TableReader` takes the keys of a table one by one, each checked against a rule (a number
in a range, a probability, an integer, a string, a list of strings, a table of weights); a bad
value raises :class:`~closedloop.errors.SpecError` naming the parameter by its dotted path, the
rule and the value — "World config 'outcomes.victim_rate' must be a number in [0, 1]. Got 1.5
instead." — and :meth:`TableReader.done` refuses the keys nobody took (a typo must not silently
keep a default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from closedloop.errors import SpecError

__all__ = ["TableReader"]


class TableReader:
    """Takes the keys of one table, checking each; :meth:`done` refuses the keys left over."""

    def __init__(self, table: Any, path: str) -> None:
        if not isinstance(table, Mapping):
            raise SpecError(f"World config '{path or '<root>'}' must be a table. Got {table!r} instead.")
        self.table = dict(table)
        self.path = path
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, rule: str, value: Any) -> SpecError:
        text = repr(value)
        if len(text) > 80:
            text = text[:77] + "..."
        return SpecError(f"World config '{self._name(key)}' must be {rule}. Got {text} instead.")

    def get(self, key: str) -> Any:
        self.seen.add(key)
        if key not in self.table:
            raise SpecError(f"World config '{self._name(key)}' is required and missing.")
        return self.table[key]

    def section(self, key: str) -> TableReader:
        return TableReader(self.get(key), self._name(key))

    def list_of_tables(self, key: str) -> list[TableReader]:
        v = self.get(key)
        if not isinstance(v, list) or not v:
            raise self.fail(key, "a non-empty list of tables", v)
        return [TableReader(item, f"{self._name(key)}[{i}]") for i, item in enumerate(v)]

    def number(self, key: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
        v = self.get(key)
        ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            raise self.fail(key, _range_rule("a number", lo, hi, lo_open), v)
        return float(v)

    def prob(self, key: str) -> float:
        return self.number(key, 0.0, 1.0)

    def integer(self, key: str, lo: int | None = None, hi: int | None = None) -> int:
        v = self.get(key)
        ok = not isinstance(v, bool) and isinstance(v, int)
        if ok and lo is not None:
            ok = v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            raise self.fail(key, _range_rule("an integer", lo, hi, False), v)
        return int(v)

    def string(self, key: str, *, allow_empty: bool = False) -> str:
        v = self.get(key)
        if not isinstance(v, str) or (not v and not allow_empty):
            raise self.fail(key, "a non-empty string", v)
        return v

    def strings(self, key: str) -> tuple[str, ...]:
        v = self.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
            raise self.fail(key, "a non-empty list of non-empty strings", v)
        if len(set(v)) != len(v):
            raise self.fail(key, "a list without duplicates", v)
        return tuple(v)

    def weights(self, key: str, allowed: tuple[str, ...] | None = None) -> tuple[tuple[str, float], ...]:
        v = self.get(key)
        if not isinstance(v, Mapping) or not v:
            raise self.fail(key, "a non-empty table of name = weight", v)
        out = []
        for name, w in v.items():
            if allowed is not None and name not in allowed:
                raise SpecError(
                    f"World config '{self._name(key)}.{name}' must be one of {list(allowed)}. Got {name!r} instead."
                )
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise SpecError(f"World config '{self._name(key)}.{name}' must be a number ≥ 0. Got {w!r} instead.")
            out.append((name, float(w)))
        if sum(w for _, w in out) <= 0:
            raise self.fail(key, "weights with a positive sum", v)
        return tuple(out)

    def done(self) -> None:
        extra = sorted(set(self.table) - self.seen)
        if extra:
            raise SpecError(
                f"World config '{self._name(extra[0])}' is not a known parameter "
                f"(known here: {sorted(self.seen)})."
            )


def _range_rule(what: str, lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
    if lo is not None:
        return f"{what} {'>' if lo_open else '≥'} {_fmt(lo)}"
    if hi is not None:
        return f"{what} ≤ {_fmt(hi)}"
    return what


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)

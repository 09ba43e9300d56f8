"""Heuristics: threshold rules, scoring rules and lookup tables — intelligence written by hand.

They are the first intelligence of most systems and the baseline every model is compared with.
Like models, they are parameters in a bundle (data, not code), bound to the system's features.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.features import FeatureSet, ascii_lower
from closedloop.context.schema import Columns, Str
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, check_output, spec_get

__all__ = ["LookupTable", "Rule", "ScoringRules", "ThresholdRule"]

_OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class Rule:
    """``feature OP value`` adds ``points`` to a score. OP is one of > >= < <= == !=."""

    __slots__ = ("feature", "op", "points", "value")

    def __init__(self, feature: str, op: str, value: float, points: float = 1.0) -> None:
        if not isinstance(feature, str) or not feature:
            raise IntelligenceError(f"The 'feature' of a Rule must be a feature name. Got {feature!r} instead.")
        if op not in _OPS:
            raise IntelligenceError(f"The 'op' of a Rule must be one of {list(_OPS)}. Got {op!r} instead.")
        self.feature = feature
        self.op = op
        self.value = check_finite("value", value, "Rule")
        self.points = check_finite("points", points, "Rule")

    def to_list(self) -> list[Any]:
        return [self.feature, self.op, self.value, self.points]

    def __repr__(self) -> str:
        return f"Rule({self.feature!r}, {self.op!r}, {self.value!r}, points={self.points!r})"


class _RulesScorer(Scorer):
    def __init__(
        self, features: FeatureSet, rules: Sequence[Rule], idx: list[int], base: float,
        lo: float, hi: float, output: str,
    ) -> None:
        self.features = features
        self.outputs = (output,)
        self._rules = [(i, _OPS[r.op], r.value, r.points) for r, i in zip(rules, idx, strict=True)]
        self._base, self._lo, self._hi = base, lo, hi

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        s = self._base
        for i, op, v, p in self._rules:
            if op(x[i], v):
                s = s + p
        if s < self._lo:
            s = self._lo
        elif s > self._hi:
            s = self._hi
        return (s,)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        s = np.full(X.shape[0], self._base, dtype=np.float64)
        for i, op, v, p in self._rules:
            s = np.where(op(X[:, i], v), s + p, s)
        s = np.where(s < self._lo, self._lo, np.where(s > self._hi, self._hi, s))
        return s.reshape(-1, 1)


class ScoringRules(Intelligence):
    """A points score: ``base`` plus the ``points`` of every rule that holds, clipped to
    [``lo``, ``hi``] (by default [0, 1], so it reads as a probability-like score).

    >>> ScoringRules([Rule("ip_in_url", ">", 0.5, 0.4), Rule("domain_age_log", "<", 2.0, 0.3)])
    """

    kind: ClassVar[str] = "scoring_rules"

    def __init__(
        self, rules: Sequence[Rule], base: float = 0.0, lo: float = 0.0, hi: float = 1.0,
        output: str = "score",
    ) -> None:
        owner = type(self).__name__
        rules = list(rules)
        if not rules or not all(isinstance(r, Rule) for r in rules):
            raise IntelligenceError(f"The 'rules' of {owner} must be a non-empty list of Rule. Got {rules!r} instead.")
        self.rules = rules
        self.base = check_finite("base", base, owner)
        self.lo = check_finite("lo", lo, owner)
        self.hi = check_finite("hi", hi, owner)
        if self.lo > self.hi:
            raise IntelligenceError(f"{owner} needs lo ≤ hi. Got lo={lo!r}, hi={hi!r} instead.")
        self.output = check_output(output, owner)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.feature for r in self.rules))

    def bind(self, features: FeatureSet) -> Scorer:
        idx = self._indices(features, [r.feature for r in self.rules])
        return _RulesScorer(features, self.rules, idx, self.base, self.lo, self.hi, self.output)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind, "output": self.output, "base": self.base, "lo": self.lo,
            "hi": self.hi, "rules": [r.to_list() for r in self.rules],
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        owner = cls.__name__
        raw = spec_get(spec, "rules", owner)
        if not isinstance(raw, list) or not all(isinstance(r, list) and len(r) == 4 for r in raw):
            raise IntelligenceError(f"The saved 'rules' of {owner} must be a list of [feature, op, value, points].")
        return cls(
            [Rule(*r) for r in raw], spec_get(spec, "base", owner), spec_get(spec, "lo", owner),
            spec_get(spec, "hi", owner), spec_get(spec, "output", owner),
        )


class ThresholdRule(ScoringRules):
    """One feature against one threshold: ``then`` where ``feature OP threshold`` holds, else
    ``otherwise``. (A scoring rule with one rule, kept as its own kind for readability.)"""

    kind: ClassVar[str] = "threshold_rule"

    def __init__(
        self, feature: str, op: str, threshold: float, then: float = 1.0, otherwise: float = 0.0,
        output: str = "score",
    ) -> None:
        then = check_finite("then", then, "ThresholdRule")
        otherwise = check_finite("otherwise", otherwise, "ThresholdRule")
        lo, hi = min(then, otherwise), max(then, otherwise)
        super().__init__([Rule(feature, op, threshold, then - otherwise)], otherwise, lo, hi, output)
        self.feature, self.op, self.threshold = feature, op, float(threshold)
        self.then, self.otherwise = then, otherwise

    def bind(self, features: FeatureSet) -> Scorer:
        idx = self._indices(features, [self.feature])[0]
        return _ThresholdScorer(features, idx, _OPS[self.op], self.threshold, self.then, self.otherwise, self.output)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind, "output": self.output, "feature": self.feature, "op": self.op,
            "threshold": self.threshold, "then": self.then, "otherwise": self.otherwise,
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        o = cls.__name__
        return cls(
            spec_get(spec, "feature", o), spec_get(spec, "op", o), spec_get(spec, "threshold", o),
            spec_get(spec, "then", o), spec_get(spec, "otherwise", o), spec_get(spec, "output", o),
        )


class _ThresholdScorer(Scorer):
    def __init__(self, features: FeatureSet, i: int, op: Any, t: float, then: float, otherwise: float, output: str) -> None:
        self.features = features
        self.outputs = (output,)
        self._i, self._op, self._t, self._then, self._else = i, op, t, then, otherwise

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        return (self._then if self._op(x[self._i], self._t) else self._else,)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        return np.where(self._op(X[:, self._i], self._t), self._then, self._else).astype(np.float64).reshape(-1, 1)


class LookupTable(Intelligence):
    """A table from a context text field to a score (e.g. known-bad domains → 1.0).

    A key in the table gives its score; any other key gives ``fallback``'s score (another
    intelligence with the same single output), or ``default`` when there is no fallback.
    ``lowercase=True`` looks keys up ASCII-lower-cased (domains are case-insensitive).
    """

    kind: ClassVar[str] = "lookup_table"

    def __init__(
        self, field: str, table: Mapping[str, float], *, default: float = 0.0,
        fallback: Intelligence | None = None, lowercase: bool = True, output: str = "score",
    ) -> None:
        owner = type(self).__name__
        if not isinstance(field, str) or not field:
            raise IntelligenceError(f"The 'field' of {owner} must be a context field name. Got {field!r} instead.")
        if not isinstance(table, Mapping):
            raise IntelligenceError(f"The 'table' of {owner} must be a mapping of text to score. Got {table!r} instead.")
        clean: dict[str, float] = {}
        for k, v in table.items():
            if not isinstance(k, str):
                raise IntelligenceError(f"The keys of {owner}'s table must be strings. Got {k!r} instead.")
            key = ascii_lower(k) if lowercase else k
            clean[key] = check_finite(f"table[{k!r}]", v, owner)
        self.field = field
        self.table = clean
        self.default = check_finite("default", default, owner)
        self.lowercase = bool(lowercase)
        self.output = check_output(output, owner)
        if fallback is not None:
            if not isinstance(fallback, Intelligence):
                raise IntelligenceError(f"The 'fallback' of {owner} must be an Intelligence. Got {fallback!r} instead.")
            if len(fallback.outputs) != 1:
                raise IntelligenceError(
                    f"The 'fallback' of {owner} must have exactly one output. Got {fallback.outputs} instead."
                )
        self.fallback = fallback

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return self.fallback.inputs() if self.fallback else ()

    def context_fields(self) -> tuple[str, ...]:
        extra = self.fallback.context_fields() if self.fallback else ()
        return (self.field, *[f for f in extra if f != self.field])

    def bind(self, features: FeatureSet) -> Scorer:
        f = features.schema.by_name.get(self.field)
        if not isinstance(f, Str):
            raise IntelligenceError(
                f"The 'field' of LookupTable must be a text context field. Got {self.field!r} "
                f"({'undeclared' if f is None else type(f).__name__}) instead."
            )
        fb = self.fallback.bind(features) if self.fallback is not None else None
        return _LookupScorer(features, self, fb)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind, "output": self.output, "field": self.field, "default": self.default,
            "lowercase": self.lowercase, "table": dict(sorted(self.table.items())),
            "fallback": None if self.fallback is None else self.fallback.to_dict(files),
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]]) -> Intelligence:
        from closedloop.intelligence import load_intelligence

        o = cls.__name__
        fb = spec_get(spec, "fallback", o)
        return cls(
            spec_get(spec, "field", o), spec_get(spec, "table", o),
            default=spec_get(spec, "default", o),
            fallback=None if fb is None else load_intelligence(fb, files, kinds),
            lowercase=spec_get(spec, "lowercase", o), output=spec_get(spec, "output", o),
        )


class _LookupScorer(Scorer):
    def __init__(self, features: FeatureSet, spec: LookupTable, fallback: Scorer | None) -> None:
        self.features = features
        self.outputs = (spec.output,)
        self._field = spec.field
        self._table = spec.table
        self._lower = spec.lowercase
        self._default = spec.default
        self._fb = fallback
        self._keys = pa.array(list(spec.table), type=pa.string())
        self._vals = np.array(list(spec.table.values()), dtype=np.float64)

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        key = getattr(context, self._field)
        if self._lower:
            key = ascii_lower(key)
        v = self._table.get(key)
        if v is not None:
            return (v,)
        if self._fb is not None:
            return self._fb.one(x, context)
        return (self._default,)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        keys = cols[self._field]
        if self._lower:
            keys = pc.ascii_lower(keys)
        pos = pc.fill_null(pc.index_in(keys, value_set=self._keys), -1).to_numpy(zero_copy_only=False)
        pos = np.asarray(pos, dtype=np.int64)
        hit = pos >= 0
        if self._fb is not None:
            out = self._fb.batch(X, cols)[:, 0].copy()
        else:
            out = np.full(X.shape[0], self._default, dtype=np.float64)
        if self._vals.size:
            out[hit] = self._vals[pos[hit]]
        return out.reshape(-1, 1)

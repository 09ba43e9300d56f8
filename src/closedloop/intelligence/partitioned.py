"""Per-segment intelligence: a different member per value of a text context field, with a
default for every other value (see :mod:`closedloop.intelligence.combine`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns, Str
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_output, spec_get
from closedloop.intelligence.members import _member_from_dict, _member_to_dict, _saved_list, _union

__all__ = ["Partitioned"]


class _PartitionedScorer(Scorer):
    def __init__(
        self, features: FeatureSet, field: str, keys: list[str], scorers: list[Scorer], default: Scorer,
        outputs: tuple[str, ...],
    ) -> None:
        self.features = features
        self.outputs = outputs
        self._field = field
        self._by_key = dict(zip(keys, scorers, strict=True))
        self._scorers = scorers
        self._default = default
        self._keys = pa.array(keys, type=pa.string())

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        return self._by_key.get(getattr(context, self._field), self._default).one(x, context)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        n = X.shape[0]
        k = len(self.outputs)
        # position of each row's key among the parts' keys; -1 (the default) for any other value
        pos = pc.fill_null(pc.index_in(cols[self._field], value_set=self._keys), -1)
        group = np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64) + 1  # 0 = default
        counts = np.bincount(group, minlength=len(self._scorers) + 1)
        if n == 0:
            return np.empty((0, k), dtype=np.float64)
        scorers = [self._default, *self._scorers]
        only = np.flatnonzero(counts == n)
        if only.size:  # every row goes to one member: no copies
            return np.asarray(scorers[int(only[0])].batch(X, cols), dtype=np.float64).reshape(n, k)
        out = np.empty((n, k), dtype=np.float64)
        order = np.argsort(group, kind="stable")  # rows of each group, in their original order
        start = 0
        for g, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            idx = order[start:start + count]
            start += count
            Xg = np.empty((count, X.shape[1]), dtype=np.float64, order="F")  # column-major, as features make it
            for j in range(X.shape[1]):
                Xg[:, j] = X[idx, j]
            out[idx] = np.asarray(scorers[g].batch(Xg, cols.take(idx)), dtype=np.float64).reshape(count, k)
        return out


class Partitioned(Intelligence):
    """A different intelligence per value of a text context field.

    A row whose ``field`` equals a key of ``parts`` is scored by that part; any other value by
    ``default``. All members have the same number of outputs; the combination's outputs are named
    by ``output`` (by default, the default member's names).

    Parameters
    ----------
    field:
        A text (:class:`~closedloop.Str`) context field of the system, e.g. ``"browser"``. When the
        field declares ``choices``, every key must be one of them (checked at bind).
    parts:
        Field value → intelligence (at least one).
    default:
        The intelligence for every other value.
    output:
        The output name (members with one output), a list of names (one per output), or ``None``.

    >>> Partitioned("browser", {"safari": safari_model}, default=model, output="phish")
    """

    kind: ClassVar[str] = "partitioned"

    def __init__(
        self,
        field: str,
        parts: Mapping[str, Intelligence],
        default: Intelligence,
        output: str | Sequence[str] | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(field, str) or not field:
            raise IntelligenceError(f"The 'field' of {owner} must be a context field name. Got {field!r} instead.")
        if not isinstance(parts, Mapping) or not parts:
            raise IntelligenceError(
                f"The 'parts' of {owner} must be a non-empty mapping of field value to Intelligence. "
                f"Got {parts!r} instead."
            )
        for key, part in parts.items():
            if not isinstance(key, str):
                raise IntelligenceError(f"The keys of {owner}'s parts must be strings. Got {key!r} instead.")
            if not isinstance(part, Intelligence):
                raise IntelligenceError(f"The part {key!r} of {owner} must be an Intelligence. Got {part!r} instead.")
        if not isinstance(default, Intelligence):
            raise IntelligenceError(f"The 'default' of {owner} must be an Intelligence. Got {default!r} instead.")
        k = len(default.outputs)
        for key, part in parts.items():
            if len(part.outputs) != k:
                raise IntelligenceError(
                    f"The members of {owner} must have the same number of outputs: the part {key!r} has "
                    f"{len(part.outputs)} {part.outputs}, the default has {k} {default.outputs}."
                )
        self.field = field
        self.parts = {key: parts[key] for key in sorted(parts)}
        self.default = default
        if output is None:
            names = default.outputs
        elif isinstance(output, str):
            names = (output,)
        elif isinstance(output, Sequence):
            names = tuple(output)
        else:
            raise IntelligenceError(
                f"The 'output' parameter of {owner} must be a name or a list of names. Got {output!r} instead."
            )
        names = tuple(check_output(name, owner) for name in names)
        if len(names) != k:
            raise IntelligenceError(
                f"The 'output' parameter of {owner} must name each of the members' {k} outputs. "
                f"Got {list(names)} instead."
            )
        if len(set(names)) != len(names):
            raise IntelligenceError(f"The 'output' names of {owner} must be unique. Got {list(names)} instead.")
        self._outputs = names

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    def _members(self) -> list[Intelligence]:
        return [*self.parts.values(), self.default]

    def inputs(self) -> tuple[str, ...]:
        return _union([m.inputs() for m in self._members()])

    def context_fields(self) -> tuple[str, ...]:
        return _union([(self.field,), *[m.context_fields() for m in self._members()]])

    def bind(self, features: FeatureSet) -> Scorer:
        f = features.schema.by_name.get(self.field)
        if not isinstance(f, Str):
            raise IntelligenceError(
                f"The 'field' of Partitioned must be a text context field. Got {self.field!r} "
                f"({'undeclared' if f is None else type(f).__name__}) instead."
            )
        if f.choices is not None:
            unknown = [key for key in self.parts if key not in f.choices]
            if unknown:
                raise IntelligenceError(
                    f"The keys of Partitioned's parts must be values of context field {self.field!r} "
                    f"(one of {list(f.choices)}). Got {unknown} instead."
                )
        scorers = [part.bind(features) for part in self.parts.values()]
        return _PartitionedScorer(
            features, self.field, list(self.parts), scorers, self.default.bind(features), self._outputs
        )

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "outputs": list(self._outputs),
            "field": self.field,
            "parts": [
                [key, _member_to_dict(part, files, f"p{i}.")] for i, (key, part) in enumerate(self.parts.items())
            ],
            "default": _member_to_dict(self.default, files, "default."),
        }

    @classmethod
    def from_dict(
        cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]]
    ) -> Intelligence:
        owner = cls.__name__
        raw = _saved_list(spec, "parts", owner)
        if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in raw):
            raise IntelligenceError(f"The saved 'parts' of {owner} must be a list of [value, intelligence] pairs.")
        keys = [p[0] for p in raw]
        if keys != sorted(set(keys)):
            raise IntelligenceError(
                f"The saved 'parts' of {owner} must be sorted by value, each value once. Got {keys} instead."
            )
        parts = {key: _member_from_dict(p, files, kinds, f"p{i}.") for i, (key, p) in enumerate(raw)}
        default = _member_from_dict(spec_get(spec, "default", owner), files, kinds, "default.")
        return cls(
            spec_get(spec, "field", owner), parts, default, output=_saved_list(spec, "outputs", owner)
        )

    def __repr__(self) -> str:
        return f"Partitioned(field={self.field!r}, parts={list(self.parts)}, outputs={self.outputs})"

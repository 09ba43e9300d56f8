"""A logistic model with a learned affinity per pair of text fields: who likes what.

``sigmoid(intercept + Σ weights[f] · feature f + offset[a, b])`` where ``a`` and ``b`` are the
values of two text fields of the row — for a feed, the request's ``user_id`` and the candidate's
``category`` — and ``offset`` is a table learned from the loop's own feedback (a pair the table
does not hold adds 0: an unknown user, a new pair, scores as the plain logistic model). This is
the classic per-entity term of production rankers (a user × category bias): the features say what
is good for everyone, the table what this user came back for. It is fitted by
:func:`closedloop.training.affinity.fit_affinity`; a model trained once knows only the users it
saw, which is why a closed loop that retrains keeps up with users who arrive and interests that move.

The table is parameters, not code: it is saved as an Arrow IPC file of the bundle (columns ``a``,
``b``, ``offset``; checksummed with the bundle like any file) and read back into a dict. Scoring:
the linear part exactly as :class:`~closedloop.intelligence.linear.LinearModel` computes it (the
generated expression for one row, the compiled kernel for a batch — bitwise equal), plus the
offset, through the shared sigmoid — so :meth:`Scorer.one` and :meth:`Scorer.batch` agree bitwise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from closedloop.base.numeric import sigmoid, sigmoid_array
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns, Str
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, check_output, spec_get
from closedloop.intelligence.linear import LinearModel

__all__ = ["AffinityModel"]

_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("offset", pa.float64())])


def _check_table(table: Any, owner: str) -> dict[tuple[str, str], float]:
    if not isinstance(table, Mapping):
        raise IntelligenceError(f"The 'table' parameter of {owner} must be a mapping of (text, text) pairs to offsets. "
                                f"Got {type(table).__name__} instead.")
    out: dict[tuple[str, str], float] = {}
    for k, v in table.items():
        if not (isinstance(k, tuple) and len(k) == 2 and all(isinstance(x, str) for x in k)):
            raise IntelligenceError(f"The keys of {owner}'s table must be pairs of strings. Got {k!r} instead.")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise IntelligenceError(f"The 'table[{k!r}]' parameter of {owner} must be a finite number. Got {v!r} instead.")
        out[k] = float(v)
    return out


class _AffinityScorer(Scorer):
    def __init__(self, features: FeatureSet, spec: AffinityModel) -> None:
        self.features = features
        self.outputs = (spec.output,)
        self._linear = LinearModel(spec.weights, spec.intercept, spec.output).bind(features)
        self._a, self._b = spec.keys
        self._get = spec.table.get
        by_a: dict[str, dict[str, float]] = {}
        for (a, b), v in spec.table.items():
            by_a.setdefault(a, {})[b] = v
        self._by_a = by_a  # the rows of a ranking request share its user: one lookup of the user, then its few pairs

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        z = self._linear.one(x, context)[0]
        return (sigmoid(z + self._get((getattr(context, self._a), getattr(context, self._b)), 0.0)),)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        z = self._linear.batch(X, cols)[:, 0]
        a, b = cols[self._a], cols[self._b]
        a = a.to_pylist() if isinstance(a, pa.Array | pa.ChunkedArray) else list(a)
        n = len(a)
        if n and a.count(a[0]) == n:  # one key a (a request's candidates): its own small table, or none
            inner = self._by_a.get(a[0])
            if inner is None:
                off = None
            else:
                b = b.to_pylist() if isinstance(b, pa.Array | pa.ChunkedArray) else list(b)
                off = np.array([inner.get(x, 0.0) for x in b], dtype=np.float64)
        else:
            b = b.to_pylist() if isinstance(b, pa.Array | pa.ChunkedArray) else list(b)
            get = self._get
            off = np.array([get(k, 0.0) for k in zip(a, b, strict=True)], dtype=np.float64)
        return sigmoid_array(z if off is None else z + off).reshape(-1, 1)  # finite + finite: no warning to silence


class AffinityModel(Intelligence):
    """A logistic model plus a learned offset per ``(keys[0], keys[1])`` pair (module doc).

    Parameters
    ----------
    weights, intercept:
        The logistic part, as :class:`~closedloop.intelligence.LogisticModel`'s.
    keys:
        Two text fields of the rows it scores (request or candidate fields), e.g.
        ``("user_id", "category")``.
    table:
        ``{(a, b): offset}``, each offset a finite logit added to the pair's rows.
    output:
        The name of the score.
    """

    kind: ClassVar[str] = "affinity"

    def __init__(self, weights: Mapping[str, float], intercept: float = 0.0, *, keys: tuple[str, str],
                 table: Mapping[tuple[str, str], float], output: str = "score") -> None:
        owner = type(self).__name__
        base = LinearModel(weights, intercept, output)  # the same checks, the same messages
        self.weights, self.intercept = base.weights, base.intercept
        self.output = check_output(output, owner)
        if not (isinstance(keys, tuple | list) and len(keys) == 2 and all(isinstance(k, str) and k for k in keys) and keys[0] != keys[1]):
            raise IntelligenceError(f"The 'keys' parameter of {owner} must be two different text field names. Got {keys!r} instead.")
        self.keys = (str(keys[0]), str(keys[1]))
        self.table = _check_table(table, owner)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def context_fields(self) -> tuple[str, ...]:
        return self.keys

    def bind(self, features: FeatureSet) -> Scorer:
        for k in self.keys:
            f = features.schema.by_name.get(k)
            if not isinstance(f, Str):
                raise IntelligenceError(f"The 'keys' of AffinityModel must name text fields of the rows it scores. Got {k!r} "
                                        f"({'undeclared' if f is None else type(f).__name__}) instead.")
        self._indices(features, list(self.weights))
        return _AffinityScorer(features, self)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        items = sorted(self.table.items())
        t = pa.table([pa.array([k[0] for k, _ in items], pa.string()), pa.array([k[1] for k, _ in items], pa.string()),
                      pa.array([v for _, v in items], pa.float64())], schema=_SCHEMA)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, _SCHEMA) as w:
            w.write_table(t)
        data = sink.getvalue().to_pybytes()
        name = f"affinity-{hashlib.sha256(data).hexdigest()[:16]}.arrow"
        files[name] = data
        return {"kind": self.kind, "output": self.output, "intercept": self.intercept,
                "weights": [[k, v] for k, v in self.weights.items()], "keys": list(self.keys), "table": name, "pairs": len(items)}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Any) -> Intelligence:
        owner = cls.__name__
        name = spec_get(spec, "table", owner)
        if not isinstance(name, str) or name not in files:
            raise IntelligenceError(f"The saved 'table' of {owner} must name a file of the bundle. Got {name!r} instead.")
        try:
            t = pa.ipc.open_file(pa.BufferReader(files[name])).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise IntelligenceError(f"The affinity table file {name!r} of {owner} is not an Arrow IPC file ({exc}).") from None
        if not t.schema.equals(_SCHEMA):
            raise IntelligenceError(f"The affinity table file {name!r} of {owner} must have the columns a, b (string) and "
                                    f"offset (float64). Got {t.schema} instead.")
        a, b, v = (t[c].to_pylist() for c in ("a", "b", "offset"))
        if any(x is None for x in a) or any(x is None for x in b) or any(x is None for x in v):
            raise IntelligenceError(f"The affinity table file {name!r} of {owner} must hold no nulls.")
        pairs = spec_get(spec, "pairs", owner)
        if pairs != len(a):
            raise IntelligenceError(f"The affinity table file {name!r} of {owner} must hold {pairs!r} pairs. Got {len(a)} instead.")
        table = dict(zip(zip(a, b, strict=True), v, strict=True))
        if len(table) != len(a):
            raise IntelligenceError(f"The affinity table file {name!r} of {owner} must hold each pair once.")
        weights = spec_get(spec, "weights", owner)
        if not isinstance(weights, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in weights):
            raise IntelligenceError(f"The saved 'weights' of {owner} must be a list of [feature, weight] pairs.")
        keys = spec_get(spec, "keys", owner)
        return cls(dict((k, w) for k, w in weights), check_finite("intercept", spec_get(spec, "intercept", owner), owner),
                   keys=tuple(keys) if isinstance(keys, list) else keys, table=table, output=spec_get(spec, "output", owner))

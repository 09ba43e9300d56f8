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
from closedloop.intelligence.pair_table import PairTable

__all__ = ["AffinityModel"]

#: a batch up to this many rows that shares its key ``a`` reads that key's small dict; larger or mixed batches look up in C
_SMALL = 256
_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("offset", pa.float64())])


class _AffinityScorer(Scorer):
    def __init__(self, features: FeatureSet, spec: AffinityModel) -> None:
        self.features = features
        self.outputs = (spec.output,)
        self._linear = LinearModel(spec.weights, spec.intercept, spec.output).bind(features)
        self._a, self._b = spec.keys
        self._pairs = spec.pairs  # the rows of a ranking request share its user: one lookup of the user, then its few pairs

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        z = self._linear.one(x, context)[0]
        return (sigmoid(z + self._pairs.get(getattr(context, self._a), getattr(context, self._b))),)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        z = self._linear.batch(X, cols)[:, 0]
        a, b = cols[self._a], cols[self._b]
        n = len(a)
        off: np.ndarray | None
        first = (a[0].as_py() if isinstance(a, pa.Array | pa.ChunkedArray) else a[0]) if n else None
        if n and n <= _SMALL and (a.to_pylist() if isinstance(a, pa.Array | pa.ChunkedArray) else list(a)).count(first) == n:
            inner = self._pairs.row(str(first))  # one key a (a request's candidates): its own small table, or none
            if inner is None:
                off = None
            else:
                bl = b.to_pylist() if isinstance(b, pa.Array | pa.ChunkedArray) else list(b)
                off = np.array([inner.get(x, 0.0) for x in bl], dtype=np.float64)
        else:
            off = self._pairs.lookup(a, b)
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
        ``{(a, b): offset}``, each offset a finite logit added to the pair's rows (or a
        :class:`~closedloop.intelligence.pair_table.PairTable`, as a saved model loads it).
    output:
        The name of the score.
    """

    kind: ClassVar[str] = "affinity"

    def __init__(self, weights: Mapping[str, float], intercept: float = 0.0, *, keys: tuple[str, str],
                 table: Mapping[tuple[str, str], float] | PairTable, output: str = "score") -> None:
        owner = type(self).__name__
        base = LinearModel(weights, intercept, output)  # the same checks, the same messages
        self.weights, self.intercept = base.weights, base.intercept
        self.output = check_output(output, owner)
        if not (isinstance(keys, tuple | list) and len(keys) == 2 and all(isinstance(k, str) and k for k in keys) and keys[0] != keys[1]):
            raise IntelligenceError(f"The 'keys' parameter of {owner} must be two different text field names. Got {keys!r} instead.")
        self.keys = (str(keys[0]), str(keys[1]))
        self.pairs = table if isinstance(table, PairTable) else PairTable.from_mapping(table, owner)

    @property
    def table(self) -> dict[tuple[str, str], float]:
        """``{(a, b): offset}`` (built from :attr:`pairs` on first use)."""
        return self.pairs.to_dict()

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
        a, b, v = self.pairs.columns()
        t = pa.table([a, b, pa.array(v, pa.float64())], schema=_SCHEMA)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, _SCHEMA) as w:
            w.write_table(t)
        data = sink.getvalue().to_pybytes()
        name = f"affinity-{hashlib.sha256(data).hexdigest()[:16]}.arrow"
        files[name] = data
        return {"kind": self.kind, "output": self.output, "intercept": self.intercept,
                "weights": [[k, v] for k, v in self.weights.items()], "keys": list(self.keys), "table": name, "pairs": len(self.pairs)}

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
        pairs = spec_get(spec, "pairs", owner)
        if pairs != t.num_rows:
            raise IntelligenceError(f"The affinity table file {name!r} of {owner} must hold {pairs!r} pairs. Got {t.num_rows} instead.")
        t = t.combine_chunks()
        table = PairTable.from_columns(t["a"].chunk(0) if t.num_rows else pa.array([], pa.string()),
                                       t["b"].chunk(0) if t.num_rows else pa.array([], pa.string()),
                                       t["offset"].to_numpy(), owner, f"affinity table file {name!r}")
        weights = spec_get(spec, "weights", owner)
        if not isinstance(weights, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in weights):
            raise IntelligenceError(f"The saved 'weights' of {owner} must be a list of [feature, weight] pairs.")
        keys = spec_get(spec, "keys", owner)
        return cls(dict((k, w) for k, w in weights), check_finite("intercept", spec_get(spec, "intercept", owner), owner),
                   keys=tuple(keys) if isinstance(keys, list) else keys, table=table, output=spec_get(spec, "output", owner))

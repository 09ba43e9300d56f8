"""Telemetry's encoding: the records of one group commit → Arrow record batches.

The committer (:mod:`~closedloop.telemetry.committer`) buffers tuples whose first element is the
sequence number and whose second says the kind:

* ``(seq, DECISION, decision, context, features, p)`` — one :class:`~closedloop.Decision`, its
  validated context and feature tuple, its sampling probability;
* ``(seq, BATCH, batch, columns, X, idx, p)`` — a :class:`~closedloop.DecisionBatch`, its
  validated ``Columns`` and feature matrix, the kept rows (None: all) and their sampling
  probabilities (None: all 1);
* ``(seq, OUTCOME, outcome_id, decision_id, unit, kind, value, event_ns, source, candidate_id)``;
* ``(seq, RANKED, decision, context, p)`` and ``(seq, RANKED_BATCH, batch, requests, candidates,
  idx, p)`` — ranking decisions, written by :mod:`~closedloop.telemetry.ranked`.

:class:`Encoder` turns them into record batches: the single decisions of a commit in
``DECISION_SCHEMA`` (features as ``list<double>``, scores, shadows JSON via msgspec, contexts as
JSON); each decision batch in the compact form of :mod:`~closedloop.telemetry.compact` when it
can be (the sanitized contexts as typed columns, constant columns run-end encoded and stored
once), built column family by column family (rows, units, context, features, scores, choices,
shadows); outcomes in ``OUTCOME_SCHEMA``. The functions here are pure but for the encoder's cache
of constant columns, which only the committer thread uses.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.schema import Bool, Float, Int, _gather
from closedloop.telemetry.compact import CONTEXT, json_strings, run_end, to_decision_schema
from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.ranked import RankedEncoder
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA, RANKING_COLUMNS

# Records are built on the committer thread. Arrow's default allocator (jemalloc) is markedly
# slower on a thread other than the one that warmed it (docs/performance.md, "Telemetry");
# the system allocator is not, so the encoder builds its arrays with it.
_POOL = pa.system_memory_pool()
_arr = functools.partial(pa.array, memory_pool=_POOL)
_nulls = functools.partial(pa.nulls, memory_pool=_POOL)

__all__ = ["BATCH", "DECISION", "OUTCOME", "RANKED", "RANKED_BATCH", "Encoder", "item_count"]

# buffer item kinds: one decision, a decision batch, an outcome, one ranking decision, a ranking batch
DECISION, BATCH, OUTCOME, RANKED, RANKED_BATCH = 0, 1, 2, 3, 4

_json_strings = json_strings
_JSON_AT = DECISION_SCHEMA.get_field_index("context_json")


def item_count(item: tuple[Any, ...]) -> int:
    """How many sequence numbers a buffer item takes (a batch: one per kept row)."""
    if item[1] == BATCH or item[1] == RANKED_BATCH:
        idx = item[5]
        return len(item[2]) if idx is None else int(idx.shape[0])
    return 1


class Encoder:
    """Builds the record batches of one system's commits (see the module doc).

    ``system`` gives the names written with every record and the context schema, ``sanitizer``
    what of a context may be written, ``writer`` the sink's writer id; ``compact=False`` writes
    decision batches in ``DECISION_SCHEMA`` too. Used by the committer thread alone.
    """

    def __init__(self, system: Any, sanitizer: Sanitizer, writer: str, compact: bool,
                 ranked: RankedEncoder | None = None) -> None:
        self.system = system
        self.system_name: str = system.name
        self.schema_version: str = system.schema.version
        self.fingerprint: str = system.features.fingerprint
        self.sanitizer = sanitizer
        self.writer = writer
        self.compact = compact
        sz = sanitizer
        #: the context fields telemetry writes (sanitized: dropped ones left out), with whether hashed
        self.ctx_fields = [(f, f.name in sz.hashed) for f in system.schema.fields if f.name not in sz.dropped]
        self.ctx_type = pa.struct([pa.field(f.name, pa.string() if hashed else _arrow_type(f))
                                   for f, hashed in self.ctx_fields])
        self._runs: dict[tuple[Any, ...], pa.Array] = {}  # constant columns, built once per (value, length)
        #: a ranking system's records (:mod:`~closedloop.telemetry.ranked`); None for any other system
        self.ranked = ranked

    # -- a commit's tables -------------------------------------------------------------------------
    def decision_tables(self, items: list[tuple[Any, ...]], now: int) -> list[pa.RecordBatch | pa.Table]:
        """The commit's decision records: the single decisions in ``DECISION_SCHEMA`` (a commit
        holds a few dozen: per-column work would cost more than their JSON), the batches in the
        compact form when they can be — one table per form, each appended as its own frame."""
        parts: list[pa.RecordBatch] = []
        singles = [it for it in items if it[1] == DECISION]
        if singles:
            parts.append(self.singles(singles, now))
        rk = self.ranked
        ranked = [it for it in items if it[1] == RANKED]
        if ranked and rk is not None:
            parts.append(rk.singles(ranked, now))
        for it in items:
            if it[1] == BATCH:
                parts.append(self.from_batch(it, now))
            elif it[1] == RANKED_BATCH and rk is not None:
                parts.append(rk.from_batch(it, now))
        plain = [p for p in parts if p.schema.field(_JSON_AT).name != CONTEXT]
        compact = [p for p in parts if p.schema.field(_JSON_AT).name == CONTEXT]
        out: list[pa.RecordBatch | pa.Table] = []
        for group in (plain, compact):
            if len(group) == 1:
                out.append(group[0])
            elif group:
                out.append(pa.Table.from_batches(_unify(group)))  # one commit, not copied into one batch
        return out

    def outcome_batch(self, items: list[tuple[Any, ...]], now: int) -> pa.RecordBatch:
        """The outcome items of a commit in ``OUTCOME_SCHEMA``, ingested at ``now``."""
        n = len(items)
        cols = [
            _arr([it[0] for it in items], pa.int64()),
            _const(self.writer, n),
            _arr([it[2] for it in items], pa.string()),
            _arr([it[3] for it in items], pa.string()),
            _const(self.system_name, n),
            _arr([it[4] for it in items], pa.string()),
            _arr([it[5] for it in items], pa.string()),
            _arr([it[6] for it in items], pa.float64()),
            _arr([it[7] for it in items], pa.int64()),
            _arr(np.full(n, now, dtype=np.int64)),
            _arr([it[8] for it in items], pa.string()),
            _arr([it[9] if len(it) > 9 else None for it in items], pa.string()),
        ]
        return pa.RecordBatch.from_arrays(cols, schema=OUTCOME_SCHEMA)

    # -- single decisions --------------------------------------------------------------------------
    def singles(self, items: list[tuple[Any, ...]], now: int) -> pa.RecordBatch:
        """The single-decision items of a commit in ``DECISION_SCHEMA``, ingested at ``now``."""
        n = len(items)
        ds = [it[2] for it in items]
        sz = self.sanitizer
        units = [d.unit for d in ds] if not sz.unit_hashed else [sz.unit(d.unit) for d in ds]
        feats = [it[4] for it in items]
        enc = msgspec.json.encode
        contexts = [it[3] for it in items]
        cols = [
            _arr([it[0] for it in items], pa.int64()),
            _const(self.writer, n),
            _arr([d.decision_id for d in ds], pa.string()),
            _const(self.system_name, n),
            _arr(units, pa.string()),
            _arr([d.timestamp_ns for d in ds], pa.int64()),
            _arr(np.full(n, now, dtype=np.int64)),
            _arr([d.bundle_version for d in ds], pa.string()),
            _arr([d.flight for d in ds], pa.string()),
            _const(self.schema_version, n),
            _const(self.fingerprint, n),
            self._single_contexts(contexts),
            _float_lists(feats),
            *_score_lists([d.scores for d in ds]),
            _arr([d.action for d in ds], pa.string()),
            _arr([d.propensity for d in ds], pa.float64()),
            _arr([it[5] for it in items], pa.float64()),
            _arr([d.why for d in ds], pa.string()),
            _arr([d.guardrail for d in ds], pa.string()),
            _arr([enc(d.shadows).decode() if d.shadows else None for d in ds], pa.string()),
            _arr([d.killswitch for d in ds], pa.bool_()),
            *_no_ranking(n),
        ]
        return pa.RecordBatch.from_arrays(cols, schema=DECISION_SCHEMA)

    def _single_contexts(self, contexts: list[Any]) -> pa.Array:
        """``context_json`` of single decisions: each context sanitized to JSON (None: null)."""
        st = self.system.schema.struct
        if self.sanitizer.plain and all(type(c) is st for c in contexts):
            return _json_strings(contexts)
        return _arr([self._context(c) for c in contexts], pa.string())

    def _context(self, c: Any) -> str | None:
        if c is None:
            return None
        if isinstance(c, dict):
            return _sanitize_dict(self.sanitizer, c)
        return self.sanitizer.context_json(c)

    # -- a decision batch, column family by column family -----------------------------------------
    def from_batch(self, it: tuple[Any, ...], now: int) -> pa.RecordBatch:
        """One decision-batch item (its kept rows) as a record batch: the compact form when its
        contexts can be typed columns, else ``DECISION_SCHEMA``."""
        seq0, _, b, columns, X, idx, p = it
        sel = np.arange(len(b)) if idx is None else idx
        n = int(sel.shape[0])
        take: Callable[[Any], Any] = (lambda a: a) if idx is None else (lambda a: a.take(_arr(idx)))
        units = take(b.units)
        if self.sanitizer.unit_hashed:
            units = _arr([self.sanitizer.unit(u) for u in units.to_pylist()], pa.string())
        context, compact = self._batch_context(columns, idx, sel, n)
        const = self._once if compact else _const
        features = _batch_features(X, idx, sel, n)
        score_names, scores = self._batch_scores(b, idx, sel, n, compact)
        actions, whys, guard = _batch_choices(b, sel, n)
        shadows = _batch_shadows(b, sel, n)
        ts = np.asarray(b.timestamps_ns, dtype=np.int64)
        props = np.asarray(b.propensities, dtype=np.float64)
        cols = [
            _arr(np.arange(seq0, seq0 + n, dtype=np.int64)),
            const(self.writer, n),
            take(b.decision_ids),
            const(self.system_name, n),
            units,
            _arr(ts if idx is None else ts[sel]),
            run_end(now, n, pa.int64()) if compact else _arr(np.full(n, now, dtype=np.int64)),
            const(b.bundle_version, n) if b.bundle_versions is None else take(b.bundle_versions),
            (self._once(None, n) if compact else _nulls(n, pa.string())) if b.flights is None else take(b.flights),
            const(self.schema_version, n),
            const(self.fingerprint, n),
            context,
            features,
            score_names,
            scores,
            actions,
            _arr(props if idx is None else props[sel]),
            (self._once(1.0, n, pa.float64()) if compact else _arr(np.ones(n))) if p is None else _arr(np.asarray(p, dtype=np.float64)),
            whys,
            guard,
            shadows,
            self._once(bool(b.killswitch), n, pa.bool_()) if compact else _arr(np.full(n, bool(b.killswitch))),
            *([self._once(None, n, DECISION_SCHEMA.field(c).type) for c in RANKING_COLUMNS] if compact else _no_ranking(n)),
        ]
        return _record_batch(cols, compact)

    def _batch_context(self, columns: Any, idx: np.ndarray | None, sel: np.ndarray, n: int) -> tuple[pa.Array, bool]:
        """A batch's context column and whether it is the compact form's typed ``context`` (else
        ``context_json``): from the validated structs of ``columns`` if it holds them, else from
        its columns, else nulls."""
        contexts = None if columns is None else getattr(columns, "contexts", None)
        if contexts is not None and idx is not None:
            contexts = [contexts[i] for i in sel.tolist()]
        typed = None
        if self.compact:
            if contexts is not None:  # the validated structs, field by field
                typed = self._typed_contexts(contexts, columns if idx is None and hasattr(columns, "held") else None)
            elif columns is not None:  # validated columns (Schema.validate_batch) as they are
                typed = self._typed_columns(columns, idx)
            else:
                typed = pa.nulls(n, self.ctx_type)
        if typed is not None:
            return typed, True
        if contexts is not None:  # the validated structs: encoded as the single path encodes them
            return self._contexts_json(contexts), False
        if columns is not None:
            names = columns.names()
            lists = [columns.pylist(k) for k in names]
            ctx = [_sanitize_dict(self.sanitizer, dict(zip(names, (col[i] for col in lists), strict=True))) for i in sel.tolist()]
            return _arr(ctx, pa.string()), False
        return _nulls(n, pa.string()), False

    def _contexts_json(self, contexts: Sequence[Any]) -> pa.Array:
        """The sanitized JSON of validated contexts (structs), as :meth:`_context` writes each."""
        sz = self.sanitizer
        if sz.plain:
            return _json_strings(contexts)
        return _arr([sz.context_json(c) for c in contexts], pa.string())

    def _typed_contexts(self, contexts: list[Any], columns: Any = None) -> pa.StructArray | None:
        """The sanitized contexts of validated context structs as typed columns (the compact
        form's ``context``), or None when a row is not such a struct (the caller writes JSON).
        ``columns`` (the batch's ``Columns`` of these very contexts) lends the columns it built
        already from them."""
        st = self.system.schema.struct
        n = len(contexts)
        if not n or (columns is None and not all(type(c) is st for c in contexts)):
            return None
        arrays = []
        for f, hashed in self.ctx_fields:
            if hashed:
                h = self.sanitizer.hash
                arrays.append(_arr([h(v) for v in map(operator.attrgetter(f.name), contexts)], pa.string()))
                continue
            col = None if columns is None else columns.held(f.name)
            if col is None:
                col = _gather(f, contexts, n, exact=True)
            if col is None:
                return None
            arrays.append(col if isinstance(col, pa.Array) else _arr(col))
        return pa.StructArray.from_arrays(arrays, fields=list(self.ctx_type))

    def _typed_columns(self, columns: Any, idx: np.ndarray | None) -> pa.StructArray | None:
        """The sanitized contexts of a validated columnar batch (``Schema.validate_batch``) as
        typed columns, or None when a column is not of its field's type."""
        arrays = []
        sel = None if idx is None else _arr(idx)
        for (f, hashed), want in zip(self.ctx_fields, self.ctx_type, strict=True):
            if hashed:
                vals = columns.pylist(f.name)
                if idx is not None:
                    vals = [vals[i] for i in idx.tolist()]
                arrays.append(_arr([self.sanitizer.hash(v) for v in vals], pa.string()))
                continue
            col = columns[f.name]
            a = col if isinstance(col, pa.Array) else _arr(col)
            if a.type != want.type:
                return None
            arrays.append(a if sel is None else a.take(sel))
        return pa.StructArray.from_arrays(arrays, fields=list(self.ctx_type))

    def _batch_scores(self, b: Any, idx: np.ndarray | None, sel: np.ndarray, n: int, compact: bool) -> tuple[pa.Array, pa.Array]:
        """A batch's ``score_names`` (stored once in the compact form) and ``scores`` columns."""
        S = b.score_matrix if idx is None else b.score_matrix[sel]
        k = len(b.outputs)
        if compact:
            score_names = self._once(list(b.outputs), n, pa.list_(pa.string()))
        else:
            out_names = _arr(list(b.outputs), pa.string())
            score_names = pa.ListArray.from_arrays(
                _arr(np.arange(n + 1, dtype=np.int32) * k),
                out_names.take(_arr(np.tile(np.arange(k), n))) if k else _arr([], pa.string()),
                pool=_POOL,
            )
        return score_names, _matrix_lists(S)

    def _once(self, value: Any, n: int, type: pa.DataType = pa.string()) -> pa.Array:
        """A constant column, run-end encoded; the same ones recur commit after commit (the
        committer thread alone uses this cache)."""
        key = (tuple(value) if isinstance(value, list) else value, n, str(type))
        got = self._runs.get(key)
        if got is None:
            if len(self._runs) >= 256:
                self._runs.clear()
            got = self._runs[key] = run_end(value, n, type)
        return got


def _batch_features(X: Any, idx: np.ndarray | None, sel: np.ndarray, n: int) -> pa.Array:
    """A batch's ``features`` column: its feature matrix's kept rows as ``list<double>`` (no
    matrix: nulls)."""
    if X is None:
        return _nulls(n, pa.list_(pa.float64()))
    Xs = np.asarray(X, dtype=np.float64)
    return _matrix_lists(Xs if idx is None else Xs[sel])


def _batch_choices(b: Any, sel: np.ndarray, n: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    """A batch's ``action``, ``why`` and ``guardrail`` columns, decoded from its codes."""
    actions = _arr(list(b.actions), pa.string()).take(_arr(b.action_codes[sel]))
    whys = _arr(list(b.reasons), pa.string()).take(_arr(b.why_codes[sel]))
    if b.guardrail_codes is not None:
        g = b.guardrail_codes[sel]
        gnames = _arr([*b.guardrails, None], pa.string())
        guard = gnames.take(_arr(np.where(g < 0, len(b.guardrails), g)))
    else:
        guard = _nulls(n, pa.string())
    return actions, whys, guard


def _batch_shadows(b: Any, sel: np.ndarray, n: int) -> pa.Array:
    """A batch's ``shadows_json`` column: each kept row's shadow decisions as JSON (none: nulls)."""
    if not b.shadows:
        return _nulls(n, pa.string())
    enc = msgspec.json.encode
    sh = []
    for i in sel.tolist():
        sh.append(enc([
            {"bundle_version": v, "scores": dict(zip(outs, Sm[i].tolist(), strict=True)), "action": b.actions[int(codes[i])]}
            for v, outs, Sm, codes in b.shadows
        ]).decode())
    return _arr(sh, pa.string())


def _arrow_type(f: Any) -> pa.DataType:
    """The Arrow type of a context field's values in the compact form."""
    if isinstance(f, Float):
        return pa.float64()
    if isinstance(f, Int):
        return pa.int64()
    if isinstance(f, Bool):
        return pa.bool_()
    return pa.string()


def _record_batch(cols: list[pa.Array], compact: bool) -> pa.RecordBatch:
    """The decision records of ``cols``: ``DECISION_SCHEMA``, or its compact form (each column's
    own type — run-end encoded or not — and the typed ``context``)."""
    if not compact:
        return pa.RecordBatch.from_arrays(cols, schema=DECISION_SCHEMA)
    fields = [pa.field(CONTEXT if i == _JSON_AT else f.name, c.type, nullable=f.nullable or i == _JSON_AT)
              for i, (f, c) in enumerate(zip(DECISION_SCHEMA, cols, strict=True))]
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


def _unify(parts: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """The compact record batches of one commit with one schema (an IPC stream has one): a
    column that is run-end encoded in one part and not in another is decoded (if the parts still
    differ, they are converted to ``DECISION_SCHEMA``)."""
    schema = parts[0].schema
    if all(p.schema.equals(schema) for p in parts):
        return parts
    if len({p.schema.field(_JSON_AT).name for p in parts}) > 1:
        return [to_decision_schema(p) for p in parts]
    out = []
    for p in parts:
        cols = [pc.run_end_decode(c) if isinstance(c.type, pa.RunEndEncodedType) else c for c in p.columns]
        out.append(pa.RecordBatch.from_arrays(cols, names=p.schema.names))
    target = out[0].schema
    if all(p.schema.equals(target) for p in out):
        return out
    return [to_decision_schema(p) for p in parts]


def _no_ranking(n: int) -> list[pa.Array]:
    """The ranking columns of ``n`` decisions that are not rankings: nulls."""
    return [_nulls(n, DECISION_SCHEMA.field(c).type) for c in RANKING_COLUMNS]


def _const(value: str, n: int) -> pa.Array:
    """A string column holding ``value`` ``n`` times."""
    return _arr([value], pa.string()).take(_arr(np.zeros(n, dtype=np.int32)))


def _float_lists(rows: Sequence[Any]) -> pa.Array:
    """list<double> from a sequence of float sequences (None: a null list)."""
    n = len(rows)
    if n:
        try:
            M = np.asarray(rows, dtype=np.float64)  # equal lengths: one C-level conversion
        except (ValueError, TypeError):
            M = None
        if M is not None and M.ndim == 2:
            return _matrix_lists(M)
    return _arr([None if r is None else list(r) for r in rows], pa.list_(pa.float64()))


def _matrix_lists(M: np.ndarray) -> pa.Array:
    """list<double> with one list per row of the matrix ``M``."""
    n, k = M.shape
    return pa.ListArray.from_arrays(_arr(np.arange(n + 1, dtype=np.int32) * k), _arr(np.ascontiguousarray(M).ravel()), pool=_POOL)


def _score_lists(dicts: Sequence[dict[str, float]]) -> tuple[pa.Array, pa.Array]:
    """``score_names`` and ``scores`` (list<string>, list<double>) of many score dicts."""
    n = len(dicts)
    keys = tuple(dicts[0]) if n else ()
    k = len(keys)
    if n and all(len(d) == k for d in dicts) and all(tuple(d) == keys for d in dicts[:: max(1, n // 64)]):
        try:
            if k == 1:
                (key,) = keys
                M = np.array([d[key] for d in dicts], dtype=np.float64).reshape(n, 1)
            else:
                M = np.array([[d[x] for x in keys] for d in dicts], dtype=np.float64)
        except KeyError:
            M = None
        if M is not None:
            offsets = _arr(np.arange(n + 1, dtype=np.int32) * k)
            idx = _arr(np.tile(np.arange(k, dtype=np.int32), n))
            names = pa.ListArray.from_arrays(offsets, _arr(list(keys), pa.string()).take(idx), pool=_POOL)
            return names, _matrix_lists(M)
    return (_arr([list(d) for d in dicts], pa.list_(pa.string())),
            _arr([list(d.values()) for d in dicts], pa.list_(pa.float64())))


def _sanitize_dict(sz: Sanitizer, d: dict[str, Any]) -> str:
    """The sanitized JSON of a context given as a dict (dropped fields left out, hashed ones hashed)."""
    if not sz.plain:
        d = dict(d)
        for name in sz.dropped:
            d.pop(name, None)
        for name in sz.hashed:
            if name in d:
                d[name] = sz.hash(d[name])
    return msgspec.json.encode(d).decode()

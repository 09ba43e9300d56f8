"""The telemetry writer: decisions and outcomes onto a buffer, a background group commit to a sink.

The caller's thread (the decision path) only decides sampling, takes a sequence number and puts
references on a bounded deque: no encoding, no disk. A background thread wakes every
``flush_interval_ms`` (or as soon as ``flush_events`` are waiting), builds the commit's Arrow
record batches per stream (features as ``list<double>``, scores, shadows JSON via msgspec; a
batch's sanitized contexts as typed columns — the compact form of
:mod:`~closedloop.telemetry.compact`, which readers turn back into ``context_json`` — single
decisions' contexts as JSON, as are a batch's when a context is not a validated struct or with
``compact=False``), appends them to the sink (one frame per form) and calls ``sink.sync()`` (fsync).
The **durable watermark** is
the highest sequence number made durable; :meth:`Telemetry.flush` returns it once everything
logged before the call is durable (or failed).

Failures never reach the decision path: a full buffer drops and counts (``dropped_buffer_full``);
a write error (disk full …) is recorded in ``last_error``, the decisions of the failed commit are
counted in ``unlogged_errors`` and :attr:`Telemetry.healthy` turns False until a commit succeeds.

``ingest_ns`` is stamped once per group commit (the time telemetry wrote the record, at most one
flush interval after the call).
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.context.schema import Bool, Float, Int, _gather
from closedloop.errors import OutcomeError, SpecError
from closedloop.telemetry.compact import CONTEXT, json_strings, run_end, to_decision_schema
from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA, outcome_field_problem
from closedloop.telemetry.sampling import Sampling
from closedloop.telemetry.sink import Sink

# Records are built on the committer thread. Arrow's default allocator (jemalloc) is markedly
# slower on a thread other than the one that warmed it (docs/performance.md, "Telemetry");
# the system allocator is not, so the writer builds its arrays with it.
_POOL = pa.system_memory_pool()
_arr = functools.partial(pa.array, memory_pool=_POOL)
_nulls = functools.partial(pa.nulls, memory_pool=_POOL)

__all__ = ["OutcomeError", "Telemetry"]

_D, _B, _O = 0, 1, 2  # buffer item kinds: one decision, a decision batch, an outcome


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"Telemetry '{name}' must be a positive integer. Got {value!r} instead.")
    return value


class Telemetry:
    """Logs decisions and outcomes of one system to a :class:`~closedloop.telemetry.sink.Sink`.

    Parameters
    ----------
    sink:
        Where records go (e.g. :class:`~closedloop.telemetry.SegmentLog` in the project home).
    system:
        The :class:`~closedloop.System` (its schema says which context fields are sensitive;
        its feature set names the logged features).
    flush_interval_ms, flush_events:
        Group commit every so many milliseconds, or as soon as this many events wait.
    buffer_limit:
        Events held in memory at most; beyond it, new events are dropped and counted.
    sampling:
        A :class:`~closedloop.telemetry.Sampling` policy (default: keep every decision).
    key:
        The telemetry key for hashing sensitive fields (see :mod:`~closedloop.telemetry.privacy`).
    clock:
        Nanoseconds since the epoch for ``ingest_ns``.
    compact:
        Write decision batches in the compact form (typed context columns, constant columns
        stored once; :mod:`~closedloop.telemetry.compact`) — what readers get is the same rows
        and values either way. ``False`` writes ``DECISION_SCHEMA`` rows as they are read
        (e.g. for a sink whose consumers do not convert).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        system: Any,
        flush_interval_ms: float = 5,
        flush_events: int = 10_000,
        buffer_limit: int = 1_000_000,
        sampling: Sampling | None = None,
        key: bytes | None = None,
        clock: Callable[[], int] = time.time_ns,
        compact: bool = True,
    ) -> None:
        if not isinstance(sink, Sink):
            raise SpecError(f"Telemetry needs a closedloop.telemetry.Sink. Got {sink!r} instead.")
        if isinstance(flush_interval_ms, bool) or not isinstance(flush_interval_ms, int | float) or not flush_interval_ms > 0:
            raise SpecError(f"Telemetry 'flush_interval_ms' must be a number > 0. Got {flush_interval_ms!r} instead.")
        if sampling is not None and not isinstance(sampling, Sampling):
            raise SpecError(f"Telemetry 'sampling' must be a closedloop.telemetry.Sampling. Got {sampling!r} instead.")
        self.sink = sink
        self.system = system
        self.system_name: str = system.name
        self.schema_version: str = system.schema.version
        self.fingerprint: str = system.features.fingerprint
        self.feature_names: tuple[str, ...] = tuple(system.features.names)
        self.sanitizer = Sanitizer(system.schema, system.unit, key)
        self.flush_interval = float(flush_interval_ms) / 1000.0
        self.flush_events = _positive_int("flush_events", flush_events)
        self.buffer_limit = _positive_int("buffer_limit", buffer_limit)
        self.sampling = sampling if sampling is not None and not sampling.keeps_all else None
        self.clock = clock
        self.writer = sink.writer
        self.compact = bool(compact)
        sz = self.sanitizer
        #: the context fields telemetry writes (sanitized: dropped ones left out), with whether hashed
        self._ctx_fields = [(f, f.name in sz.hashed) for f in system.schema.fields if f.name not in sz.dropped]
        self._ctx_type = pa.struct([pa.field(f.name, pa.string() if hashed else _arrow_type(f))
                                    for f, hashed in self._ctx_fields])
        self._runs: dict[tuple[Any, ...], pa.Array] = {}  # constant columns, built once per (value, length)

        self._lock = threading.Lock()
        self._buf: deque[tuple[Any, ...]] = deque()
        self._pending = 0
        self._seq = 0  # next sequence number
        self._durable = -1
        self._processed = -1  # highest seq the committer has dealt with (written or failed)
        self._done = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._ok = True
        self.counters: dict[str, Any] = {
            "logged": 0, "sampled_out": 0, "dropped_buffer_full": 0, "unlogged_errors": 0,
            "torn_tails": 0, "last_error": None, "commits": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Telemetry:
        """Open the sink and start the committer (done by the first log call if not before)."""
        with self._lock:
            if self._thread is not None:
                return self
            try:
                last = self.sink.open()
                self.sink.feature_set(self.fingerprint, self.feature_names)
            except Exception as e:  # noqa: BLE001 - never raise into the decision path
                last = -1
                self._fail(e, 0)
            self._seq = max(self._seq, last + 1)
            self._durable = self._processed = last
            self._thread = threading.Thread(target=self._run, name=f"closedloop-telemetry-{self.writer}", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> Telemetry:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> int:
        """Commit what is buffered, close the sink; returns the durable watermark."""
        if self._closed:
            return self._durable
        if self._thread is None:
            self.start()
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None:  # start() above made one
            thread.join()
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001
            self._fail(e, 0)
        self._closed = True
        return self._durable

    # -- the caller's side ---------------------------------------------------------------------
    def _put(self, item: tuple[Any, ...], n: int) -> int | None:
        if self._thread is None:
            self.start()
        with self._lock:
            if self._closing or self._pending + n > self.buffer_limit:
                self._refuse(n)
                return None
            seq = self._seq
            self._seq = seq + n
            pending = self._pending = self._pending + n
            self._buf.append((seq, *item))
        if pending - n < self.flush_events <= pending:  # wake the committer once per crossing
            self._wake.set()
        return seq

    def log_decision(self, decision: Any, context: Any = None, features: Sequence[float] | None = None) -> int | None:
        """Log one :class:`~closedloop.Decision` with its validated context and feature tuple.
        Returns its sequence number, or None if sampled out or dropped."""
        p = 1.0
        s = self.sampling
        if s is not None:
            p = s.prob(decision.unit, decision.action, decision.scores)
            if not s.keep(decision.decision_id, decision.unit, p):
                self.counters["sampled_out"] += 1
                return None
        if self._thread is None:
            self.start()
        with self._lock:  # _put, inlined: this is the per-decision path
            if self._closing or self._pending >= self.buffer_limit:
                self._refuse(1)
                return None
            seq = self._seq
            self._seq = seq + 1
            pending = self._pending = self._pending + 1
            self._buf.append((seq, _D, decision, context, features, p))
        if pending == self.flush_events:
            self._wake.set()
        return seq

    def _refuse(self, n: int) -> None:
        """Count events refused (telemetry closed, or the buffer full); called under the lock."""
        if self._closing:
            self.counters["unlogged_errors"] += n
            self.counters["last_error"] = "telemetry is closed"
        else:
            self.counters["dropped_buffer_full"] += n

    def log_batch(self, batch: Any, columns: Any = None, X: Any = None) -> int | None:
        """Log a :class:`~closedloop.DecisionBatch` with its validated ``Columns`` and feature
        matrix. Returns the first sequence number (the kept rows take consecutive numbers)."""
        n = len(batch)
        if n == 0:
            return None
        idx = None
        p = None
        s = self.sampling
        if s is not None:
            units = batch.units.to_pylist()
            scores = {name: batch.score_matrix[:, j] for j, name in enumerate(batch.outputs)}
            p = s.prob_batch(units, batch.action_codes, batch.actions, scores)
            keep = s.keep_batch(batch.decision_ids, units, p)
            if not keep.all():
                idx = np.flatnonzero(keep)
                self.counters["sampled_out"] += n - int(idx.shape[0])
                p = p[idx]
                n = int(idx.shape[0])
                if n == 0:
                    return None
        return self._put((_B, batch, columns, X, idx, p), n)

    def log_outcome(
        self,
        decision_id: str | None = None,
        unit: Any = None,
        *,
        kind: str,
        value: float = 1.0,
        event_ns: int,
        source: str,
        outcome_id: str | None = None,
    ) -> int | None:
        """Log an outcome, linked by ``decision_id`` or by ``unit`` (and its time). Validates every
        field (raises :class:`OutcomeError`); returns the sequence number (see :meth:`flush`)."""
        if isinstance(unit, int) and not isinstance(unit, bool):
            unit = str(unit)
        bad = outcome_field_problem(decision_id, unit, kind, source, outcome_id)
        if bad is not None:
            raise OutcomeError(*bad)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OutcomeError("value", "a finite number", value)
        if isinstance(event_ns, bool) or not isinstance(event_ns, int) or not 0 <= event_ns < 1 << 63:
            raise OutcomeError("event_ns", "an integer of nanoseconds since the epoch (≥ 0)", event_ns)
        if unit is not None:
            unit = self.sanitizer.unit(unit)
        value = float(value)
        if outcome_id is None:
            content = msgspec.json.encode([self.system_name, decision_id, unit, kind, value, event_ns, source])
            outcome_id = hashlib.sha256(content).hexdigest()[:32]
        return self._put((_O, outcome_id, decision_id, unit, kind, value, event_ns, source), 1)

    # -- durability ----------------------------------------------------------------------------
    @property
    def durable_watermark(self) -> int:
        """The highest sequence number up to which everything is durable (-1: nothing yet)."""
        return self._durable

    @property
    def healthy(self) -> bool:
        """False after a failed commit, until a commit succeeds again."""
        return self._ok

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything logged before this call is durable (or its commit failed);
        return the durable watermark."""
        if self._thread is None:
            self.start()
        with self._lock:
            target = self._seq - 1
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._processed < target and self._thread is not None and self._thread.is_alive():
                self._wake.set()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._done.wait(0.05 if left is None else min(left, 0.05))
        return self._durable

    def stats(self) -> dict[str, Any]:
        out = dict(self.counters)
        out["torn_tails"] = getattr(self.sink, "torn_tails", 0)
        out["durable_watermark"] = self._durable
        out["buffered"] = self._pending
        out["healthy"] = self._ok
        out["writer"] = self.writer
        return out

    # -- the committer ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            closing = self._closing
            with self._lock:
                items, self._buf = self._buf, deque()
                n = self._pending
                self._pending = 0
            if items:
                self._commit(items, n)
            if closing:
                with self._lock:
                    if not self._buf:
                        break

    def _commit(self, items: deque[tuple[Any, ...]], n: int) -> None:
        last = items[-1][0] + (_count(items[-1]) - 1)
        decisions = [it for it in items if it[1] != _O]
        outcomes = [it for it in items if it[1] == _O]
        n_dec = n - len(outcomes)
        try:
            now = self.clock()
            if decisions:
                for table in self._decision_tables(decisions, now):  # one per record form
                    self.sink.append("decisions", table)
            if outcomes:
                self.sink.append("outcomes", self._outcome_batch(outcomes, now))
            self.sink.sync()
        except Exception as e:  # noqa: BLE001 - recorded, never raised into the decision path
            self._fail(e, n_dec, n - n_dec)
        else:
            self._ok = True
            self.counters["logged"] += n_dec
            self.counters["outcomes"] = self.counters.get("outcomes", 0) + len(outcomes)
            self.counters["commits"] += 1
            self._durable = last
        with self._done:
            self._processed = last
            self._done.notify_all()

    def _fail(self, e: BaseException, n_decisions: int, n_outcomes: int = 0) -> None:
        self._ok = False
        name = ""
        if isinstance(e, OSError) and e.errno is not None:
            import errno as _errno

            name = f" [{_errno.errorcode.get(e.errno, e.errno)}]"
        self.counters["last_error"] = f"{type(e).__name__}{name}: {e}"
        self.counters["unlogged_errors"] += n_decisions
        self.counters["unlogged_outcomes"] = self.counters.get("unlogged_outcomes", 0) + n_outcomes

    # -- building record batches (committer thread) ------------------------------------------------
    def _decision_tables(self, items: list[tuple[Any, ...]], now: int) -> list[pa.RecordBatch | pa.Table]:
        """The commit's decision records: the single decisions in ``DECISION_SCHEMA`` (a commit
        holds a few dozen: per-column work would cost more than their JSON), the batches in the
        compact form when they can be — one table per form, each appended as its own frame."""
        parts: list[pa.RecordBatch] = []
        singles = [it for it in items if it[1] == _D]
        if singles:
            parts.append(self._singles(singles, now))
        for it in items:
            if it[1] == _B:
                parts.append(self._from_batch(it, now))
        plain = [p for p in parts if p.schema.field(_JSON_AT).name != CONTEXT]
        compact = [p for p in parts if p.schema.field(_JSON_AT).name == CONTEXT]
        out: list[pa.RecordBatch | pa.Table] = []
        for group in (plain, compact):
            if len(group) == 1:
                out.append(group[0])
            elif group:
                out.append(pa.Table.from_batches(_unify(group)))  # one commit, not copied into one batch
        return out

    def _unit(self, u: str) -> str:
        return self.sanitizer.unit(u)

    def _context(self, c: Any) -> str | None:
        if c is None:
            return None
        if isinstance(c, dict):
            return _sanitize_dict(self.sanitizer, c)
        return self.sanitizer.context_json(c)

    def _contexts_json(self, contexts: Sequence[Any]) -> pa.Array:
        """The sanitized JSON of validated contexts (structs), as :meth:`_context` writes each."""
        sz = self.sanitizer
        if sz.plain:
            return _json_strings(contexts)
        return _arr([sz.context_json(c) for c in contexts], pa.string())

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
        for f, hashed in self._ctx_fields:
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
        return pa.StructArray.from_arrays(arrays, fields=list(self._ctx_type))

    def _typed_columns(self, columns: Any, idx: np.ndarray | None) -> pa.StructArray | None:
        """The sanitized contexts of a validated columnar batch (``Schema.validate_batch``) as
        typed columns, or None when a column is not of its field's type."""
        arrays = []
        sel = None if idx is None else _arr(idx)
        for (f, hashed), want in zip(self._ctx_fields, self._ctx_type, strict=True):
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
        return pa.StructArray.from_arrays(arrays, fields=list(self._ctx_type))

    def _single_contexts(self, contexts: list[Any]) -> pa.Array:
        st = self.system.schema.struct
        if self.sanitizer.plain and all(type(c) is st for c in contexts):
            return _json_strings(contexts)
        return _arr([self._context(c) for c in contexts], pa.string())

    def _singles(self, items: list[tuple[Any, ...]], now: int) -> pa.RecordBatch:
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
        ]
        return pa.RecordBatch.from_arrays(cols, schema=DECISION_SCHEMA)

    def _from_batch(self, it: tuple[Any, ...], now: int) -> pa.RecordBatch:
        seq0, _, b, columns, X, idx, p = it
        n_all = len(b)
        sel = np.arange(n_all) if idx is None else idx
        n = int(sel.shape[0])
        take = (lambda a: a) if idx is None else (lambda a: a.take(_arr(idx)))
        units = take(b.units)
        if self.sanitizer.unit_hashed:
            units = _arr([self.sanitizer.unit(u) for u in units.to_pylist()], pa.string())
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
                typed = pa.nulls(n, self._ctx_type)
        if typed is not None:
            context = typed
        elif contexts is not None:  # the validated structs: encoded as the single path encodes them
            context = self._contexts_json(contexts)
        elif columns is not None:
            names = columns.names()
            lists = [columns.pylist(k) for k in names]
            ctx = [_sanitize_dict(self.sanitizer, dict(zip(names, (col[i] for col in lists), strict=True))) for i in sel.tolist()]
            context = _arr(ctx, pa.string())
        else:
            context = _nulls(n, pa.string())
        compact = typed is not None
        const = self._once if compact else _const
        if X is not None:
            Xs = np.asarray(X, dtype=np.float64)
            features = _matrix_lists(Xs if idx is None else Xs[sel])
        else:
            features = _nulls(n, pa.list_(pa.float64()))
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
        actions = _arr(list(b.actions), pa.string()).take(_arr(b.action_codes[sel]))
        whys = _arr(list(b.reasons), pa.string()).take(_arr(b.why_codes[sel]))
        if b.guardrail_codes is not None:
            g = b.guardrail_codes[sel]
            gnames = _arr([*b.guardrails, None], pa.string())
            guard = gnames.take(_arr(np.where(g < 0, len(b.guardrails), g)))
        else:
            guard = _nulls(n, pa.string())
        if b.shadows:
            enc = msgspec.json.encode
            sh = []
            for i in sel.tolist():
                sh.append(enc([
                    {"bundle_version": v, "scores": dict(zip(outs, Sm[i].tolist(), strict=True)), "action": b.actions[int(codes[i])]}
                    for v, outs, Sm, codes in b.shadows
                ]).decode())
            shadows = _arr(sh, pa.string())
        else:
            shadows = _nulls(n, pa.string())
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
            _matrix_lists(S),
            actions,
            _arr(props if idx is None else props[sel]),
            (self._once(1.0, n, pa.float64()) if compact else _arr(np.ones(n))) if p is None else _arr(np.asarray(p, dtype=np.float64)),
            whys,
            guard,
            shadows,
            self._once(bool(b.killswitch), n, pa.bool_()) if compact else _arr(np.full(n, bool(b.killswitch))),
        ]
        return _record_batch(cols, compact)

    def _outcome_batch(self, items: list[tuple[Any, ...]], now: int) -> pa.RecordBatch:
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
        ]
        return pa.RecordBatch.from_arrays(cols, schema=OUTCOME_SCHEMA)


def _count(item: tuple[Any, ...]) -> int:
    if item[1] == _B:
        idx = item[5]
        return len(item[2]) if idx is None else int(idx.shape[0])
    return 1


_json_strings = json_strings
_JSON_AT = DECISION_SCHEMA.get_field_index("context_json")


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


def _const(value: str, n: int) -> pa.Array:
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
    if not sz.plain:
        d = dict(d)
        for name in sz.dropped:
            d.pop(name, None)
        for name in sz.hashed:
            if name in d:
                d[name] = sz.hash(d[name])
    return msgspec.json.encode(d).decode()

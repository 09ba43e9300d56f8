"""The telemetry writer: :class:`Telemetry` logs a system's decisions and outcomes to a sink.

The caller's thread (the decision path) only decides sampling, validates outcomes, takes a
sequence number and puts references on the buffer of the group commit
(:mod:`~closedloop.telemetry.committer`): no encoding, no disk. A background thread wakes every
``flush_interval_ms`` (or as soon as ``flush_events`` are waiting), builds the commit's Arrow
record batches per stream (:mod:`~closedloop.telemetry.encoding`: features as ``list<double>``,
scores, shadows JSON via msgspec; a batch's sanitized contexts as typed columns — the compact form
of :mod:`~closedloop.telemetry.compact`, which readers turn back into ``context_json`` — single
decisions' contexts as JSON, as are a batch's when a context is not a validated struct or with
``compact=False``), appends them to the sink (one frame per form) and calls ``sink.sync()`` (fsync).
The **durable watermark** is the highest sequence number made durable; :meth:`Telemetry.flush`
returns it once everything logged before the call is durable (or failed).

Failures never reach the decision path: a full buffer drops and counts (``dropped_buffer_full``);
a write error (disk full …) is recorded in ``last_error``, the decisions of the failed commit are
counted in ``unlogged_errors`` and :attr:`Telemetry.healthy` turns False until a commit succeeds.

``ingest_ns`` is stamped once per group commit (the time telemetry wrote the record, at most one
flush interval after the call).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from closedloop.errors import OutcomeError, SpecError
from closedloop.telemetry.committer import Committer
from closedloop.telemetry.encoding import BATCH, DECISION, OUTCOME, RANKED, RANKED_BATCH, Encoder
from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.ranked import CANDIDATE_MODES, RankedEncoder
from closedloop.telemetry.records import MAX_ID, outcome_field_problem
from closedloop.telemetry.sampling import Sampling
from closedloop.telemetry.sink import Sink
from closedloop.telemetry.slates import Slates

__all__ = ["OutcomeError", "Telemetry"]


def _tops(batch: Any) -> list[str]:
    """The slot-1 candidate id of each request of a ranking batch ("" for an empty slate)."""
    off, roff, ranked, ids = batch.offsets.tolist(), batch.rank_offsets.tolist(), batch.ranked, batch.candidate_ids
    return [ids[off[i] + int(ranked[roff[i]])] if roff[i + 1] > roff[i] else "" for i in range(len(batch))]

_D, _B, _O = DECISION, BATCH, OUTCOME  # buffer item kinds (closedloop.telemetry.encoding)


def _sample_prob(method: str, value: Any) -> float:
    """A reporter's sampling probability, checked: a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise SpecError(f"The 'sample_prob' parameter of Telemetry.{method} must be a number in (0, 1]. Got {value!r} instead.")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"Telemetry '{name}' must be a positive integer. Got {value!r} instead.")
    return value


class Telemetry(Committer):
    """Logs decisions and outcomes of one system to a :class:`~closedloop.telemetry.sink.Sink`.

    The group commit (buffer, thread, durable watermark, counters, :meth:`flush`, :meth:`close`,
    :meth:`stats`) is the :class:`~closedloop.telemetry.committer.Committer` this is; what a
    commit writes, its :class:`~closedloop.telemetry.encoding.Encoder`.

    Parameters
    ----------
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
    candidates:
        What a ranking system's records hold of its candidates (:mod:`~closedloop.telemetry.ranked`):
        ``"full"`` — their fields as JSON and its digest; ``"digest"`` — ids, scores and the digest
        only (large catalogues).
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
        candidates: str = "full",
    ) -> None:
        if not isinstance(sink, Sink):
            raise SpecError(f"Telemetry needs a closedloop.telemetry.Sink. Got {sink!r} instead.")
        if isinstance(flush_interval_ms, bool) or not isinstance(flush_interval_ms, int | float) or not flush_interval_ms > 0:
            raise SpecError(f"Telemetry 'flush_interval_ms' must be a number > 0. Got {flush_interval_ms!r} instead.")
        if sampling is not None and not isinstance(sampling, Sampling):
            raise SpecError(f"Telemetry 'sampling' must be a closedloop.telemetry.Sampling. Got {sampling!r} instead.")
        self.system = system
        self.system_name: str = system.name
        self.schema_version: str = system.schema.version
        self.fingerprint: str = system.features.fingerprint
        self.feature_names: tuple[str, ...] = tuple(system.features.names)
        self.sanitizer = Sanitizer(system.schema, system.unit, key)
        flush_interval = float(flush_interval_ms) / 1000.0
        flush_events = _positive_int("flush_events", flush_events)
        buffer_limit = _positive_int("buffer_limit", buffer_limit)
        self.sampling = sampling if sampling is not None and not sampling.keeps_all else None
        self.compact = bool(compact)
        if candidates not in CANDIDATE_MODES:
            raise SpecError(f"Telemetry 'candidates' must be one of {list(CANDIDATE_MODES)}. Got {candidates!r} instead.")
        self.candidates = candidates
        ranked = None
        if getattr(system, "candidate_schema", None) is not None:
            ranked = RankedEncoder(system, self.sanitizer, sink.writer, candidates, key)
        #: the slates of recent ranking decisions, which a slot's outcome is checked against
        self.slates = Slates()
        encoder = Encoder(system, self.sanitizer, sink.writer, self.compact, ranked)
        super().__init__(sink, encoder, flush_interval=flush_interval, flush_events=flush_events,
                         buffer_limit=buffer_limit, clock=clock)

    def _open_sink(self) -> int:
        """Open the sink and register the feature set the logged features are named by."""
        last = self.sink.open()
        self.sink.feature_set(self.fingerprint, self.feature_names)
        return last

    # -- the caller's side ---------------------------------------------------------------------
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
        with self._lock:  # Committer._put, inlined: this is the per-decision path
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

    def log_reported(self, decision: Any, context: Any = None, features: Sequence[float] | None = None,
                     sample_prob: float = 1.0) -> int | None:
        """Log a :class:`~closedloop.Decision` made elsewhere and reported back (a client's, which
        decided locally) with its validated context and feature tuple, as a decision logged here
        is. No sampling policy applies: the reporter sampled already, and ``sample_prob`` is the
        probability with which it kept this record. Returns its sequence number, or None when
        the buffer refused it (full or closing)."""
        sample_prob = _sample_prob("log_reported", sample_prob)
        return self._put((_D, decision, context, features, sample_prob), 1)

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
            idx, p, n = self._sampled(s.keep_batch(batch.decision_ids, units, p), p, n)
            if n == 0:
                return None
        return self._put((_B, batch, columns, X, idx, p), n)

    def _sampled(self, keep: np.ndarray, p: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray, int]:
        """What a batch keeps after sampling (``keep``: one bool per row): ``(the kept rows'
        indices, or None for all; their sampling probabilities; how many)`` — the others counted
        as sampled out."""
        if keep.all():
            return None, p, n
        idx = np.flatnonzero(keep)
        self.counters["sampled_out"] += n - int(idx.shape[0])
        return idx, p[idx], int(idx.shape[0])

    def log_ranked(self, decision: Any, context: Any = None) -> int | None:
        """Log one ranking decision (:class:`~closedloop.experience.ranked.RankedDecision`) with the
        request it decided (the mapping with its ``"candidates"``, referenced, not copied).
        Returns its sequence number, or None if sampled out or dropped."""
        p = 1.0
        s = self.sampling
        if s is not None:
            p = s.prob(decision.unit, decision.ranking[0] if decision.ranking else "", {})
            if not s.keep(decision.decision_id, decision.unit, p):
                self.counters["sampled_out"] += 1
                return None
        self.slates.add(decision)
        return self._put((RANKED, decision, context, p), 1)

    def log_reported_ranked(self, decision: Any, context: Any = None, sample_prob: float = 1.0) -> int | None:
        """Log a ranking decision made elsewhere and reported back (a client's) with the request it
        ranked (the mapping with its ``"candidates"``), as :meth:`log_ranked` logs one made here. No
        sampling policy applies: ``sample_prob`` is the probability the reporter kept it with.
        Returns its sequence number, or None when the buffer refused it (full or closing)."""
        sample_prob = _sample_prob("log_reported_ranked", sample_prob)
        self.slates.add(decision)
        return self._put((RANKED, decision, context, sample_prob), 1)

    def log_ranked_batch(self, batch: Any, requests: Any = None, candidates: Any = None) -> int | None:
        """Log a :class:`~closedloop.experience.ranked.RankedDecisionBatch` with the requests and
        candidates batches it decided (referenced). Returns the first sequence number."""
        n = len(batch)
        if n == 0:
            return None
        idx = None
        p = None
        s = self.sampling
        if s is not None:
            top = _tops(batch)
            p = np.array([s.prob(u, a, {}) for u, a in zip(batch.units, top, strict=True)], dtype=np.float64)
            idx, p, n = self._sampled(s.keep_batch(batch.decision_ids, list(batch.units), p), p, n)
            if n == 0:
                return None
        self.slates.add_batch(batch)
        return self._put((RANKED_BATCH, batch, requests, candidates, idx, p), n)

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
        candidate: str | None = None,
        slot: int | None = None,
    ) -> int | None:
        """Log an outcome, linked by ``decision_id`` or by ``unit`` (and its time). Validates every
        field (raises :class:`OutcomeError`); returns the sequence number (see :meth:`flush`).

        For a ranking decision, ``candidate`` (its id) or ``slot`` (1-based) names the slot the
        outcome is for: a slot beyond the decision's slate, or a candidate not in it, is refused
        when this telemetry logged the decision (it remembers the most recent slates); a
        candidate of a decision it does not know is written, and the dataset build counts it
        (``not_in_slate``) if it was not shown."""
        if isinstance(unit, int) and not isinstance(unit, bool):
            unit = str(unit)
        bad = outcome_field_problem(decision_id, unit, kind, source, outcome_id)
        if bad is not None:
            raise OutcomeError(*bad)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OutcomeError("value", "a finite number", value)
        if isinstance(event_ns, bool) or not isinstance(event_ns, int) or not 0 <= event_ns < 1 << 63:
            raise OutcomeError("event_ns", "an integer of nanoseconds since the epoch (≥ 0)", event_ns)
        if candidate is not None or slot is not None:
            candidate = self._slot_candidate(decision_id, candidate, slot)
        if unit is not None:
            unit = self.sanitizer.unit(unit)
        value = float(value)
        if outcome_id is None:
            fields: list[Any] = [self.system_name, decision_id, unit, kind, value, event_ns, source]
            if candidate is not None:
                fields.append(candidate)
            outcome_id = hashlib.sha256(msgspec.json.encode(fields)).hexdigest()[:32]
        return self._put((_O, outcome_id, decision_id, unit, kind, value, event_ns, source, candidate), 1)

    def _slot_candidate(self, decision_id: str | None, candidate: Any, slot: Any) -> str:
        """The candidate id an outcome is for, from ``candidate`` and/or ``slot``, checked against
        the decision's slate when it is known (raises :class:`OutcomeError`)."""
        if candidate is not None and (not isinstance(candidate, str) or not candidate or len(candidate) > MAX_ID):
            raise OutcomeError("candidate", f"a non-empty string of at most {MAX_ID} characters (a candidate id)", candidate)
        slate = self.slates.get(decision_id) if decision_id is not None else None
        if slot is not None:
            if isinstance(slot, bool) or not isinstance(slot, int) or slot < 1:
                raise OutcomeError("slot", "an integer ≥ 1 (the 1-based slot)", slot)
            if slate is None:
                raise OutcomeError("slot", "given for a ranking decision this telemetry logged recently (else name the candidate)", slot)
            if slot > len(slate):
                raise OutcomeError("slot", f"an integer in 1..{len(slate)} (the slots decision {decision_id!r} showed)", slot)
            if candidate is not None and candidate != slate[slot - 1]:
                raise OutcomeError("candidate", f"the candidate in slot {slot} ({slate[slot - 1]!r}) when both are given", candidate)
            return slate[slot - 1]
        if slate is not None and candidate not in slate:
            raise OutcomeError("candidate", f"one of the candidates decision {decision_id!r} showed {slate[:10]}", candidate)
        return str(candidate)

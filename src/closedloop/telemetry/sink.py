"""Where telemetry goes: the :class:`Sink` interface and an in-memory sink for tests.

A sink receives Arrow record batches of :data:`~closedloop.telemetry.records.DECISION_SCHEMA` (or
its compact form: :mod:`~closedloop.telemetry.compact`, which readers convert with
``to_decision_schema``) or :data:`~closedloop.telemetry.records.OUTCOME_SCHEMA` rows from one writer
(:class:`~closedloop.telemetry.Telemetry`), makes them durable on :meth:`Sink.sync`, and is
closed once. The embedded implementation is :class:`~closedloop.telemetry.segments.SegmentLog`
(append-only segment files in the project home).

Production sinks implement the same four methods and nothing else changes:

- a distributed log: :class:`~closedloop.telemetry.sink_transport.TransportSink` publishes each
  commit's batches (Arrow IPC frames) to a :class:`~closedloop.telemetry.transport.Transport` — NATS
  JetStream here; Kafka would be another ``Transport`` passing the same conformance checks — and
  syncs once the log acknowledged them, spilling to a local segment log while it is unreachable;
  collectors write the log into the same Parquet layout (:mod:`~closedloop.telemetry.collector`).
- an object-store lake (not built): ``append`` buffers, ``sync`` uploads an immutable object per
  commit (``<stream>/<writer>-<seq range>.arrow``), which plays the role of a segment frame; the
  interface stays open, and nothing fakes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.telemetry.compact import is_decision_form, to_decision_schema
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["MemorySink", "STREAMS", "Sink"]

#: The streams a sink accepts, with their record schemas.
STREAMS: dict[str, pa.Schema] = {"decisions": DECISION_SCHEMA, "outcomes": OUTCOME_SCHEMA}


def check_stream(stream: str, batch: pa.RecordBatch | pa.Table) -> None:
    """Refuse a batch that is not of the stream's record schema (for decisions: or one of its
    compact forms, :mod:`~closedloop.telemetry.compact`)."""
    schema = STREAMS.get(stream)
    if schema is None:
        raise SpecError(f"The telemetry stream must be one of {sorted(STREAMS)}. Got {stream!r} instead.")
    if stream == "decisions" and is_decision_form(batch.schema):
        return
    if not batch.schema.equals(schema):
        raise SpecError(f"A {stream!r} batch must have the {stream} record schema. Got {batch.schema} instead.")


class Sink:
    """The interface every telemetry sink implements.

    ``writer`` names the writer whose records this sink holds (unique per process and writer,
    so two processes never share a file). ``open()`` prepares the sink and returns the highest
    sequence number this writer already made durable (``-1`` if none), so a restarted writer
    continues its numbering. ``append`` takes one commit's records of a stream (a
    ``RecordBatch``, or a ``Table`` of several when the commit gathered batches logged apart) and
    may buffer; only ``sync`` promises durability.
    ``torn_tails`` counts incomplete frames found (and cut off) when the sink reopened its files.
    """

    writer: str = "writer"
    torn_tails: int = 0

    def open(self) -> int:
        return -1

    def append(self, stream: str, batch: pa.RecordBatch | pa.Table) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def feature_set(self, fingerprint: str, names: Sequence[str]) -> None:
        """Record the feature names of a fingerprint (the join expands ``features`` with them)."""


class MemorySink(Sink):
    """Keeps batches in memory; ``synced`` holds what a ``sync`` made "durable" (for tests).
    Decision records are kept as readers get them (``DECISION_SCHEMA``, whatever form the writer
    appended)."""

    def __init__(self, writer: str = "memory") -> None:
        self.writer = writer
        self.pending: dict[str, list[pa.RecordBatch]] = {s: [] for s in STREAMS}
        self.synced: dict[str, list[pa.RecordBatch]] = {s: [] for s in STREAMS}
        self.feature_sets: dict[str, list[str]] = {}
        self.closed = False

    def append(self, stream: str, batch: pa.RecordBatch | pa.Table) -> None:
        check_stream(stream, batch)
        batch = to_decision_schema(batch)
        self.pending[stream].extend(batch.to_batches() if isinstance(batch, pa.Table) else [batch])

    def sync(self) -> None:
        for s, batches in self.pending.items():
            self.synced[s].extend(batches)
            batches.clear()

    def close(self) -> None:
        self.sync()
        self.closed = True

    def feature_set(self, fingerprint: str, names: Sequence[str]) -> None:
        self.feature_sets[fingerprint] = list(names)

    def table(self, stream: str) -> pa.Table:
        return pa.Table.from_batches(self.synced[stream], schema=STREAMS[stream])

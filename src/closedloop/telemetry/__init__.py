"""Telemetry: the durable, append-only log of decisions and outcomes.

Record schemas are in :mod:`closedloop.telemetry.records` (and the compact form writers append
in :mod:`~closedloop.telemetry.compact`: ``to_decision_schema`` is what every reader applies); sampling in
:mod:`~closedloop.telemetry.sampling`; what of a context may be written in
:mod:`~closedloop.telemetry.privacy`. The writer (:class:`Telemetry`) puts records on a buffer
and group-commits them to a :class:`Sink` — the embedded :class:`SegmentLog` in the project
home — and :class:`TelemetryStore` compacts segments into day-partitioned Parquet, reads,
forgets, applies retention and counts. With several hosts the sink publishes to a distributed
log instead (:mod:`~closedloop.telemetry.transport`, :mod:`~closedloop.telemetry.sink_transport`,
:mod:`~closedloop.telemetry.jetstream`) and collectors (:mod:`~closedloop.telemetry.collector`)
write it into the same lake.
"""

from __future__ import annotations

from closedloop.telemetry.compact import to_decision_schema
from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA
from closedloop.telemetry.sampling import Sampling
from closedloop.telemetry.segments import SegmentLog, read_segments
from closedloop.telemetry.sink import MemorySink, Sink
from closedloop.telemetry.store import TelemetryStore
from closedloop.telemetry.writer import OutcomeError, Telemetry

__all__ = [
    "DECISION_SCHEMA",
    "MemorySink",
    "OUTCOME_SCHEMA",
    "OutcomeError",
    "Sampling",
    "Sanitizer",
    "SegmentLog",
    "Sink",
    "Telemetry",
    "TelemetryStore",
    "read_segments",
    "to_decision_schema",
]

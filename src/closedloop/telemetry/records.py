"""What telemetry writes: the decision and outcome records, as Arrow schemas.

This module is the contract between the writer (``closedloop.telemetry``), the embedded store
(segments, compacted Parquet), the join (``closedloop.loop``) and any later sink (Kafka, a lake):
every one of them reads and writes exactly these columns.

Decision records keep what learning needs (DESIGN.md, principle 3): ids, unit, time, the
bundle version and flight, the context (sanitized JSON: sensitive fields hashed or dropped),
the features as computed at decision time, scores, action, propensity, the sampling probability
(so counts can be re-weighted by 1/p), the reason and guardrail, shadows, the kill switch.

Outcome records carry what happened: linked by ``decision_id``, or by ``unit`` and time when the
reporter does not know the decision; a kind, a value, the event time, the ingest time (set by
telemetry) and the source (who reported it).
"""

from __future__ import annotations

import re

import pyarrow as pa

__all__ = ["DECISION_SCHEMA", "OUTCOME_KIND", "OUTCOME_SCHEMA", "SCHEMA_VERSION"]

#: What an outcome kind may be: a letter, then letters, digits, '_', '.', ':' or '-' (':' for
#: kinds such as ``chose:go_back``, the choice a prompt's user made). Ingest and the service share it.
OUTCOME_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]*$")

#: Version of these record schemas (not of a system's context schema).
SCHEMA_VERSION = 1

DECISION_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),  # per writer, increasing
        pa.field("writer", pa.string(), nullable=False),  # the writer (process) that logged it
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("system", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),  # sensitive units are hashed like fields
        pa.field("timestamp_ns", pa.int64(), nullable=False),  # decision time (the runtime's clock)
        pa.field("ingest_ns", pa.int64(), nullable=False),  # when telemetry accepted it (wall clock)
        pa.field("bundle_version", pa.string(), nullable=False),
        pa.field("flight", pa.string()),  # null: production
        pa.field("schema_version", pa.string(), nullable=False),  # the system's context schema
        pa.field("feature_fingerprint", pa.string(), nullable=False),
        pa.field("context_json", pa.string()),  # sanitized context; null when not sampled in
        pa.field("features", pa.list_(pa.float64())),  # in the order of the fingerprint's names
        pa.field("score_names", pa.list_(pa.string())),
        pa.field("scores", pa.list_(pa.float64())),
        pa.field("action", pa.string(), nullable=False),
        pa.field("propensity", pa.float64(), nullable=False),
        pa.field("sample_prob", pa.float64(), nullable=False),  # probability this record was kept
        pa.field("why", pa.string(), nullable=False),
        pa.field("guardrail", pa.string()),
        pa.field("shadows_json", pa.string()),  # [{"bundle_version", "scores", "action"}] or null
        pa.field("killswitch", pa.bool_(), nullable=False),
    ]
)

OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("writer", pa.string(), nullable=False),
        pa.field("outcome_id", pa.string(), nullable=False),  # given, or a hash of the content
        pa.field("decision_id", pa.string()),  # null: link by unit + time
        pa.field("system", pa.string(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("kind", pa.string(), nullable=False),  # e.g. reported_phish, chose:continue
        pa.field("value", pa.float64(), nullable=False),
        pa.field("event_ns", pa.int64(), nullable=False),  # when it happened
        pa.field("ingest_ns", pa.int64(), nullable=False),  # when telemetry accepted it
        pa.field("source", pa.string(), nullable=False),  # who reported it
    ]
)

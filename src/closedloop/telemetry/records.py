"""What telemetry writes: the decision and outcome records, as Arrow schemas.

This module is the contract between the writer (``closedloop.telemetry``), the embedded store
(segments, compacted Parquet), the join (``closedloop.datasets``) and any later sink (Kafka, a lake):
every one of them reads and writes exactly these columns.

Decision records keep what learning needs (docs/architecture.md, "Principles"): ids, unit, time, the
bundle version and flight, the context (sanitized JSON: sensitive fields hashed or dropped),
the features as computed at decision time, scores, action, propensity, the sampling probability
(so counts can be re-weighted by 1/p), the reason and guardrail, shadows, the kill switch.

Outcome records carry what happened: linked by ``decision_id``, or by ``unit`` and time when the
reporter does not know the decision; a kind, a value, the event time, the ingest time (set by
telemetry) and the source (who reported it).

The outcome rules are here, once, and every boundary applies them (the service's
``POST /v1/outcomes``, ``closedloop outcomes ingest`` and the loop's inbox, ``Telemetry.log_outcome``):
:func:`outcome_field_problem` for the identifying fields, :func:`check_outcome_fields` for a whole
report as received — its value, its event time (defaulted when absent to the time the boundary
received it) — naming the field, the rule and the value of the first one that breaks its rule.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pyarrow as pa

from closedloop.errors import clip_value

__all__ = [
    "DECISION_SCHEMA",
    "EVENT_TIME_RULE",
    "OUTCOME_KIND",
    "OUTCOME_SCHEMA",
    "SCHEMA_VERSION",
    "VALUE_RULE",
    "OutcomeProblem",
    "check_outcome_fields",
    "event_ns_of",
    "outcome_field_problem",
]

#: What an outcome kind may be: a letter, then letters, digits, '_', '.', ':' or '-' (':' for
#: kinds such as ``chose:go_back``, the choice a prompt's user made). Ingest and the service share it.
OUTCOME_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]*$")

#: Bounds on a reporter's strings, the same at every boundary (``Telemetry.log_outcome``, the
#: service, ``closedloop ingest``): they become telemetry values, metric labels, rate-limit keys,
#: and — a source — the name an abuse verdict, an alert line and a report print.
MAX_ID = 128
MAX_SOURCE = 200
MAX_KIND = 200
MAX_UNIT = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def outcome_field_problem(
    decision_id: object, unit: object, kind: object, source: object, outcome_id: object
) -> tuple[str, str, object] | None:
    """The first of an outcome's identifying fields that breaks its rule, as ``(field, rule,
    value)``, or None. ``unit`` is already a string (or None); a source may not hold control
    characters (a source named ``"x\nALERT …"`` would forge a line in the alert log). The value
    is clipped for showing (:func:`~closedloop.errors.clip_value`: a 7 MB unit is named by its
    first 40 characters and its length, never echoed whole)."""
    bad = _problem(decision_id, unit, kind, source, outcome_id)
    if bad is None:
        return None
    return bad[0], bad[1], clip_value(bad[2])


def _problem(
    decision_id: object, unit: object, kind: object, source: object, outcome_id: object
) -> tuple[str, str, object] | None:
    if decision_id is not None and (not isinstance(decision_id, str) or not decision_id or len(decision_id) > MAX_ID):
        return "decision_id", f"a non-empty string of at most {MAX_ID} characters, or absent", decision_id
    if unit is not None and (not isinstance(unit, str) or not unit or len(unit) > MAX_UNIT):
        return "unit", f"a non-empty string of at most {MAX_UNIT} characters, or absent", unit
    if decision_id is None and unit is None:
        return "decision_id", "given when 'unit' is not (an outcome links to a decision or a unit)", None
    if not isinstance(kind, str) or not kind or len(kind) > MAX_KIND or not OUTCOME_KIND.match(kind):
        return ("kind", f"a name of letters, digits, '_', '.', ':' or '-' starting with a letter "
                        f"(at most {MAX_KIND} characters)", kind)
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE or _CONTROL.search(source):
        return "source", f"a non-empty string of at most {MAX_SOURCE} characters without control characters", source
    if outcome_id is not None and (not isinstance(outcome_id, str) or not outcome_id or len(outcome_id) > MAX_ID):
        return "outcome_id", f"a non-empty string of at most {MAX_ID} characters, or absent", outcome_id
    return None

#: What an outcome's ``value`` must be (JSON ``true`` is not a number here).
VALUE_RULE = "a finite number"
#: What an outcome's ``event_time`` must be (absent: the time the boundary received the report).
EVENT_TIME_RULE = "nanoseconds since the epoch (an integer ≥ 0) or an ISO-8601 time"
_SYSTEM_RULE = f"a non-empty string of at most {MAX_ID} characters, or absent"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OutcomeProblem(NamedTuple):
    """The first field of an outcome report that breaks its rule (``value`` clipped for showing)."""

    field: str
    rule: str
    value: Any


def event_ns_of(t: object) -> int:
    """An event time as nanoseconds since the epoch: an integer as is; an ISO-8601 string (a
    naive one is UTC; ``Z`` accepted) or a :class:`~datetime.datetime` (a Parquet timestamp)
    converted. Raises ``ValueError`` for anything else (and ``OverflowError`` past a datetime's
    range); the range ``[0, 2**63)`` is the caller's check."""
    if isinstance(t, int) and not isinstance(t, bool):
        return t
    if isinstance(t, str):
        s = t.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        t = datetime.fromisoformat(s)
    if isinstance(t, datetime):
        dt = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
        delta = dt - _EPOCH
        ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
        return ns + int(getattr(t, "nanosecond", 0))  # a pandas Timestamp keeps nanoseconds
    raise ValueError(f"not an event time: {type(t).__name__}")


def check_outcome_fields(
    decision_id: object,
    unit: object,
    kind: object,
    source: object,
    outcome_id: object,
    value: object,
    event_time: object,
    *,
    default_event_ns: int,
    system: object = None,
    time_field: str = "event_time",
) -> tuple[str | None, str | None, str, float, int, str, str | None] | OutcomeProblem:
    """One outcome report, as received, against every outcome rule → ``(decision_id, unit, kind,
    value, event_ns, source, outcome_id)`` ready for ``Telemetry.log_outcome``, or the
    :class:`OutcomeProblem` of the first field that breaks its rule.

    The fields may be any decoded JSON (or Parquet) value: the rules, not a decoder's types,
    judge them, so every boundary names the same field, rule and value. ``unit`` may be an
    integer (it becomes its decimal string); ``value`` must be :data:`VALUE_RULE` (default 1.0 is
    the caller's); ``event_time`` :data:`EVENT_TIME_RULE` (or a datetime) — absent (None), it is
    ``default_event_ns``, the time the boundary received the report. ``time_field`` names the
    time in a problem (``closedloop outcomes ingest`` also reads ``event_ns``).
    """
    if system is not None and (not isinstance(system, str) or not system or len(system) > MAX_ID):
        return OutcomeProblem("system", _SYSTEM_RULE, clip_value(system))
    if isinstance(unit, int) and not isinstance(unit, bool):
        unit = str(unit)
    bad = outcome_field_problem(decision_id, unit, kind, source, outcome_id)
    if bad is not None:
        return OutcomeProblem(*bad)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return OutcomeProblem("value", VALUE_RULE, clip_value(value))
    try:
        v = float(value)
    except OverflowError:  # an integer past a float's range
        return OutcomeProblem("value", VALUE_RULE, clip_value(value))
    if not math.isfinite(v):
        return OutcomeProblem("value", VALUE_RULE, v)
    if event_time is None:
        t = default_event_ns
    else:
        try:
            t = event_ns_of(event_time)
        except (ValueError, OverflowError, TypeError):
            return OutcomeProblem(time_field, EVENT_TIME_RULE, clip_value(event_time))
        if not 0 <= t < 1 << 63:
            return OutcomeProblem(time_field, EVENT_TIME_RULE, clip_value(event_time))
    return (decision_id, unit, kind, v, t, source, outcome_id)  # type: ignore[return-value]


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

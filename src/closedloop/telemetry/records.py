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
from typing import Annotated, Any, NamedTuple

import msgspec
import pyarrow as pa

from closedloop.base.times import parse_time
from closedloop.errors import clip_value

__all__ = [
    "DECISION_SCHEMA",
    "EVENT_TIME_RULE",
    "OUTCOME_KIND",
    "OUTCOME_SCHEMA",
    "RANKING_COLUMNS",
    "SCHEMA_VERSION",
    "VALUE_RULE",
    "CANDIDATE_ID_RULE",
    "SLOT_RULE",
    "Checked",
    "OutcomeLine",
    "OutcomeProblem",
    "OutcomeReport",
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


class Checked(NamedTuple):
    """An outcome report that passed the rules: the arguments of ``Telemetry.log_outcome``."""

    decision_id: str | None
    unit: str | None
    kind: str
    value: float
    event_ns: int
    source: str
    outcome_id: str | None
    candidate_id: str | None = None
    slot: int | None = None


class OutcomeProblem(NamedTuple):
    """The first field of an outcome report that breaks its rule (``value`` clipped for showing)."""

    field: str
    rule: str
    value: Any


#: An event time as nanoseconds since the epoch (:func:`closedloop.base.times.parse_time`).
event_ns_of = parse_time


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
    candidate_id: object = None,
    slot: object = None,
) -> Checked | OutcomeProblem:
    """One outcome report, as received, against every outcome rule → a :class:`Checked`
    ``(decision_id, unit, kind, value, event_ns, source, outcome_id, candidate_id, slot)`` ready
    for ``Telemetry.log_outcome``, or the :class:`OutcomeProblem` of the first field that breaks
    its rule.

    The fields may be any decoded JSON (or Parquet) value: the rules, not a decoder's types,
    judge them, so every boundary names the same field, rule and value. ``unit`` may be an
    integer (it becomes its decimal string); ``value`` must be :data:`VALUE_RULE` (default 1.0 is
    the caller's); ``event_time`` :data:`EVENT_TIME_RULE` (or a datetime) — absent (None), it is
    ``default_event_ns``, the time the boundary received the report. ``time_field`` names the
    time in a problem (``closedloop outcomes ingest`` also reads ``event_ns``).

    An outcome of a ranking decision may name the slot it is for: ``candidate_id`` (the id of the
    candidate shown) or ``slot`` (1-based, as ``Telemetry.log_outcome`` counts them), at most one
    of them; a ``slot`` only with ``decision_id`` (it is a position in one decision's slate; a
    ``candidate_id`` may go with ``unit`` and time, for a reward linked that way). Whether the
    candidate was in the slate, or the slot within it, is ``Telemetry.log_outcome``'s check: it
    knows the recent slates.
    """
    if system is not None and (not isinstance(system, str) or not system or len(system) > MAX_ID):
        return OutcomeProblem("system", _SYSTEM_RULE, clip_value(system))
    if isinstance(unit, int) and not isinstance(unit, bool):
        unit = str(unit)
    bad = outcome_field_problem(decision_id, unit, kind, source, outcome_id)
    if bad is not None:
        return OutcomeProblem(*bad)
    if candidate_id is not None or slot is not None:
        slot_bad = _slot_problem(decision_id, candidate_id, slot)
        if slot_bad is not None:
            return slot_bad
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
    return Checked(decision_id, unit, kind, v, t, source, outcome_id, candidate_id, slot)  # type: ignore[arg-type]


#: What an outcome's ``candidate_id`` must be.
CANDIDATE_ID_RULE = f"a non-empty string of at most {MAX_ID} characters (the id of a candidate the decision showed), or absent"
#: The largest ``slot`` an outcome may name (a slate is never longer than a request's candidates).
MAX_SLOT = 1_000_000
#: What an outcome's ``slot`` must be.
SLOT_RULE = f"an integer from 1 to {MAX_SLOT} (the 1-based slot of the decision's slate), or absent"


def _slot_problem(decision_id: object, candidate_id: object, slot: object) -> OutcomeProblem | None:
    """The problem of an outcome's ``candidate_id`` / ``slot``, or None (see :func:`check_outcome_fields`)."""
    if candidate_id is not None and (not isinstance(candidate_id, str) or not candidate_id or len(candidate_id) > MAX_ID):
        return OutcomeProblem("candidate_id", CANDIDATE_ID_RULE, clip_value(candidate_id))
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or not 1 <= slot <= MAX_SLOT):
        return OutcomeProblem("slot", SLOT_RULE, clip_value(slot))
    if candidate_id is not None and slot is not None:
        return OutcomeProblem("slot", "absent when 'candidate_id' is given (name the slot by one of them)", slot)
    if slot is not None and decision_id is None:
        return OutcomeProblem("decision_id", "given when 'slot' is (a slot belongs to one decision's slate)", None)
    return None


def _shown_as(schema: dict[str, Any]) -> Any:
    """A field decoded as any JSON value (the outcome rules judge it, not the decoder) that the
    OpenAPI document still describes by ``schema``."""
    return Annotated[Any, msgspec.Meta(extra_json_schema=schema)]


_STR: dict[str, Any] = {"type": "string"}
_NULL: dict[str, Any] = {"type": "null"}


class OutcomeReport(msgspec.Struct, kw_only=True):
    """One outcome, as reported: linked by ``decision_id`` (or by ``unit`` and time).

    ``event_time`` is nanoseconds since the epoch or an ISO-8601 string (default: when the
    service receives it — a client that retries should set it, so that the retry is the same
    report). ``outcome_id`` is optional: telemetry derives one from the content, so a repeated
    report is deduplicated when datasets are built. An outcome of a ranking decision may name
    the slot it is for: ``candidate_id`` (the candidate shown) or ``slot`` (1-based), not both.
    """

    # The one outcome record every boundary decodes: the service's body (POST /v1/outcomes; this
    # class's name and docstring are its OpenAPI schema) and, as :class:`OutcomeLine`, a line of
    # an outcome file. Every field is decoded as it comes and judged by the outcome rules
    # (check_outcome_fields): a refused field is named with its rule and value ("Outcome field
    # 'value' must be a finite number. Got 'high' instead."), never by the decoder's types. The
    # annotations keep the OpenAPI document's types.
    kind: _shown_as(_STR)  # type: ignore[valid-type]
    source: _shown_as(_STR)  # type: ignore[valid-type]
    decision_id: _shown_as({"anyOf": [_STR, _NULL]}) = None  # type: ignore[valid-type]
    unit: _shown_as({"anyOf": [_STR, {"type": "integer"}, _NULL]}) = None  # type: ignore[valid-type]
    value: _shown_as({"type": "number"}) = 1.0  # type: ignore[valid-type]
    event_time: _shown_as({"anyOf": [{"type": "integer"}, _STR, _NULL]}) = None  # type: ignore[valid-type]
    outcome_id: _shown_as({"anyOf": [_STR, _NULL]}) = None  # type: ignore[valid-type]
    system: _shown_as({"anyOf": [_STR, _NULL]}) = None  # type: ignore[valid-type]
    candidate_id: _shown_as({"anyOf": [_STR, _NULL]}) = None  # type: ignore[valid-type]
    slot: _shown_as({"anyOf": [{"type": "integer", "minimum": 1}, _NULL]}) = None  # type: ignore[valid-type]

    def _time(self) -> tuple[object, str]:
        return self.event_time, "event_time"

    def check(self, default_event_ns: int, *, system: object = None) -> Checked | OutcomeProblem:
        """This report against the outcome rules (:func:`check_outcome_fields`, its ``system``
        checked when given) → the arguments of ``Telemetry.log_outcome`` (:class:`Checked`), or
        the :class:`OutcomeProblem` of the first field that breaks its rule."""
        t, time_field = self._time()
        return check_outcome_fields(self.decision_id, self.unit, self.kind, self.source, self.outcome_id, self.value,
                                    t, default_event_ns=default_event_ns, system=system, time_field=time_field,
                                    candidate_id=self.candidate_id, slot=self.slot)


class OutcomeLine(OutcomeReport, kw_only=True):
    """One outcome as reported (before telemetry sets ``ingest_ns``, ``seq`` and ``writer``).

    Every field is decoded as it comes (any JSON value) and judged by the shared outcome rules,
    so a refused line names the field, the rule and the value as the service does.
    """

    # an outcome file's line: an :class:`OutcomeReport` whose kind and source the rules (not the
    # decoder) require, with ``event_ns`` as another name for an integer ``event_time``
    kind: Any = None  # required: the rules name it when absent, as when it is empty
    source: Any = None
    event_ns: Any = None

    def _time(self) -> tuple[object, str]:
        return (self.event_time, "event_time") if self.event_time is not None else (self.event_ns, "event_ns")


#: Version of these record schemas (not of a system's context schema). 2: the ranking columns
#: (``candidate_ids`` … ``slot_propensities``) and the outcome's ``candidate_id``, appended as
#: nullable columns — records of version 1 are read as version 2 with those columns null
#: (:func:`~closedloop.telemetry.compact.to_decision_schema`, ``pq.read_table(schema=…)``, DuckDB's
#: ``union_by_name``).
SCHEMA_VERSION = 2

#: The columns a ranking decision fills (null in every other decision); appended last, so that a
#: record written before they existed is a prefix of the schema.
RANKING_COLUMNS = ("candidate_ids", "candidate_scores", "candidates_json", "candidates_digest", "slate", "slot_propensities")

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
        pa.field("shadows_json", pa.string()),  # [{"bundle_version", "scores", "action"}] or null; a ranking's: telemetry/ranked.py
        pa.field("killswitch", pa.bool_(), nullable=False),
        # a ranking decision (null otherwise); its ``action`` is the slot-1 candidate id, its
        # ``propensity`` that slot's propensity, its ``score_names`` / ``scores`` null
        pa.field("candidate_ids", pa.list_(pa.string())),  # the request's candidates, input order
        pa.field("candidate_scores", pa.list_(pa.float64())),  # one per candidate (empty: kill switch)
        pa.field("candidates_json", pa.string()),  # [{candidate fields}, …] in input order; null: digest only
        pa.field("candidates_digest", pa.string()),  # sha256 of the candidates' JSON (always, for a ranking)
        pa.field("slate", pa.list_(pa.string())),  # the candidate ids shown, slot by slot
        pa.field("slot_propensities", pa.list_(pa.float64())),  # P(slot j's candidate | slots < j)
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
        pa.field("candidate_id", pa.string()),  # the slot's candidate a ranking outcome is for; null: the decision
    ]
)

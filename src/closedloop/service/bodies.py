"""Request and response bodies: decoded once at the edge (msgspec), encoded once on the way out.

``POST /v1/decide`` takes one context (a JSON object) or a batch (a JSON array of objects).
A batch is decoded straight into the System's validated context structs when every row is
valid; otherwise each row is validated alone, so one bad row never sinks the batch.
``POST /v1/outcomes`` takes one :class:`OutcomeReport` or an array of them.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from ..errors import ContextError
from ..loop.ingest import _iso_ns
from ..schema import Schema
from ..telemetry.records import OUTCOME_KIND
from .problems import context_problem, invalid

__all__ = ["ContextDecoder", "OutcomeReport", "check_outcome"]

_KIND = OUTCOME_KIND
#: Bounds on caller-supplied strings (they become telemetry values and metric labels).
MAX_ID = 128
MAX_SOURCE = 200
MAX_KIND = 200
MAX_UNIT = 512


class OutcomeReport(msgspec.Struct, kw_only=True):
    """One outcome, as reported: linked by ``decision_id`` (or by ``unit`` and time).

    ``event_time`` is nanoseconds since the epoch or an ISO-8601 string (default: when the
    service receives it — a client that retries should set it, so that the retry is the same
    report). ``outcome_id`` is optional: telemetry derives one from the content, so a repeated
    report is deduplicated when datasets are built.
    """

    kind: str
    source: str
    decision_id: str | None = None
    unit: str | int | None = None
    value: float = 1.0
    event_time: int | str | None = None
    outcome_id: str | None = None
    system: str | None = None


def first_byte(body: bytes) -> int:
    """The first non-whitespace byte of ``body`` (0 when there is none)."""
    for b in body[:64]:
        if b not in b" \t\r\n":
            return b
    stripped = body.lstrip()
    return stripped[0] if stripped else 0


class ContextDecoder:
    """Decodes one context or a batch of contexts of one :class:`~closedloop.Schema`."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.one = schema.decode_json
        self._rows = msgspec.json.Decoder(list[schema.struct])  # type: ignore[name-defined]
        self._any = msgspec.json.Decoder()

    def batch(self, body: bytes, max_batch: int) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
        """Decode a JSON array of contexts → (valid contexts, their indices, problems of the rest).

        Raises ``msgspec.DecodeError`` for malformed JSON and :class:`TooLarge` past
        ``max_batch`` rows."""
        try:
            rows = self._rows.decode(body)
        except msgspec.ValidationError:
            raw = self._any.decode(body)
            if not isinstance(raw, list):
                raise
            if len(raw) > max_batch:
                raise TooLarge(len(raw)) from None
            good: list[Any] = []
            index: list[int] = []
            problems: list[dict[str, Any]] = []
            validate = self.schema.validate
            for i, r in enumerate(raw):
                try:
                    good.append(validate(r))
                except ContextError as e:
                    problems.append(context_problem(e, index=i))
                    continue
                index.append(i)
            return good, index, problems
        if len(rows) > max_batch:
            raise TooLarge(len(rows))
        return rows, list(range(len(rows))), []


class TooLarge(Exception):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.n = n


def check_outcome(o: OutcomeReport, system: str, now_ns: int, index: int | None) -> dict[str, Any] | tuple[Any, ...]:
    """Validate one decoded report at the edge → the arguments of ``Telemetry.log_outcome``
    as a tuple ``(decision_id, unit, kind, value, event_ns, source, outcome_id)``, or a
    problem-details entry naming the field, the rule and the value."""
    if o.system is not None and o.system != system:
        return invalid("outcome", "system", f"this service's system '{system}' (or absent)", o.system, index=index)
    if not o.kind or len(o.kind) > MAX_KIND or not _KIND.match(o.kind):
        return invalid("outcome", "kind", f"a name of letters, digits, '_', '.', ':' or '-' starting with a letter (at most {MAX_KIND})", o.kind, index=index)
    if not o.source or len(o.source) > MAX_SOURCE:
        return invalid("outcome", "source", f"a non-empty string of at most {MAX_SOURCE} characters", o.source, index=index)
    if o.decision_id is not None and (not o.decision_id or len(o.decision_id) > MAX_ID):
        return invalid("outcome", "decision_id", f"a non-empty string of at most {MAX_ID} characters, or absent", o.decision_id, index=index)
    unit = o.unit
    if isinstance(unit, int):
        unit = str(unit)
    if unit is not None and (not unit or len(unit) > MAX_UNIT):
        return invalid("outcome", "unit", f"a non-empty string of at most {MAX_UNIT} characters, or absent", o.unit, index=index)
    if o.decision_id is None and unit is None:
        return invalid("outcome", "decision_id", "given when 'unit' is not (an outcome links to a decision or a unit)", None, index=index)
    if not math.isfinite(o.value):
        return invalid("outcome", "value", "a finite number", o.value, index=index)
    t = o.event_time
    if t is None:
        t = now_ns
    elif isinstance(t, str):
        try:
            t = _iso_ns(t)
        except (ValueError, OverflowError):
            return invalid("outcome", "event_time", "nanoseconds since the epoch or an ISO-8601 time", o.event_time, index=index)
    if not 0 <= t < 2**63:
        return invalid("outcome", "event_time", "nanoseconds since the epoch, >= 0", o.event_time, index=index)
    if o.outcome_id is not None and (not o.outcome_id or len(o.outcome_id) > MAX_ID):
        return invalid("outcome", "outcome_id", f"a non-empty string of at most {MAX_ID} characters, or absent", o.outcome_id, index=index)
    return (o.decision_id, unit, o.kind, float(o.value), t, o.source, o.outcome_id)

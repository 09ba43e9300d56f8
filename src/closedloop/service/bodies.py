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
from ..telemetry.records import outcome_field_problem
from .problems import context_problem, invalid

__all__ = ["ContextDecoder", "OutcomeReport", "check_outcome"]


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
    unit = o.unit
    if isinstance(unit, int):
        unit = str(unit)
    bad = outcome_field_problem(o.decision_id, unit, o.kind, o.source, o.outcome_id)
    if bad is not None:
        field, rule, value = bad
        return invalid("outcome", field, rule, o.unit if field == "unit" else value, index=index)
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
    return (o.decision_id, unit, o.kind, float(o.value), t, o.source, o.outcome_id)

"""Request and response bodies: decoded once at the edge (msgspec), encoded once on the way out.

``POST /v1/decide`` takes one context (a JSON object) or a batch (a JSON array of objects).
A batch is decoded straight into the System's validated context structs when every row is
valid; otherwise each row is validated alone, so one bad row never sinks the batch. A batch is
never read past its ``max_batch + 1``-th item (:class:`BoundedArray`): a longer one is refused
before any per-row work, whatever follows.
``POST /v1/outcomes`` takes one :class:`OutcomeReport` or an array of them.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import msgspec

from closedloop.context.schema import Schema
from closedloop.errors import ContextError
from closedloop.service.problems import context_problem, invalid
from closedloop.telemetry.records import Checked, OutcomeProblem, OutcomeReport

__all__ = ["BoundedArray", "ContextDecoder", "OutcomeReport", "TooLarge", "check_outcome"]


def first_byte(body: bytes) -> int:
    """The first non-whitespace byte of ``body`` (0 when there is none)."""
    for b in body[:64]:
        if b not in b" \t\r\n":
            return b
    stripped = body.lstrip()
    return stripped[0] if stripped else 0


class TooLarge(Exception):
    """A batch with more than ``limit`` items (``limit + 1`` were read; the rest never is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BoundedArray:
    """Decodes a JSON array of at most ``max_items`` items of ``item_type`` — and refuses a longer
    one at its ``max_items + 1``-th item, without reading (or building) anything past it.

    msgspec checks a list's length only once it has built the whole list; an array-like Struct
    with ``max_items`` optional fields that forbids unknown (trailing) ones stops at the first
    item too many instead. A 8 MiB body of four million ``0``s is refused after reading
    ``max_items`` of them instead of being decoded whole (docs/performance.md, "The service").

    :meth:`decode` is the typed fast path (one msgspec decode, as fast as ``list[item_type]``);
    when it fails, :meth:`items` returns each item's raw JSON (:class:`msgspec.Raw`, a view of
    the body, nothing decoded) for per-item validation — which callers run off the event loop.
    """

    __slots__ = ("_raw", "_typed", "max_items")

    def __init__(self, item_type: Any, max_items: int) -> None:
        self.max_items = max_items
        self._typed = _bounded_decoder(item_type, max_items)
        self._raw = _bounded_decoder(msgspec.Raw, max_items)

    def decode(self, body: bytes) -> list[Any]:
        """The items, each decoded as ``item_type``. Raises ``msgspec.ValidationError`` (an invalid
        item, or more than ``max_items``: tell them apart with :meth:`items`) and
        ``msgspec.DecodeError`` (malformed JSON)."""
        return _items(self._typed.decode(body), self.max_items)

    def items(self, body: bytes) -> list[msgspec.Raw]:
        """Each item's raw JSON. Raises :class:`TooLarge` past ``max_items`` items (reading no
        further), ``msgspec.ValidationError`` when the body is not an array and
        ``msgspec.DecodeError`` for malformed JSON (within the first ``max_items + 1`` items)."""
        try:
            return _items(self._raw.decode(body), self.max_items)
        except msgspec.ValidationError:
            if first_byte(body) == 91:  # an array: the only rule a Raw item can break is the count
                raise TooLarge(self.max_items) from None
            raise


def _bounded_decoder(item_type: Any, n: int) -> msgspec.json.Decoder:
    fields = [(f"i{i}", item_type, msgspec.UNSET) for i in range(n)]
    probe = msgspec.defstruct("BoundedArray", fields, array_like=True, forbid_unknown_fields=True)
    return msgspec.json.Decoder(probe)


def _items(probe: Any, n: int) -> list[Any]:
    """The set fields of an array-like probe: a prefix (items fill the fields in order)."""
    t = msgspec.structs.astuple(probe)
    unset = msgspec.UNSET
    return list(t[:bisect_left(range(n), True, key=lambda i: t[i] is unset)])


class ContextDecoder:
    """Decodes one context or a batch of at most ``max_batch`` contexts of one
    :class:`~closedloop.Schema`."""

    def __init__(self, schema: Schema, max_batch: int) -> None:
        self.schema = schema
        self.one = schema.decode_json
        self.rows = BoundedArray(schema.struct, max_batch)

    def batch(self, body: bytes) -> list[Any]:
        """A JSON array of valid contexts → their structs, in one msgspec decode. Raises
        ``msgspec.ValidationError`` when a row is invalid (then :meth:`rows_one_by_one`) or the
        batch is too long, ``msgspec.DecodeError`` for malformed JSON."""
        return self.rows.decode(body)

    def rows_one_by_one(self, items: list[msgspec.Raw]) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
        """Validate each raw row alone (as a single context is) → (valid contexts, their indices,
        problems of the rest). Pure: run it in a worker thread."""
        good: list[Any] = []
        index: list[int] = []
        problems: list[dict[str, Any]] = []
        one = self.one
        for i, r in enumerate(items):
            try:
                good.append(one(r))
            except ContextError as e:
                problems.append(context_problem(e, index=i))
                continue
            except (msgspec.DecodeError, RecursionError):
                problems.append(invalid("context", "<context>", "a JSON object nested at most as deep as the decoder reads",
                                        "<nested too deeply>", index=i))
                continue
            index.append(i)
        return good, index, problems


def check_outcome(o: OutcomeReport, system: str, now_ns: int, index: int | None) -> dict[str, Any] | Checked:
    """Validate one decoded report at the edge → the arguments of ``Telemetry.log_outcome``
    (:class:`~closedloop.telemetry.records.Checked`: ``decision_id, unit, kind, value, event_ns,
    source, outcome_id, candidate_id, slot``), or a problem-details entry naming the field, the
    rule and the value. The rules are the ones
    ``closedloop outcomes ingest`` applies (:func:`~closedloop.telemetry.records.check_outcome_fields`);
    a report without ``event_time`` happened at ``now_ns`` (when the service received it)."""
    if o.system is not None and o.system != system:
        return invalid("outcome", "system", f"this service's system '{system}' (or absent)", o.system, index=index)
    got = o.check(now_ns)
    if isinstance(got, OutcomeProblem):
        return invalid("outcome", got.field, got.rule, got.value, index=index)
    return got

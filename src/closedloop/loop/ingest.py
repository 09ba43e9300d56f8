"""Reading outcome files (``closedloop outcomes ingest FILE.jsonl|FILE.parquet``).

Each line (JSON lines) or row (Parquet) is one outcome::

    {"decision_id": "…", "kind": "reported_phish", "value": 1, "event_time": "2026-01-02T03:04:05Z",
     "source": "user:42", "outcome_id": "…"}

Rules: ``decision_id`` or ``unit`` is required (``unit`` links by unit and time); ``kind`` is a
name (letters, digits, ``_ . -``, starting with a letter); ``value`` a finite number (default
1.0); ``event_time`` nanoseconds since the epoch (an integer) or an ISO-8601 string (a naive one
is UTC) — ``event_ns`` is accepted as another name for the integer form; ``source`` a non-empty
string; ``outcome_id`` optional (telemetry derives one from the content when absent);
``system`` optional. Unknown keys are ignored.

A malformed line is rejected alone, with its line number (1-based) and a reason; every good
line is kept.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from ..errors import clip_value
from ..telemetry.records import outcome_field_problem

__all__ = ["OUTCOME_LINE_SCHEMA", "OutcomeLine", "read_outcomes"]


class OutcomeLine(msgspec.Struct, kw_only=True):
    """One outcome as reported (before telemetry sets ``ingest_ns``, ``seq`` and ``writer``)."""

    kind: str
    source: str
    decision_id: str | None = None
    unit: str | int | None = None
    value: float = 1.0
    event_time: int | str | None = None
    event_ns: int | None = None
    outcome_id: str | None = None
    system: str | None = None


#: The columns :func:`read_outcomes` returns.
OUTCOME_LINE_SCHEMA = pa.schema(
    [
        pa.field("outcome_id", pa.string()),
        pa.field("decision_id", pa.string()),
        pa.field("system", pa.string()),
        pa.field("unit", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("event_ns", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


def _iso_ns(s: str) -> int:
    t = s.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _check(o: OutcomeLine, cols: dict[str, list[Any]]) -> str | None:
    """Append a valid outcome's fields to ``cols``; or return why it is refused."""
    unit = o.unit
    if isinstance(unit, int):
        unit = str(unit)
    if o.decision_id is None and unit is None:
        return "'decision_id' or 'unit' is required. Got neither instead."
    bad = outcome_field_problem(o.decision_id, unit, o.kind, o.source, o.outcome_id)
    if bad is not None:
        field, rule, value = bad
        return f"'{field}' must be {rule}. Got {value!r} instead."
    if not math.isfinite(o.value):
        return f"'value' must be a finite number. Got {o.value!r} instead."
    t = o.event_time if o.event_time is not None else o.event_ns
    if t is None:
        return "'event_time' (ns or ISO-8601) is required. Got nothing instead."
    if isinstance(t, str):
        try:
            t = _iso_ns(t)
        except ValueError:
            return f"'event_time' must be nanoseconds or an ISO-8601 time. Got {clip_value(t)!r} instead."
    if not (0 <= t < 2**63):
        return f"'event_time' must be nanoseconds ≥ 0. Got {clip_value(t)!r} instead."
    cols["outcome_id"].append(o.outcome_id)
    cols["decision_id"].append(o.decision_id)
    cols["system"].append(o.system)
    cols["unit"].append(unit)
    cols["kind"].append(o.kind)
    cols["value"].append(float(o.value))
    cols["event_ns"].append(t)
    cols["source"].append(o.source)
    return None


def _reason(e: Exception) -> str:
    msg = str(e)
    return msg if msg else type(e).__name__


def read_outcomes(path: Path | str) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Read and validate an outcome file → (the valid outcomes, [(line number, reason), …]).

    ``.jsonl`` / ``.json`` / ``.ndjson``: one JSON object a line (blank lines are skipped);
    ``.parquet``: one row a line (line = row index + 1). The table has the columns of
    :data:`OUTCOME_LINE_SCHEMA`, in file order.
    """
    path = Path(path)
    cols: dict[str, list[Any]] = {n: [] for n in OUTCOME_LINE_SCHEMA.names}
    errors: list[tuple[int, str]] = []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        convert = msgspec.convert
        rows = pq.read_table(path).to_pylist()
        for i, row in enumerate(rows, 1):
            try:
                o = convert(row, OutcomeLine)
            except msgspec.ValidationError as e:
                errors.append((i, _reason(e)))
                continue
            why = _check(o, cols)
            if why is not None:
                errors.append((i, why))
    else:
        decode = msgspec.json.Decoder(OutcomeLine).decode
        with open(path, "rb") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    o = decode(line)
                except msgspec.DecodeError as e:  # includes ValidationError
                    errors.append((i, _reason(e)))
                    continue
                why = _check(o, cols)
                if why is not None:
                    errors.append((i, why))
    return pa.table(cols, schema=OUTCOME_LINE_SCHEMA), errors

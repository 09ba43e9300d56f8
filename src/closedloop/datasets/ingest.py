"""Reading outcome files (``closedloop outcomes ingest FILE.jsonl|FILE.parquet``).

Each line (JSON lines) or row (Parquet) is one outcome::

    {"decision_id": "…", "kind": "reported_phish", "value": 1, "event_time": "2026-01-02T03:04:05Z",
     "source": "user:42", "outcome_id": "…"}

Rules — the service's (``POST /v1/outcomes``), from one place,
:func:`closedloop.telemetry.records.check_outcome_fields`: ``decision_id`` or ``unit`` is required
(``unit`` links by unit and time; an integer unit becomes its decimal string); ``kind`` is a name
(letters, digits, ``_ . : -``, starting with a letter); ``value`` a finite number (default 1.0);
``event_time`` nanoseconds since the epoch (an integer) or an ISO-8601 string (a naive one is UTC;
a Parquet timestamp column works too) — ``event_ns`` is accepted as another name for the integer
form; ``source`` a non-empty string; ``outcome_id`` optional (telemetry derives one from the
content when absent); ``system`` optional. An outcome of a ranking decision may name its slot:
``candidate_id`` (the candidate shown) or ``slot`` (1-based, with ``decision_id``), at most one;
whether the decision showed that candidate (or had that slot) is checked where the outcome is
logged (``Telemetry.log_outcome``; ``closedloop outcomes ingest`` reads the decisions' slates from
telemetry for it). Unknown keys are ignored.

A line without an event time happened when the file was received: its modification time (as the
service takes the time it receives a report). The default is the file's, not the clock's, so
ingesting the same file again — after a failed commit, or the cycle retrying its inbox — gives
the same outcomes with the same derived ``outcome_id`` (deduplicated), never a second copy.
``read_outcomes(path, default_event_ns=…)`` sets another default.

A malformed line is rejected alone, with its line number (1-based) and a reason; every good
line is kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.telemetry.records import OutcomeLine, OutcomeProblem

__all__ = ["OUTCOME_LINE_SCHEMA", "OutcomeLine", "read_outcomes"]


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
        pa.field("candidate_id", pa.string()),  # the slot's candidate of a ranking decision (or null)
        pa.field("slot", pa.int64()),  # the slot (1-based) of a ranking decision (or null)
        pa.field("line", pa.int64(), nullable=False),  # the line (1-based; Parquet: row index + 1) it came from
    ]
)


def _check(o: OutcomeLine, cols: dict[str, list[Any]], default_event_ns: int, line: int) -> str | None:
    """Append a valid outcome's fields to ``cols``; or return why it is refused."""
    got = o.check(default_event_ns, system=o.system)
    if isinstance(got, OutcomeProblem):
        return f"'{got.field}' must be {got.rule}. Got {got.value!r} instead."
    decision_id, unit, kind, value, event_ns, source, outcome_id, candidate_id, slot = got
    cols["outcome_id"].append(outcome_id)
    cols["decision_id"].append(decision_id)
    cols["system"].append(o.system)
    cols["unit"].append(unit)
    cols["kind"].append(kind)
    cols["value"].append(value)
    cols["event_ns"].append(event_ns)
    cols["source"].append(source)
    cols["candidate_id"].append(candidate_id)
    cols["slot"].append(slot)
    cols["line"].append(line)
    return None


def _reason(e: Exception) -> str:
    msg = str(e)
    return msg if msg else type(e).__name__


def read_outcomes(
    path: Path | str, *, default_event_ns: int | None = None
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Read and validate an outcome file → (the valid outcomes, [(line number, reason), …]).

    ``.jsonl`` / ``.json`` / ``.ndjson``: one JSON object a line (blank lines are skipped);
    ``.parquet``: one row a line (line = row index + 1). The table has the columns of
    :data:`OUTCOME_LINE_SCHEMA`, in file order. A line without ``event_time`` (or ``event_ns``)
    gets ``default_event_ns``; None (the default): the file's modification time, when it was
    received (see the module's documentation).
    """
    path = Path(path)
    if default_event_ns is None:
        default_event_ns = os.stat(path).st_mtime_ns
    elif isinstance(default_event_ns, bool) or not isinstance(default_event_ns, int) \
            or not 0 <= default_event_ns < 1 << 63:
        raise SpecError(f"The 'default_event_ns' parameter of read_outcomes must be nanoseconds since the epoch "
                        f"(an integer ≥ 0) or None. Got {default_event_ns!r} instead.")
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
            why = _check(o, cols, default_event_ns, i)
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
                why = _check(o, cols, default_event_ns, i)
                if why is not None:
                    errors.append((i, why))
    return pa.table(cols, schema=OUTCOME_LINE_SCHEMA), errors

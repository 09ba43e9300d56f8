"""Time as closedloop keeps it: integer nanoseconds since the Unix epoch, shown in ISO-8601 UTC.

One place for the conversions. Each format below is the one its callers have always written
(records, reports and messages compare them as strings), so they differ on purpose:

* :func:`iso` — ``2026-01-05T10:00:00.000000Z``, to the microsecond (the registry's times);
* :func:`iso_short` — ``2026-01-05T10:00:00Z``, with ``.ffffffZ`` only when there is a fraction;
* :func:`iso_seconds` — ``2026-01-05T10:00:00Z`` (drift windows, lock holders, alert keys);
* :func:`iso_date` — ``2026-01-05`` (a day), :func:`date_of_day` — the same from a day index.

:func:`iso` and :func:`iso_short` truncate to the microsecond; :func:`iso_seconds` and
:func:`iso_date` go through ``ns / 1e9`` (the nearest microsecond), as they always have.
:func:`parse_time` reads a time back (nanoseconds, an ISO-8601 string, a datetime).
"""

from __future__ import annotations

import datetime as _dt
import time

__all__ = ["DAY_NS", "NS_PER_S", "date_of_day", "iso", "iso_date", "iso_seconds", "iso_short", "now_ns",
           "ns_of", "parse_time", "utc"]

#: Nanoseconds in a second and in a day.
NS_PER_S = 1_000_000_000
DAY_NS = 86_400 * NS_PER_S

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def now_ns() -> int:
    """The wall clock in nanoseconds since the epoch (``time.time_ns``)."""
    return time.time_ns()


def utc(ns: int) -> _dt.datetime:
    """``ns`` as an aware UTC datetime, truncated to the microsecond."""
    return _dt.datetime.fromtimestamp(ns // 1000 / 1e6, _dt.UTC)


def iso(ns: int | None) -> str | None:
    """Nanoseconds since the epoch → ISO-8601 UTC with microseconds (``…Z``); None → None."""
    if ns is None:
        return None
    return utc(ns).isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso_short(ns: int) -> str:
    """ISO-8601 UTC: to the second, or to the microsecond when the time has a fraction."""
    return utc(ns).strftime("%Y-%m-%dT%H:%M:%SZ" if ns % NS_PER_S == 0 else "%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(ns: int) -> str:
    """ISO-8601 UTC to the second (``2026-01-05T10:00:00Z``)."""
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_date(ns: int) -> str:
    """The UTC day of ``ns`` (``2026-01-05``)."""
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.UTC).strftime("%Y-%m-%d")


def date_of_day(day_index: int) -> str:
    """The date of the ``day_index``-th day since 1970-01-01 (``ns // DAY_NS``), ISO-8601."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=int(day_index))).isoformat()


def ns_of(t: _dt.datetime) -> int:
    """A datetime (naive means UTC) → nanoseconds since the epoch, exactly (integer arithmetic;
    a pandas Timestamp's nanoseconds kept)."""
    dt = t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)
    delta = dt - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000
    return ns + int(getattr(t, "nanosecond", 0))


def parse_time(value: object, *, strict: bool = False) -> int:
    """A time as nanoseconds since the epoch: an integer as is; an ISO-8601 string (a naive one is
    UTC; a trailing ``Z`` or ``z`` accepted, surrounding blanks ignored) or a
    :class:`~datetime.datetime` (a Parquet timestamp) converted by :func:`ns_of`. ``strict``: a
    string is read as written (no blanks around it; ``Z`` only in upper case). Raises
    ``ValueError`` for anything else (and ``OverflowError`` past a datetime's range); the range
    ``[0, 2**63)`` is the caller's check, and so is the message naming the field."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if strict:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            s = value.strip()
            if s.endswith(("Z", "z")):
                s = s[:-1] + "+00:00"
            value = _dt.datetime.fromisoformat(s)
    if isinstance(value, _dt.datetime):
        return ns_of(value)
    raise ValueError(f"not an event time: {type(value).__name__}")

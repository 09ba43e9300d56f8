"""Cadence windows: the hours, days, weeks, months and quarters goals are measured over.

Windows are in UTC on the runtime's clock (simulated time in a world): ``hourly`` (whole hours),
``daily`` (calendar days), ``weekly`` (ISO weeks, Monday to Monday), ``monthly`` (calendar
months), ``quarterly`` (January, April, July, October). A window is ``[start_ns, end_ns)`` and has
a key that names it (``2026-01-05T13``, ``2026-01-05``, ``2026-W02``, ``2026-01``, ``2026-Q1``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

from closedloop.base.times import ns_of, utc
from closedloop.errors import SpecError

__all__ = ["CADENCES", "Window", "window_at", "windows_between"]

CADENCES = ("hourly", "daily", "weekly", "monthly", "quarterly")


@dataclass(frozen=True, slots=True)
class Window:
    cadence: str
    key: str
    start_ns: int
    end_ns: int


def _key(cadence: str, s: _dt.datetime) -> str:
    if cadence == "hourly":
        return s.strftime("%Y-%m-%dT%H")
    if cadence == "daily":
        return s.strftime("%Y-%m-%d")
    if cadence == "weekly":
        y, w, _ = s.isocalendar()
        return f"{y}-W{w:02d}"
    if cadence == "monthly":
        return s.strftime("%Y-%m")
    return f"{s.year}-Q{(s.month - 1) // 3 + 1}"


def _start(cadence: str, t: _dt.datetime) -> _dt.datetime:
    if cadence == "hourly":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if cadence == "daily":
        return day
    if cadence == "weekly":
        return day - _dt.timedelta(days=day.weekday())
    if cadence == "monthly":
        return day.replace(day=1)
    return day.replace(day=1, month=(day.month - 1) // 3 * 3 + 1)


def _next(cadence: str, s: _dt.datetime) -> _dt.datetime:
    if cadence == "hourly":
        return s + _dt.timedelta(hours=1)
    if cadence == "daily":
        return s + _dt.timedelta(days=1)
    if cadence == "weekly":
        return s + _dt.timedelta(days=7)
    months = 1 if cadence == "monthly" else 3
    m = s.month - 1 + months
    return s.replace(year=s.year + m // 12, month=m % 12 + 1)


def _check(cadence: str) -> None:
    if cadence not in CADENCES:
        raise SpecError(f"A cadence must be one of {list(CADENCES)}. Got {cadence!r} instead.")


def window_at(cadence: str, t_ns: int) -> Window:
    """The window of ``cadence`` that contains the time ``t_ns``."""
    _check(cadence)
    t = utc(t_ns)
    s = _start(cadence, t)
    return Window(cadence, _key(cadence, s), ns_of(s), ns_of(_next(cadence, s)))


def windows_between(cadence: str, since_ns: int, until_ns: int) -> Iterator[Window]:
    """Every window of ``cadence`` that overlaps ``[since_ns, until_ns)``, in time order."""
    _check(cadence)
    if until_ns <= since_ns:
        return
    w = window_at(cadence, since_ns)
    s = utc(w.start_ns)
    while ns_of(s) < until_ns:
        n = _next(cadence, s)
        yield Window(cadence, _key(cadence, s), ns_of(s), ns_of(n))
        s = n

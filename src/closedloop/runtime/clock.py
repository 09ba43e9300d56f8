"""Clocks: where a decision's timestamp comes from.

The runtime takes a clock so that the simulator runs on simulated time and tests are
reproducible. A clock is any object with ``now_ns() -> int`` (nanoseconds since the Unix epoch).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from closedloop.errors import SpecError

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    """Wall-clock time (``time.time_ns``)."""

    __slots__ = ("now_ns",)

    def __init__(self) -> None:
        self.now_ns = time.time_ns


class ManualClock:
    """A clock that moves only when told: simulations and tests.

    ``step_ns`` advances it after every reading (0 keeps it still).
    """

    __slots__ = ("_t", "step_ns")

    def __init__(self, start_ns: int = 1_767_225_600 * 10**9, step_ns: int = 0) -> None:
        if isinstance(start_ns, bool) or not isinstance(start_ns, int) or start_ns < 0:
            raise SpecError(f"ManualClock 'start_ns' must be an integer ≥ 0. Got {start_ns!r} instead.")
        if isinstance(step_ns, bool) or not isinstance(step_ns, int) or step_ns < 0:
            raise SpecError(f"ManualClock 'step_ns' must be an integer ≥ 0. Got {step_ns!r} instead.")
        self._t = start_ns
        self.step_ns = step_ns

    def now_ns(self) -> int:
        t = self._t
        self._t = t + self.step_ns
        return t

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise SpecError(f"A clock can only move forward. Got {seconds!r} seconds instead.")
        self._t += int(round(seconds * 1e9))

    def set_ns(self, t: int) -> None:
        if t < self._t:
            raise SpecError(f"A clock can only move forward. Got {t} < {self._t} instead.")
        self._t = t

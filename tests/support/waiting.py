"""Deadline waits for tests: poll until a condition holds, or fail once a generous deadline
passes — never sleep a fixed time and then assert exact figures (a loaded machine makes that
flaky), never bound a wall-clock duration tightly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: How long a condition that should hold "within moments" may take on a loaded, shared machine.
DEADLINE = 30.0


def eventually(pred: Callable[[], Any], timeout: float = DEADLINE, step: float = 0.02, what: str = "") -> float:
    """Call ``pred`` until it returns a true value; the seconds it took. Raises AssertionError
    (naming ``what`` and ``pred``'s last value) once ``timeout`` seconds have passed."""
    t0 = time.monotonic()
    while True:
        last = pred()
        if last:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            raise AssertionError(f"{what or 'condition'} not met within {timeout} s (last: {last!r})")
        time.sleep(step)


def steadily(pred: Callable[[], Any], times: int, timeout: float = DEADLINE, step: float = 0.02,
             what: str = "") -> float:
    """Wait until ``pred`` holds ``times`` calls in a row (e.g. a scrape answered by whichever
    worker the kernel picks: each must show the figures); the seconds it took."""
    run = 0

    def held() -> bool:
        nonlocal run
        run = run + 1 if pred() else 0
        return run >= times

    return eventually(held, timeout, step, what)

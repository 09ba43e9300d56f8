"""Rate limits for outcome reports: token buckets per key (a source, a unit).

Feedback poisoning — one reporter (or one unit) flooding the loop with outcomes to skew what it
learns — is a known abuse path, so outcome reports are limited per reported ``source`` and per
``unit``. Each limiter keeps at most ``max_keys`` buckets; the least recently used are forgotten
(a forgotten key starts again with a full bucket). The limits hold per worker process; on Redis
(:mod:`closedloop.service.limits_redis`) they hold across replicas.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from closedloop.service.settings import RateLimit

__all__ = ["TokenBuckets", "take_both"]


class TokenBuckets:
    """One token bucket per key, all with the same :class:`RateLimit`."""

    __slots__ = ("_buckets", "burst", "clock", "max_keys", "rate", "unlimited")

    def __init__(self, limit: RateLimit, *, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.unlimited = limit.unlimited
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, now: float) -> list[float]:
        b = self._buckets.get(key)
        if b is None:
            b = [self.burst, now]
            self._buckets[key] = b
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            tokens = b[0] + (now - b[1]) * self.rate
            b[0] = tokens if tokens < self.burst else self.burst
            b[1] = now
        return b

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now). Takes nothing."""
        if self.unlimited:
            return 0.0
        b = self._bucket(key, self.clock() if now is None else now)
        if b[0] >= 1.0:
            return 0.0
        return math.inf if self.rate == 0 else (1.0 - b[0]) / self.rate

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token for ``key``: 0.0 when taken, else the seconds to wait (nothing taken)."""
        w = self.wait(key, now)
        if w == 0.0 and not self.unlimited:
            self._buckets[key][0] -= 1.0
        return w


def take_both(a: TokenBuckets, key_a: str, b: TokenBuckets, key_b: str) -> tuple[int, float]:
    """Take one token from each bucket, or none: ``(0, 0.0)`` when both were taken, else
    ``(1 or 2, seconds to wait)`` naming the limiter that refused (the first one if both). Shared
    buckets (:class:`~closedloop.service.limits_redis.RedisTokenBuckets`) do it in one atomic step."""
    joint = getattr(a, "take_joint", None)
    if joint is not None and type(a) is type(b):
        taken: tuple[int, float] = joint(key_a, b, key_b)
        return taken
    now = a.clock()
    wa = a.wait(key_a, now)
    if wa > 0:
        return 1, wa
    wb = b.wait(key_b, now)
    if wb > 0:
        return 2, wb
    a.take(key_a, now)
    b.take(key_b, now)
    return 0, 0.0

"""Rate limits for outcome reports on Redis: :class:`RedisTokenBuckets`, the interface of
:class:`~closedloop.service.limits.TokenBuckets` with the buckets shared by every replica.

One Lua script (``EVALSHA``) refills a bucket by the time elapsed since its last use — read from
Redis's own clock (``TIME``), so replicas with skewed clocks agree — takes a token or tells the
wait, and sets the key to expire when the bucket would be full again (a missing key *is* a full
bucket, so expiry changes no answer and bounds memory without ``max_keys``). The script takes one
token from several buckets or none (:meth:`RedisTokenBuckets.take_joint`, what
:func:`~closedloop.service.limits.take_both` calls): a report's source and unit limits are checked
and taken atomically, exactly across replicas.

When Redis is unreachable the declared policy applies, ``on_unavailable``: ``"open"`` allows
(wait 0.0), ``"closed"`` refuses (wait :data:`CLOSED_WAIT` seconds); each call that met an
unreachable Redis adds one to :attr:`RedisTokenBuckets.unavailable`; ``down_since`` says since when
calls fail (None once one succeeds). :func:`shared_state` makes the service's three stores from
``ServiceSettings.redis_url``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from closedloop.errors import SpecError
from closedloop.service.settings import RateLimit

__all__ = ["CLOSED_WAIT", "RedisTokenBuckets", "SharedState", "shared_state"]

CLOSED_WAIT = 1.0  # seconds to wait when Redis is unreachable and the policy is "closed"

# KEYS: the buckets. ARGV: now ('' = Redis TIME), take ('1'/'0'), then rate, burst, ttl ms (-1: none)
# per key. Returns {0, ''} when every bucket had a token (taken when take = '1'), else {i, wait} for
# the first bucket i (1-based) without one; nothing is taken then. Numbers travel as %.17g strings.
_TAKE = """
local now = tonumber(ARGV[1])
local clamp = false
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  clamp = true
end
local tokens = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i])
  local burst = tonumber(ARGV[3 * i + 1])
  local st = redis.call('HMGET', KEYS[i], 't', 'at')
  local tk
  if st[1] == false then
    tk = burst
  else
    local elapsed = now - tonumber(st[2])
    if clamp and elapsed < 0 then elapsed = 0 end
    tk = tonumber(st[1]) + elapsed * rate
    if not (tk < burst) then tk = burst end
  end
  tokens[i] = tk
end
local refused = 0
for i = 1, #KEYS do
  if tokens[i] < 1.0 then refused = i break end
end
for i = 1, #KEYS do
  local tk = tokens[i]
  if refused == 0 and ARGV[2] == '1' then tk = tk - 1.0 end
  redis.call('HSET', KEYS[i], 't', string.format('%.17g', tk), 'at', string.format('%.17g', now))
  local ttl = tonumber(ARGV[3 * i + 2])
  if ttl >= 0 then redis.call('PEXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
end
if refused == 0 then return {0, ''} end
local rate = tonumber(ARGV[3 * refused])
if rate == 0 then return {refused, 'inf'} end
return {refused, string.format('%.17g', (1.0 - tokens[refused]) / rate)}
"""


class RedisTokenBuckets:
    """One token bucket per key on Redis, all with the same :class:`RateLimit`.

    ``client``: a ``redis.Redis`` (with ``socket_timeout``/``socket_connect_timeout``). ``prefix``:
    the key namespace of this limiter (one per limiter: source, unit). ``clock``: None reads
    Redis's ``TIME``; a callable (or ``now=`` on a call) supplies the time instead — for
    deterministic tests, never mixed with ``TIME`` on the same keys. ``max_keys`` is accepted for
    the interface and unused: expiry bounds the keys.
    """

    def __init__(self, limit: RateLimit, *, client: Any, prefix: str = "closedloop:rate", on_unavailable: str = "open",
                 max_keys: int = 200_000, clock: Callable[[], float] | None = None) -> None:
        if on_unavailable not in ("open", "closed"):
            raise SpecError(f"on_unavailable must be 'open' or 'closed'. Got {on_unavailable!r} instead.")
        import redis

        self.rate = limit.rate
        self.burst = limit.burst
        self.unlimited = limit.unlimited
        self.max_keys = max_keys
        self.clock = clock
        self.client = client
        self.prefix = prefix
        self.on_unavailable = on_unavailable
        self.unavailable = 0
        #: when the current run of failed calls began (``time.time()``), None while Redis answers
        self.down_since: float | None = None
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._script = client.register_script(_TAKE)
        # a bucket refilled from empty is full after burst / rate seconds: then its key may go
        self._ttl = -1 if self.rate == 0 else math.ceil(self.burst / self.rate * 1000) + 1000

    def __len__(self) -> int:
        """The buckets alive in Redis (a scan of the prefix: for metrics, not for a hot path)."""
        try:
            return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        except self._errors:
            self._down()
            return 0

    def _down(self) -> None:
        self.unavailable += 1
        if self.down_since is None:
            self.down_since = time.time()

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _args(self) -> list[Any]:
        return [repr(self.rate), repr(self.burst), self._ttl]

    def _now(self, now: float | None) -> str:
        if now is None and self.clock is not None:
            now = self.clock()
        return "" if now is None else repr(float(now))

    def _run(self, keys: list[str], args: list[Any]) -> tuple[int, float]:
        try:
            i, wait = self._script(keys=keys, args=args)
        except self._errors:
            self._down()
            return (0, 0.0) if self.on_unavailable == "open" else (1, CLOSED_WAIT)
        self.down_since = None
        return int(i), (float(wait) if int(i) else 0.0)

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now). Takes nothing."""
        if self.unlimited:
            return 0.0
        return self._run([self._key(key)], [self._now(now), "0", *self._args()])[1]

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token for ``key``: 0.0 when taken, else the seconds to wait (nothing taken)."""
        if self.unlimited:
            return 0.0
        return self._run([self._key(key)], [self._now(now), "1", *self._args()])[1]

    def take_joint(self, key: str, other: RedisTokenBuckets, other_key: str, now: float | None = None) -> tuple[int, float]:
        """One token from this bucket and one from ``other``'s, or none, atomically (``other``
        must live on the same Redis): ``(0, 0.0)`` when both were taken, else ``(1 or 2, wait)``."""
        keys: list[str] = []
        args: list[Any] = [self._now(now), "1"]
        which: list[int] = []
        for n, (lim, k) in enumerate(((self, key), (other, other_key)), start=1):
            if not lim.unlimited:
                keys.append(lim._key(k))
                args += lim._args()
                which.append(n)
        if not keys:
            return 0, 0.0
        i, wait = self._run(keys, args)
        if i == 0:
            return 0, 0.0
        if i > len(which):  # the closed policy names the first limiter
            return which[0], wait
        return which[i - 1], wait


class SharedState:
    """The service's stores on one Redis: the caps of ``system`` and its two outcome rate limiters."""

    def __init__(self, url: str, system: str, *, per_source: RateLimit, per_unit: RateLimit, on_unavailable: str,
                 timeout_s: float = 0.5) -> None:
        import redis

        from closedloop.experience.cap_redis import RedisCapStore

        self.url = url
        self.on_unavailable = on_unavailable
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        ns = f"closedloop:{system}"
        self.caps = RedisCapStore(self.client, prefix=f"{ns}:caps", on_unavailable=on_unavailable)
        self.per_source = RedisTokenBuckets(per_source, client=self.client, prefix=f"{ns}:rate:source",
                                            on_unavailable=on_unavailable)
        self.per_unit = RedisTokenBuckets(per_unit, client=self.client, prefix=f"{ns}:rate:unit",
                                          on_unavailable=on_unavailable)

    def unavailable(self) -> list[tuple[tuple[str], float]]:
        """Calls that found Redis unreachable, by store (the ``/metrics`` counter's samples)."""
        return [(("caps",), float(self.caps.unavailable)), (("rate_source",), float(self.per_source.unavailable)),
                (("rate_unit",), float(self.per_unit.unavailable))]

    def problem(self) -> str | None:
        """The ``/readyz`` line while calls fail, else None."""
        since = [t for t in (self.caps.down_since, self.per_source.down_since, self.per_unit.down_since) if t is not None]
        if not since:
            return None
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(since)))
        verb = "admitting and allowing" if self.on_unavailable == "open" else "refusing"
        return f"shared state (Redis) unreachable since {at}; failing {self.on_unavailable}: {verb}"


def shared_state(url: str | None, system: str, *, per_source: RateLimit, per_unit: RateLimit,
                 on_unavailable: str = "open") -> SharedState | None:
    """The stores on Redis at ``url``, or None (the in-process stores) when no URL is set."""
    if url is None:
        return None
    return SharedState(url, system, per_source=per_source, per_unit=per_unit, on_unavailable=on_unavailable)

"""Frequency-cap counts on Redis: one :class:`~closedloop.experience.guardrails.CapStore` shared by
every replica, so a cap holds exactly whichever process decides.

Counts live in keys ``<prefix>:<cap>:<bucket>:<unit>`` that expire one window (the cap's ``per``)
after they were last written (a window's counts are never needed after it closes). Like :class:`InMemoryCapStore`, only the
newest bucket of a cap counts: ``<prefix>:<cap>:newest`` holds it, a decision in an older (closed)
window reads 0 and is not counted. :meth:`RedisCapStore.admit_batch` (and the single-row
:meth:`RedisCapStore.admit`) run as one Lua script (``EVALSHA``): a batch is read and counted
atomically, so two replicas can never both admit the last show of a unit.

When Redis is unreachable the store applies its declared policy, ``on_unavailable``: ``"open"``
admits (no row is full, nothing counted), ``"closed"`` refuses (every row is full: the capped action
falls back). Each call that met an unreachable Redis adds one to :attr:`RedisCapStore.unavailable`;
:attr:`RedisCapStore.down_since` says since when calls fail (None once one succeeds).

The script computes its keys, so it needs a single Redis (a primary, with or without replicas), not
Redis Cluster. The cap numbers are the indices of a system's caps: give each system its own prefix.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.experience.guardrails import CapStore

__all__ = ["RedisCapStore"]

# ARGV: limit, window in ms, then (bucket, unit, want) per row. Returns a string of '0'/'1' (full).
_ADMIT = """
local prefix = KEYS[1]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cap = ARGV[3]
local newest_key = prefix .. ':' .. cap .. ':newest'
local newest = tonumber(redis.call('GET', newest_key) or '')
local out = {}
local i = 4
while i <= #ARGV do
  local bucket = tonumber(ARGV[i])
  local full
  if newest ~= nil and bucket < newest then
    full = (0 >= limit)
  else
    local key = prefix .. ':' .. cap .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1]
    local have = 0
    if newest ~= nil and bucket == newest then have = tonumber(redis.call('GET', key) or '0') end
    full = (have >= limit)
    if ARGV[i + 2] == '1' and not full then
      redis.call('INCR', key)
      redis.call('PEXPIRE', key, ttl)
      if newest == nil or bucket > newest then
        newest = bucket
        redis.call('SET', newest_key, ARGV[i], 'PX', ttl * 2)
      else
        redis.call('PEXPIRE', newest_key, ttl * 2)
      end
    end
  end
  out[#out + 1] = full and '1' or '0'
  i = i + 3
end
return table.concat(out)
"""

# ARGV: cap, bucket, unit, n. Adds n to a count (the row-by-row CapStore.add), same newest rule.
_ADD = """
local prefix = KEYS[1]
local newest_key = prefix .. ':' .. ARGV[1] .. ':newest'
local newest = tonumber(redis.call('GET', newest_key) or '')
local bucket = tonumber(ARGV[2])
local ttl = tonumber(ARGV[5])
if newest ~= nil and bucket < newest then return 0 end
local key = prefix .. ':' .. ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3]
redis.call('INCRBY', key, tonumber(ARGV[4]))
redis.call('PEXPIRE', key, ttl)
if newest == nil or bucket > newest then
  redis.call('SET', newest_key, ARGV[2], 'PX', ttl * 2)
else
  redis.call('PEXPIRE', newest_key, ttl * 2)
end
return 1
"""

# ARGV: cap, bucket, unit. The count a row sees (0 in a closed or a not yet opened window).
_COUNT = """
local prefix = KEYS[1]
local newest = tonumber(redis.call('GET', prefix .. ':' .. ARGV[1] .. ':newest') or '')
if newest == nil or tonumber(ARGV[2]) ~= newest then return 0 end
return tonumber(redis.call('GET', prefix .. ':' .. ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3]) or '0')
"""

_DAY_MS = 86_400_000


def _unit(u: Any) -> str:
    return "\x00none" if u is None else str(u)


class RedisCapStore(CapStore):
    """Cap counts on Redis, exact across replicas.

    ``client``: a ``redis.Redis`` (give it ``socket_timeout``/``socket_connect_timeout``: an
    unreachable Redis then costs that long per call). ``prefix``: the key namespace, one per system.
    ``window_ms``: how long a count outlives its last write for a cap whose window the store was not
    told (:meth:`window`; the runtime's guard layer tells it every cap's ``per``). ``on_unavailable``: ``"open"`` or ``"closed"``.
    """

    def __init__(self, client: Any, *, prefix: str = "closedloop:caps", window_ms: int = _DAY_MS,
                 on_unavailable: str = "open") -> None:
        if on_unavailable not in ("open", "closed"):
            raise SpecError(f"on_unavailable must be 'open' or 'closed'. Got {on_unavailable!r} instead.")
        if isinstance(window_ms, bool) or not isinstance(window_ms, int) or window_ms <= 0:
            raise SpecError(f"window_ms must be a positive integer. Got {window_ms!r} instead.")
        import redis

        self.client = client
        self.prefix = prefix
        self.window_ms = window_ms
        self.on_unavailable = on_unavailable
        self.unavailable = 0
        #: when the current run of failed calls began (``time.time()``), None while Redis answers
        self.down_since: float | None = None
        self._ttl: dict[int, int] = {}
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._admit = client.register_script(_ADMIT)
        self._add = client.register_script(_ADD)
        self._count = client.register_script(_COUNT)

    def window(self, cap: int, per_ns: int) -> None:
        """A cap's counts expire one window (``per``) after their last write."""
        self._ttl[int(cap)] = max(1, -(-int(per_ns) // 1_000_000))

    def _down(self) -> None:
        self.unavailable += 1
        if self.down_since is None:
            self.down_since = time.time()

    def count(self, cap: int, bucket: int, unit: str) -> int:
        """The unit's count in ``bucket``; when Redis is unreachable, 0 (open) or a huge count (closed)."""
        try:
            got = int(self._count(keys=[self.prefix], args=[int(cap), int(bucket), _unit(unit)]))
        except self._errors:
            self._down()
            return 0 if self.on_unavailable == "open" else 2**62
        self.down_since = None
        return got

    def add(self, cap: int, bucket: int, unit: str, n: int = 1) -> None:
        try:
            self._add(keys=[self.prefix], args=[int(cap), int(bucket), _unit(unit), int(n), self._ttl.get(int(cap), self.window_ms)])
        except self._errors:
            self._down()
            return
        self.down_since = None

    def admit(self, cap: int, bucket: int, unit: str, want: bool, limit: int) -> bool:
        """One row of :meth:`admit_batch`, atomically: whether the unit is full."""
        return bool(self.admit_batch(cap, np.array([bucket]), [unit], np.array([want]), limit)[0])

    def admit_batch(self, cap: int, buckets: np.ndarray, units: Any, want: np.ndarray, limit: int) -> np.ndarray:
        """:meth:`CapStore.admit_batch` in one script: atomic for the batch, exact across replicas."""
        us = units.to_pylist() if hasattr(units, "to_pylist") else list(units)
        bl = np.asarray(buckets, dtype=np.int64).tolist()
        wl = np.asarray(want, dtype=bool).tolist()
        n = len(bl)
        if n == 0:
            return np.zeros(0, dtype=bool)
        args: list[Any] = [int(limit), self._ttl.get(int(cap), self.window_ms), int(cap)]
        for bucket, unit, w in zip(bl, us, wl, strict=True):
            args += [bucket, _unit(unit), "1" if w else "0"]
        try:
            flags = self._admit(keys=[self.prefix], args=args)
        except self._errors:
            self._down()
            return np.full(n, self.on_unavailable == "closed", dtype=bool)
        self.down_since = None
        raw = flags if isinstance(flags, bytes) else str(flags).encode()
        return np.frombuffer(raw, dtype=np.uint8) == ord("1")

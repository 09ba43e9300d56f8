"""Privacy: what of a context telemetry may write.

A context field declared ``sensitive="hash"`` is written as a keyed hash (HMAC-SHA256 with the
deployment's telemetry key, 32 hex digits): equal values stay equal, so lookups, joins and
counts still work, but the value cannot be read back without the key. ``sensitive="drop"``
writes nothing. If the unit field is sensitive, the unit is hashed too. Features computed from a
sensitive field at decision time are logged as features, so models keep what they learned from it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from closedloop.errors import SpecError

__all__ = ["Sanitizer"]


class Sanitizer:
    """Turns a validated context into the JSON telemetry writes (see the module doc)."""

    def __init__(self, schema: Any, unit: str, key: bytes | None) -> None:
        self.hashed = tuple(f.name for f in schema.fields if f.sensitive == "hash")
        self.dropped = tuple(f.name for f in schema.fields if f.sensitive == "drop")
        if (self.hashed or unit in self.dropped) and not key:
            raise SpecError(
                "Telemetry needs a 'key' (bytes) to hash the sensitive context fields "
                f"{list(self.hashed) or [unit]}; give Telemetry(key=...) from your secret store."
            )
        if key is not None and (not isinstance(key, bytes) or len(key) < 16):
            raise SpecError(
                f"The telemetry 'key' must be at least 16 bytes. "
                f"Got {type(key).__name__} of length {len(key) if isinstance(key, bytes) else '?'}."
            )
        self._key = key or b""
        self.unit_hashed = unit in self.hashed or unit in self.dropped
        self.plain = not self.hashed and not self.dropped
        self._encode = msgspec.json.encode

    def hash(self, value: Any) -> str:
        data = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        return hmac.new(self._key, data.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

    def unit(self, unit: str) -> str:
        return self.hash(unit) if self.unit_hashed else unit

    def context_json(self, context: Any) -> str:
        """The sanitized context of one validated context (a msgspec Struct)."""
        if self.plain:
            return self._encode(context).decode()
        d = msgspec.structs.asdict(context)
        for name in self.dropped:
            d.pop(name, None)
        for name in self.hashed:
            d[name] = self.hash(d[name])
        return self._encode(d).decode()

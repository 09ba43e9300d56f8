"""The log that carries telemetry between hosts: the :class:`Transport` interface and
:class:`MemoryTransport`, its in-memory implementation for tests.

On one host the writer's sink is a :class:`~closedloop.telemetry.segments.SegmentLog` in the
project home. With several hosts, replicas publish their records to a distributed log and
collectors (``closedloop telemetry collect``) write the log into the lake. The log sits behind
this small interface; :mod:`closedloop.telemetry.jetstream` implements it on NATS JetStream, and
any other log (Kafka, …) would implement the same methods and pass the same conformance checks
(:func:`closedloop.telemetry.transport_checks.check_transport`).

The contract:

* **Messages.** A message belongs to one system and one stream (``"decisions"``,
  ``"outcomes"``, ``"feature_sets"``), carries opaque ``data`` bytes (the sinks publish one
  commit's records as an Arrow IPC frame) and a ``msg_id`` that is unique for its content: the
  same record batch is always republished under the same id. Headers are short strings.
* **Publishing** (:meth:`Transport.publish`) returns only once the log has acknowledged every
  message given as durable. It raises :class:`~closedloop.errors.TransportUnavailable` when the
  log cannot be reached or does not acknowledge in time; then nothing given counts as
  acknowledged, and publishing the same messages again is safe: the log keeps one copy per
  ``msg_id`` (within its deduplication window; consumers deduplicate again by record id).
  Messages of one publisher are stored in the order published.
* **Consuming** is by *durable group* (:meth:`Transport.subscribe`): each stored message is
  delivered to one member of the group at a time; a member acknowledges a message
  (:meth:`Subscription.ack`) once it has made its effect durable; a message not acknowledged
  within the group's ``ack_wait`` seconds (its member crashed, or is slow) is delivered again,
  possibly to another member, with ``delivery`` counting up. A new member of an existing group
  continues where the group is. Delivery is therefore *at least once*; exactly once is the
  consumer's job (the collector skips record ids already in the lake: docs/telemetry.md).

What the telemetry sinks publish and the collector (:mod:`closedloop.telemetry.collector`) reads:

* ``decisions`` / ``outcomes``: ``data`` is one commit's records of that stream as
  :func:`~closedloop.telemetry.segments.encode_frame` writes them (a segment frame: ``CLSG``
  magic, length, crc32, then the Arrow IPC stream; decisions in ``DECISION_SCHEMA`` or its compact
  form, outcomes in ``OUTCOME_SCHEMA``); ``msg_id`` is ``<writer>:<stream>:<first_seq>-<last_seq>``
  (the same commit always gets the same id, also when re-published from the spill log); headers
  ``writer`` (the writer id), ``first_seq`` and ``last_seq`` (the commit's sequence numbers, as
  decimal strings) and ``rows`` (its record count; the collector refuses a frame that disagrees).
* ``feature_sets``: ``data`` is the JSON ``{"fingerprint": …, "names": [...]}`` (what
  ``telemetry/feature_sets/<fingerprint>.json`` holds), ``msg_id`` ``fs:<fingerprint>``, header
  ``fingerprint``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from closedloop.errors import TransportError, TransportUnavailable

__all__ = ["STREAM_NAMES", "Message", "MemoryTransport", "Outgoing", "Subscription", "Transport", "check_message"]

#: The streams a system's telemetry has on the log.
STREAM_NAMES = ("decisions", "outcomes", "feature_sets")

#: A system name, a msg id and a group name as the log accepts them (they become subject and
#: consumer names: no dots, spaces or wildcards).
NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MSG_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    system: str
    stream: str
    data: bytes
    msg_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """One delivered message: what was published, the log's sequence number within the system's
    stream, and how many times it has been delivered to the group (1 the first time)."""

    system: str
    stream: str
    data: bytes
    msg_id: str
    headers: Mapping[str, str]
    sequence: int
    delivery: int


def check_message(m: Outgoing) -> None:
    """Refuse a message the log cannot take, naming the field, the rule and the value."""
    if not isinstance(m.system, str) or not NAME.match(m.system):
        raise TransportError(f"The 'system' of a telemetry message must match {NAME.pattern}. Got {m.system!r} instead.")
    if m.stream not in STREAM_NAMES:
        raise TransportError(f"The 'stream' of a telemetry message must be one of {list(STREAM_NAMES)}. Got {m.stream!r} instead.")
    if not isinstance(m.msg_id, str) or not MSG_ID.match(m.msg_id):
        raise TransportError(f"The 'msg_id' of a telemetry message must match {MSG_ID.pattern}. Got {m.msg_id!r} instead.")
    if not isinstance(m.data, bytes | bytearray | memoryview):
        raise TransportError(f"The 'data' of a telemetry message must be bytes. Got {type(m.data).__name__} instead.")


def check_group(group: str, ack_wait: float) -> None:
    if not isinstance(group, str) or not NAME.match(group):
        raise TransportError(f"The 'group' of a subscription must match {NAME.pattern}. Got {group!r} instead.")
    if not isinstance(ack_wait, int | float) or isinstance(ack_wait, bool) or not 0.05 <= ack_wait <= 3600:
        raise TransportError(f"The 'ack_wait' of a subscription must be a number of seconds in [0.05, 3600]. Got {ack_wait!r} instead.")


class Subscription:
    """One member of a durable consumer group on one system's stream."""

    def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for the first;
        ``[]`` when none came. Raises ``TransportUnavailable`` when the log cannot be reached."""
        raise NotImplementedError

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages this member fetched: the group will not deliver them again."""
        raise NotImplementedError

    def close(self) -> None:
        """Leave the group (unacknowledged messages are delivered again after ``ack_wait``)."""


class Transport:
    """The interface every telemetry log implements (see the module's contract)."""

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def subscribe(self, system: str, stream: str, group: str, *, ack_wait: float = 30.0) -> Subscription:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the transport is not used again."""


@dataclass
class _Stored:
    msg: Outgoing
    sequence: int


@dataclass
class _Group:
    ack_wait: float
    next_index: int = 0  # the first stored message never delivered to the group
    in_flight: dict[int, tuple[float, int]] = field(default_factory=dict)  # index → (deadline, deliveries)
    redeliver: list[int] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)


class MemoryTransport(Transport):
    """The log in memory, shared by every publisher and subscriber holding this object.

    It keeps the contract's semantics (acknowledged publishes, dedupe by ``msg_id``, durable
    groups with redelivery after ``ack_wait``) so sinks and collectors can be unit-tested;
    ``available = False`` makes every call raise ``TransportUnavailable`` (an outage)."""

    def __init__(self) -> None:
        self.available = True
        self._cond = threading.Condition()
        self._log: dict[tuple[str, str], list[_Stored]] = {}
        self._ids: set[tuple[str, str, str]] = set()
        self._groups: dict[tuple[str, str, str], _Group] = {}

    def _check_up(self) -> None:
        if not self.available:
            raise TransportUnavailable("The in-memory telemetry log is unavailable (available = False).")

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 5.0) -> None:
        for m in messages:
            check_message(m)
        with self._cond:
            self._check_up()
            for m in messages:
                key = (m.system, m.stream, m.msg_id)
                if key in self._ids:
                    continue
                self._ids.add(key)
                log = self._log.setdefault((m.system, m.stream), [])
                log.append(_Stored(Outgoing(m.system, m.stream, bytes(m.data), m.msg_id, dict(m.headers)), len(log) + 1))
            self._cond.notify_all()

    def subscribe(self, system: str, stream: str, group: str, *, ack_wait: float = 30.0) -> Subscription:
        check_message(Outgoing(system, stream, b"", "subscribe"))
        check_group(group, ack_wait)
        with self._cond:
            self._check_up()
            g = self._groups.setdefault((system, stream, group), _Group(float(ack_wait)))
        return _MemorySubscription(self, system, stream, g)


class _MemorySubscription(Subscription):
    def __init__(self, log: MemoryTransport, system: str, stream: str, group: _Group) -> None:
        self._log, self._key, self._group = log, (system, stream), group
        self._mine: set[int] = set()

    def _take(self, limit: int) -> list[Message]:
        g, now = self._group, time.monotonic()
        for i, (deadline, _) in list(g.in_flight.items()):
            if deadline <= now and i not in g.redeliver:
                g.redeliver.append(i)
        stored = self._log._log.get(self._key, [])
        out: list[Message] = []
        while len(out) < limit and (g.redeliver or g.next_index < len(stored)):
            if g.redeliver:
                i = g.redeliver.pop(0)
                if i in g.acked:
                    continue
            else:
                i, g.next_index = g.next_index, g.next_index + 1
            deliveries = g.in_flight.get(i, (0.0, 0))[1] + 1
            g.in_flight[i] = (now + g.ack_wait, deliveries)
            self._mine.add(i)
            s = stored[i]
            out.append(Message(s.msg.system, s.msg.stream, s.msg.data, s.msg.msg_id, s.msg.headers, s.sequence, deliveries))
        return out

    def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._log._cond:
            while True:
                self._log._check_up()
                out = self._take(max_messages)
                left = deadline - time.monotonic()
                if out or left <= 0:
                    return out
                self._log._cond.wait(min(left, 0.05))

    def ack(self, messages: Sequence[Message]) -> None:
        with self._log._cond:
            self._log._check_up()
            for m in messages:
                i = m.sequence - 1
                self._group.acked.add(i)
                self._group.in_flight.pop(i, None)
                self._mine.discard(i)

"""The conformance checks every telemetry log (:class:`~closedloop.telemetry.transport.Transport`)
passes: the module contract of :mod:`closedloop.telemetry.transport`, checked the same way for the
in-memory log and for NATS JetStream (and for any log added later, such as Kafka)::

    from closedloop.telemetry.transport_checks import check_transport
    check_transport(lambda: MyTransport(url), system="conformance_1")

``connect`` returns a new client of the same log each time it is called (two calls: two
publishers or two members of a group, as on two hosts). ``system`` must be a name no other test
uses on that log. Each check raises :class:`~closedloop.errors.ConformanceError` naming what broke.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from closedloop.errors import ConformanceError, TransportError
from closedloop.telemetry.transport import Message, Outgoing, Subscription, Transport

__all__ = ["check_transport"]


def _out(system: str, i: int, stream: str = "decisions") -> Outgoing:
    return Outgoing(system, stream, f"payload-{i}".encode() + bytes([i % 256]) * 3, f"w1:{stream}:{i}", {"writer": "w1", "seq": str(i)})


def _drain(sub: Subscription, want: int, timeout: float = 10.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(sub.fetch(max_messages=want - len(got), timeout=0.5))
    return got


def _fail(what: str) -> ConformanceError:
    return ConformanceError(f"Transport contract broken: {what}")


def check_order_and_content(connect: Callable[[], Transport], system: str) -> None:
    """Published messages come back whole, in order, delivered once; a repeated msg_id is stored once."""
    pub, sub_t = connect(), connect()
    try:
        sent = [_out(system, i) for i in range(20)]
        pub.publish(sent[:10])
        pub.publish(sent[5:])  # 5..9 again: the log keeps one copy per msg_id
        sub = sub_t.subscribe(system, "decisions", "g_order", ack_wait=30)
        got = _drain(sub, 20)
        extra = sub.fetch(max_messages=10, timeout=0.5)
        if [m.msg_id for m in got] != [m.msg_id for m in sent] or extra:
            raise _fail(f"expected msg ids {[m.msg_id for m in sent]} once each, in order; got {[m.msg_id for m in got + extra]}.")
        for s, m in zip(sent, got, strict=True):
            if bytes(m.data) != s.data or dict(m.headers).get("seq") != s.headers["seq"] or m.delivery != 1:
                raise _fail(f"message {s.msg_id} came back as data={m.data!r} headers={dict(m.headers)} delivery={m.delivery}.")
        seqs = [m.sequence for m in got]
        if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            raise _fail(f"sequence numbers must increase: {seqs}.")
        sub.ack(got)
        other = sub_t.subscribe(system, "outcomes", "g_order", ack_wait=30)
        if other.fetch(max_messages=5, timeout=0.3):
            raise _fail("a decisions message was delivered on the outcomes stream.")
    finally:
        pub.close()
        sub_t.close()


def check_groups(connect: Callable[[], Transport], system: str) -> None:
    """Members of one group share the messages (none to both); another group gets them all; a
    new member continues after what the group acknowledged."""
    pub, a_t, b_t = connect(), connect(), connect()
    try:
        pub.publish([_out(system, i, "outcomes") for i in range(30)])
        a = a_t.subscribe(system, "outcomes", "g_share", ack_wait=30)
        b = b_t.subscribe(system, "outcomes", "g_share", ack_wait=30)
        got_a = a.fetch(max_messages=10, timeout=2)
        got_b = _drain(b, 20)
        ids_a, ids_b = {m.msg_id for m in got_a}, {m.msg_id for m in got_b}
        if ids_a & ids_b or len(ids_a | ids_b) != 30:
            raise _fail(f"two members of a group must share 30 messages without overlap; got {len(ids_a)} and {len(ids_b)}, "
                        f"{len(ids_a & ids_b)} to both.")
        a.ack(got_a)
        b.ack(got_b)
        a.close()
        pub.publish([_out(system, i, "outcomes") for i in range(30, 35)])
        c = a_t.subscribe(system, "outcomes", "g_share", ack_wait=30)
        later = _drain(c, 5) + c.fetch(max_messages=5, timeout=0.5)
        if sorted(m.msg_id for m in later) != sorted(f"w1:outcomes:{i}" for i in range(30, 35)):
            raise _fail(f"a new member must continue after the group's acknowledged messages; got {[m.msg_id for m in later]}.")
        c.ack(later)
        d = b_t.subscribe(system, "outcomes", "g_other", ack_wait=30)
        if len(_drain(d, 35)) != 35:
            raise _fail("a second group must receive every message.")
    finally:
        for t in (pub, a_t, b_t):
            t.close()


def check_redelivery(connect: Callable[[], Transport], system: str, ack_wait: float = 1.0) -> None:
    """A message not acknowledged within ack_wait is delivered again (delivery counts up), to
    this member or another; an acknowledged one never is."""
    pub, a_t, b_t = connect(), connect(), connect()
    try:
        pub.publish([_out(system, i, "feature_sets") for i in range(4)])
        a = a_t.subscribe(system, "feature_sets", "g_redeliver", ack_wait=ack_wait)
        first = _drain(a, 4)
        a.ack(first[:2])
        a_t.close()  # the member "crashes" holding two unacknowledged messages
        b = b_t.subscribe(system, "feature_sets", "g_redeliver", ack_wait=ack_wait)
        again = _drain(b, 2, timeout=ack_wait * 5 + 5)
        if sorted(m.msg_id for m in again) != sorted(m.msg_id for m in first[2:]) or any(m.delivery < 2 for m in again):
            raise _fail(f"the unacknowledged {[m.msg_id for m in first[2:]]} must be delivered again with delivery ≥ 2; "
                        f"got {[(m.msg_id, m.delivery) for m in again]}.")
        b.ack(again)
        if b.fetch(max_messages=5, timeout=ack_wait + 0.5):
            raise _fail("an acknowledged message was delivered again.")
    finally:
        pub.close()
        b_t.close()


def check_refusals(connect: Callable[[], Transport], system: str) -> None:
    """A malformed message or group is refused with a TransportError naming the field."""
    t = connect()
    try:
        for bad, name in ((Outgoing(system, "clicks", b"x", "id1"), "stream"), (Outgoing(system, "decisions", b"x", "bad id"), "msg_id"),
                          (Outgoing("bad.system", "decisions", b"x", "id1"), "system")):
            try:
                t.publish([bad])
            except TransportError as e:
                if f"'{name}'" not in str(e):
                    raise _fail(f"refusing a bad {name} must name it; said {e}.") from e
            else:
                raise _fail(f"a message with a bad {name} was accepted.")
        try:
            t.subscribe(system, "decisions", "bad group")
        except TransportError as e:
            if "'group'" not in str(e):
                raise _fail(f"refusing a bad group must name it; said {e}.") from e
        else:
            raise _fail("a bad group name was accepted.")
    finally:
        t.close()


def check_transport(connect: Callable[[], Transport], system: str, *, ack_wait: float = 1.0) -> None:
    """Run every check on a log reached through ``connect`` (see the module)."""
    check_refusals(connect, system)
    check_order_and_content(connect, system)
    check_groups(connect, system)
    check_redelivery(connect, system, ack_wait)

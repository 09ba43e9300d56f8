"""The telemetry log on a real nats-server with JetStream (tests/support/nats_server.py): the
transport contract's conformance checks, outages (publish fails fast, nothing acknowledged is
lost after a restart on the same store), settings and message refusals, thread safety."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from closedloop.errors import TransportError, TransportUnavailable
from closedloop.telemetry.jetstream import JetStreamTransport, stream_name
from closedloop.telemetry.transport import Message, Outgoing, Subscription
from closedloop.telemetry.transport_checks import check_transport


def _msgs(system: str, start: int, stop: int, stream: str = "decisions") -> list[Outgoing]:
    return [Outgoing(system, stream, f"frame-{i}".encode(), f"w1:{stream}:{i}", {"writer": "w1", "seq": str(i)})
            for i in range(start, stop)]


def _drain(sub: Subscription, timeout: float = 10.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sub.fetch(max_messages=500, timeout=0.5)
        if not batch and got:
            break
        sub.ack(batch)
        got.extend(batch)
    return got


def _publish_when_back(t: JetStreamTransport, msgs: list[Outgoing], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            t.publish(msgs, timeout=2.0)
            return
        except TransportUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_jetstream_passes_the_conformance_checks(nats_server):
    check_transport(lambda: JetStreamTransport(nats_server.url), system="conformance_js", ack_wait=1.0)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_an_outage_fails_publish_fast_and_loses_nothing_acknowledged(nats_server, how):
    system = f"outage_{how}"
    t = JetStreamTransport(nats_server.url, connect_timeout=1.0)
    try:
        t.publish(_msgs(system, 0, 300))
        getattr(nats_server, how)()
        started = time.monotonic()
        with pytest.raises(TransportUnavailable, match="unavailable"):
            t.publish(_msgs(system, 300, 310), timeout=2.0)
        assert time.monotonic() - started < 2.5
        nats_server.start()
        _publish_when_back(t, _msgs(system, 300, 400))  # the transport reconnects on its own
        t.publish(_msgs(system, 0, 50))  # republished after a doubtful outage: stored once
        got = _drain(t.subscribe(system, "decisions", "lake"))
        assert sorted(m.msg_id for m in got) == sorted(f"w1:decisions:{i}" for i in range(400))
        assert all(m.data == f"frame-{m.msg_id.rsplit(':', 1)[1]}".encode() for m in got)
    finally:
        nats_server.start()
        t.close()


def test_a_fetch_during_an_outage_raises_and_the_group_resumes_after_it(nats_server):
    t = JetStreamTransport(nats_server.url, connect_timeout=1.0)
    try:
        t.publish(_msgs("resume", 0, 20, "outcomes"))
        sub = t.subscribe("resume", "outcomes", "lake", ack_wait=30)
        first = sub.fetch(10, timeout=2)
        sub.ack(first)
        nats_server.stop()
        with pytest.raises(TransportUnavailable):
            sub.fetch(10, timeout=0.5)
        nats_server.start()
        deadline, rest = time.monotonic() + 10, []
        while len(rest) < 10 and time.monotonic() < deadline:
            try:
                batch = sub.fetch(10, timeout=0.5)
            except TransportUnavailable:
                time.sleep(0.1)
                continue
            sub.ack(batch)
            rest.extend(batch)
        assert sorted(m.msg_id for m in first + rest) == sorted(m.msg_id for m in _msgs("resume", 0, 20, "outcomes"))
    finally:
        nats_server.start()
        t.close()


def test_publish_from_several_threads_stores_every_message_once(nats_server):
    t = JetStreamTransport(nats_server.url)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for k in range(0, 200, 50):
                t.publish([Outgoing("threads", "decisions", b"x", f"w{w}:{i}") for i in range(k, k + 50)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert not errors
        got = _drain(t.subscribe("threads", "decisions", "lake"))
        assert sorted(m.msg_id for m in got) == sorted(f"w{w}:{i}" for w in range(4) for i in range(200))
        for w in range(4):  # each publisher's messages are stored in the order it published them
            mine = [int(m.msg_id.split(":")[1]) for m in sorted(got, key=lambda m: m.sequence) if m.msg_id.startswith(f"w{w}:")]
            assert mine == sorted(mine)
    finally:
        t.close()


def test_no_server_is_unavailable_within_the_connect_timeout():
    t = JetStreamTransport("nats://127.0.0.1:9", connect_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(TransportUnavailable, match="connecting to nats://127.0.0.1:9"):
            t.publish(_msgs("nowhere", 0, 1))
        with pytest.raises(TransportUnavailable):
            t.subscribe("nowhere", "decisions", "lake")
        assert time.monotonic() - started < 2.0
    finally:
        t.close()
    with pytest.raises(TransportError, match="closed"):
        t.publish(_msgs("nowhere", 0, 1))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"url": "http://127.0.0.1:4222"}, "url"), ({"url": "nats://"}, "url"), ({"url": ""}, "url"),
    ({"replicas": 0}, "replicas"), ({"replicas": 6}, "replicas"), ({"replicas": True}, "replicas"),
    ({"duplicate_window": 0}, "duplicate_window"), ({"duplicate_window": float("nan")}, "duplicate_window"),
    ({"max_age": 60.0}, "max_age"), ({"connect_timeout": -1}, "connect_timeout"), ({"max_ack_pending": 0}, "max_ack_pending"),
])
def test_settings_are_refused_by_name(kwargs, field):
    kwargs = {"url": "nats://127.0.0.1:4222", **kwargs}
    with pytest.raises(TransportError, match=f"'{field}' parameter of JetStreamTransport"):
        JetStreamTransport(kwargs.pop("url"), **kwargs)


def test_a_cluster_url_list_is_accepted():
    t = JetStreamTransport("nats://a:4222, nats://b:4222", replicas=3, max_age=86400.0)
    assert t.servers == ["nats://a:4222", "nats://b:4222"] and t.replicas == 3
    t.close()


def test_bad_headers_oversized_data_and_foreign_acks_are_refused(nats_server):
    t = JetStreamTransport(nats_server.url)
    try:
        with pytest.raises(TransportError, match="header name"):
            t.publish([Outgoing("refuse", "decisions", b"x", "a", {"Nats-Msg-Id": "b"})])
        with pytest.raises(TransportError, match="one-line"):
            t.publish([Outgoing("refuse", "decisions", b"x", "a", {"writer": "a\r\nb"})])
        with pytest.raises(TransportError, match="max_payload"):
            t.publish([Outgoing("refuse", "decisions", b"x" * (2 << 20), "big")])
        sub = t.subscribe("refuse", "decisions", "lake")
        with pytest.raises(TransportError, match="'messages' to acknowledge"):
            sub.ack([Message("refuse", "decisions", b"x", "a", {}, 12345, 1)])
    finally:
        t.close()


def test_an_existing_stream_with_another_layout_is_refused(nats_server):
    import nats

    async def make() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(name=stream_name("foreign"), subjects=["elsewhere.>"])
        await nc.close()

    asyncio.run(make())
    t = JetStreamTransport(nats_server.url)
    try:
        with pytest.raises(TransportError, match="CLOSEDLOOP_foreign' must have subjects"):
            t.publish(_msgs("foreign", 0, 1))
    finally:
        t.close()

"""The telemetry log's contract, checked on the in-memory log (JetStream: test_jetstream.py)."""

from __future__ import annotations

import pytest

from closedloop.errors import ConformanceError, TransportUnavailable
from closedloop.telemetry.transport import MemoryTransport, Outgoing, Transport
from closedloop.telemetry.transport_checks import check_groups, check_transport


def test_memory_transport_passes_the_conformance_checks():
    log = MemoryTransport()
    check_transport(lambda: log, system="conformance", ack_wait=0.2)


def test_an_outage_acknowledges_nothing_and_a_retry_stores_one_copy():
    log = MemoryTransport()
    m = Outgoing("s", "decisions", b"frame", "w:decisions:1")
    log.available = False
    with pytest.raises(TransportUnavailable):
        log.publish([m])
    log.available = True
    log.publish([m])
    log.publish([m])
    sub = log.subscribe("s", "decisions", "g")
    assert [x.msg_id for x in sub.fetch(10, timeout=0.1)] == ["w:decisions:1"]


class _Duplicating(MemoryTransport):
    """A broken log that delivers every message to every member: the checks must catch it."""

    members = 0

    def subscribe(self, system, stream, group, *, ack_wait=30.0):
        self.members += 1
        return super().subscribe(system, stream, f"{group}_{self.members}", ack_wait=ack_wait)


def test_the_checks_catch_a_log_that_gives_one_message_to_two_members():
    log: Transport = _Duplicating()
    with pytest.raises(ConformanceError, match="without overlap"):
        check_groups(lambda: log, "broken")

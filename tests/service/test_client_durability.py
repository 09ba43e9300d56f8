"""Acknowledged means durable for client decisions too: the ranges of sequence numbers that
successful syncs made durable (:class:`~closedloop.service.durability.Spans`), and a failed
commit's decisions never confirmed — not even by the successful commits after it."""

from __future__ import annotations

from typing import Any

from closedloop.runtime.decision import Decision
from closedloop.service.durability import AckingSink, Spans
from closedloop.telemetry import Telemetry
from closedloop.telemetry.sink import MemorySink


def test_spans_merge_consecutive_commits_and_keep_gaps():
    s = Spans(limit=3)
    s.add(0, 9)
    s.add(10, 19)  # the next commit: one range
    assert s.ranges == [[0, 19]]
    s.add(30, 39)  # 20..29 failed
    s.add(25, 29)
    assert s.ranges == [[0, 19], [25, 39]]
    assert s.covers([0, 19, 25, 39]) and not s.covers([20]) and not s.covers([40])
    s.add(50, 50)
    s.add(60, 60)
    assert s.ranges == [[25, 39], [50, 50], [60, 60]]  # the oldest forgotten past the limit
    assert not s.covers([3])


class FlakySink(MemorySink):
    """A memory sink whose next sync fails when told to (a full disk, say)."""

    fail_next = False

    def sync(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        super().sync()


def decision(phishing: Any, i: int) -> tuple[Decision, Any]:
    c = phishing.schema.validate({"user_id": f"u{i}", "url": "http://a.example/", "domain": "a.example"})
    d = Decision(f"{i:032x}", "phishing", f"u{i}", 1_700_000_000_000_000_000 + i, "v1", {"phish": 0.5}, "allow", 1.0,
                 "client", phishing.action_specs["allow"].presentation)
    return d, c


def test_a_failed_commits_decisions_are_never_confirmed(phishing):
    inner = FlakySink()
    sink = AckingSink(inner)
    tel = Telemetry(sink, system=phishing, flush_interval_ms=1000).start()
    try:
        first = [tel.log_reported(*decision(phishing, i), None, 0.5) for i in range(5)]
        tel.flush(timeout=10)
        inner.fail_next = True
        lost = [tel.log_reported(*decision(phishing, i), None) for i in range(5, 8)]
        tel.flush(timeout=10)
        later = [tel.log_reported(*decision(phishing, i), None) for i in range(8, 10)]
        tel.log_outcome("0" * 32, kind="reported_phish", event_ns=1, source="user")
        tel.flush(timeout=10)
        assert sink.decisions_confirmed(first) and sink.decisions_confirmed(later)
        assert not sink.decisions_confirmed(lost) and not sink.decisions_confirmed([*first, lost[0]])
        assert tel.durable_watermark > max(lost)  # the watermark alone would have said durable
        t = inner.table("decisions")
        assert t.column("sample_prob").to_pylist()[:5] == [0.5] * 5
        assert t.column("why").to_pylist()[0] == "client"
    finally:
        tel.close()

"""Acknowledged means durable: outcome reports are answered 202 only once they are fsynced.

:class:`AckingSink` wraps the telemetry sink and remembers the sequence numbers of the outcome
records each *successful* ``sync()`` made durable. :class:`OutcomeAcks` runs one thread that,
while reports are waiting, calls :meth:`Telemetry.flush` (which returns once everything logged
before it has been committed or has failed) and then resolves every report that was waiting
before the flush: durable when all its sequence numbers were confirmed by a sync, not durable
otherwise. Waiting reports share flushes, as records share group commits.

The durable watermark alone cannot answer this: a failed commit leaves it behind, and the next
successful commit moves it past the records that were lost.

Decisions reported by clients (``POST /v1/decisions``) follow the same contract. Their sequence
numbers are not remembered one by one (the service's own decisions share the stream, many
thousands a second): a group commit takes every record buffered since the previous one, so its
sequence numbers are one contiguous range, and :class:`AckingSink` keeps the ranges that
successful syncs made durable, merged (:class:`Spans`: one range while commits succeed, one more
per failed commit). A decision is durable when a range holds its sequence number.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from closedloop.telemetry.sink import Sink

__all__ = ["AckingSink", "OutcomeAcks", "Spans"]


class AckingSink(Sink):
    """A :class:`Sink` that delegates to ``inner`` and records which outcome records it synced."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.writer = inner.writer
        self._lock = threading.Lock()
        self._appended: list[pa.Array | pa.ChunkedArray] = []
        self._confirmed: set[int] = set()
        self._span: tuple[int, int] | None = None  # the sequence numbers appended since the last sync
        self._spans = Spans()

    @property
    def torn_tails(self) -> int:  # type: ignore[override]
        return getattr(self.inner, "torn_tails", 0)

    def open(self) -> int:
        return self.inner.open()

    def feature_set(self, fingerprint: str, names: Sequence[str]) -> None:
        self.inner.feature_set(fingerprint, names)

    def append(self, stream: str, batch: pa.RecordBatch | pa.Table) -> None:
        self.inner.append(stream, batch)
        seq = batch.column(0)  # "seq", in every record form
        if stream == "outcomes":
            self._appended.append(seq)
        if len(seq):
            lo_hi = pc.min_max(seq)
            lo, hi = int(lo_hi["min"].as_py()), int(lo_hi["max"].as_py())
            span = self._span
            self._span = (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))

    def sync(self) -> None:
        appended, self._appended = self._appended, []
        span, self._span = self._span, None
        self.inner.sync()  # raises: nothing appended since the last sync is confirmed
        if appended or span is not None:
            with self._lock:
                for col in appended:
                    self._confirmed.update(col.to_pylist())
                if span is not None:
                    self._spans.add(*span)

    def close(self) -> None:
        self.inner.close()

    def confirmed(self, seqs: Sequence[int]) -> bool:
        """True when every one of ``seqs`` was made durable; forgets them either way."""
        with self._lock:
            ok = all(s in self._confirmed for s in seqs)
            self._confirmed.difference_update(seqs)
        return ok

    def decisions_confirmed(self, seqs: Sequence[int]) -> bool:
        """True when every one of ``seqs`` (decisions) was made durable by a successful sync."""
        with self._lock:
            return self._spans.covers(seqs)


class Spans:
    """Sequence numbers made durable, as merged inclusive ranges ``[lo, hi]`` (at most
    ``limit``: the oldest are forgotten — a decision waited on that long is answered not durable,
    and its reporter's retry is deduplicated)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.ranges: list[list[int]] = []

    def add(self, lo: int, hi: int) -> None:
        r = self.ranges
        if r and r[-1][0] <= lo <= r[-1][1] + 1:  # the next commit: the usual case
            r[-1][1] = max(r[-1][1], hi)
            return
        r.append([lo, hi])
        r.sort()
        merged: list[list[int]] = []
        for a, b in r:
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.ranges = merged[-self.limit:]

    def covers(self, seqs: Sequence[int]) -> bool:
        r = self.ranges
        return all(any(a <= s <= b for a, b in r) for s in seqs)


class OutcomeAcks:
    """Resolves waiting outcome reports once telemetry has committed them (or failed to).

    Parameters
    ----------
    telemetry:
        The :class:`~closedloop.telemetry.Telemetry` whose sink is ``sink``.
    sink:
        The :class:`AckingSink` that telemetry writes through.
    """

    def __init__(self, telemetry: Any, sink: AckingSink) -> None:
        self.telemetry = telemetry
        self.sink = sink
        self._lock = threading.Lock()
        self._waiting: list[tuple[list[int], bool, asyncio.Future[bool], asyncio.AbstractEventLoop]] = []
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> OutcomeAcks:
        self._thread = threading.Thread(target=self._run, name="closedloop-outcome-acks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wait(self, seqs: list[int], *, decisions: bool = False) -> asyncio.Future[bool]:
        """A future (of the running loop) that becomes True once ``seqs`` (outcome records, or
        with ``decisions`` decision records) are durable, False if their commit failed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            self._waiting.append((seqs, decisions, fut, loop))
        self._wake.set()
        return fut

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                batch, self._waiting = self._waiting, []
            if not batch:
                continue
            t0 = time.monotonic()
            limit = 60.0
            self.telemetry.flush(timeout=limit)
            if time.monotonic() - t0 >= limit:  # the committer is stuck: keep waiting
                with self._lock:
                    self._waiting[:0] = batch
                continue
            for seqs, decisions, fut, loop in batch:
                ok = self.sink.decisions_confirmed(seqs) if decisions else self.sink.confirmed(seqs)
                try:
                    loop.call_soon_threadsafe(_resolve, fut, ok)
                except RuntimeError:  # the loop is closed (shutting down)
                    pass


def _resolve(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)

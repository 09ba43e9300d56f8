"""The group commit: sequenced records on a bounded buffer, a background thread committing them.

The caller's thread only takes a sequence number and puts references on a bounded deque
(:meth:`Committer._put`): no encoding, no disk. A background thread wakes every
``flush_interval`` seconds (or as soon as ``flush_events`` are waiting), takes everything
buffered, has the :class:`~closedloop.telemetry.encoding.Encoder` build the commit's Arrow record
batches, appends them to the sink (one frame per form) and calls ``sink.sync()`` (fsync). The
**durable watermark** is the highest sequence number made durable; :meth:`Committer.flush`
returns it once everything logged before the call is durable (or failed).

Failures never reach the caller: a full buffer refuses and counts (``dropped_buffer_full``), as
does a closed one (``unlogged_errors``); a write error (disk full …) is recorded in
``last_error``, the decisions of the failed commit are counted in ``unlogged_errors`` (its
outcomes in ``unlogged_outcomes``) and :attr:`Committer.healthy` turns False until a commit
succeeds. ``ingest_ns`` is stamped once per group commit from ``clock``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from closedloop.telemetry.encoding import OUTCOME, Encoder, item_count
from closedloop.telemetry.sink import Sink

__all__ = ["Committer"]


class Committer:
    """The buffer, sequence numbers, group-commit thread, durable watermark and counters of one
    sink (see the module doc). :class:`~closedloop.telemetry.Telemetry` is one: it puts records
    on this buffer directly, so the per-decision path pays no extra call."""

    def __init__(
        self,
        sink: Sink,
        encoder: Encoder,
        *,
        flush_interval: float,
        flush_events: int,
        buffer_limit: int,
        clock: Callable[[], int],
    ) -> None:
        self.sink = sink
        self.encoder = encoder
        self.flush_interval = flush_interval
        self.flush_events = flush_events
        self.buffer_limit = buffer_limit
        self.clock = clock
        self.writer = sink.writer

        self._lock = threading.Lock()
        self._buf: deque[tuple[Any, ...]] = deque()
        self._pending = 0
        self._seq = 0  # next sequence number
        self._durable = -1
        self._processed = -1  # highest seq the committer has dealt with (written or failed)
        self._done = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._ok = True
        self.counters: dict[str, Any] = {
            "logged": 0, "sampled_out": 0, "dropped_buffer_full": 0, "unlogged_errors": 0,
            "torn_tails": 0, "last_error": None, "commits": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Open the sink and start the committer (done by the first log call if not before)."""
        with self._lock:
            if self._thread is not None:
                return self
            try:
                last = self._open_sink()
            except Exception as e:  # noqa: BLE001 - never raise into the decision path
                last = -1
                self._fail(e, 0)
            self._seq = max(self._seq, last + 1)
            self._durable = self._processed = last
            self._thread = threading.Thread(target=self._run, name=f"closedloop-telemetry-{self.writer}", daemon=True)
            self._thread.start()
        return self

    def _open_sink(self) -> int:
        """Open the sink; returns the last sequence number it holds durable (-1: none)."""
        return self.sink.open()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> int:
        """Commit what is buffered, close the sink; returns the durable watermark."""
        if self._closed:
            return self._durable
        if self._thread is None:
            self.start()
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None:  # start() above made one
            thread.join()
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001
            self._fail(e, 0)
        self._closed = True
        return self._durable

    # -- the caller's side ---------------------------------------------------------------------
    def _put(self, item: tuple[Any, ...], n: int) -> int | None:
        """Put ``item`` (``n`` events) on the buffer under the next ``n`` sequence numbers;
        returns the first, or None when refused (closed, or the buffer full)."""
        if self._thread is None:
            self.start()
        with self._lock:
            if self._closing or self._pending + n > self.buffer_limit:
                self._refuse(n)
                return None
            seq = self._seq
            self._seq = seq + n
            pending = self._pending = self._pending + n
            self._buf.append((seq, *item))
        if pending - n < self.flush_events <= pending:  # wake the committer once per crossing
            self._wake.set()
        return seq

    def _refuse(self, n: int) -> None:
        """Count events refused (telemetry closed, or the buffer full); called under the lock."""
        if self._closing:
            self.counters["unlogged_errors"] += n
            self.counters["last_error"] = "telemetry is closed"
        else:
            self.counters["dropped_buffer_full"] += n

    # -- durability ----------------------------------------------------------------------------
    @property
    def durable_watermark(self) -> int:
        """The highest sequence number up to which everything is durable (-1: nothing yet)."""
        return self._durable

    @property
    def healthy(self) -> bool:
        """False after a failed commit, until a commit succeeds again."""
        return self._ok

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything logged before this call is durable (or its commit failed);
        return the durable watermark."""
        if self._thread is None:
            self.start()
        with self._lock:
            target = self._seq - 1
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._processed < target and self._thread is not None and self._thread.is_alive():
                self._wake.set()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._done.wait(0.05 if left is None else min(left, 0.05))
        return self._durable

    def stats(self) -> dict[str, Any]:
        out = dict(self.counters)
        out["torn_tails"] = getattr(self.sink, "torn_tails", 0)
        out["durable_watermark"] = self._durable
        out["buffered"] = self._pending
        out["healthy"] = self._ok
        out["writer"] = self.writer
        return out

    # -- the committer thread ------------------------------------------------------------------
    def _run(self) -> None:
        """The thread: commit what is buffered at every wake-up, until closed and drained."""
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            closing = self._closing
            with self._lock:
                items, self._buf = self._buf, deque()
                n = self._pending
                self._pending = 0
            if items:
                self._commit(items, n)
            if closing:
                with self._lock:
                    if not self._buf:
                        break

    def _commit(self, items: deque[tuple[Any, ...]], n: int) -> None:
        """Write and sync one commit's ``n`` events; move the durable watermark, or count the failure."""
        last = items[-1][0] + (item_count(items[-1]) - 1)
        decisions = [it for it in items if it[1] != OUTCOME]
        outcomes = [it for it in items if it[1] == OUTCOME]
        n_dec = n - len(outcomes)
        try:
            now = self.clock()
            if decisions:
                for table in self.encoder.decision_tables(decisions, now):  # one per record form
                    self.sink.append("decisions", table)
            if outcomes:
                self.sink.append("outcomes", self.encoder.outcome_batch(outcomes, now))
            self.sink.sync()
        except Exception as e:  # noqa: BLE001 - recorded, never raised into the decision path
            self._fail(e, n_dec, n - n_dec)
        else:
            self._ok = True
            self.counters["logged"] += n_dec
            self.counters["outcomes"] = self.counters.get("outcomes", 0) + len(outcomes)
            self.counters["commits"] += 1
            self._durable = last
        with self._done:
            self._processed = last
            self._done.notify_all()

    def _fail(self, e: BaseException, n_decisions: int, n_outcomes: int = 0) -> None:
        """Record a failed commit (or sink open/close): unhealthy, the error, the events lost."""
        self._ok = False
        name = ""
        if isinstance(e, OSError) and e.errno is not None:
            import errno as _errno

            name = f" [{_errno.errorcode.get(e.errno, e.errno)}]"
        self.counters["last_error"] = f"{type(e).__name__}{name}: {e}"
        self.counters["unlogged_errors"] += n_decisions
        self.counters["unlogged_outcomes"] = self.counters.get("unlogged_outcomes", 0) + n_outcomes

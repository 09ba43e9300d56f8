"""The replica's telemetry sink on a distributed log: :class:`TransportSink`.

A :class:`~closedloop.telemetry.sink.Sink` that publishes each commit of the group commit
(:mod:`~closedloop.telemetry.committer`) to a :class:`~closedloop.telemetry.transport.Transport`
(NATS JetStream: :mod:`closedloop.telemetry.jetstream`) instead of writing it to the project
home. ``append`` buffers the commit's batches; ``sync`` publishes each as ONE message (the
format is in transport.py's contract: a segment frame, msg id ``<writer>:<stream>:<first
seq>-<last seq>``; a batch whose frame exceeds ``max_message_bytes`` is split by rows, each piece
a message with its own seq range, so a msg id never names two contents) and returns only once
the log acknowledged every one — then, and only then, the commit is durable, so the service's
outcome reports are answered 202 exactly as with the segment log
(:class:`~closedloop.service.durability.AckingSink`, unchanged).

**Outage.** When the log cannot be reached (:class:`~closedloop.errors.TransportUnavailable`),
``sync`` raises (the commit's outcomes are not acknowledged: their clients retry, and the
outcome id makes a retry a duplicate the collector drops) and the commit's batches are written to
a local *spill*: a :class:`~closedloop.telemetry.segments.SegmentLog` under
``<home>/telemetry/spill/<writer>/`` (fsynced). A background thread re-publishes the spill every
``retry_interval`` seconds until the log takes it — in order, under the same message ids (the
log's msg-id window and the collector's record-id dedupe make any repeat harmless) — and deletes
the spill files once re-published; a commit while a backlog waits publishes the backlog first,
so one writer's records reach the log in order. While the log was unreachable less than
``retry_interval`` seconds ago, commits go to the spill at once (an outage costs no timeout per
commit). The spill is bounded (``spill_bytes``): over the bound, the oldest decision segments
are dropped first, then the oldest outcome segments (records never acknowledged), every dropped
record counted by stream.

**Restarts.** Every sink is a new writer (``<host>-<pid>-<random>``: sequence numbers and message
ids never repeat across processes), so :meth:`TransportSink.open` returns -1. A process holds an
exclusive lock on its spill folder for its lifetime; at ``open`` a sink adopts the spill of every
writer whose lock is free (a process that crashed, or closed while the log was down) and
re-publishes it under that writer's ids, then deletes it.

Counters (:meth:`TransportSink.stats`, in records unless said): ``published`` (given to the log,
retries included), ``acknowledged``, ``spilled``, ``republished``, ``dropped`` (by stream),
``unavailable`` (publish calls that failed); the service exports them as
``closedloop_telemetry_log_*`` and says in ``/readyz`` when the log is unreachable or a backlog
waits (:meth:`TransportSink.problem`).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from closedloop.base.files import fsync_dir, make_private_dirs, open_private
from closedloop.errors import SpecError, TransportError, TransportUnavailable
from closedloop.telemetry.segments import SegmentLog, encode_frame, list_segments, new_writer_id, scan_segment
from closedloop.telemetry.sink import STREAMS, Sink, check_stream
from closedloop.telemetry.transport import NAME, Outgoing, Transport

__all__ = ["TransportSink", "message_for", "spill_root"]

log = logging.getLogger("closedloop.telemetry")

#: A spill folder's lock file (held by its live writer).
LOCK = ".lock"
#: At most this many messages, or this many bytes, per publish call when re-publishing a spill.
_CHUNK_MESSAGES = 64
_CHUNK_BYTES = 8 << 20


def spill_root(home: Path | str) -> Path:
    """Where replicas spill what the log could not take: ``<home>/telemetry/spill``."""
    return Path(home) / "telemetry" / "spill"


def message_for(system: str, writer: str, stream: str, table: pa.RecordBatch | pa.Table, data: bytes | None = None) -> Outgoing:
    """The message of one batch of a writer's records (the format: transport.py's contract): data =
    its segment frame (``encode_frame``), msg_id ``<writer>:<stream>:<first seq>-<last seq>``,
    headers ``writer``, ``first_seq``, ``last_seq``, ``rows``."""
    # every record form has the int64 'seq' column; numpy, not pyarrow.compute: this runs per commit
    seqs = table.column("seq").to_numpy()
    first, last = (int(seqs.min()), int(seqs.max())) if seqs.size else (None, None)
    headers = {"writer": writer, "first_seq": str(first), "last_seq": str(last), "rows": str(table.num_rows)}
    return Outgoing(system, stream, encode_frame(table) if data is None else data, f"{writer}:{stream}:{first}-{last}", headers)


def _records(m: Outgoing) -> int:
    return int(m.headers.get("rows", 0))


@dataclass
class _Pending:
    """One message of the commit being built, with its records (what a spill writes)."""

    table: pa.RecordBatch | pa.Table
    msg: Outgoing


def _split(table: pa.RecordBatch | pa.Table, limit: int) -> list[tuple[pa.RecordBatch | pa.Table, bytes]]:
    """``table`` as (records, frame) pieces of at most ``limit`` frame bytes each (a single record
    larger than that stays one piece)."""
    data = encode_frame(table)
    if len(data) <= limit or table.num_rows <= 1:
        return [(table, data)]
    t = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
    step = max(1, math.ceil(t.num_rows / max(2, math.ceil(len(data) / limit))))
    out: list[tuple[pa.RecordBatch | pa.Table, bytes]] = []
    for i in range(0, t.num_rows, step):
        out.extend(_split(t.slice(i, step), limit))
    return out


def _positive(name: str, value: Any, lo: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < lo:
        raise SpecError(f"The '{name}' parameter of TransportSink must be a number >= {lo:g}. Got {value!r} instead.")
    return float(value)


class TransportSink(Sink):
    """Publishes one writer's telemetry to a distributed log (see the module doc).

    Parameters
    ----------
    transport:
        The log (:class:`~closedloop.telemetry.transport.Transport`); the sink owns it and closes it.
    home:
        The project home: the spill goes to ``<home>/telemetry/spill/<writer>/``.
    system:
        The system's name (the log's stream; letters, digits, ``_`` and ``-``).
    spill_bytes:
        The spill's bound on disk (dropping beyond it, counted).
    publish_timeout:
        Seconds a publish waits for the log's acknowledgements.
    retry_interval:
        Seconds between attempts to re-publish the spill (and during which, after a failure,
        commits spill without trying the log).
    max_message_bytes:
        A batch whose frame is larger is published as several messages (NATS refuses payloads over
        its ``max_payload``, 1 MiB by default).
    """

    def __init__(self, transport: Transport, home: Path | str, *, system: str, spill_bytes: int = 256 << 20,
                 publish_timeout: float = 5.0, retry_interval: float = 1.0, max_message_bytes: int = 900_000) -> None:
        if not isinstance(transport, Transport):
            raise SpecError(f"The 'transport' parameter of TransportSink must be a closedloop Transport. Got {transport!r} instead.")
        if not isinstance(system, str) or not NAME.match(system):
            raise SpecError(f"The 'system' parameter of TransportSink must match {NAME.pattern} (it names the log's stream). "
                            f"Got {system!r} instead.")
        self.transport = transport
        self.home = Path(home)
        self.system = system
        self.spill_bytes = int(_positive("spill_bytes", spill_bytes, 4096))
        self.publish_timeout = _positive("publish_timeout", publish_timeout, 0.01)
        self.retry_interval = _positive("retry_interval", retry_interval, 0.01)
        self.max_message_bytes = int(_positive("max_message_bytes", max_message_bytes, 1024))
        self.writer = new_writer_id()
        self.counters: dict[str, Any] = {"published": 0, "acknowledged": 0, "spilled": 0, "republished": 0,
                                         "dropped": dict.fromkeys(STREAMS, 0), "unavailable": 0}
        self.last_error: str | None = None
        self.down_since: float | None = None  # epoch seconds of the first failure of the current outage
        self._last_failure: float | None = None  # monotonic
        self._lock = threading.RLock()
        self._pending: list[_Pending] = []
        self._feature_sets: dict[str, Outgoing] = {}  # published at the next attempt
        self._dir = spill_root(self.home) / self.writer
        self._spill: SegmentLog | None = None
        self._offsets: dict[str, int] = {}  # spill file → bytes re-published from its start
        self._backlog = 0  # records spilled and not yet re-published or dropped (own and adopted)
        self._spilled = False  # this writer's spill holds segments
        self._adopted: list[tuple[Path, int]] = []  # (folder, its lock's fd)
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the Sink interface ------------------------------------------------------------------
    def open(self) -> int:
        """Create and lock this writer's spill folder, adopt the spills of writers that are gone,
        start the re-publishing thread. Returns -1: every sink is a new writer."""
        with self._lock:
            if self._lock_fd is None:
                self._lock_fd = self._claim_folder()
                self._adopt()
                self._thread = threading.Thread(target=self._run, name=f"closedloop-telemetry-log-{self.writer}", daemon=True)
                self._thread.start()
        return -1

    def append(self, stream: str, batch: pa.RecordBatch | pa.Table) -> None:
        check_stream(stream, batch)
        if self._lock_fd is None:
            self.open()
        if batch.num_rows == 0:
            return
        for table, data in _split(batch, self.max_message_bytes):
            self._pending.append(_Pending(table, message_for(self.system, self.writer, stream, table, data)))

    def feature_set(self, fingerprint: str, names: Sequence[str]) -> None:
        """Publish the feature names of a fingerprint on the ``feature_sets`` stream (msg id
        ``fs:<fingerprint>``) at the next commit or re-publishing attempt."""
        fp = "".join(c for c in str(fingerprint) if c.isalnum() or c in "_-")[:128] or "none"
        data = msgspec.json.encode({"fingerprint": fingerprint, "names": list(names)})
        with self._lock:
            self._feature_sets[fp] = Outgoing(self.system, "feature_sets", data, f"fs:{fp}", {"fingerprint": fp})

    def sync(self) -> None:
        """Publish the commit's messages (a waiting backlog first); return once the log has
        acknowledged them all. On TransportUnavailable: spill them and raise."""
        with self._lock:
            pending, self._pending = self._pending, []
            ago = None if self._last_failure is None else time.monotonic() - self._last_failure
            if ago is not None and ago < self.retry_interval:  # failed just now: do not wait for it again
                self._spill_commit(pending)
                raise TransportUnavailable(f"The telemetry log was unreachable {ago:.2f} s ago ({self.last_error}); this commit is "
                                           f"spilled, the log is retried every {self.retry_interval:g} s.")
            try:
                if self._spilled or self._adopted:
                    self._drain(self.publish_timeout)
                self._publish([*self._feature_sets.values(), *(p.msg for p in pending)], self.publish_timeout)
                self._feature_sets.clear()
            except TransportUnavailable as e:
                self._failed(e)
                self._spill_commit(pending)
                raise
            except TransportError:
                self._count_dropped(pending)
                raise

    def close(self) -> None:
        """Publish what is pending (spilled if the log is down), stop the thread, release the
        spill (left for the next process if not re-published) and close the transport."""
        try:
            if self._pending:
                self.sync()
        finally:
            self._stop.set()
            self._last_attempt()
            if self._thread is not None:
                self._thread.join(timeout=self.publish_timeout + 5)
            with self._lock:
                self._release()
            self.transport.close()

    # -- status -------------------------------------------------------------------------------
    @property
    def reachable(self) -> bool:
        """False from a failed publish until one succeeds."""
        return self.down_since is None

    def stats(self) -> dict[str, Any]:
        out = dict(self.counters)
        out["dropped"] = dict(self.counters["dropped"])
        out.update(reachable=self.reachable, down_since=self.down_since, last_error=self.last_error, writer=self.writer,
                   spill_backlog=self._backlog, spill_bytes=self.spill_size())
        return out

    def problem(self) -> str | None:
        """A ``/readyz`` line when the log is unreachable or a spilled backlog waits; None otherwise."""
        if self.down_since is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.down_since))
            return (f"telemetry log unreachable since {since} ({self.last_error}); {self._backlog} records spilled "
                    f"({self.spill_size()} bytes), re-published when it returns")
        if self._backlog:
            return f"telemetry log reachable; re-publishing {self._backlog} spilled records"
        return None

    def spill_size(self, own: bool = False) -> int:
        """Bytes of spill segments on disk (this writer's, and those adopted unless ``own``)."""
        total = 0
        for d in [self._dir, *([] if own else (a[0] for a in list(self._adopted)))]:
            for stream in STREAMS:
                try:
                    total += sum(p.stat().st_size for p in list_segments(d, stream))
                except FileNotFoundError:  # re-published and removed meanwhile
                    pass
        return total

    # -- publishing ---------------------------------------------------------------------------
    def _publish(self, msgs: list[Outgoing], timeout: float) -> None:
        if not msgs:
            return
        n = sum(_records(m) for m in msgs)
        self.counters["published"] += n
        try:
            self.transport.publish(msgs, timeout=timeout)
        except TransportUnavailable:
            self.counters["unavailable"] += 1
            raise
        self.counters["acknowledged"] += n
        self.down_since = self._last_failure = None

    def _failed(self, e: TransportUnavailable) -> None:
        self._last_failure = time.monotonic()
        if self.down_since is None:
            self.down_since = time.time()
            log.warning("telemetry log unreachable, spilling to %s: %s", self._dir, e)
        self.last_error = str(e)

    def _run(self) -> None:
        """The thread: every ``retry_interval``, re-publish the backlog (and feature sets) if any."""
        while not self._stop.wait(self.retry_interval):
            with self._lock:
                if not (self._spilled or self._adopted or self._feature_sets):
                    continue
                try:
                    self._drain(min(self.publish_timeout, max(1.0, self.retry_interval)))
                    self._publish(list(self._feature_sets.values()), self.publish_timeout)
                    self._feature_sets.clear()
                except TransportUnavailable as e:
                    self._failed(e)
                except Exception as e:  # noqa: BLE001 - keep retrying; said in /readyz and the log
                    self.last_error = f"{type(e).__name__}: {e}"
                    log.exception("re-publishing the telemetry spill failed")

    def _last_attempt(self) -> None:
        """On close: re-publish what waits unless the log failed within ``retry_interval``."""
        with self._lock:
            recent = self._last_failure is not None and time.monotonic() - self._last_failure < self.retry_interval
            if recent or not (self._spilled or self._adopted or self._feature_sets):
                return
            try:
                self._drain(min(self.publish_timeout, 2.0))
                self._publish(list(self._feature_sets.values()), min(self.publish_timeout, 2.0))
                self._feature_sets.clear()
            except TransportError as e:
                self.last_error = str(e)

    # -- the spill ----------------------------------------------------------------------------
    def _spill_log(self) -> SegmentLog:
        if self._spill is None:
            self._spill = SegmentLog(self._dir, writer=self.writer, segment_bytes=max(1024, self.spill_bytes // 8))
            self._spill.open()
        return self._spill

    def _spill_commit(self, pending: list[_Pending]) -> None:
        """Write a failed commit's batches to the spill (fsynced), then keep the spill in its bound."""
        if not pending:
            return
        try:
            spill = self._spill_log()
            for p in pending:
                spill.append(p.msg.stream, p.table)
            spill.sync()
        except OSError as e:  # the records are lost: counted, never silently
            self._count_dropped(pending)
            log.error("telemetry spill failed, %d records dropped: %s", sum(_records(p.msg) for p in pending), e)
            return
        n = sum(_records(p.msg) for p in pending)
        self.counters["spilled"] += n
        self._backlog += n
        self._spilled = True
        self._keep_bound()

    def _count_dropped(self, pending: list[_Pending]) -> None:
        for p in pending:
            self.counters["dropped"][p.msg.stream] += _records(p.msg)

    def _keep_bound(self) -> None:
        """This writer's spill over ``spill_bytes``: drop its oldest decision segments, then its oldest
        outcome segments (an adopted spill was bounded by its own writer)."""
        if self.spill_size(own=True) <= self.spill_bytes:
            return
        if self._spill is not None:  # every segment sealed: any may go
            self._spill.close()
            self._spill = None
        for stream in STREAMS:  # decisions first
            for path in list_segments(self._dir, stream):
                if self.spill_size(own=True) <= self.spill_bytes:
                    return
                n = sum(f.raw().num_rows for f in scan_segment(path.read_bytes(), self._offsets.pop(str(path), 0)).frames)
                path.unlink()
                self.counters["dropped"][stream] += n
                self._backlog -= n
                log.warning("telemetry spill over %d bytes: dropped %d %s records (%s)", self.spill_bytes, n, stream, path.name)

    def _drain(self, timeout: float) -> None:
        """Re-publish the adopted spills and this writer's, in order; raises TransportUnavailable
        (what was acknowledged so far stays done)."""
        while self._adopted:
            folder, fd = self._adopted[0]
            self._drain_folder(folder, folder.name, timeout)
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
            self._adopted.pop(0)
        if self._spilled:
            if self._spill is not None:
                self._spill.close()  # its files sealed: re-published and deleted below
                self._spill = None
            self._drain_folder(self._dir, self.writer, timeout)
            self._spilled = False
            self._backlog = 0

    def _drain_folder(self, folder: Path, writer: str, timeout: float) -> None:
        """Re-publish one folder's spill segments, oldest first, deleting each once it is all acknowledged."""
        for stream in STREAMS:
            for path in list_segments(folder, stream):
                key = str(path)
                data = path.read_bytes()
                frames = scan_segment(data, self._offsets.get(key, 0)).frames
                i = 0
                while i < len(frames):
                    msgs: list[Outgoing] = []
                    size = 0
                    while i < len(frames) and len(msgs) < _CHUNK_MESSAGES and size < _CHUNK_BYTES:
                        f = frames[i]
                        msgs.append(message_for(self.system, writer, stream, f.raw(), data[f.start:f.end]))
                        size += f.end - f.start
                        i += 1
                    self._publish(msgs, timeout)
                    n = sum(_records(m) for m in msgs)
                    self.counters["republished"] += n
                    self._backlog = max(0, self._backlog - n)
                    self._offsets[key] = frames[i - 1].end
                path.unlink()
                self._offsets.pop(key, None)

    # -- the spill folders ----------------------------------------------------------------------
    def _claim_folder(self) -> int:
        """Create this writer's spill folder holding its lock (created hidden, locked, renamed:
        no one can adopt it in between)."""
        root = make_private_dirs(spill_root(self.home))
        tmp = root / f".{self.writer}.tmp"
        make_private_dirs(tmp)
        fd = open_private(tmp / LOCK, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, self._dir)
        fsync_dir(root)
        return fd

    def _adopt(self) -> None:
        """Take over the spill folders whose writer is gone (their lock is free)."""
        for folder in sorted(spill_root(self.home).iterdir()):
            if folder.name.startswith(".") or folder == self._dir or not folder.is_dir():
                continue
            try:
                fd = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if not folder.exists():  # re-published and removed by another process meanwhile
                os.close(fd)
                continue
            n = sum(f.raw().num_rows for s in STREAMS for p in list_segments(folder, s) for f in scan_segment(p.read_bytes()).frames)
            log.info("adopting the telemetry spill of writer %s (%d records)", folder.name, n)
            self._backlog += n
            self._adopted.append((folder, fd))

    def _release(self) -> None:
        """Close the spill; remove this writer's folder if nothing waits in it; unlock every folder."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if not any(list_segments(self._dir, s) for s in STREAMS):
            shutil.rmtree(self._dir, ignore_errors=True)
        for _, fd in self._adopted:
            os.close(fd)
        self._adopted.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

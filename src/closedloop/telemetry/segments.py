"""The embedded telemetry log: append-only segment files of checksummed Arrow IPC frames.

Layout (in the project home)::

    telemetry/segments/<stream>/<writer>-<NNNNNN>.seg      stream: decisions | outcomes

Every writer (one per process and :class:`~closedloop.telemetry.Telemetry`) has its own id
(``<host>-<pid>-<random>``), so processes never share a file and need no locks between them.
A segment is a sequence of frames, one per group commit::

    magic b"CLSG" | length: u32 LE | crc32(payload): u32 LE | payload

where the payload is the Arrow IPC stream bytes of the commit's record batches (usually one) of
:data:`~closedloop.telemetry.records.DECISION_SCHEMA` rows — or of their compact form (typed
context columns, constants stored once: :mod:`~closedloop.telemetry.compact`), which
:meth:`Frame.batch` converts, so every reader gets ``DECISION_SCHEMA`` — / ``OUTCOME_SCHEMA`` rows. A segment rolls
to the next number past ``segment_bytes``. The writer holds an exclusive ``flock`` on the segment
it appends to (created under a hidden temporary name, locked, then renamed), so anyone can tell
a *sealed* segment (no lock: rolled, closed, or its process died) from a live one. Segments hold
raw contexts: they are created ``0600``, their folders ``0700`` (:mod:`closedloop.base.files`).

A crash can leave a *torn tail*: a last frame cut short or failing its crc. Readers
(:func:`read_segments`) detect it, count it and skip it; a writer reopening its own segments
(a restart with the same writer id) cuts it off and continues after the last good frame, with
its sequence numbers continuing from the last durable one. A write error (e.g. disk full) cuts
the file back to the last good frame, so one failed commit never corrupts the frames after it.

Why Arrow IPC and not JSON lines: an IPC frame is smaller, faster to encode, and reads back
without parsing (zero copy, exact types and nulls). The columns must be built either way, so
JSON only costs more; it would win only for tiny commits (every IPC frame carries the schema).
The figures, from ``bench/telemetry.py``: docs/performance.md, "Telemetry".
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import socket
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pyarrow as pa

from closedloop.base.files import atomic_write, fsync_dir, make_private_dirs, open_private
from closedloop.errors import SpecError
from closedloop.telemetry.compact import to_decision_schema
from closedloop.telemetry.sink import STREAMS, Sink, check_stream

__all__ = ["Frame", "SegmentLog", "read_segments", "scan_segment", "segment_dir", "new_writer_id"]

MAGIC = b"CLSG"
_HEADER = struct.Struct("<4sII")
HEADER_SIZE = _HEADER.size


def segment_dir(home: Path | str, stream: str) -> Path:
    return Path(home) / "telemetry" / "segments" / stream


def new_writer_id() -> str:
    host = "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


#: The end-of-stream marker of the Arrow IPC stream format.
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def encode_frame_parts(batch: pa.RecordBatch | pa.Table) -> tuple[bytes, list[memoryview]]:
    """The frame of one commit as (header, payload parts): the payload is the Arrow IPC stream
    (schema message, one message per record batch, end-of-stream) — exactly what
    ``pa.ipc.new_stream`` writes — serialized into buffers of the exact size (no growing, no copy
    to join them)."""
    batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
    parts = [memoryview(batch.schema.serialize()), *(memoryview(b.serialize()) for b in batches), memoryview(_EOS)]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return _HEADER.pack(MAGIC, sum(len(part) for part in parts), crc), parts


def encode_frame(batch: pa.RecordBatch | pa.Table) -> bytes:
    header, parts = encode_frame_parts(batch)
    return b"".join([header, *parts])


@dataclass
class Frame:
    start: int  # byte offset of the header
    end: int  # byte offset after the payload
    payload: memoryview

    def batch(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The frame's records as readers get them (decisions in ``DECISION_SCHEMA``, whatever
        form the writer chose); only ``columns`` (the others not converted) when given."""
        return to_decision_schema(self.raw(), columns)

    def raw(self) -> pa.Table:
        """The frame's records as written."""
        return pa.ipc.open_stream(pa.py_buffer(self.payload)).read_all()


@dataclass
class Scan:
    frames: list[Frame]
    good_end: int  # end of the last valid frame
    size: int  # file size
    torn: bool  # bytes after good_end that are not a valid frame


def scan_segment(data: bytes, start: int = 0) -> Scan:
    """Validate the frames of one segment's bytes from ``start`` (a frame boundary)."""
    view = memoryview(data)
    pos, frames = start, []
    n = len(data)
    while pos + HEADER_SIZE <= n:
        magic, length, crc = _HEADER.unpack_from(data, pos)
        end = pos + HEADER_SIZE + length
        if magic != MAGIC or end > n:
            break
        payload = view[pos + HEADER_SIZE:end]
        if zlib.crc32(payload) != crc:
            break
        frames.append(Frame(pos, end, payload))
        pos = end
    return Scan(frames, pos, n, pos < n)


def parse_name(name: str) -> tuple[str, int] | None:
    if name.startswith(".") or not name.endswith(".seg"):
        return None
    writer, _, num = name[:-4].rpartition("-")
    if not writer or not num.isdigit():
        return None
    return writer, int(num)


def list_segments(home: Path | str, stream: str) -> list[Path]:
    d = segment_dir(home, stream)
    if not d.is_dir():
        return []
    items = [(p, parse_name(p.name)) for p in d.iterdir()]
    return [p for p, k in sorted((x for x in items if x[1] is not None), key=lambda x: x[1])]  # type: ignore[arg-type, return-value]


def is_sealed(path: Path) -> bool:
    """True when no writer holds the segment (it rolled, closed, or died)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def read_segments(
    home: Path | str,
    stream: str,
    *,
    offsets: dict[str, int] | None = None,
    stats: dict[str, int] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Every valid frame of a stream's segments as one table (of ``columns`` only, when given).

    ``offsets`` (segment file name → byte offset) skips what was already compacted. A torn tail
    of a sealed segment is counted in ``stats["torn_tails"]`` and skipped; the incomplete last
    frame of a live segment is a commit in progress, skipped without counting.
    """
    schema = STREAMS[stream]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    tables: list[pa.Table] = []
    for path in list_segments(home, stream):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # compacted and deleted meanwhile
            continue
        scan = scan_segment(data, (offsets or {}).get(path.name, 0))
        tables.extend(f.batch(columns) for f in scan.frames)
        if stats is not None:
            stats["frames"] = stats.get("frames", 0) + len(scan.frames)
            if scan.torn and is_sealed(path):
                stats["torn_tails"] = stats.get("torn_tails", 0) + 1
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


class _Active:
    __slots__ = ("fd", "number", "path", "size", "synced")

    def __init__(self, fd: int, number: int, path: Path, size: int) -> None:
        self.fd, self.number, self.path, self.size = fd, number, path, size
        self.synced = size  # the size at the last successful sync: what a failed sync rolls back to


class SegmentLog(Sink):
    """The embedded sink: one writer's append-only segments under ``<home>/telemetry/segments``.

    Parameters
    ----------
    home:
        The project home.
    writer:
        This writer's id (default: ``<host>-<pid>-<random>``). Give the id of a writer that
        crashed to continue its segments: the torn tail is cut off and numbering continues.
    segment_bytes:
        Roll to a new segment once a segment reaches this size.
    """

    def __init__(self, home: Path | str, *, writer: str | None = None, segment_bytes: int = 64 << 20) -> None:
        if writer is not None and (not writer or "/" in writer or writer.startswith(".")):
            raise SpecError(f"A segment writer id must be a non-empty file-name-safe string. Got {writer!r} instead.")
        if segment_bytes < 1024:
            raise SpecError(f"SegmentLog 'segment_bytes' must be at least 1024. Got {segment_bytes!r} instead.")
        self.home = Path(home)
        self.writer = writer or new_writer_id()
        self.segment_bytes = int(segment_bytes)
        self.torn_tails = 0
        self._active: dict[str, _Active] = {}
        self._dirty: set[int] = set()
        self._last_seq = -1
        self._opened = False

    # -- opening ---------------------------------------------------------------------------
    def open(self) -> int:
        """Create the directories, reopen this writer's last segments (cutting torn tails) and
        return the highest sequence number already durable for this writer (-1: none)."""
        if self._opened:
            return self._last_seq
        for stream in STREAMS:
            make_private_dirs(segment_dir(self.home, stream))
        make_private_dirs(self.home / "telemetry" / "feature_sets")
        last = -1
        for stream in STREAMS:
            mine = [p for p in list_segments(self.home, stream) if parse_name(p.name)[0] == self.writer]  # type: ignore[index]
            if not mine:
                continue
            seq = self._reopen(stream, mine[-1])
            for path in reversed(mine[:-1]):
                if seq is not None:
                    break
                scan = scan_segment(path.read_bytes())
                seq = _last_seq(scan)
            if seq is not None:
                last = max(last, seq)
        self._last_seq = last
        self._opened = True
        return last

    def _reopen(self, stream: str, path: Path) -> int | None:
        """Cut this writer's last segment back to its last good frame and continue it."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpecError(f"Telemetry writer {self.writer!r} is already running (segment {path.name} is locked).") from None
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        scan = scan_segment(data)
        if scan.torn:
            self.torn_tails += 1
            os.ftruncate(fd, scan.good_end)
            os.fsync(fd)
        if scan.good_end < self.segment_bytes and _same_file(fd, path):
            os.lseek(fd, scan.good_end, os.SEEK_SET)
            self._active[stream] = _Active(fd, parse_name(path.name)[1], path, scan.good_end)  # type: ignore[index]
        else:
            os.close(fd)  # sealed; the next append starts the next segment
        return _last_seq(scan)

    def _new_segment(self, stream: str, number: int) -> _Active:
        d = segment_dir(self.home, stream)
        final = d / f"{self.writer}-{number:06d}.seg"
        tmp = d / f".{final.name}.tmp"
        fd = open_private(tmp, os.O_RDWR | os.O_TRUNC)  # 0600: a segment holds raw contexts
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, final)
        fsync_dir(d)
        return _Active(fd, number, final, 0)

    def _segment(self, stream: str) -> _Active:
        a = self._active.get(stream)
        if a is None:
            mine = [parse_name(p.name)[1] for p in list_segments(self.home, stream) if parse_name(p.name)[0] == self.writer]  # type: ignore[index]
            a = self._active[stream] = self._new_segment(stream, (max(mine) + 1) if mine else 0)
        elif a.size >= self.segment_bytes:
            fsync_needed = a.fd in self._dirty
            if fsync_needed:
                os.fsync(a.fd)
                self._dirty.discard(a.fd)
                a.synced = a.size
            os.close(a.fd)  # releases the lock: the segment is sealed
            a = self._active[stream] = self._new_segment(stream, a.number + 1)
        return a

    # -- the Sink interface ------------------------------------------------------------------
    def append(self, stream: str, batch: pa.RecordBatch | pa.Table) -> None:
        check_stream(stream, batch)
        if not self._opened:
            self.open()
        header, payload = encode_frame_parts(batch)
        size = len(header) + sum(len(part) for part in payload)
        a = self._segment(stream)
        try:
            _write_all(a.fd, header, *payload)
        except OSError:
            # Cut the partial frame off so the frames after it stay readable; if even that
            # fails, seal this segment and start a new one for the next commit.
            try:
                os.ftruncate(a.fd, a.size)
                os.lseek(a.fd, a.size, os.SEEK_SET)
            except OSError:
                os.close(a.fd)
                self._dirty.discard(a.fd)
                del self._active[stream]
            raise
        a.size += size
        self._dirty.add(a.fd)

    def sync(self) -> None:
        """fsync what was appended since the last sync. If an fsync fails (ENOSPC, EIO), the
        frames appended since are cut off again — in every stream: the commit failed as a whole,
        and records reported as not durable must not turn up later (a retried commit would
        write them twice) — and the error is raised."""
        try:
            for a in self._active.values():
                if a.fd in self._dirty:
                    os.fsync(a.fd)
        except OSError:
            self._roll_back()
            raise
        self._dirty.clear()
        for a in self._active.values():
            a.synced = a.size

    def _roll_back(self) -> None:
        """Cut every segment back to its size at the last successful sync; a segment that
        cannot be cut is sealed (the next commit starts a new one)."""
        for stream, a in list(self._active.items()):
            if a.size > a.synced:
                try:
                    os.ftruncate(a.fd, a.synced)
                    os.lseek(a.fd, a.synced, os.SEEK_SET)
                    os.fsync(a.fd)
                except OSError:
                    os.close(a.fd)
                    del self._active[stream]
                    continue
                a.size = a.synced
        self._dirty.clear()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            for a in self._active.values():
                os.close(a.fd)
            self._active.clear()
            self._dirty.clear()

    def feature_set(self, fingerprint: str, names: Sequence[str]) -> None:
        d = self.home / "telemetry" / "feature_sets"
        path = d / f"{fingerprint}.json"
        if path.exists():
            return
        make_private_dirs(d)
        atomic_write(path, msgspec.json.encode({"fingerprint": fingerprint, "names": list(names)}))

    def files(self) -> Iterator[Path]:
        for a in self._active.values():
            yield a.path


def _last_seq(scan: Scan) -> int | None:
    if not scan.frames:
        return None
    return int(scan.frames[-1].raw().column("seq").to_numpy().max())


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _write_all(fd: int, *parts: bytes | memoryview) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.writev(fd, views)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]

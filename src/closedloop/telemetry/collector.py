"""The collector: writes a system's telemetry from the log (a :class:`~closedloop.telemetry.transport.Transport`)
into the day-partitioned Parquet lake that :class:`~closedloop.telemetry.TelemetryStore` reads —
``closedloop telemetry collect`` runs one; any number run in one consumer group.

It fetches the system's ``decisions``, ``outcomes`` and ``feature_sets`` messages (their format:
:mod:`closedloop.telemetry.transport`), and for each fetched batch of a stream

1. decodes every frame (decisions converted to ``DECISION_SCHEMA``, whatever form the writer
   used); a message that is not a whole frame of the stream's records of this system is
   *quarantined* (kept under ``telemetry/quarantine/``, counted, logged), never dropped silently;
2. drops records of forgotten units (the store's tombstones, as ``compact`` does) and repeats of
   a record id (``decision_id`` / ``outcome_id``) within the batch;
3. per day partition (decisions by the UTC day of ``timestamp_ns``, outcomes by ``event_ns``) and
   under that partition's lock (an exclusive ``flock`` on ``day=…/.collect.lock``, inside the
   store's shared lock, so compaction, forget and retention wait), drops the records whose id is
   already in one of the partition's Parquet files, and writes the rest as one new file
   ``part-<first ingest_ns>-js-<random>.parquet`` (temporary name, fsync, rename, fsync of the
   folder);
4. acknowledges the messages.

**Exactly once per record.** A message is acknowledged only after its records are durable, so a
crash (or a slow collector whose ``ack_wait`` ran out) makes the log deliver it again, maybe to
another collector: step 3 then finds every record id already written and writes nothing. The same
record sent in two messages (a replica that re-published after a doubtful outage) is caught the
same way. Step 3 is serialized per partition across every collector on the lake, so two
collectors can never both write one record; a partition's files each hold distinct ids. The ids
of a partition's files are cached per collector (refreshed from the files that appeared or
changed since): about 100 bytes per record of the partitions written recently (the 8 last).

**Other lakes.** A ``lake`` given as a URI (``s3://…``, ``gs://…``, ``file://…``) is opened with
``pyarrow.fs`` as it is: same layout, files written in place (an object store's write is
atomic), no locks and no tombstones (``forget`` works on a local home only). Without the
partition lock two collectors can both write a record sent in two different messages that they
process at the same moment (readers deduplicate outcomes by id). Only ``file://`` is tested here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop.base.files import atomic_write, fsync_dir, make_private_dirs, open_private
from closedloop.errors import TransportError, TransportUnavailable
from closedloop.telemetry.segments import scan_segment
from closedloop.telemetry.sink import STREAMS
from closedloop.telemetry.store import TelemetryStore, _by_day, _write_parquet
from closedloop.telemetry.transport import NAME, STREAM_NAMES, Message, Subscription, Transport, check_group

__all__ = ["Collector"]

_log = logging.getLogger("closedloop.telemetry.collector")
_ID = {"decisions": "decision_id", "outcomes": "outcome_id"}
_TIME = {"decisions": "timestamp_ns", "outcomes": "event_ns"}
_FINGERPRINT = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_CACHED_DAYS = 8


class _Bad(Exception):
    """A message the collector cannot write: it is quarantined."""


def decode(system: str, stream: str, m: Message) -> pa.Table:
    """A decisions or outcomes message's records (``DECISION_SCHEMA`` / ``OUTCOME_SCHEMA``)."""
    data = bytes(m.data)
    scan = scan_segment(data)
    if not scan.frames or scan.torn:
        raise _Bad(f"not a whole segment frame ({len(data)} bytes, {len(scan.frames)} good frames, torn={scan.torn})")
    try:
        t = pa.concat_tables([f.batch() for f in scan.frames])
    except (pa.ArrowException, KeyError, ValueError) as e:
        raise _Bad(f"the frame does not decode: {e}") from e
    if not t.schema.equals(STREAMS[stream]):
        raise _Bad(f"the records are not {stream} records: schema {t.schema.names}")
    rows = m.headers.get("rows")
    if rows is not None and rows != str(t.num_rows):
        raise _Bad(f"the 'rows' header says {rows}, the frame holds {t.num_rows}")
    systems = pc.unique(t.column("system")).to_pylist()
    if any(s != system for s in systems):
        raise _Bad(f"records of system(s) {systems} on system {system!r}'s stream")
    return t


@dataclass
class _Day:
    """The record ids of one partition's Parquet files, as this collector last saw them."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (mtime_ns, size)
    ids: set[str] = field(default_factory=set)


class _LocalLake:
    """The lake in a project home on a local disk (the store's layout, locks and tombstones)."""

    def __init__(self, home: Path | str) -> None:
        self.store = TelemetryStore(home)
        self.root = self.store.root

    def _dir(self, stream: str, day: str) -> Path:
        return self.root / "parquet" / stream / f"day={day}"

    @contextlib.contextmanager
    def writing(self, stream: str) -> Iterator[Any]:
        """Hold the store's shared lock; yields the function that drops forgotten units' records."""
        with self.store._locked(False):
            state = self.store._load()
            yield lambda t: self.store._drop_forgotten(stream, t, state)

    @contextlib.contextmanager
    def day_lock(self, stream: str, day: str) -> Iterator[None]:
        d = self._dir(stream, day)
        make_private_dirs(d)
        fd = open_private(d / ".collect.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def listing(self, stream: str, day: str) -> dict[str, tuple[int, int]]:
        out = {}
        for p in self._dir(stream, day).glob("part-*.parquet"):
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                out[p.name] = (st.st_mtime_ns, st.st_size)
        return out

    def read_ids(self, stream: str, day: str, name: str) -> list[str]:
        return pq.read_table(self._dir(stream, day) / name, columns=[_ID[stream]]).column(0).to_pylist()

    def write(self, stream: str, day: str, name: str, t: pa.Table) -> None:
        d = self._dir(stream, day)
        tmp = d / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        _write_parquet(t, tmp)
        os.rename(tmp, d / name)
        fsync_dir(d)

    def put(self, relative: str, data: bytes, *, replace: bool = True) -> None:
        path = self.root / relative
        if not replace and path.exists():
            return
        make_private_dirs(path.parent)
        atomic_write(path, data)


class _FsLake:
    """A lake at a ``pyarrow.fs`` URI: the same layout, no locks, no tombstones (see the module)."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs

        self.pafs = pafs
        self.fs, base = pafs.FileSystem.from_uri(uri)
        self.root = f"{base.rstrip('/')}/telemetry"

    def _dir(self, stream: str, day: str) -> str:
        return f"{self.root}/parquet/{stream}/day={day}"

    @contextlib.contextmanager
    def writing(self, stream: str) -> Iterator[Any]:
        yield lambda t: t

    @contextlib.contextmanager
    def day_lock(self, stream: str, day: str) -> Iterator[None]:
        yield

    def listing(self, stream: str, day: str) -> dict[str, tuple[int, int]]:
        infos = self.fs.get_file_info(self.pafs.FileSelector(self._dir(stream, day), allow_not_found=True))
        return {i.base_name: (int(i.mtime_ns or 0), int(i.size or 0)) for i in infos
                if i.type == self.pafs.FileType.File and i.base_name.startswith("part-") and i.base_name.endswith(".parquet")}

    def read_ids(self, stream: str, day: str, name: str) -> list[str]:
        return pq.read_table(f"{self._dir(stream, day)}/{name}", columns=[_ID[stream]], filesystem=self.fs).column(0).to_pylist()

    def write(self, stream: str, day: str, name: str, t: pa.Table) -> None:
        self.fs.create_dir(self._dir(stream, day), recursive=True)
        pq.write_table(t, f"{self._dir(stream, day)}/{name}", filesystem=self.fs, compression="zstd")

    def put(self, relative: str, data: bytes, *, replace: bool = True) -> None:
        path = f"{self.root}/{relative}"
        if not replace and self.fs.get_file_info(path).type != self.pafs.FileType.NotFound:
            return
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as out:
            out.write(data)


class Collector:
    """Writes one system's telemetry from ``transport`` into the lake at ``lake`` (a project home,
    or a ``pyarrow.fs`` URI) exactly once per record (see the module).

    ``group``: the consumer group (collectors of one lake share one); ``batch``: the most messages
    fetched (and written as one file per day) at a time; ``ack_wait``: seconds before a message
    fetched and not acknowledged is delivered again (longer than writing one batch takes);
    ``fetch_timeout``: seconds a fetch waits for a message per stream."""

    def __init__(self, transport: Transport, lake: Path | str, system: str, *, group: str = "collectors", batch: int = 200,
                 ack_wait: float = 30.0, fetch_timeout: float = 0.5) -> None:
        if not isinstance(transport, Transport):
            raise TransportError(f"The 'transport' parameter of Collector must be a Transport. Got {type(transport).__name__} instead.")
        if not isinstance(system, str) or not NAME.match(system):
            raise TransportError(f"The 'system' parameter of Collector must match {NAME.pattern}. Got {system!r} instead.")
        check_group(group, ack_wait)
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise TransportError(f"The 'batch' parameter of Collector must be an integer in [1, 10000]. Got {batch!r} instead.")
        if isinstance(fetch_timeout, bool) or not isinstance(fetch_timeout, int | float) or not 0.01 <= fetch_timeout <= 60:
            raise TransportError(f"The 'fetch_timeout' parameter of Collector must be a number of seconds in [0.01, 60]. "
                                 f"Got {fetch_timeout!r} instead.")
        if not isinstance(lake, str | Path) or not str(lake):
            raise TransportError(f"The 'lake' parameter of Collector must be a project home or a pyarrow.fs URI. Got {lake!r} instead.")
        self.transport, self.system, self.group = transport, system, group
        self.batch, self.ack_wait, self.fetch_timeout = batch, float(ack_wait), float(fetch_timeout)
        self.lake: _LocalLake | _FsLake = _FsLake(lake) if isinstance(lake, str) and "://" in lake else _LocalLake(lake)
        self.counts = {"messages": 0, "decisions": 0, "outcomes": 0, "feature_sets": 0, "duplicates": 0, "forgotten": 0,
                       "quarantined": 0}
        self._subs: dict[str, Subscription] = {}
        self._days: OrderedDict[tuple[str, str], _Day] = OrderedDict()
        self._idle = True

    # -- the loop ----------------------------------------------------------------------------------

    def step(self) -> int:
        """Fetch, write and acknowledge one batch of each stream; returns the messages handled.
        Raises ``TransportUnavailable`` when the log cannot be reached."""
        handled = 0
        # waiting fetch_timeout on every empty stream would throttle a busy one: after a busy step, a short wait
        wait = self.fetch_timeout if self._idle else min(self.fetch_timeout, 0.02)
        for stream in STREAM_NAMES:
            sub = self._subs.get(stream)
            if sub is None:
                sub = self._subs[stream] = self.transport.subscribe(self.system, stream, self.group, ack_wait=self.ack_wait)
            messages = sub.fetch(self.batch, timeout=wait)
            if not messages:
                continue
            if stream == "feature_sets":
                self._feature_sets(messages)
            else:
                self._records(stream, messages)
            sub.ack(messages)
            self.counts["messages"] += len(messages)
            handled += len(messages)
        self._idle = handled == 0
        return handled

    def run(self, stop: threading.Event, *, log_every: float = 10.0) -> dict[str, int]:
        """Collect until ``stop`` is set; an unreachable log is waited for (logged once per outage).
        Returns the counts."""
        down_since: float | None = None
        last_log = time.monotonic()
        while not stop.is_set():
            try:
                self.step()
                if down_since is not None:
                    _log.warning("telemetry log reachable again after %.1f s", time.monotonic() - down_since)
                    down_since = None
            except TransportUnavailable as e:
                if down_since is None:
                    down_since = time.monotonic()
                    _log.warning("telemetry log unavailable, retrying: %s", e)
                stop.wait(0.5)
            if time.monotonic() - last_log >= log_every:
                last_log = time.monotonic()
                _log.info("collected %s", json.dumps(self.counts))
        self.close()
        return dict(self.counts)

    def close(self) -> None:
        for sub in self._subs.values():
            with contextlib.suppress(TransportError):
                sub.close()
        self._subs.clear()

    # -- writing -----------------------------------------------------------------------------------

    def _quarantine(self, stream: str, m: Message, why: str) -> None:
        name = hashlib.sha1(f"{self.system}:{stream}:{m.msg_id}".encode()).hexdigest()
        meta = {"system": self.system, "stream": stream, "msg_id": m.msg_id, "headers": dict(m.headers), "sequence": m.sequence,
                "reason": why}
        self.lake.put(f"quarantine/{stream}/{name}.msg", bytes(m.data))
        self.lake.put(f"quarantine/{stream}/{name}.json", json.dumps(meta).encode())
        self.counts["quarantined"] += 1
        _log.error("quarantined %s message %r of system %r: %s", stream, m.msg_id, self.system, why)

    def _feature_sets(self, messages: Sequence[Message]) -> None:
        for m in messages:
            try:
                doc = json.loads(bytes(m.data))
                fp, names = doc["fingerprint"], doc["names"]
                if not isinstance(fp, str) or not _FINGERPRINT.match(fp) or not isinstance(names, list) \
                        or not all(isinstance(n, str) for n in names):
                    raise ValueError("a fingerprint (a short name) and a list of feature names are needed")
            except (ValueError, KeyError, TypeError) as e:
                self._quarantine("feature_sets", m, f"not a feature set: {e}")
                continue
            self.lake.put(f"feature_sets/{fp}.json", json.dumps({"fingerprint": fp, "names": names}).encode(), replace=False)
            self.counts["feature_sets"] += 1

    def _records(self, stream: str, messages: Sequence[Message]) -> None:
        tables = []
        for m in messages:
            try:
                tables.append(decode(self.system, stream, m))
            except _Bad as e:
                self._quarantine(stream, m, str(e))
        if not tables:
            return
        t = pa.concat_tables(tables).combine_chunks()  # one chunk: the filters below are per chunk
        ids = t.column(_ID[stream]).to_pylist()
        seen: set[str] = set()
        first = []
        for i in ids:
            first.append(i not in seen)
            seen.add(i)
        self.counts["duplicates"] += len(ids) - sum(first)
        t = t.filter(pa.array(first, pa.bool_()))
        with self.lake.writing(stream) as drop_forgotten:
            kept = drop_forgotten(t)
            self.counts["forgotten"] += t.num_rows - kept.num_rows
            for day, part in _by_day(kept, _TIME[stream]):
                with self.lake.day_lock(stream, day):
                    self._write_day(stream, day, part)

    def _known(self, stream: str, day: str) -> _Day:
        """The partition's record ids, refreshed from its files (call under the partition's lock)."""
        key = (stream, day)
        cached = self._days.pop(key, None)
        listing = self.lake.listing(stream, day)
        if cached is None or any(listing.get(n) != sig for n, sig in cached.files.items()):
            cached = _Day()  # new, or a file changed or went (forget, retention): read them all again
        for name, sig in listing.items():
            if name not in cached.files:
                cached.ids.update(self.lake.read_ids(stream, day, name))
                cached.files[name] = sig
        self._days[key] = cached
        while len(self._days) > _CACHED_DAYS:
            self._days.popitem(last=False)
        return cached

    def _write_day(self, stream: str, day: str, part: pa.Table) -> None:
        known = self._known(stream, day)
        fresh = part.filter(pa.array([i not in known.ids for i in part.column(_ID[stream]).to_pylist()], pa.bool_()))
        self.counts["duplicates"] += part.num_rows - fresh.num_rows
        if fresh.num_rows == 0:
            return
        first = int(pc.min(fresh["ingest_ns"]).as_py() or 0)
        name = f"part-{first:020d}-js-{uuid.uuid4().hex[:12]}.parquet"
        self.lake.write(stream, day, name, fresh)
        known.ids.update(fresh.column(_ID[stream]).to_pylist())
        sig = self.lake.listing(stream, day).get(name)
        if sig is not None:
            known.files[name] = sig
        self.counts[stream] += fresh.num_rows

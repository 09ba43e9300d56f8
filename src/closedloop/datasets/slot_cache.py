"""A per-file cache of what :func:`~closedloop.datasets.slots.build_reward_dataset` decodes from a
telemetry decision file: the slot rows' request and candidate columns and the candidate sets.

A reward cycle builds its dataset over a window of days (7 in the feed demo) every day, so six of
its seven days were decoded by the cycle before. Decoding each decision's JSON (its request, its
candidates), validating the fields, featurizing and writing them back as the dataset's JSON columns
was most of a build. What a decision file yields for its decisions does not depend on the cycle —
only on the file and on the system's declaration — while what does (which decisions are in the
window, deduplicated, not excluded; which slots have a reward; their rewards and weights) is cheap
and computed every build from the file's light columns (ids, times, units, slates, propensities).

So, for each decision file, the cache keeps (Arrow IPC files, no pickle), for every decision of
the system in the file with a slate and its candidates' fields:

- ``slots.arrow``: one row per slot of its slate, in slate order — the dataset's request and
  candidate columns (``context_json``, ``candidate_json``, ``features``, the feature columns,
  ``schema_version``, ``feature_fingerprint``) exactly as the build computes them;
- ``sets.arrow``: one row per logged candidate — ``index``, ``logged_score``, ``candidate`` (the
  rows of ``candidate_sets.parquet`` without the decision id);
- ``rows.arrow``: the decision's row in the file, its slot and candidate counts;
- ``key.json``: the key — the cache format, the system's declaration that the columns depend on
  (name, schema, features and their fingerprint, candidate schema and id), the file's resolved
  path, size, modification time (ns) and inode — and each Arrow file's size and sha256.

An entry is served only when its key equals the one asked and its files' sizes and digests match;
anything else (a missing, corrupted or stale entry: a file rewritten by retention has another size
or time) is rebuilt. A build deletes the entries of the files it did not read from (days that left
the window, files rewritten): the cache holds about one window. The cache is a
directory of the project home (the reward cycle uses ``<home>/cache/reward_rows/<system>``); it is
safe to delete at any time.

A file is not cached — and the build then decodes every decision as without a cache — when its
candidate lists are not uniform (a candidate that is not an object, a field missing or null, fields
in another order, a float field with an integer value, a nested value): the struct column Arrow
infers for the candidate sets from a subset of such a file could differ from the one inferred from
all of it. Also without a cache: a decision logged digest-only, a file whose decisions the build
would refuse (a slate not in its candidates, a field that does not validate): the uncached build
raises as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from closedloop.base.files import make_private_dirs, open_private_file
from closedloop.system.spec import System
from closedloop.telemetry.records import DECISION_SCHEMA

__all__ = ["CACHE_FORMAT", "LIGHT_COLUMNS", "FileParts", "SlotCache"]

#: The version of the entries' layout and of the rules they were computed by.
CACHE_FORMAT = 1
#: The decision columns a cached build reads from the lake (the rest is in the cache).
LIGHT_COLUMNS = ("seq", "writer", "decision_id", "system", "unit", "timestamp_ns", "ingest_ns", "sample_prob", "slate",
                 "slot_propensities")
_FILES = ("slots.arrow", "sets.arrow", "rows.arrow")
#: The decision columns a file's part is computed from.
_DECODED = ("decision_id", "system", "context_json", "candidate_scores", "candidates_json", "slate", "slot_propensities")


class Part(NamedTuple):
    """One decision file's cached columns: ``slot_start`` / ``cand_start`` (per row of the file;
    −1: not cached) index ``slots`` / ``sets``; ``n_cands``: each row's candidates."""

    slots: pa.Table
    sets: pa.Table
    slot_start: np.ndarray
    cand_start: np.ndarray
    n_cands: np.ndarray


class FileParts(NamedTuple):
    """The cached parts of the decision files a build reads (by their index in sorted order)."""

    parts: dict[int, Part]

    def covers(self, dec: pa.Table) -> bool:
        """Whether every decision of ``dec`` (rows with ``_file`` / ``_row``) is cached."""
        f, r = _where(dec)
        for i in np.unique(f).tolist():
            p = self.parts.get(int(i))
            if p is None or (p.slot_start[r[f == i]] < 0).any():
                return False
        return True

    def slot_columns(self, dec: pa.Table, of: np.ndarray, position: np.ndarray) -> dict[str, Any]:
        """The cached request and candidate columns of the slots (decision row ``of`` of ``dec``,
        1-based ``position``), in order."""
        f, r = _where(dec)
        rf, local = f[of], np.zeros(of.size, dtype=np.int64)
        for i in np.unique(rf).tolist():
            mine = rf == i
            local[mine] = self.parts[int(i)].slot_start[r[of[mine]]] + position[mine] - 1
        both = _gather({i: p.slots for i, p in self.parts.items()}, rf, local)
        return {name: both[name] for name in both.column_names}

    def candidate_sets(self, dec: pa.Table, shown: set[str]) -> pa.Table:
        """The ``candidate_sets.parquet`` rows of the decisions of ``dec`` in ``shown`` (as
        :func:`~closedloop.datasets.candidate_sets.candidate_sets_table`)."""
        keep = np.asarray(pc.is_in(dec["decision_id"], value_set=pa.array(sorted(shown), pa.string())), dtype=bool)
        sel = dec.filter(pa.array(keep))
        f, r = _where(sel)
        lens = np.zeros(sel.num_rows, dtype=np.int64)
        first = np.zeros(sel.num_rows, dtype=np.int64)
        for i in np.unique(f).tolist():
            mine = f == i
            lens[mine], first[mine] = self.parts[int(i)].n_cands[r[mine]], self.parts[int(i)].cand_start[r[mine]]
        total = int(lens.sum())
        of = np.repeat(np.arange(sel.num_rows, dtype=np.int64), lens)
        local = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens - first, lens)
        got = _gather({i: p.sets for i, p in self.parts.items()}, f[of], local) if total else None
        return pa.table({
            "decision_id": pc.take(sel["decision_id"], pa.array(of, pa.int64())).cast(pa.string()),
            "index": got["index"] if got is not None else pa.array([], pa.int32()),
            "logged_score": got["logged_score"] if got is not None else pa.array([], pa.float64()),
            "candidate": got["candidate"] if got is not None else pa.array([], pa.struct([])),
        })


#: Above this many runs of consecutive rows, :func:`_gather` takes rows file by file instead of slicing runs.
_MAX_RUNS = 256


def _gather(tables: dict[int, pa.Table], rf: np.ndarray, local: np.ndarray) -> pa.Table:
    """Row ``local[j]`` of ``tables[rf[j]]`` for every ``j``, in order: a slice per run of
    consecutive rows of one file (no copy), or a take per run of one file when the runs are many."""
    n = rf.size
    brk = np.flatnonzero((rf[1:] != rf[:-1]) | (local[1:] != local[:-1] + 1)) + 1
    if brk.size < _MAX_RUNS:
        b = np.concatenate([[0], brk, [n]]).tolist()
        return pa.concat_tables([tables[int(rf[a])].slice(int(local[a]), e - a) for a, e in zip(b[:-1], b[1:], strict=True)])
    b = np.concatenate([[0], np.flatnonzero(rf[1:] != rf[:-1]) + 1, [n]]).tolist()
    return pa.concat_tables([tables[int(rf[a])].take(pa.array(local[a:e], pa.int64())) for a, e in zip(b[:-1], b[1:], strict=True)])


def _where(dec: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(dec["_file"].to_numpy(), dtype=np.int64) if dec.num_rows else np.zeros(0, np.int64),
            np.asarray(dec["_row"].to_numpy(), dtype=np.int64) if dec.num_rows else np.zeros(0, np.int64))


def system_key(system: System) -> dict[str, Any]:
    """What of ``system`` the cached columns depend on."""
    d = system.describe()
    return {k: d[k] for k in ("name", "schema", "features", "feature_fingerprint", "candidates", "candidate_id")}


class SlotCache:
    """The cache directory ``root`` of one system's decision files (module doc)."""

    def __init__(self, root: Path | str, system: System) -> None:
        self.root = Path(root)
        self.system = system
        self._system_key = system_key(system)

    def key(self, file: Path) -> dict[str, Any]:
        st = os.stat(file)
        return {"format": CACHE_FORMAT, "system": self._system_key, "file": str(Path(file).resolve()),
                "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}

    def entry(self, key: dict[str, Any]) -> Path:
        return self.root / hashlib.sha256(msgspec.json.encode(key, order="sorted")).hexdigest()[:32]

    def parts(self, files: Sequence[Path | str], wanted: Sequence[int]) -> FileParts | None:
        """The parts of the files ``wanted`` (indices into ``files`` sorted by name), each read from
        its entry or built and stored; None when a file cannot be cached (module doc). The other
        entries are deleted: the cache holds the files of the last build's window."""
        ordered = [Path(f) for f in sorted(str(f) for f in files)]
        keys = {int(i): self.key(ordered[int(i)]) for i in wanted}
        self._prune({self.entry(k).name for k in keys.values()})
        out: dict[int, Part] = {}
        for i in wanted:
            part = self._read(keys[i])
            if part is None:
                part = build_part(self.system, ordered[i])
                if part is None:
                    return None
                self._write(keys[i], part)
            out[int(i)] = part
        for which in ("slots", "sets"):  # the files' columns must concatenate
            if len({getattr(p, which).schema for p in out.values() if getattr(p, which).num_rows}) > 1:
                return None
        return FileParts(out)

    def _prune(self, keep: set[str]) -> None:
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():  # also a write's temporary directory left by a crash
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def _read(self, key: dict[str, Any]) -> Part | None:
        """The entry of ``key`` when it is whole and its key matches; None otherwise."""
        path = self.entry(key)
        try:
            meta = msgspec.json.decode((path / "key.json").read_bytes())
            if meta.get("key") != key:
                return None
            tables = []
            for name in _FILES:
                data = (path / name).read_bytes()
                if meta["files"][name] != {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}:
                    return None
                tables.append(ipc.open_file(pa.BufferReader(data)).read_all())
            return _part(tables[0], tables[1], tables[2], int(meta["file_rows"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError, pa.ArrowException, msgspec.DecodeError):
            return None

    def _write(self, key: dict[str, Any], part: Part) -> None:
        """Store ``part`` under ``key`` (a temporary directory renamed into place); a failure to
        write leaves no entry (the cache is only a cache)."""
        path = self.entry(key)
        tmp = self.root / f".{path.name}.tmp-{uuid.uuid4().hex}"
        try:
            make_private_dirs(tmp)
            rows = pa.table({"row": pa.array(np.flatnonzero(part.slot_start >= 0), pa.int64()),
                             "n_slots": pa.array(_counts(part.slot_start, part.slots.num_rows), pa.int64()),
                             "n_cands": pa.array(part.n_cands[part.slot_start >= 0], pa.int64())})
            files = {}
            for name, table in zip(_FILES, (part.slots, part.sets, rows), strict=True):
                sink = pa.BufferOutputStream()
                with ipc.new_file(sink, table.schema) as w:
                    w.write_table(table)
                data = sink.getvalue().to_pybytes()
                _write_private(tmp / name, data)
                files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            meta = {"key": key, "files": files, "file_rows": int(part.slot_start.size)}
            _write_private(tmp / "key.json", msgspec.json.encode(meta))
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_private(path: Path, data: bytes) -> None:
    with open_private_file(path, "xb") as fh:
        fh.write(data)


def _counts(slot_start: np.ndarray, total: int) -> np.ndarray:
    """Each cached row's slot count from the starts (in row order) and the total."""
    s = slot_start[slot_start >= 0]
    return np.diff(np.concatenate([s, [total]])).astype(np.int64)


def _part(slots: pa.Table, sets: pa.Table, rows: pa.Table, file_rows: int) -> Part:
    """A part from its stored tables (the starts rebuilt from the counts)."""
    row = np.asarray(rows["row"].to_numpy(), dtype=np.int64)
    n_slots = np.asarray(rows["n_slots"].to_numpy(), dtype=np.int64)
    n_c = np.asarray(rows["n_cands"].to_numpy(), dtype=np.int64)
    if int(n_slots.sum()) != slots.num_rows or int(n_c.sum()) != sets.num_rows or (row >= file_rows).any():
        raise ValueError("the entry's counts do not match its tables")
    slot_start = np.full(file_rows, -1, dtype=np.int64)
    cand_start = np.full(file_rows, -1, dtype=np.int64)
    n_cands = np.zeros(file_rows, dtype=np.int64)
    slot_start[row] = np.cumsum(n_slots) - n_slots
    cand_start[row] = np.cumsum(n_c) - n_c
    n_cands[row] = n_c
    return Part(slots, sets, slot_start, cand_start, n_cands)


def build_part(system: System, file: Path) -> Part | None:
    """The cached columns of the decision file ``file`` (module doc); None when it cannot be cached."""
    from closedloop.datasets.candidate_sets import _joined, candidate_sets_table, decoded_from
    from closedloop.datasets.importer import context_columns
    from closedloop.datasets.slots import _candidate_fields, _exploded, _request_fields
    from closedloop.errors import ClosedLoopError

    t = pq.read_table(file, schema=DECISION_SCHEMA, columns=list(_DECODED))
    mine = pc.and_(pc.and_(pc.equal(t["system"], system.name), t["slate"].is_valid()), t["candidates_json"].is_valid())
    rows = np.flatnonzero(np.asarray(pc.fill_null(mine, False), dtype=bool))
    dec = t.take(pa.array(rows, pa.int64()))
    raw: list[Any] = msgspec.json.decode(_joined(dec["candidates_json"])) if dec.num_rows else []
    decoded = decoded_from(raw)
    if not _uniform(raw, decoded):
        return None
    try:
        slots = _exploded(dec)
        of = slots["of"]
        if of.size:
            fields = _request_fields(dec, system, of)
            fields.update(_candidate_fields(dec, system, of, slots["action"], decoded))
            heavy = pa.table(context_columns(system.features.schema.validate_batch(fields), system))
        else:
            heavy = pa.table({})
    except ClosedLoopError:
        return None
    sets = candidate_sets_table(dec, set(dec["decision_id"].to_pylist()), decoded).drop_columns(["decision_id"])
    n_slots = np.bincount(of, minlength=rows.size)
    lens = decoded.lengths
    slot_start = np.full(t.num_rows, -1, dtype=np.int64)
    cand_start = np.full(t.num_rows, -1, dtype=np.int64)
    n_cands = np.zeros(t.num_rows, dtype=np.int64)
    slot_start[rows] = np.cumsum(n_slots) - n_slots
    cand_start[rows] = decoded.offsets[:-1]
    n_cands[rows] = lens
    return Part(heavy, sets, slot_start, cand_start, n_cands)


def _uniform(raw: list[Any], decoded: Any) -> bool:
    """Whether every candidate of the file (``raw``: its decoded candidate lists) is an object with
    the same fields, in the same order, none null or nested, a float field's values all floats:
    then Arrow infers the same struct type from any subset of its candidates as from all of them."""
    flat = decoded.flat
    if len(flat) == 0:
        return True
    names = tuple(f.name for f in flat.type)
    if flat.null_count or any(flat.field(i).null_count for i in range(len(names))):
        return False
    if any(pa.types.is_nested(f.type) or pa.types.is_null(f.type) for f in flat.type):
        return False
    dicts = [c for lst in raw if isinstance(lst, list) for c in lst]
    if set(map(type, dicts)) != {dict} or set(map(tuple, dicts)) != {names}:  # C loops, no Python one per candidate
        return False
    floats = [f.name for f in flat.type if pa.types.is_floating(f.type)]
    return all(set(map(type, map(itemgetter(n), dicts))) == {float} for n in floats)


def read_lake_files(files: Sequence[str], schema: pa.Schema, columns: Sequence[str] | None,
                    tables: dict[Any, pa.Table] | None) -> list[pa.Table]:
    """``pq.read_table`` of each lake file of ``files`` (``columns`` only). With ``tables`` (a dict
    the caller keeps from one build to the next — a cycle's reader carries it), a file read before
    with the same path, size, mtime, inode, schema and columns is not read again (a lake file is
    written once and replaced, never changed in place: the same bits); ``tables`` then keeps the
    files of this call only."""
    cols = None if columns is None else list(columns)
    if tables is None:
        return [pq.read_table(f, schema=schema, columns=cols) for f in files]
    used: dict[Any, pa.Table] = {}
    for f in files:
        st = os.stat(f)
        key = (f, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, None if cols is None else tuple(cols), schema.to_string())
        got = tables.get(key)
        used[key] = got if got is not None else pq.read_table(f, schema=schema, columns=cols)
    tables.clear()
    tables.update(used)
    return list(used.values())


"""The series file: :class:`SeriesStore`, an append-only JSON-lines file of points, one per
(name, window) — the goals' series and the mistake rates' (docs/orchestration.md, "Goals")."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from closedloop.base.files import make_private_dirs, open_private, open_private_file

__all__ = ["SeriesStore"]


class SeriesStore:
    """An append-only JSON-lines file of points, one per (name, window), private (``0600``, its
    lock file too; folders created ``0700``). Appends take an exclusive ``flock`` and skip
    (name, window) pairs already present; a torn or bad line (a crash mid-append) is skipped on
    read, never fatal."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        make_private_dirs(self.path.parent)
        fd = open_private(self.path.with_name("." + self.path.name + ".lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def points(self) -> list[dict[str, Any]]:
        import msgspec  # decodes the same values as json (the file is written without NaN), several times faster

        if not self.path.is_file():
            return []
        out = []
        with open(self.path, "rb") as fh:
            for line in fh:
                try:
                    p = msgspec.json.decode(line)
                except (ValueError, msgspec.DecodeError):
                    continue
                if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("window"), str):
                    out.append(p)
        return out

    def keys(self) -> set[tuple[str, str]]:
        return {(p["name"], p["window"]) for p in self.points()}

    def append(self, points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the points whose (name, window) is new; return those appended (durable)."""
        with self._lock():
            have = self.keys()
            new = []
            for p in points:
                k = (p["name"], p["window"])
                if k not in have:
                    have.add(k)
                    new.append(p)
            if new:
                data = b"".join(json.dumps(p, sort_keys=True, allow_nan=False).encode() + b"\n" for p in new)
                with open_private_file(self.path, "ab") as fh:
                    if fh.seek(0, os.SEEK_END) > 0:  # a torn last line (crash mid-append) must not swallow ours
                        with open(self.path, "rb") as r:
                            r.seek(-1, os.SEEK_END)
                            if r.read(1) != b"\n":
                                data = b"\n" + data
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            return new

    def series(self, name: str) -> list[dict[str, Any]]:
        """The points of one series, in window order."""
        return sorted((p for p in self.points() if p["name"] == name), key=lambda p: p["start_ns"])

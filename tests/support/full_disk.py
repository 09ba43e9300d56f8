"""A full disk for the durability tests, two ways.

:class:`FullDisk` injects the fault: while ``full`` is set, the lowest write (``os.writev``, what
the telemetry segments are written with) or ``os.fsync`` of a file under ``<where>`` fails with
``OSError(ENOSPC)``; every other file (cycle records, the registry, pytest's own) is untouched.

:func:`tiny_tmpfs` mounts a real tmpfs of ``size`` bytes at a directory (root only; the test is
skipped where ``mount`` is not permitted) and :func:`fill` fills it until the kernel says ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class FullDisk:
    """Fails ``call`` ("writev" or "fsync") on regular files (not directories) whose path
    contains ``where`` while ``full``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, where: str = "/telemetry/segments/",
                 call: str = "writev") -> None:
        self.where, self.call, self.full, self.failures = where, call, True, 0
        real = getattr(os, call)

        def failing(fd: int, *args: object) -> object:
            if self.full and self.where in _path(fd) and stat.S_ISREG(os.fstat(fd).st_mode):
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, *args)

        monkeypatch.setattr(os, call, failing)


def _path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: int) -> Iterator[Path]:
    """A real tmpfs of ``size`` bytes mounted at ``where`` (skips the test where mount is refused)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write ``directory/filler`` until the file system is full; returns its path."""
    path = directory / "filler"
    chunk = b"\0" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    return path
                raise
    finally:
        os.close(fd)

"""One cycle at a time per home: the cycle lock.

Two ``closedloop loop run`` against one home must not both run a cycle (the second would resume
the first's live cycle, race it for the same files and registry changes). :class:`Cycle.run_once
<closedloop.orchestration.Cycle.run_once>` holds a :class:`CycleLock` while it runs.

:class:`CycleLock` is the interface — :meth:`~CycleLock.acquire` (refuse at once, or wait up to
``wait`` seconds), :meth:`~CycleLock.release`, :meth:`~CycleLock.holder` (who holds it: pid, host,
since), a context manager — and :class:`FileCycleLock` its implementation for one host: an
exclusive ``fcntl.flock`` on ``<home>/.cycle.lock``, whose content names the holder. The kernel
releases a flock when its process dies, so a holder killed with SIGKILL never wedges the home;
the content it leaves behind is stale and ignored (no lock is held on the file). A lock for
several hosts (a PostgreSQL advisory lock) implements the same three methods.

A refused run raises :class:`LockHeldError` naming the holder; ``closedloop loop run`` prints it
and exits 1 (``--wait SECONDS`` waits for the holder to finish instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from closedloop.base.files import make_private_dirs, open_private
from closedloop.base.times import iso_seconds
from closedloop.errors import LockHeldError, SpecError

__all__ = ["CycleLock", "FileCycleLock", "LockHeldError"]

#: how often a waiting acquire tries again (seconds)
POLL = 0.05
#: an acquire tries at least this long (seconds), so that a probe by :meth:`CycleLock.holder` —
#: a shared lock taken for an instant — never makes a run that does not wait fail
GRACE = 0.2


def describe(holder: dict[str, Any] | None) -> str:
    """``pid 123 on host h since 2026-01-05T10:00:00Z`` (or that the holder is unknown)."""
    if not holder:
        return "an unknown process (it has not written its name yet)"
    return f"pid {holder.get('pid')} on host {holder.get('host')!r} since {holder.get('since')}"


def this_process() -> dict[str, Any]:
    """The holder record of the calling process."""
    now = time.time_ns()
    since = iso_seconds(now)
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "since_ns": now}


class CycleLock:
    """The interface of a cycle lock. Subclasses implement :meth:`_try_acquire` (take it now or
    say it is taken), :meth:`_release` and :meth:`holder`; waiting, the error and the context
    manager are here. ``name`` says what is locked (for messages)."""

    name: str = "the cycle lock"

    def __init__(self) -> None:
        self._held = False

    # -- implemented by each lock ------------------------------------------------------------------
    def _try_acquire(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (``{"pid", "host", "since", "since_ns"}``), or None if nobody."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._held

    def acquire(self, wait: float = 0.0) -> CycleLock:
        """Take the lock, waiting up to ``wait`` seconds for its holder to release it; raises
        :class:`LockHeldError` naming the holder if it is still held then. Returns the lock
        (``with lock.acquire(wait=30): …``)."""
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not (wait >= 0 and math.isfinite(wait)):
            raise SpecError(f"The 'wait' parameter of {type(self).__name__}.acquire must be a number of seconds "
                            f"≥ 0. Got {wait!r} instead.")
        if self._held:
            raise SpecError(f"{self.name} is held by this object already: release it before acquiring it again.")
        start = time.monotonic()
        deadline = start + max(float(wait), GRACE)
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                holder = self.holder()
                if holder is None and self._try_acquire():  # released just now
                    break
                waited = f" after waiting {wait:g} s" if wait else ""
                raise LockHeldError(
                    f"{self.name[0].upper()}{self.name[1:]} is held{waited} by {describe(holder)}: another cycle "
                    f"is running. Run again when it has finished, or wait for it (closedloop loop run --wait "
                    f"SECONDS; Cycle.run_once(wait=…)).", holder)
            time.sleep(POLL)
        self._held = True
        return self

    def release(self) -> None:
        """Release the lock (nothing happens if this object does not hold it)."""
        if self._held:
            self._held = False
            self._release()

    def __enter__(self) -> CycleLock:
        if not self._held:
            self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class FileCycleLock(CycleLock):
    """A cycle lock for one host: an exclusive ``flock`` on ``path`` (``<home>/.cycle.lock``),
    whose content is the holder's JSON record (pid, host, since). The file is never removed; a
    holder releases by truncating it and closing it, a dead holder's flock is released by the
    kernel. The descriptor is close-on-exec: programs the holder starts do not inherit the lock.
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = f"the cycle lock {str(self.path)!r}"
        self._fd: int | None = None
        self._me: dict[str, Any] | None = None

    def _try_acquire(self) -> bool:
        make_private_dirs(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._me = fd, this_process()
        with contextlib.suppress(OSError):  # a full disk must not stop the cycle: the name is a courtesy
            data = json.dumps(self._me).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        return True

    def _release(self) -> None:
        fd, self._fd, self._me = self._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock

    def holder(self) -> dict[str, Any] | None:
        if self._fd is not None:
            return dict(self._me or {})
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: read who holds it
            else:
                return None  # not held (what the file says is a dead or finished holder's)
            for _ in range(10):  # the holder writes its name just after taking the lock
                try:
                    info = json.loads(os.pread(fd, 4096, 0) or b"null")
                except ValueError:
                    info = None
                if isinstance(info, dict):
                    return info
                time.sleep(0.02)
            return {}
        finally:
            os.close(fd)

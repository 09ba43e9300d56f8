"""An asyncio event loop shared by threads and run by the thread that waits on it: :class:`DrivenLoop`.

A synchronous, thread-safe API over an asyncio client (nats-py, in
:mod:`closedloop.telemetry.jetstream`) usually parks the loop on a thread of its own and hands it
every call (``asyncio.run_coroutine_threadsafe``): two thread wake-ups a call, 70–150 µs on this
machine's two cores — half again what nats-py takes to publish a 79 kB commit to JetStream on
loopback and hear its acknowledgement. Here the calling thread runs the loop itself:

* a call made while no thread runs the loop **drives** it: ``run_until_complete`` on the caller's
  own thread (about 9 µs of overhead a call);
* a call made while another thread drives is a **guest**: its coroutine is handed to the running
  loop (the hop, only then), and the driver keeps the loop running after its own call until every
  guest's coroutine is done;
* a **keeper** thread drives the loop for ``slice_seconds`` every ``idle_interval`` seconds while no
  call does, so the client's background tasks — reading the socket, answering the server's pings,
  reconnecting after an outage — go on between calls.

Every call has a timeout, enforced on the loop (``asyncio.wait_for``): a coroutine that outlives it
is cancelled and the call raises :class:`TimeoutError`. A coroutine running on the loop must not
call :meth:`DrivenLoop.run` (it would wait on itself): that raises
:class:`~closedloop.errors.ClosedLoopError`, as does a call after :meth:`DrivenLoop.close`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from closedloop.errors import ClosedLoopError, SpecError

__all__ = ["DrivenLoop"]

_log = logging.getLogger("closedloop.base.driven_loop")
T = TypeVar("T")
#: How much longer than its own timeout a guest waits for the loop to answer before giving up.
_GUEST_GRACE = 5.0


class DrivenLoop:
    """One asyncio event loop, run by whichever thread calls :meth:`run` (see the module doc).

    ``name`` names the keeper thread; ``idle_interval`` (seconds) is how often the keeper looks
    whether the loop needs running, ``slice_seconds`` how long it runs it then."""

    def __init__(self, name: str, *, idle_interval: float = 0.05, slice_seconds: float = 0.001) -> None:
        if not 0 < slice_seconds < idle_interval:
            raise SpecError(f"The 'slice_seconds' parameter of DrivenLoop must be in (0, idle_interval={idle_interval}). "
                             f"Got {slice_seconds!r} instead.")
        self.name = name
        self.idle_interval = idle_interval
        self.slice_seconds = slice_seconds
        self._loop = asyncio.new_event_loop()
        self._state = threading.Lock()  # guards _driver, _guests, _drained, _closed, _keeper
        self._driver: int | None = None  # the thread running the loop now
        self._guests = 0  # guest coroutines handed to the loop and not done
        self._drained: asyncio.Future[None] | None = None  # set when the last guest is done
        self._closed = False
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and return its result; TimeoutError after ``timeout`` seconds
        (the coroutine is cancelled)."""
        me = threading.get_ident()
        with self._state:
            if self._closed or self._driver == me:
                coro.close()
                raise ClosedLoopError(f"The loop {self.name!r} is closed." if self._closed else
                                   f"A coroutine on the loop {self.name!r} must not wait on the loop.")
            guest = self._driver is not None
            if guest:
                self._guests += 1
            else:
                self._driver = me
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name=f"{self.name}-keeper", daemon=True)
                self._keeper.start()
        if guest:
            return self._as_guest(coro, timeout)
        try:
            task, timer = self._timed(coro, timeout)
            try:
                return self._loop.run_until_complete(task)
            except asyncio.CancelledError:
                if timer.expired:
                    raise TimeoutError(f"no answer within {timeout:.3g} s") from None
                raise
            finally:
                timer.cancel()
        finally:
            self._hand_back()

    def _timed(self, coro: Coroutine[Any, Any, T], timeout: float) -> tuple[asyncio.Task[T], _Timer]:
        """``coro`` as a task on the loop, cancelled after ``timeout`` seconds (a timer, not
        ``asyncio.wait_for``: that is a second task, 10 µs a call)."""
        task = self._loop.create_task(coro)
        return task, _Timer(self._loop, timeout, task)

    def _as_guest(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            task, timer = self._timed(coro, timeout)
            task.add_done_callback(lambda t: self._guest_done(t, timer, result))

        self._loop.call_soon_threadsafe(start)  # the driver runs the loop until this guest is done
        return result.result(timeout + _GUEST_GRACE)

    def _guest_done(self, task: asyncio.Task[Any], timer: _Timer, result: concurrent.futures.Future[Any]) -> None:
        """On the loop: pass a guest's outcome to its thread; wake the driver after the last guest."""
        timer.cancel()
        if task.cancelled():
            result.set_exception(TimeoutError(f"no answer within {timer.timeout:.3g} s") if timer.expired
                                 else concurrent.futures.CancelledError())
        elif (exc := task.exception()) is not None:
            result.set_exception(exc)
        else:
            result.set_result(task.result())
        with self._state:
            self._guests -= 1
            if self._guests == 0 and self._drained is not None and not self._drained.done():
                self._drained.set_result(None)

    def _hand_back(self) -> None:
        """The driver, its own call done: run the loop until no guest waits, then let it go."""
        while True:
            with self._state:
                if self._guests == 0:
                    self._driver = None
                    self._drained = None
                    return
                # guests are counted down only on the loop, which nobody runs but this thread
                self._drained = self._loop.create_future()
                drained = self._drained
            self._loop.run_until_complete(drained)

    def _keep(self) -> None:
        """The keeper thread: drive the loop briefly whenever nobody does."""
        while not self._stop.wait(self.idle_interval):
            with self._state:
                if self._closed:
                    return
                if self._driver is not None:
                    continue
                self._driver = threading.get_ident()
            try:
                self._loop.run_until_complete(asyncio.sleep(self.slice_seconds))
            except Exception:  # noqa: BLE001 - the keeper must go on; a client task's error is the client's
                _log.exception("running the loop %r between calls failed", self.name)
            finally:
                self._hand_back()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the keeper, cancel what still runs on the loop and close it; later calls raise."""
        self._stop.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout)
        with self._state:
            if self._closed:
                return
            self._closed = True
            if self._driver is not None:  # a call still runs: it owns the loop; leave it be
                return
            self._driver = threading.get_ident()
        try:
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self._loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
            self._loop.close()
        except Exception as e:  # noqa: BLE001 - closing must not raise
            _log.debug("closing the loop %r: %s", self.name, e)


class _Timer:
    """Cancels a task after ``timeout`` seconds, remembering that it did."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, task: asyncio.Task[Any]) -> None:
        self.timeout = timeout
        self.expired = False
        self._task = task
        self._handle = loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def cancel(self) -> None:
        self._handle.cancel()

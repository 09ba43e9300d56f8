"""The event loop run by the thread that waits on it (closedloop.base.driven_loop), which the
JetStream transport uses instead of a thread hop per call."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from closedloop.base.driven_loop import DrivenLoop
from closedloop.errors import ClosedLoopError, SpecError


@pytest.fixture
def loop():
    dl = DrivenLoop("test-loop")
    yield dl
    dl.close()


async def _where(delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    return threading.get_ident()


def test_a_call_runs_the_loop_on_the_callers_own_thread(loop):
    assert loop.run(_where(), 5.0) == threading.get_ident()
    box: list[int] = []
    t = threading.Thread(target=lambda: box.append(loop.run(_where(), 5.0) == threading.get_ident()))
    t.start()
    t.join(10)
    assert box == [True]


def test_a_call_while_another_thread_drives_is_a_guest_the_driver_waits_for(loop):
    started = threading.Event()

    async def first() -> str:
        started.set()
        await asyncio.sleep(0.05)
        return "driver"

    results: dict[str, object] = {}
    done_at: dict[str, float] = {}

    def drive() -> None:
        results["driver"] = loop.run(first(), 5.0)
        done_at["driver"] = time.monotonic()

    driver = threading.Thread(target=drive)
    driver.start()
    assert started.wait(5)
    guest_thread = loop.run(_where(0.3), 5.0)  # outlives the driver's own call
    done_at["guest"] = time.monotonic()
    driver.join(10)
    assert results["driver"] == "driver"
    assert guest_thread == driver.ident  # the guest's coroutine ran on the driving thread
    assert done_at["driver"] >= done_at["guest"] - 0.05  # the driver kept the loop running for it


def test_a_timeout_cancels_the_coroutine_and_raises_timeout_error(loop):
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer within 0.1 s"):
        loop.run(slow(), 0.1)
    assert time.monotonic() - t0 < 2
    assert cancelled.is_set()
    assert loop.run(_where(), 5.0) == threading.get_ident()  # the loop is usable after


def test_a_guests_timeout_and_errors_reach_the_guest(loop):
    started = threading.Event()

    async def hold() -> None:
        started.set()
        await asyncio.sleep(0.5)

    driver = threading.Thread(target=lambda: loop.run(hold(), 5.0))
    driver.start()
    assert started.wait(5)

    async def boom() -> None:
        raise ValueError("from the guest")

    with pytest.raises(ValueError, match="from the guest"):
        loop.run(boom(), 5.0)
    with pytest.raises(TimeoutError):
        loop.run(asyncio.sleep(30), 0.05)
    driver.join(10)


def test_an_error_in_the_drivers_coroutine_is_raised_and_the_loop_goes_on(loop):
    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        loop.run(boom(), 5.0)
    assert loop.run(_where(), 5.0) == threading.get_ident()


def test_the_keeper_runs_background_tasks_between_calls(loop):
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def spawn() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(ticker())

    loop.run(spawn(), 5.0)
    n = len(ticks)
    time.sleep(0.6)  # no call meanwhile
    assert len(ticks) - n >= 5  # the keeper drove the loop (every 0.05 s)


def test_a_coroutine_must_not_wait_on_its_own_loop(loop):
    async def reenter() -> None:
        loop.run(_where(), 1.0)

    with pytest.raises(ClosedLoopError, match="must not wait on the loop"):
        loop.run(reenter(), 5.0)


def test_after_close_calls_are_refused_and_background_tasks_are_cancelled():
    dl = DrivenLoop("test-close")
    stopped = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    dl.run(spawn(), 5.0)
    dl.close()
    assert stopped.is_set() and dl.closed
    coro = _where()
    with pytest.raises(ClosedLoopError, match="is closed"):
        dl.run(coro, 1.0)
    dl.close()  # twice is fine


def test_many_threads_calling_at_once_each_get_their_own_answer(loop):
    errors: list[BaseException] = []

    async def echo(x: int) -> int:
        await asyncio.sleep(0)
        return x

    def worker(k: int) -> None:
        try:
            for i in range(200):
                if loop.run(echo(k * 1000 + i), 10.0) != k * 1000 + i:
                    errors.append(AssertionError(f"wrong answer for {k}/{i}"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_the_slice_must_be_shorter_than_the_interval():
    with pytest.raises(SpecError, match="'slice_seconds' parameter of DrivenLoop"):
        DrivenLoop("bad", idle_interval=0.01, slice_seconds=0.02)

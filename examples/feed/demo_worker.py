"""The feed demo's other arms in a second process, beside the loop.

After the shared days the heuristic, the frozen model and Vowpal Wabbit each decide their own copy
of the world and never look at the loop again, so they can run while the loop decides its days and
runs its cycles: :class:`ArmsWorker` starts one process (``spawn``: a fresh interpreter, no
inherited threads or locks) that receives the forked world, loads the frozen bundle from its path
(checked like any bundle) and decides days ``first_day .. days - 1`` of the three arms, sending each
day's row back as soon as it has it. ``in_process=True`` runs the same code in the calling process
at :meth:`ArmsWorker.finish` (one core, or a debugger).

The rows are the same either way: every arm owns its world and its seeds (``1000 · seed + day``),
and nothing the loop does reaches them. On this 2-core machine the three arms take about a fifth of
a seed's seconds; in a second process they no longer add to its wall time.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import queue
import traceback
from pathlib import Path
from typing import Any

from closedloop import Bundle, ClosedLoopError, Runtime
from closedloop.experience.exploration import SquareCB
from closedloop.world.feed import FeedWorld

from .demo_arms import VWArm, static_day

__all__ = ["OTHER_ARMS", "ArmsWorker"]

OTHER_ARMS = ("heuristic", "frozen", "vw")


def _arms(settings: Any, world: FeedWorld, frozen: Path) -> dict[str, tuple[FeedWorld, Any]]:
    """Each other arm's world (a copy of the forked one) and its policy."""
    greedy = world.system(k=settings.k, explore=None)
    vw = VWArm(world.system(k=settings.k, explore=SquareCB(settings.gamma)), settings.k, settings.seed)
    return {"heuristic": (copy.deepcopy(world), Runtime(greedy, world.heuristic_bundle(greedy))),
            "frozen": (copy.deepcopy(world), Runtime(greedy, Bundle.load(frozen, greedy))),
            "vw": (copy.deepcopy(world), vw)}


def _run(settings: Any, world: FeedWorld, frozen: Path, first_day: int, put: Any) -> None:
    """Days ``first_day ..`` of the other arms; ``put`` receives ``("day", arm, row)`` per arm and day,
    then ``("done", vw_settings, vw_seconds)``."""
    arms = _arms(settings, world, frozen)
    vw: VWArm = arms["vw"][1]
    try:
        for d in range(first_day, settings.days):
            day_seed = 1000 * settings.seed + d
            for name, (w, arm) in arms.items():
                put(("day", name, arm.day(w, d, day_seed) if name == "vw" else static_day(w, arm, d, day_seed)))
        put(("done", vw.policy.settings(), dict(vw.seconds)))
    finally:
        vw.close()


def _child(settings: Any, world: FeedWorld, frozen: str, first_day: int, out: Any) -> None:
    try:
        _run(settings, world, Path(frozen), first_day, out.put)
    except BaseException:  # the parent raises it, with the child's traceback
        out.put(("error", traceback.format_exc()))


class ArmsWorker:
    """The heuristic, frozen and Vowpal Wabbit arms from ``first_day`` on (module doc).

    ``poll()`` returns the rows sent so far without waiting; ``finish()`` waits for the rest and
    returns them with VW's settings and its seconds (featurize, decide, learn)."""

    def __init__(self, settings: Any, world: FeedWorld, frozen: Path, first_day: int, *, in_process: bool = False) -> None:
        # the world as it is now: the loop's own copy goes on drawing days (a process gets it pickled at start)
        self._args = (settings, copy.deepcopy(world) if in_process else world, str(frozen), int(first_day))
        self._rows: list[tuple[str, dict[str, Any]]] = []
        self._done: tuple[dict[str, Any], dict[str, float]] | None = None
        self._proc: Any = None
        if not in_process:
            ctx = mp.get_context("spawn")
            self._queue: Any = ctx.Queue()
            self._proc = ctx.Process(target=_child, args=(*self._args, self._queue), name="feed-demo-arms", daemon=True)
            self._proc.start()

    def _take(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "day":
            self._rows.append((msg[1], msg[2]))
        elif msg[0] == "done":
            self._done = (msg[1], msg[2])
        else:
            raise ClosedLoopError(f"The feed demo's arms process failed:\n{msg[1]}")

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        """The (arm, day row) pairs received since the last call, without waiting."""
        if self._proc is not None:
            alive = self._proc.is_alive()  # read before the drain: a process that ended has sent all it will
            while True:
                try:
                    self._take(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not alive and self._done is None:  # e.g. a script without a __main__ guard, re-run by spawn
                raise ClosedLoopError(f"The feed demo's arms process ended (exit code {self._proc.exitcode}) before "
                                      "sending its last day.")
        rows, self._rows = self._rows, []
        return rows

    def finish(self, timeout_s: float = 3600.0) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], dict[str, float]]:
        """Every row not yet polled, VW's settings and VW's seconds; waits for the arms to end."""
        if self._proc is None:
            settings, world, frozen, first = self._args
            _run(settings, world, Path(frozen), first, self._take)
        while self._done is None:
            try:
                self._take(self._queue.get(timeout=1.0))
            except queue.Empty:
                if not self._proc.is_alive():
                    raise ClosedLoopError(f"The feed demo's arms process ended (exit code {self._proc.exitcode}) "
                                          "before sending its last day.") from None
                timeout_s -= 1.0
                if timeout_s <= 0:
                    raise ClosedLoopError("The feed demo's arms process sent nothing for its timeout.") from None
        if self._proc is not None:
            self._proc.join(timeout=30)
        rows, self._rows = self._rows, []
        return rows, *self._done

    def close(self) -> None:
        """Stop the process if it still runs (an error in the loop's own days)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=10)

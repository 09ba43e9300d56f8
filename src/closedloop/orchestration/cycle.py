"""The cycle: one turn of the loop — its steps run in order, every step recorded, resumable and idempotent.

The steps are a :class:`~closedloop.orchestration.steps.Pipeline` (``LoopPlan.steps``; by default
:func:`~closedloop.orchestration.steps.default_pipeline`), each a small object in its own module
under :mod:`closedloop.orchestration.steps` with a typed result::

    ingest ─► monitor ─► route ─┬─ bootstrap          nothing deployed: the heuristic becomes production
                                ├─ advance            a rollout is under way: move it one stage
                                └─ plan ─► dataset ─► train ─► evaluate ─► gate ─► register ─► sanity ─► shadow

The cycle only sequences, records and resumes. For each step in order: a step that does not
apply (``Step.applies``: bootstrap and advance run on their branch of ``route`` only) is passed
over; one that finished in this cycle's record is not run again; otherwise its intent is
recorded, it runs, and its result is recorded. A step ends the cycle when it says so
(``Step.ends``: bootstrap, advance, an idle ``plan``, shadow) or raises
:class:`~closedloop.orchestration.steps.Stop` (a failed gate, too few labels, …: recorded as
``stopped``).

**One cycle at a time per home**: :meth:`Cycle.run_once` holds the cycle lock
(:mod:`~.lock`, ``<home>/.cycle.lock``) — with a PostgreSQL registry, **one per system across
hosts** (:mod:`~.lock_pg`, an advisory lock). **One deployment change per cycle, at most**: the
bootstrap, one rollout stage, or the new shadow. **Recorded**:
``<home>/orchestration/cycles/<NNNNNN>.json`` (:mod:`~.records`) holds the cycle's time and each
step's result, rewritten atomically after every step. **Resumable**: a cycle that did not finish
(a crash, SIGKILL) is resumed by the next run, at its own recorded time, from its first unfinished
step. **Idempotent**: each step's effects are keyed so that redoing a step whose effect happened
but was not recorded changes nothing — files by the cycle's paths (the dataset, the candidate
bundle and the report live in ``<home>/orchestration/cycles/<NNNNNN>/``), series by (goal,
window), alerts by id, registry changes by checking the deployment first.

Time comes from a clock (``Clock.now_ns()``): the system clock, or a simulated one — a driver may
call :meth:`Cycle.run_once` once per simulated day.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.orchestration.alerts import JsonLinesAlertSink
from closedloop.orchestration.goals import GoalTracker, SeriesStore, goal_status
from closedloop.orchestration.lock import CycleLock
from closedloop.orchestration.lock_pg import default_cycle_lock
from closedloop.orchestration.plan import LoopPlan
from closedloop.orchestration.reading import DatasetReader
from closedloop.orchestration.records import CycleRecords
from closedloop.orchestration.steps import Step, StepContext, Stop, default_pipeline
from closedloop.orchestration.steps.base import to_record
from closedloop.runtime.clock import Clock, SystemClock

__all__ = ["Cycle", "STEPS"]

#: the default pipeline's step names, in order
STEPS = default_pipeline().names


class Cycle:
    """Runs cycles of ``plan`` for the project home ``home`` against ``registry`` (an open
    ``closedloop.registry.Registry``). ``actor`` is the name registry changes are recorded
    under; ``clock`` gives the cycle's time; ``on_event(step, phase)`` is called with phase
    ``"start"`` and ``"done"`` around every step (progress display). ``lock`` is held while a
    cycle runs — by default (:func:`~.lock_pg.default_cycle_lock`) one cycle per system at a time
    across hosts when the registry is PostgreSQL (a :class:`~.lock_pg.PostgresCycleLock`), else one
    per home (a :class:`~.lock.FileCycleLock` on ``<home>/.cycle.lock``)."""

    def __init__(
        self,
        plan: LoopPlan,
        home: Path | str,
        registry: Any,
        *,
        actor: str = "loop",
        clock: Clock | None = None,
        on_event: Callable[[str, str], None] | None = None,
        lock: CycleLock | None = None,
    ) -> None:
        if not isinstance(plan, LoopPlan):
            raise SpecError(f"The 'plan' parameter of Cycle must be a LoopPlan. Got {plan!r} instead.")
        if not isinstance(actor, str) or not actor:
            raise SpecError(f"The 'actor' parameter of Cycle must be a non-empty name. Got {actor!r} instead.")
        if lock is not None and not isinstance(lock, CycleLock):
            raise SpecError(f"The 'lock' parameter of Cycle must be a closedloop.orchestration.CycleLock. "
                            f"Got {lock!r} instead.")
        self.plan = plan
        self.system = plan.system
        self.home = Path(home)
        self.lock = lock if lock is not None else default_cycle_lock(registry, self.home, self.system.name)
        self.registry = registry
        self.actor = actor
        self.clock = clock if clock is not None else SystemClock()
        self.on_event = on_event
        self.root = self.home / "orchestration"
        self.cycles = self.root / "cycles"
        self.store = CycleRecords(self.cycles)
        self.alert_log = JsonLinesAlertSink(self.root / "alerts.jsonl")
        self.goals = SeriesStore(self.home / "goals" / "series.jsonl")
        self.mistakes = SeriesStore(self.home / "goals" / "mistake_rates.jsonl")
        self.tracker = GoalTracker(plan.system, metrics=plan.metrics, rate_settle=plan.rate_settle)
        self.reader = DatasetReader(plan.system)  # decoded contexts carry over from cycle to cycle

    # -- records -----------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every cycle record, oldest first (a record that cannot be read is skipped)."""
        return self.store.all()

    def _save(self, rec: dict[str, Any]) -> None:
        self.store.save(rec)

    def context(self, rec: dict[str, Any]) -> StepContext:
        """What the steps of the cycle recorded in ``rec`` work with."""
        return StepContext(plan=self.plan, home=self.home, registry=self.registry, actor=self.actor, record=rec,
                           alert_log=self.alert_log, goals=self.goals, mistakes=self.mistakes, tracker=self.tracker,
                           reader=self.reader, clock=self.clock)

    # -- running -------------------------------------------------------------------------------------
    def run_once(self, *, wait: float = 0.0) -> dict[str, Any]:
        """Run one cycle — or finish the last one, if it did not finish — and return its record.

        The cycle lock is held meanwhile: if another process runs a cycle of this home, this
        waits up to ``wait`` seconds for it to finish, then raises
        :class:`~.lock.LockHeldError` naming it (pid, host, since)."""
        with self.lock.acquire(wait=wait):
            return self._run_once()

    def _run_once(self) -> dict[str, Any]:
        last = self.store.last()
        if last is not None and not last.get("finished"):
            rec = last
            rec["resumed"] = rec.get("resumed", 0) + 1
        else:
            rec = self.store.new(self.system.name, int(self.clock.now_ns()), last)
        self._save(rec)
        ctx = self.context(rec)
        try:
            for step in self.plan.steps:
                if step.applies(ctx):
                    ended = self._step(ctx, step)
                    if ended is not None:
                        raise Stop(*ended)
            raise SpecError(f"The steps of the plan of system {self.system.name!r} ran out without ending the "
                            f"cycle: {list(self.plan.steps.names)}. The last step must end it (Step.ends).")
        except Stop as stop:
            rec["outcome"], rec["reason"] = stop.outcome, stop.reason
        self.reader.end_cycle()
        rec["finished"] = True
        rec["goals"] = goal_status(self.system, self.goals)
        self._save(rec)
        return rec

    def _step(self, ctx: StepContext, step: Step[Any]) -> tuple[str, str] | None:
        """Run ``step`` (or take its recorded result); returns what :meth:`Step.ends` says."""
        rec, name = ctx.record, step.name
        done = rec["steps"].get(name)
        if done is not None and done.get("status") == "stopped":
            raise Stop(done["result"]["outcome"], done["result"]["reason"])
        if done is not None and done.get("status") == "done":
            return step.ends(ctx, ctx.result(name, step.Result))
        if done is None:  # the intent is durable before any effect: a resumed cycle redoes this step
            rec["steps"][name] = {"status": "started"}
            self._save(rec)
        self._event(name, "start")
        try:
            result = step.run(ctx)
        except Stop as stop:
            detail = to_record(stop.detail) if stop.detail is not None else {}
            rec["steps"][name] = {"status": "stopped", "result": {**detail, "outcome": stop.outcome, "reason": stop.reason}}
            self._save(rec)
            self._event(name, "done")
            raise
        ctx.remember(name, result)
        rec["steps"][name] = {"status": "done", "result": to_record(result)}
        self._save(rec)
        self._event(name, "done")
        return step.ends(ctx, result)

    def _event(self, name: str, phase: str) -> None:
        if self.on_event:
            self.on_event(name, phase)

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The last cycle, each goal against its target, open alerts, quarantined sources, the
        deployment, with an apprentice, its state and agreement over time, and for a system that
        learns from rewards, the units quarantined as a click farm (JSON-ready)."""
        recs = self.records()
        last = recs[-1] if recs else None
        alerts = self.alert_log.read()
        latest_monitor = next((r["steps"]["monitor"]["result"] for r in reversed(recs)
                               if r.get("steps", {}).get("monitor", {}).get("status") == "done"), None)
        current = {a["id"] for a in (latest_monitor or {}).get("alerts", [])}
        open_alerts = [a for a in alerts if a["id"] in current or (last is not None and a.get("at_ns") == last["now_ns"])]
        abuse = (latest_monitor or {}).get("abuse") or {"sources": [], "quarantined": [], "weights": {}}
        state = self.registry.state(self.system.name)
        return {
            "system": self.system.name,
            "last_cycle": None if last is None else {
                k: last.get(k) for k in ("id", "now_ns", "finished", "outcome", "reason", "resumed", "changes")
            } | {"steps": {k: v["status"] for k, v in last.get("steps", {}).items()}},
            "cycles": len(recs),
            "rollout": None if last is None else last.get("rollout"),
            "deployment": state.to_dict(),
            "goals": goal_status(self.system, self.goals),
            "open_alerts": open_alerts,
            "alerts_total": len(alerts),
            "quarantined": [s for s in abuse["sources"] if s["verdict"] == "quarantined"],
            "downweighted": [s for s in abuse["sources"] if s["verdict"] == "downweighted"],
            **({"quarantined_units": [{"unit": u, **v} for u, v in ((last or {}).get("unit_quarantine") or {}).items()]}
               if self.plan.learns_from_rewards and self.plan.click_farm is not None else {}),
            **({"apprentice": {**self.plan.apprentice.describe(), **((last or {}).get("apprentice") or
                                                                     {"graduated": False, "candidate": None, "history": []})}}
               if self.plan.apprentice is not None else {}),
        }



"""Four policies on the same feed world, day after simulated day — the engine of ``python -m examples.feed.demo``.

::

    run = run_feed_demo(FeedDemoSettings(seed=1, days=8, sessions=2000, shared_days=3, measure_from=5), home)
    run.summary()          # clicks per session of each arm over the measured days, with 95 % intervals
    run.arms["loop"]       # one row per simulated day: the world's ground truth of what the arm showed

The feed world (:class:`closedloop.world.feed.FeedWorld`, its committed configuration with the sizes
scaled) runs the first ``shared_days`` under the closed loop's bootstrap (the heuristic, exploring
with SquareCB, logged); then it is forked (a deep copy per arm) and each copy is decided by one policy
(:mod:`.demo_arms`; the three that are not the loop run in a second process, :mod:`.demo_worker`):
``heuristic`` (``world.heuristic_bundle``, greedy), ``frozen`` (the model the loop trains
from the shared days' reward dataset, deployed greedy and never changed), ``loop`` (one
:class:`~closedloop.orchestration.Cycle` at the end of every simulated day: reward dataset → train →
off-policy evaluation → gate → flight under the guard → promotion or rollback, click-farm quarantine),
``vw`` (Vowpal Wabbit's ``cb_explore_adf``, learning once a day from the first slot's clicks).

On ``fault_day`` the loop's reward join breaks for a day (:func:`.demo_arms.loop_day`, ``shift``):
the candidates trained on that day are the bad-candidate episode the gate or the guard must stop.
Ground truth (the world's attraction, its farm units) only measures the arms, never feeds the loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from closedloop import ManualClock, Runtime, SpecError
from closedloop.evaluation.gate import Gate
from closedloop.experience.exploration import SquareCB
from closedloop.orchestration import Cycle, LoopPlan, Rollout
from closedloop.registry import GuardPolicy, Registry
from closedloop.system.splits import Split
from closedloop.telemetry import SegmentLog, Telemetry
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig

from .demo_arms import loop_day
from .demo_measure import brief_cycle, evaluation_truth, fault_story, summarize
from .demo_worker import ArmsWorker

__all__ = ["ARMS", "FeedDemoRun", "FeedDemoSettings", "run_feed_demo"]

ARMS = ("heuristic", "frozen", "loop", "vw")
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class FeedDemoSettings:
    """One seed's run. ``users``: users on day 0 (default: half the sessions a day); ``k``: slots shown;
    ``gamma``: SquareCB's exploration of the loop (3000: on the loop's own model it costs 1.5 % of the
    greedy value against 4.2 % at 1000 and 20 % at 100 — measured, docs/demo.md); ``fault_day``: the
    shifted-rewards day (None: none); ``reward_model``: ``"candidate"`` — the gate judges by DR with the
    candidate's own click model, ``"fitted"`` — with a click model fitted each cycle, None — by SNIPS;
    ``model``: what the loop trains (``"affinity"``: logistic + a user × category offset, or
    ``"logistic"``); ``tolerance``: the gate's policy tolerance (clicks per logged slot, ≈ 3 % of the
    value): a fresh model that the interval cannot tell from production goes to its flight, where the
    guard judges it on real clicks."""

    seed: int = 1
    days: int = 30
    sessions: int = 20_000
    shared_days: int = 5
    measure_from: int = 15
    users: int | None = None
    k: int = 5
    gamma: float = 3000.0
    fault_day: int | None = 20
    train_days: int = 7
    min_labeled: int = 1000
    bootstrap: int = 50
    reward_model: str | None = "candidate"
    model: str = "affinity"
    tolerance: float = 0.004

    def __post_init__(self) -> None:
        for name in ("seed", "days", "sessions", "shared_days", "k", "train_days", "min_labeled", "bootstrap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise SpecError(f"The '{name}' of FeedDemoSettings must be an int ≥ {0 if name == 'seed' else 1}. Got {v!r} instead.")
        if self.model not in ("affinity", "logistic"):
            raise SpecError(f"The 'model' of FeedDemoSettings must be 'affinity' or 'logistic'. Got {self.model!r} instead.")
        if self.shared_days >= self.days:
            raise SpecError(f"The 'shared_days' of FeedDemoSettings must be below 'days' ({self.days}). Got {self.shared_days} instead.")
        if not self.shared_days <= self.measure_from < self.days:
            raise SpecError(f"The 'measure_from' of FeedDemoSettings must be a day in [{self.shared_days}, {self.days}). "
                            f"Got {self.measure_from!r} instead.")
        if self.fault_day is not None and not self.shared_days <= self.fault_day < self.days:
            raise SpecError(f"The 'fault_day' of FeedDemoSettings must be a day in [{self.shared_days}, {self.days}) or None. "
                            f"Got {self.fault_day!r} instead.")

    def world_config(self) -> FeedConfig:
        """The committed world with its sizes scaled: sessions, users (half the sessions, at least 500)
        and the new users a day in the committed proportion to the users (2 % a day)."""
        users = self.users if self.users is not None else max(500, self.sessions // 2)
        committed = FeedConfig.load()
        new = max(1, round(committed.users_new_per_day * users / committed.users_count))
        return FeedConfig.load(overrides={"world": {"sessions_per_day": self.sessions}, "users": {"count": users, "new_per_day": new}})

    def plan_model(self) -> tuple[str, dict[str, Any]]:
        """What the loop trains (and the frozen arm is): ``model`` with its params."""
        return (self.model, {"keys": ["user_id", "category"]}) if self.model == "affinity" else (self.model, {})


@dataclass
class FeedDemoRun:
    """One seed's result: per-arm day rows, the loop's cycles, the safety net's stories, timings."""

    settings: FeedDemoSettings
    arms: dict[str, list[dict[str, Any]]]
    cycles: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    farm: dict[str, Any]
    fault: dict[str, Any] | None
    vw_settings: dict[str, Any]
    timings: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return summarize(self)

    def to_json(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "arms": self.arms, "cycles": self.cycles, "evaluations": self.evaluations,
                "farm": self.farm, "fault": self.fault, "vw_settings": self.vw_settings, "timings": self.timings,
                "summary": self.summary()}


class _Loop:
    """The closed loop's home: registry, cycle, telemetry and runtime (one per seed)."""

    def __init__(self, s: FeedDemoSettings, world: FeedWorld, home: Path, on_event: Callable[[str, str], None]) -> None:
        # judged by time: the window's last seventh (about its last day) is held out — a learner with per-user
        # state (the affinity model) knows nothing of a held-out *user*, so a unit split would hide what it learned
        self.system = world.system(k=s.k, explore=SquareCB(s.gamma), split=Split("time", 1.0 / max(s.train_days, 2)))
        self.window_days = s.train_days
        self.start = world.day_start_ns(0)
        self.clock = ManualClock(self.start)
        self.reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=self.clock).open()
        model, params = s.plan_model()
        # the gate reads production and the candidate: the heuristic is not valued in every report (a third of its marginals)
        plan = LoopPlan(self.system, heuristic=world.heuristic_bundle(self.system), compare_heuristic=False, model=model, params=params,
                        train_window=timedelta(days=s.train_days), retrain_every=timedelta(days=1), min_labeled=s.min_labeled,
                        evaluate_bootstrap=s.bootstrap, reward_model=s.reward_model, gate=Gate(policy_tolerance=s.tolerance),
                        rollout=Rollout(shadow_for=None, flight_for=timedelta(days=1), guard=GuardPolicy(min_decisions=500)))
        self.cycle = Cycle(plan, home, self.reg, actor="feed-demo", clock=self.clock, on_event=on_event)
        self.cycle.run_once()  # the bootstrap: the heuristic is the first production
        self.tel = Telemetry(SegmentLog(home), system=self.system, clock=self.clock.now_ns, flush_interval_ms=1)
        production = self.reg.state(self.system.name).production
        if production is None:
            raise SpecError(f"The loop's bootstrap cycle deployed nothing for {self.system.name!r}. Got no production bundle instead.")
        self.rt = Runtime(self.system, self.reg.load_bundle(production, self.system), telemetry=self.tel)

    def day(self, world: FeedWorld, d: int, seed: int, shift: bool) -> tuple[dict[str, Any], Any]:
        self.rt.apply(self.reg.deployment(self.system))
        self.tel.clock = ManualClock(self.start + (d + 1) * DAY_NS).now_ns
        return loop_day(world, self.rt, self.tel, d, seed, shift=shift)

    def run_cycle(self, d: int) -> dict[str, Any]:
        self.clock.set_ns(self.start + (d + 1) * DAY_NS)
        rec: dict[str, Any] = self.cycle.run_once()
        return rec

    def close(self) -> None:
        self.tel.close()
        self.reg.close()


def _frozen(records: list[dict[str, Any]]) -> Path:
    """The path of the last model the loop trained during the shared days (a cycle waiting on a
    flight trains nothing, so it may be a day older than the last shared day), whatever the gate
    said of it."""
    for rec in reversed(records):
        tr = rec.get("steps", {}).get("train", {})
        if tr.get("status") == "done":
            return Path(tr["result"]["path"])
    raise SpecError("The loop trained no model during the shared days. The frozen arm needs one "
                    "(more shared days or more sessions a day).")


def run_feed_demo(settings: FeedDemoSettings, home: Path, *, on_progress: Callable[[str, dict[str, Any]], None] | None = None,
                  arms_process: bool = True, on_loop_day: Callable[..., None] | None = None) -> FeedDemoRun:
    """Run the four arms (module doc). ``home`` (new or empty) becomes the loop's project home.
    ``on_progress(what, info)``: ``("day", {"arm", "day", "row"})`` and ``("cycle", {"day", "record"})``.
    ``arms_process``: the heuristic, frozen and VW arms run in a second process beside the loop
    (:mod:`.demo_worker`; False: in this one, after the loop's days — the same rows). That process
    is spawned, so it imports the calling script again: call this under ``if __name__ ==
    "__main__":`` in a script. ``on_loop_day(loop, world, day, seed, sessions)``: called after each
    of the loop's days, before its cycle (a measurement that must not draw feedback or change the
    world; :mod:`.fresh`)."""
    home = Path(home)
    if home.exists() and any(home.iterdir()):
        raise SpecError(f"The feed demo home must be empty or new. Got {str(home)!r}, which holds files.")
    home.mkdir(parents=True, exist_ok=True)
    s, note = settings, on_progress or (lambda what, info: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {a: 0.0 for a in ARMS} | {"cycles": 0.0, "measure": 0.0}

    def on_event(step: str, phase: str) -> None:
        if phase != "start":
            note("step", {"step": step})

    world = FeedWorld(s.world_config(), seed=s.seed)
    loop = _Loop(s, world, home, on_event)
    arms: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    cycles: list[dict[str, Any]] = []
    evaluations: list[dict[str, Any]] = []
    kept: dict[int, Any] = {}  # day → the loop's sessions (for the truth of its evaluations)
    worker: ArmsWorker | None = None
    vw_settings: dict[str, Any] = {}

    def take(rows: list[tuple[str, dict[str, Any]]]) -> None:
        for name, r in rows:
            timings[name] += r["seconds"]
            arms[name].append(r)
            note("day", {"arm": name, "day": r["day"], "row": r})

    try:
        for d in range(s.days):
            day_seed = 1000 * s.seed + d
            row, kept[d] = loop.day(world, d, day_seed, shift=d == s.fault_day)
            if on_loop_day is not None:
                on_loop_day(loop, world, d, day_seed, kept[d])
            timings["loop"] += row["seconds"]
            kept.pop(d - s.train_days - 1, None)
            for a in ARMS if d < s.shared_days else ("loop",):
                arms[a].append(dict(row))
            note("day", {"arm": "loop" if d >= s.shared_days else "shared", "day": d, "row": row})
            if worker is not None:
                take(worker.poll())
            t0 = time.perf_counter()
            rec = loop.run_cycle(d)
            timings["cycles"] += time.perf_counter() - t0
            cycles.append(brief_cycle(rec, d))
            note("cycle", {"day": d, "record": rec})
            t0 = time.perf_counter()
            ev = evaluation_truth(rec, d, kept, world, loop)
            if ev is not None:
                evaluations.append(ev)
            timings["measure"] += time.perf_counter() - t0
            if d == s.shared_days - 1:  # the fork: the other arms go on in their own process
                worker = ArmsWorker(s, world, _frozen(loop.cycle.records()), d + 1, in_process=not arms_process)
        farm = _farm(loop, world)
        fault = fault_story(s.fault_day, cycles, evaluations, loop.system.split.by == "time") if s.fault_day is not None else None
        if worker is not None:
            t0 = time.perf_counter()
            rows, vw_settings, vw_seconds = worker.finish()
            take(rows)
            timings["waiting_for_arms"] = time.perf_counter() - t0
            timings |= {f"vw_{k}": v for k, v in vw_seconds.items()}
    finally:
        loop.close()
        if worker is not None:
            worker.close()
    timings["total"] = time.perf_counter() - t_start
    run = FeedDemoRun(s, arms, cycles, evaluations, farm, fault, vw_settings, timings)
    (home / "feed-demo-run.json").write_text(json.dumps(run.to_json(), indent=1, default=str))
    return run


def _farm(loop: _Loop, world: FeedWorld) -> dict[str, Any]:
    """The units the loop quarantined as a click farm, against the world's truth."""
    quarantined: set[str] = set()
    for rec in loop.cycle.records():
        mon = rec.get("steps", {}).get("monitor", {})
        if mon.get("status") == "done":
            got = mon.get("result") or {}  # outcome sources (the label-based check) and units (the click-farm check)
            quarantined |= {str(u) for u in [*got.get("quarantined", []), *got.get("quarantined_units", [])]}
    truth = set(world.farm_units)
    ids = {q.split(":", 1)[-1] for q in quarantined}
    return {"farm_units": len(truth), "quarantined": sorted(quarantined), "caught": len(ids & truth),
            "wrongly_quarantined": sorted(ids - truth), "missed": sorted(truth - ids)}

"""The cycle's steps obey one contract (a conformance check run over every step of the default
pipeline), a pipeline is edited by name, and a step written outside the package — one module,
listed in the plan — runs in a real cycle: its typed result recorded, its stop recorded, and a
resumed cycle not running it twice."""

from __future__ import annotations

import ast
import inspect
import json
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from closedloop import ManualClock
from closedloop.errors import SpecError
from closedloop.orchestration import STEPS, Cycle, LoopPlan, Rollout
from closedloop.orchestration.steps import (
    DatasetResult,
    EvaluateResult,
    Pipeline,
    Step,
    StepContext,
    StepResult,
    Stop,
    TrainResult,
    default_pipeline,
)
from closedloop.orchestration.steps.base import to_record
from closedloop.registry import GuardPolicy, Registry
from support.orchestration import DAY, START, Synth, first_bundle, make_system, open_runtime

# -- the contract, checked over every step --------------------------------------------------------------


def _example(result_type: type[StepResult]) -> StepResult:
    """A result of ``result_type`` with a value of the right type in every required field."""
    values = {"str": "x", "int": 3, "bool": True, "float": 0.5}
    kw = {}
    for f in msgspec.structs.fields(result_type):
        if f.required:
            t = f.type
            name = getattr(t, "__name__", "") if isinstance(t, type) else ""
            origin = getattr(t, "__origin__", None)
            kw[f.name] = values.get(name, [] if origin is list else {} if origin is dict else None)
    return result_type(**kw)


@pytest.mark.parametrize("step", list(default_pipeline()), ids=lambda s: s.name)
def test_every_step_obeys_the_step_contract(step: Step) -> None:
    cls = type(step)
    assert step.name.isidentifier() and step.name in STEPS
    assert issubclass(cls.Result, StepResult) and cls.Result is not StepResult
    assert not inspect.isabstract(cls) and cls.__doc__ and cls.Result.__doc__
    module = inspect.getmodule(cls)
    assert module is not None and module.__doc__ and f"``{step.name}``" in module.__doc__  # its module says what it does
    # configuration only in the constructor: a step is made with no arguments and holds no state
    assert vars(cls()) == {}
    # its result goes into the record as JSON and comes back as the same typed value
    r = _example(cls.Result)
    back = msgspec.convert(json.loads(json.dumps(to_record(r))), cls.Result)
    assert back == r
    # it never touches the module-level state of the cycle: no globals assigned in its module
    tree = ast.parse(inspect.getsource(module))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)]


def test_the_default_pipeline_is_the_documented_order() -> None:
    assert STEPS == ("ingest", "monitor", "route", "bootstrap", "advance", "plan", "dataset", "train", "goal_check",
                     "evaluate", "past", "gate", "register", "sanity", "shadow")
    assert default_pipeline() == default_pipeline()


class _Probe(Step["_ProbeResult"]):
    name = "probe"

    def run(self, ctx: StepContext) -> _ProbeResult:
        return _ProbeResult(n=1)


class _ProbeResult(StepResult):
    """A probe's count."""

    n: int


_Probe.Result = _ProbeResult


def test_a_pipeline_is_edited_by_step_name_and_refuses_what_breaks_it() -> None:
    p = default_pipeline()
    assert p.after("evaluate", _Probe()).names[9:11] == ("evaluate", "probe")
    assert p.before("gate", _Probe()).names[10:12] == ("past", "probe")
    assert p.replace("sanity", _Probe()).names[-2:] == ("probe", "shadow")
    assert "sanity" not in p.without("sanity").names and len(p.without("sanity")) == len(p) - 1
    assert p.names == STEPS  # unchanged: a pipeline is immutable
    with pytest.raises(SpecError, match="no step 'nope'"):
        p.after("nope", _Probe())
    with pytest.raises(SpecError, match="unique. Got 'gate' twice"):
        p.after("evaluate", p.steps[11])
    with pytest.raises(SpecError, match="must be closedloop.orchestration.steps.Step objects. Got 'ingest'"):
        Pipeline(["ingest"])  # type: ignore[list-item]
    with pytest.raises(SpecError, match="The 'steps' parameter of LoopPlan must be a closedloop.orchestration.steps.Pipeline"):
        LoopPlan(make_system(), steps=list(p))  # type: ignore[arg-type]
    assert "steps" not in LoopPlan(make_system()).describe()
    assert LoopPlan(make_system(), steps=p.after("evaluate", _Probe())).describe()["steps"][9:11] == ["evaluate", "probe"]


# -- a step from outside, in a real cycle ---------------------------------------------------------------


class CostCheckResult(StepResult):
    """The candidate and its cost per 1,000 decisions against production's."""

    candidate: str
    cost: float
    production: float | None


class CostCheck(Step[CostCheckResult]):
    """Stops the cycle when the candidate costs more than ``limit`` per 1,000 decisions."""

    name = "cost_check"
    Result = CostCheckResult

    def __init__(self, limit: float, calls: list[int]) -> None:
        self.limit, self.calls = limit, calls

    def run(self, ctx: StepContext) -> CostCheckResult:
        self.calls.append(ctx.id)
        report = ctx.result("evaluate", EvaluateResult)
        cand = ctx.result("train", TrainResult).version
        costs = {b["version"]: b["cost_per_1000"] for b in report.bundles}
        prod = ctx.registry.state(ctx.system.name).production
        result = CostCheckResult(candidate=cand, cost=costs[cand], production=costs.get(prod))
        if result.cost > self.limit:
            raise Stop("too_costly", f"{cand} costs {result.cost:.1f} per 1,000 decisions; the limit is {self.limit}",
                       detail=result)
        return result


def _world(tmp_path: Path):
    home = tmp_path / "home"
    system = make_system()
    clock = ManualClock(START)
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles", clock=clock).open()
    return home, system, clock, reg


def _days(home: Path, system, clock, reg, days: int) -> None:
    synth = Synth(home, system, per_day=800, seed=2)
    rt = open_runtime(home, system, reg.load_bundle(reg.state(system.name).production, system))
    try:
        for day in range(days):
            rt.apply(reg.deployment(system))
            synth.run_day(rt)
            clock.set_ns(START + (day + 1) * DAY)
    finally:
        rt.telemetry.close()


def test_a_step_listed_in_the_plan_runs_in_the_cycle_with_its_typed_result_and_its_stop(tmp_path: Path) -> None:
    home, system, clock, reg = _world(tmp_path)
    calls: list[int] = []
    try:
        def plan(limit: float) -> LoopPlan:
            return LoopPlan(system, heuristic=first_bundle(system), model="logistic", train_window=timedelta(days=4),
                            evaluate_bootstrap=0, drift=None, abuse=None, rollout=Rollout(guard=GuardPolicy(min_decisions=50)),
                            steps=default_pipeline().after("evaluate", CostCheck(limit, calls)))
        assert Cycle(plan(0.0), home, reg, clock=clock).run_once()["outcome"] == "bootstrapped"
        assert calls == []  # the bootstrap branch ends before the training path
        _days(home, system, clock, reg, 5)
        rec = Cycle(plan(0.0), home, reg, clock=clock).run_once()  # every candidate costs more than nothing
        assert rec["outcome"] == "too_costly" and rec["finished"], (rec["outcome"], rec["reason"])
        entry = rec["steps"]["cost_check"]
        assert entry["status"] == "stopped" and entry["result"]["outcome"] == "too_costly"
        assert entry["result"]["candidate"] == rec["steps"]["train"]["result"]["version"] and entry["result"]["cost"] > 0
        assert "gate" not in rec["steps"] and reg.state(system.name).shadows == ()
        assert list(rec["steps"]) == ["ingest", "monitor", "route", "plan", "dataset", "train", "goal_check", "evaluate",
                                      "cost_check"]
        # the typed results of the steps before it read back from the record
        ds = msgspec.convert(rec["steps"]["dataset"]["result"], DatasetResult)
        assert ds.counts["decisions"]["labeled"] >= 200 and Path(ds.path).is_dir()

        clock.set_ns(START + 6 * DAY)
        rec = Cycle(plan(1e9), home, reg, clock=clock).run_once()
        assert rec["steps"]["cost_check"]["status"] == "done"
        # the cycle goes on to the gate (which passes or stops it, as the candidate deserves)
        assert list(rec["steps"])[7:11] == ["evaluate", "cost_check", "past", "gate"], list(rec["steps"])
        assert rec["outcome"] in ("shadow", "gate_failed"), (rec["outcome"], rec["reason"])
        assert calls == [2, 3]
    finally:
        reg.close()


def test_a_resumed_cycle_takes_a_finished_steps_result_from_the_record(tmp_path: Path) -> None:
    home, system, clock, reg = _world(tmp_path)
    calls: list[int] = []
    try:
        plan = LoopPlan(system, heuristic=first_bundle(system), model="logistic", train_window=timedelta(days=4),
                        evaluate_bootstrap=0, drift=None, abuse=None, rollout=Rollout(guard=GuardPolicy(min_decisions=50)),
                        steps=default_pipeline().after("evaluate", CostCheck(1e9, calls)))
        cycle = Cycle(plan, home, reg, clock=clock)
        cycle.run_once()
        _days(home, system, clock, reg, 5)
        rec = cycle.run_once()
        outcome = rec["outcome"]
        assert outcome in ("shadow", "gate_failed") and calls == [2], (outcome, rec["reason"])
        # as if the process died after cost_check was recorded and before the gate's result was
        for name in ("past", "gate", "register", "sanity", "shadow"):
            rec["steps"].pop(name, None)
        rec.update(finished=False, outcome=None, reason=None, rollout=None)
        cycle._save(rec)
        again = cycle.run_once()
        assert again["id"] == rec["id"] and again["resumed"] == 1 and again["outcome"] == outcome
        assert calls == [2]  # not run again: its recorded result was used
        assert again["steps"]["cost_check"] == rec["steps"]["cost_check"]
    finally:
        reg.close()

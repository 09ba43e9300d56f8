"""The cycle's steps: each a small object in its own module with a typed result, listed in a
:class:`Pipeline` that the :class:`~closedloop.orchestration.cycle.Cycle` runs in order.

::

    ingest ─► monitor ─► route ─┬─ bootstrap                 nothing deployed: the heuristic becomes production
                                ├─ advance                   a rollout is under way: move it one stage
                                └─ plan ─► dataset ─► train ─► goal_check ─► evaluate ─► past ─► gate ─► register ─► sanity ─► shadow

A system that learns from rewards (a ranking with ``System(rewards=…)``) runs
:func:`reward_pipeline`: the same steps, its training branch ``plan ─► dataset ─► train ─►
evaluate ─► gate ─► register ─► sanity ─► shadow`` with a reward dataset, a reward model and the
off-policy gate (:mod:`.rewards`).

The contract every step obeys is in :mod:`.base` (:class:`Step`, :class:`StepContext`,
:class:`StepResult`, :class:`Stop`). To add a step, write one module with a ``Step`` subclass and
list it in the plan::

    class CostCheck(Step[CostCheckResult]):
        name = "cost_check"
        Result = CostCheckResult

        def run(self, ctx):
            report = ctx.result("evaluate", EvaluateResult)
            ...
            return CostCheckResult(...)

    LoopPlan(system, steps=default_pipeline().after("evaluate", CostCheck()))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from closedloop.errors import SpecError
from closedloop.orchestration.steps.advance import Advance, AdvanceResult
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.bootstrap import Bootstrap, BootstrapResult
from closedloop.orchestration.steps.dataset import Dataset, DatasetResult
from closedloop.orchestration.steps.evaluate import Evaluate, EvaluateResult
from closedloop.orchestration.steps.gate import Gate, GateResult
from closedloop.orchestration.steps.goal_check import GoalCheck, GoalCheckResult
from closedloop.orchestration.steps.ingest import Ingest, IngestResult
from closedloop.orchestration.steps.monitor import Monitor, MonitorResult
from closedloop.orchestration.steps.past import Past, PastResult
from closedloop.orchestration.steps.register import Register, RegisterResult
from closedloop.orchestration.steps.rewards import PolicyEvaluate, RewardDataset, RewardTrain
from closedloop.orchestration.steps.route import Branch, Route, RouteResult
from closedloop.orchestration.steps.sanity import Sanity, SanityResult
from closedloop.orchestration.steps.schedule import Schedule, ScheduleResult
from closedloop.orchestration.steps.shadow import Shadow, ShadowResult
from closedloop.orchestration.steps.train import Train, TrainResult

__all__ = [
    "Advance",
    "AdvanceResult",
    "Bootstrap",
    "BootstrapResult",
    "Branch",
    "Dataset",
    "DatasetResult",
    "Evaluate",
    "EvaluateResult",
    "Gate",
    "GateResult",
    "GoalCheck",
    "GoalCheckResult",
    "Ingest",
    "IngestResult",
    "Monitor",
    "MonitorResult",
    "Past",
    "PastResult",
    "Pipeline",
    "PolicyEvaluate",
    "Register",
    "RegisterResult",
    "RewardDataset",
    "RewardTrain",
    "Route",
    "RouteResult",
    "Sanity",
    "SanityResult",
    "Schedule",
    "ScheduleResult",
    "Shadow",
    "ShadowResult",
    "Step",
    "StepContext",
    "StepResult",
    "Stop",
    "Train",
    "TrainResult",
    "default_pipeline",
    "reward_pipeline",
]


class Pipeline:
    """The steps of a cycle, in order, each name once. Immutable: :meth:`after`,
    :meth:`before`, :meth:`replace` and :meth:`without` return a new pipeline."""

    def __init__(self, steps: Iterable[Step[Any]]) -> None:
        items = tuple(steps)
        seen: set[str] = set()
        for s in items:
            if not isinstance(s, Step):
                raise SpecError(f"The steps of a Pipeline must be closedloop.orchestration.steps.Step objects. "
                                f"Got {s!r} instead.")
            name = getattr(s, "name", None)
            if not isinstance(name, str) or not name.isidentifier():
                raise SpecError(f"The 'name' of step {s!r} must be an identifier. Got {name!r} instead.")
            if not (isinstance(getattr(s, "Result", None), type) and issubclass(s.Result, StepResult)):
                raise SpecError(f"The 'Result' of step {name!r} must be a StepResult subclass. "
                                f"Got {getattr(s, 'Result', None)!r} instead.")
            if name in seen:
                raise SpecError(f"The step names of a Pipeline must be unique. Got {name!r} twice.")
            seen.add(name)
        self.steps = items

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def _at(self, name: str) -> int:
        if name not in self.names:
            raise SpecError(f"The pipeline has no step {name!r}; its steps are {list(self.names)}.")
        return self.names.index(name)

    def after(self, name: str, step: Step[Any]) -> Pipeline:
        """This pipeline with ``step`` right after the step ``name``."""
        i = self._at(name) + 1
        return Pipeline(self.steps[:i] + (step,) + self.steps[i:])

    def before(self, name: str, step: Step[Any]) -> Pipeline:
        """This pipeline with ``step`` right before the step ``name``."""
        i = self._at(name)
        return Pipeline(self.steps[:i] + (step,) + self.steps[i:])

    def replace(self, name: str, step: Step[Any]) -> Pipeline:
        """This pipeline with ``step`` in place of the step ``name``."""
        i = self._at(name)
        return Pipeline(self.steps[:i] + (step,) + self.steps[i + 1:])

    def without(self, name: str) -> Pipeline:
        """This pipeline without the step ``name``."""
        i = self._at(name)
        return Pipeline(self.steps[:i] + self.steps[i + 1:])

    def __iter__(self) -> Iterator[Step[Any]]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and _config(self) == _config(other)

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"Pipeline({list(self.names)})"


def _config(p: Pipeline) -> list[tuple[type, dict[str, Any]]]:
    """What makes two pipelines equal: the same steps (types and configuration) in the same order."""
    return [(type(s), dict(vars(s))) for s in p.steps]


def default_pipeline() -> Pipeline:
    """The phishing-style loop's steps: ingest, monitor, route; bootstrap or advance; or plan,
    dataset, train, goal_check, evaluate, past, gate, register, sanity, shadow."""
    return Pipeline((Ingest(), Monitor(), Route(), Bootstrap(), Advance(), Schedule(), Dataset(), Train(), GoalCheck(), Evaluate(),
                     Past(), Gate(), Register(), Sanity(), Shadow()))


def reward_pipeline() -> Pipeline:
    """The loop of a system that learns from rewards: ingest, monitor, route; bootstrap or advance;
    or plan, dataset (rewards), train (by the plan's objective), evaluate (the policy value),
    gate, register, sanity, shadow."""
    return Pipeline((Ingest(), Monitor(), Route(), Bootstrap(), Advance(), Schedule(), RewardDataset(), RewardTrain(),
                     PolicyEvaluate(), Gate(), Register(), Sanity(), Shadow()))

"""The step contract: what every cycle step is, what it may read and do, and how it ends a cycle.

A step is a small object with a ``name`` (its key in the cycle record), a ``Result`` type (a
msgspec struct: the typed record of what it did) and one core method, :meth:`Step.run`, which
does the step's work through a :class:`StepContext` and returns its ``Result``. Two optional
capabilities derive from it, both with defaults:

* :meth:`Step.applies` — whether the step runs in this cycle (default: always). A step that does
  not apply leaves no entry in the record.
* :meth:`Step.ends` — whether the cycle ends after the step, with which outcome (default: never).

A step may also stop the cycle on purpose by raising :class:`Stop` (recorded as ``stopped``,
with the outcome and reason; a resumed cycle stops there again). Every step must be
**idempotent**: a cycle resumed after a crash redoes a step whose effect happened but whose
result was not recorded, so a step keys its effects (files by the cycle's paths, registry
changes by checking the deployment first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from closedloop.base.files import atomic_write, make_private_dirs
from closedloop.errors import SpecError
from closedloop.orchestration.alerts import Alert, JsonLinesAlertSink, deliver
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.clock import Clock
from closedloop.telemetry import TelemetryStore

if TYPE_CHECKING:
    from closedloop.orchestration.goals import GoalTracker, SeriesStore
    from closedloop.orchestration.plan import LoopPlan
    from closedloop.orchestration.reading import DatasetReader
    from closedloop.system.spec import System

__all__ = ["Step", "StepContext", "StepResult", "Stop", "atomic_json", "to_record"]

R = TypeVar("R", bound="StepResult")


class StepResult(msgspec.Struct, kw_only=True):
    """Base of every step's typed result. Recorded in the cycle record as a JSON object (the
    struct's fields); a resumed cycle reads it back into the same type."""


class Stop(Exception):
    """Ends a cycle early, on purpose: recorded as the cycle's ``outcome`` and ``reason``;
    ``detail`` (a step result, or None) is recorded beside them in the step's entry."""

    def __init__(self, outcome: str, reason: str, detail: StepResult | None = None) -> None:
        self.outcome, self.reason, self.detail = outcome, reason, detail
        super().__init__(reason)


def _enc_hook(obj: Any) -> Any:
    """What msgspec cannot encode by itself: numpy floats as numbers, anything else as its str."""
    return float(obj) if isinstance(obj, float) else str(obj)


def to_record(result: StepResult) -> dict[str, Any]:
    """A step result as the JSON-ready object the cycle record holds."""
    out: dict[str, Any] = msgspec.to_builtins(result, enc_hook=_enc_hook)
    return out


def atomic_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys, written atomically. msgspec, not ``json``: a
    cycle record is rewritten after every step and the monitor's results (every outcome source's
    abuse verdict) make it large (docs/performance.md, "Orchestration")."""
    make_private_dirs(path.parent)
    data = msgspec.json.encode(obj, order="sorted", enc_hook=_enc_hook)
    atomic_write(path, msgspec.json.format(data, indent=1))


@dataclass
class StepContext:
    """What a step works with in one cycle: the plan and its system, the project home, the
    registry and the actor its changes are recorded under, the cycle's record (its time, what
    earlier steps did, the state carried from cycle to cycle) and the home's stores. Built by
    the :class:`~closedloop.orchestration.cycle.Cycle` for each cycle; a step reads it and writes
    only what its contract says (its own files under :attr:`dir`, registry changes it appends
    with :meth:`change`, the carried state it owns)."""

    plan: LoopPlan
    home: Path
    registry: Any
    actor: str
    record: dict[str, Any]
    alert_log: JsonLinesAlertSink
    goals: SeriesStore
    mistakes: SeriesStore
    tracker: GoalTracker
    reader: DatasetReader
    clock: Clock
    _results: dict[str, StepResult] = field(default_factory=dict, repr=False)

    @property
    def system(self) -> System:
        return self.plan.system

    @property
    def now_ns(self) -> int:
        """The cycle's time (a resumed cycle keeps its own)."""
        return int(self.record["now_ns"])

    @property
    def id(self) -> int:
        return int(self.record["id"])

    @property
    def dir(self) -> Path:
        """This cycle's own directory (``<home>/orchestration/cycles/<NNNNNN>/``): the dataset,
        the candidate and the report live there, so redoing a step finds its files."""
        return self.home / "orchestration" / "cycles" / f"{self.id:06d}"

    @property
    def scratch(self) -> Path:
        """A scratch directory for spilled queries."""
        return self.home / "orchestration" / "tmp"

    def result(self, name: str, kind: type[R]) -> R:
        """What the step ``name`` did in this cycle, as its typed result."""
        got = self._results.get(name)
        if got is None:
            entry = self.record["steps"].get(name)
            if entry is None or "result" not in entry:
                raise SpecError(f"Step {name!r} has no result in cycle {self.id}: it has not run yet.")
            got = self._results[name] = msgspec.convert(entry["result"], kind)
        if not isinstance(got, kind):
            raise SpecError(f"The result of step {name!r} is a {type(got).__name__}, not a {kind.__name__}.")
        return got

    def remember(self, name: str, result: StepResult) -> None:
        """Keep a step's typed result for the steps after it (the cycle calls this)."""
        self._results[name] = result

    def has(self, name: str) -> bool:
        """Whether the step ``name`` finished in this cycle."""
        return (self.record["steps"].get(name) or {}).get("status") == "done"

    def change(self, change: Any) -> None:
        """Record a registry change this cycle made (a ``closedloop.registry.Change``)."""
        self.record["changes"].append(change.to_dict())

    def signer(self) -> Any:
        """The home's signing key (trusted by the registry when it is created): what the loop
        trains and deploys is signed by it (closedloop.runtime.signing)."""
        return self.registry.signing_key(self.home)

    def files(self) -> tuple[list[Path], list[Path]]:
        """The telemetry lake's decision files and outcome files."""
        store = TelemetryStore(self.home)
        return store.decision_files(), store.outcome_files()

    def production(self) -> Bundle | None:
        """The production bundle now, or None."""
        state = self.registry.state(self.system.name)
        return None if state.production is None else self.registry.load_bundle(state.production, self.system)

    def load(self, path: str) -> Any:
        """The dataset at ``path`` as the cycle reads it (read once per cycle and process)."""
        return self.reader.load(path)

    def alert(self, alerts: list[Alert]) -> list[Alert]:
        """Deliver the alerts not sent before (the plan's sinks first, then the home's log: at
        least once), list them in the cycle record; returns the new ones."""
        seen = {a.get("id") for a in self.alert_log.read()}
        new = [a for a in alerts if a.id not in seen]
        deliver(new, self.plan.sinks)
        self.alert_log.send(new)
        self.record["alerts"] = self.record.get("alerts", []) + [a.to_dict() for a in new]
        return new


class Step(ABC, Generic[R]):
    """One step of a cycle, whose typed result is an ``R``. Subclasses set ``name`` and
    ``Result`` (the class ``R``) and implement :meth:`run`; a constructor takes configuration
    only (the plan and the cycle's state are read from the context)."""

    name: ClassVar[str]
    Result: ClassVar[type[StepResult]]

    def applies(self, ctx: StepContext) -> bool:
        """Whether this step runs in this cycle (default: always)."""
        return True

    @abstractmethod
    def run(self, ctx: StepContext) -> R:
        """Do the step; return what it did. Raise :class:`Stop` to end the cycle on purpose."""

    def ends(self, ctx: StepContext, result: R) -> tuple[str, str] | None:
        """``(outcome, reason)`` when the cycle ends after this step (default: it goes on)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

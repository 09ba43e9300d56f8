"""The goal tracker's series: :class:`Measure` is one series to keep (a goal, or a monitored rate);
:class:`MetricInput` is what a user metric function sees for one window. The metric grammar itself
(:func:`parse_metric`, :class:`Metric`) is the system's (:mod:`closedloop.system.metrics`) and is
importable from here too. The grammar is in docs/orchestration.md, "Goals".
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from closedloop.orchestration.windows import Window
from closedloop.system.metrics import CLASSIFY, Metric, parse_metric
from closedloop.system.spec import Goal, System

__all__ = ["CLASSIFY", "Measure", "Metric", "MetricInput", "parse_metric"]


@dataclass(frozen=True)
class Measure:
    """One series to keep: a goal, or a monitored rate (no target)."""

    name: str
    metric: str
    cadence: str
    level: str | None = None
    target: float | None = None
    direction: str | None = None

    @classmethod
    def of(cls, goal: Goal) -> Measure:
        return cls(goal.name, goal.metric, goal.cadence, goal.level, goal.target, goal.direction)

    def met(self, value: float | None) -> bool | None:
        if value is None or self.target is None:
            return None
        return value >= self.target if self.direction == "at_least" else value <= self.target


@dataclass(frozen=True)
class MetricInput:
    """What a user-registered metric function sees for one window: the window, its decisions
    (``decision_id, unit, timestamp_ns, action, propensity, sample_prob, bundle_version,
    flight``), the outcomes that happened in it (``outcome_id, decision_id, unit, kind, value,
    event_ns, source``) and its labeled decisions (the dataset columns ``decision_id,
    timestamp_ns, action, label_value, weight``). All are Arrow tables."""

    window: Window
    decisions: pa.Table
    outcomes: pa.Table
    labeled: pa.Table
    system: System

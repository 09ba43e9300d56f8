"""Orchestration: the loop over time (docs/orchestration.md).

* :class:`LoopPlan` (:class:`Rollout`, :class:`Tighten`) — how the system learns over time.
* :class:`Cycle` — one turn of the loop: ingest → monitor → (bootstrap | advance a rollout |
  dataset → train → evaluate → gate → register → sanity → shadow), every step recorded,
  resumable and idempotent (``closedloop loop run`` / ``closedloop loop status``); one cycle at
  a time per home (:class:`CycleLock`, :class:`FileCycleLock`; :class:`LockHeldError`), per system
  across hosts with a PostgreSQL registry (:class:`PostgresCycleLock`).
* :class:`GoalTracker` / :class:`SeriesStore` / :func:`goal_status` — goals at four levels
  measured from telemetry per cadence window, kept as time series; :func:`parse_metric`.
* :class:`DriftMonitor` (PSI of features and score), :class:`MistakeSpikes` (River's
  Page-Hinkley / ADWIN over mistake rates), :func:`psi`.
* :class:`AbusePolicy` — sources that disagree with the analysts: down-weighted or quarantined.
* :class:`ClickFarmPolicy` — units of a system that learns from rewards that click far more than
  the others, on a few items: quarantined, their decisions left out of the reward datasets.
* :class:`LabelCheck` — a day of labels unlike the others (a broken label pipeline): the gate
  refuses the candidate trained on it, and later datasets leave those labels out.
* :class:`Alert`, :class:`AlertSink`, :class:`JsonLinesAlertSink`, :class:`WebhookAlertSink`.

``docs/orchestration.md`` is the user guide.
"""

from closedloop.orchestration.abuse import AbusePolicy, AbuseReport
from closedloop.orchestration.alerts import (
    Alert,
    AlertSink,
    JsonLinesAlertSink,
    WebhookAlertSink,
    deliver,
)
from closedloop.orchestration.click_farm import ClickFarmPolicy, ClickFarmReport
from closedloop.orchestration.cycle import STEPS, Cycle
from closedloop.orchestration.drift import DriftMonitor, MistakeSpikes, psi
from closedloop.orchestration.goals import (
    GoalTracker,
    Measure,
    MetricInput,
    SeriesStore,
    goal_status,
    parse_metric,
)
from closedloop.orchestration.labels import LabelCheck
from closedloop.orchestration.lock import CycleLock, FileCycleLock, LockHeldError
from closedloop.orchestration.lock_pg import PostgresCycleLock
from closedloop.orchestration.plan import Apprentice, LoopPlan, Rollout, Tighten
from closedloop.orchestration.windows import CADENCES, Window, window_at, windows_between

__all__ = [
    "CADENCES",
    "STEPS",
    "AbusePolicy",
    "AbuseReport",
    "Apprentice",
    "Alert",
    "AlertSink",
    "ClickFarmPolicy",
    "ClickFarmReport",
    "Cycle",
    "CycleLock",
    "DriftMonitor",
    "FileCycleLock",
    "GoalTracker",
    "JsonLinesAlertSink",
    "LabelCheck",
    "LockHeldError",
    "LoopPlan",
    "Measure",
    "MetricInput",
    "MistakeSpikes",
    "PostgresCycleLock",
    "Rollout",
    "SeriesStore",
    "Tighten",
    "WebhookAlertSink",
    "Window",
    "deliver",
    "goal_status",
    "parse_metric",
    "psi",
    "window_at",
    "windows_between",
]

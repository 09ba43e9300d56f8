"""closedloop: build, run and grow closed-loop intelligent systems.

The public API, curated. Submodules hold the rest: :mod:`closedloop.features` (as ``F``),
:mod:`closedloop.intelligence`, :mod:`closedloop.checks`, :mod:`closedloop.creation`.
"""

from __future__ import annotations

from . import features
from .bundle import Bundle, verify_bundle
from .clock import Clock, ManualClock, SystemClock
from .decision import Decision, DecisionBatch, ShadowResult
from .deployment import Deployment, Flight
from .errors import (
    BatchContextError,
    BundleError,
    ClosedLoopError,
    ConformanceError,
    ContextError,
    DatasetError,
    FeatureError,
    IntelligenceError,
    OutcomeError,
    ProjectError,
    ServiceError,
    SpecError,
)
from .experience import Action, BestAction, Presentation, Ranking, Thresholds
from .exploration import EpsilonGreedy, Softmax
from .features import Feature, FeatureSet
from .guardrails import AllowList, BlockList, CapStore, FrequencyCap, HardLimit, InMemoryCapStore
from .ids import DecisionIds
from .intelligence import (
    Calibrated,
    Intelligence,
    LightGBMModel,
    LinearModel,
    LogisticModel,
    LookupTable,
    Partitioned,
    Rule,
    ScoringRules,
    SklearnModel,
    Stacking,
    ThresholdRule,
    WeightedVote,
)
from .runtime import Runtime
from .schema import Bool, Float, Int, Schema, Str
from .spec import Goal, LabelPolicy, OutcomeRule, System

F = features

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The HTTP client imports httpx (~0.1 s): loaded on first use, not with closedloop.
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'closedloop' has no attribute {name!r}")


__all__ = [
    "F",
    "Deployment",
    "Flight",
    "Action",
    "AllowList",
    "BestAction",
    "BlockList",
    "Calibrated",
    "Client",
    "LightGBMModel",
    "SklearnModel",
    "CapStore",
    "EpsilonGreedy",
    "FrequencyCap",
    "HardLimit",
    "InMemoryCapStore",
    "Partitioned",
    "Presentation",
    "Stacking",
    "WeightedVote",
    "Ranking",
    "ShadowResult",
    "Softmax",
    "BatchContextError",
    "Bool",
    "Bundle",
    "BundleError",
    "Clock",
    "ClosedLoopError",
    "ConformanceError",
    "ContextError",
    "DatasetError",
    "Decision",
    "DecisionBatch",
    "DecisionIds",
    "Feature",
    "FeatureError",
    "FeatureSet",
    "Float",
    "Goal",
    "Int",
    "Intelligence",
    "IntelligenceError",
    "LabelPolicy",
    "LinearModel",
    "LogisticModel",
    "LookupTable",
    "ManualClock",
    "OutcomeError",
    "OutcomeRule",
    "ProjectError",
    "Rule",
    "Runtime",
    "Schema",
    "ScoringRules",
    "ServiceError",
    "SpecError",
    "Str",
    "System",
    "SystemClock",
    "Thresholds",
    "ThresholdRule",
    "features",
    "verify_bundle",
    "__version__",
]

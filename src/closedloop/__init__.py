"""closedloop: build, run and grow closed-loop intelligent systems.

The public API, curated. Submodules hold the rest: :mod:`closedloop.context.features` (as ``F``),
:mod:`closedloop.intelligence`, :mod:`closedloop.runtime.checks`, :mod:`closedloop.training`.
"""

from __future__ import annotations

from closedloop.base.version import __version__
from closedloop.context import features
from closedloop.context.features import Feature, FeatureSet
from closedloop.context.schema import Bool, Float, Int, Schema, Str
from closedloop.errors import (
    AuthError,
    BatchContextError,
    BundleError,
    ClosedLoopError,
    ConflictError,
    ConformanceError,
    ContextError,
    DatasetError,
    EvaluationError,
    FeatureError,
    IntelligenceError,
    LockHeldError,
    OutcomeError,
    ProjectError,
    RegistryError,
    SanityCheckError,
    ServiceError,
    SpecError,
    TransportError,
    TransportUnavailable,
)
from closedloop.experience.experiences import Action, BestAction, Presentation, Ranking, Thresholds
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB
from closedloop.experience.guardrails import (
    AllowList,
    BlockList,
    CapStore,
    FrequencyCap,
    HardLimit,
    InMemoryCapStore,
)
from closedloop.intelligence import (
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
from closedloop.runtime import checks
from closedloop.runtime.bundle import Bundle, verify_bundle
from closedloop.runtime.clock import Clock, ManualClock, SystemClock
from closedloop.runtime.decision import Decision, DecisionBatch, ShadowResult
from closedloop.runtime.deployment import Deployment, Flight
from closedloop.runtime.ids import DecisionIds
from closedloop.runtime.runtime import Runtime
from closedloop.system.spec import Goal, LabelPolicy, OutcomeRule, Reward, RewardPolicy, System

F = features


def __getattr__(name: str) -> object:
    # The HTTP client imports httpx (slow to import: docs/performance.md): loaded on first use, not with closedloop.
    if name == "Client":
        from closedloop.service.client import Client

        return Client
    raise AttributeError(f"module 'closedloop' has no attribute {name!r}")


__all__ = [
    "Action",
    "AllowList",
    "AuthError",
    "BatchContextError",
    "BestAction",
    "BlockList",
    "Bool",
    "Bundle",
    "BundleError",
    "Calibrated",
    "CapStore",
    "Client",
    "Clock",
    "ClosedLoopError",
    "ConflictError",
    "ConformanceError",
    "ContextError",
    "DatasetError",
    "Decision",
    "DecisionBatch",
    "DecisionIds",
    "Deployment",
    "EpsilonGreedy",
    "EvaluationError",
    "F",
    "Feature",
    "FeatureError",
    "FeatureSet",
    "Flight",
    "Float",
    "FrequencyCap",
    "Goal",
    "HardLimit",
    "InMemoryCapStore",
    "Int",
    "Intelligence",
    "IntelligenceError",
    "LabelPolicy",
    "LightGBMModel",
    "LinearModel",
    "LockHeldError",
    "LogisticModel",
    "LookupTable",
    "ManualClock",
    "OutcomeError",
    "OutcomeRule",
    "Partitioned",
    "Presentation",
    "ProjectError",
    "Ranking",
    "RegistryError",
    "Reward",
    "RewardPolicy",
    "Rule",
    "Runtime",
    "SanityCheckError",
    "Schema",
    "ScoringRules",
    "ServiceError",
    "ShadowResult",
    "SklearnModel",
    "Softmax",
    "SpecError",
    "SquareCB",
    "Stacking",
    "Str",
    "System",
    "SystemClock",
    "ThresholdRule",
    "Thresholds",
    "TransportError",
    "TransportUnavailable",
    "WeightedVote",
    "__version__",
    "checks",
    "features",
    "verify_bundle",
]

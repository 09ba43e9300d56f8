"""Intelligence: heuristics and models as parameters (data), bound to features at run time.

``KINDS`` is the fixed mapping from a bundle's ``kind`` names to the classes this package ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.errors import IntelligenceError
from closedloop.intelligence.affinity import AffinityModel
from closedloop.intelligence.base import Intelligence, Scorer, sigmoid
from closedloop.intelligence.calibration import Calibrated
from closedloop.intelligence.combine import Partitioned, Stacking, WeightedVote
from closedloop.intelligence.heuristics import LookupTable, Rule, ScoringRules, ThresholdRule
from closedloop.intelligence.lightgbm import LightGBMModel
from closedloop.intelligence.linear import LinearModel, LogisticModel
from closedloop.intelligence.sklearn import SklearnModel

__all__ = [
    "KINDS",
    "AffinityModel",
    "Calibrated",
    "Intelligence",
    "LightGBMModel",
    "LinearModel",
    "LogisticModel",
    "LookupTable",
    "Partitioned",
    "Rule",
    "Scorer",
    "ScoringRules",
    "SklearnModel",
    "Stacking",
    "ThresholdRule",
    "WeightedVote",
    "load_intelligence",
    "sigmoid",
]

KINDS: Mapping[str, type[Intelligence]] = {
    cls.kind: cls
    for cls in (
        LinearModel, LogisticModel, ScoringRules, ThresholdRule, LookupTable, LightGBMModel, SklearnModel,
        Calibrated, AffinityModel,
    )
    + (WeightedVote, Stacking, Partitioned)
}


def load_intelligence(
    spec: Any, files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]] = KINDS
) -> Intelligence:
    """Rebuild an intelligence from its saved parameters. Only kinds in ``kinds`` are accepted."""
    if not isinstance(spec, Mapping):
        raise IntelligenceError(f"Saved intelligence must be a JSON object. Got {type(spec).__name__} instead.")
    kind = spec.get("kind")
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise IntelligenceError(
            f"The intelligence kind must be one of {sorted(kinds)}. Got {kind!r} instead."
        )
    return cls.from_dict(spec, files, kinds)

"""The goals of a system: :class:`Goal`, a named measurement at one of four levels, with a target
and a cadence."""

from __future__ import annotations

import math
from typing import Any

from closedloop.errors import SpecError
from closedloop.system.labels import kind_name

__all__ = ["Goal"]

_LEVELS = ("model", "user", "leading", "organizational")
_CADENCES = ("hourly", "daily", "weekly", "monthly", "quarterly")


class Goal:
    """A named measurement at one of the four levels, with a target and a cadence.

    ``level``: model (hourly model properties), user (outcomes users see), leading (indicators
    such as engagement), organizational (what the business wants). ``direction`` says whether the
    metric must stay ``at_least`` or ``at_most`` the target.
    """

    def __init__(
        self, name: str, level: str, metric: str, target: float, direction: str = "at_least",
        cadence: str = "daily", description: str = "",
    ) -> None:
        self.name = kind_name(name, "A goal's 'name'")
        if level not in _LEVELS:
            raise SpecError(f"The 'level' of goal '{name}' must be one of {list(_LEVELS)}. Got {level!r} instead.")
        if not isinstance(metric, str) or not metric:
            raise SpecError(f"The 'metric' of goal '{name}' must be a non-empty string. Got {metric!r} instead.")
        if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target):
            raise SpecError(f"The 'target' of goal '{name}' must be a finite number. Got {target!r} instead.")
        if direction not in ("at_least", "at_most"):
            raise SpecError(f"The 'direction' of goal '{name}' must be 'at_least' or 'at_most'. Got {direction!r} instead.")
        if cadence not in _CADENCES:
            raise SpecError(f"The 'cadence' of goal '{name}' must be one of {list(_CADENCES)}. Got {cadence!r} instead.")
        self.level, self.metric, self.target = level, metric, float(target)
        self.direction, self.cadence, self.description = direction, cadence, description

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "level": self.level, "metric": self.metric, "target": self.target,
            "direction": self.direction, "cadence": self.cadence,
        }

"""Sampling: which decisions telemetry keeps, and with what probability.

Every kept decision records its keep probability (``sample_prob``), so counts and estimates can
be re-weighted by 1/p without bias. The draw is a function of the decision id (or of the unit,
for unit-level sampling), so it is reproducible and the same in the single and the batch path.

The most specific rule decides: a score band, else a per-action rate, else a per-unit rate, else
the base rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.experience.exploration import uniform, uniform_batch

__all__ = ["Sampling"]

_SALT_DECISION = 0x5A3D
_SALT_UNIT = 0x5A3E


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0.0 < value <= 1.0):
        raise SpecError(f"The sampling rate {what} must be a number in (0, 1]. Got {value!r} instead.")
    return float(value)


class Sampling:
    """A declared sampling policy.

    Parameters
    ----------
    rate:
        The base keep probability.
    by:
        ``"decision"`` draws per decision; ``"unit"`` keeps all or none of a unit's decisions
        (a stable draw from the unit), so per-unit sequences stay whole.
    actions:
        Action → keep probability (e.g. keep every block, 1% of allows).
    units:
        Unit → keep probability (e.g. 1.0 for a unit being debugged).
    band:
        ``(score, low, high, rate)``: decisions whose ``score`` lies in [low, high] are kept with
        ``rate`` (e.g. keep everything near the decision boundary).
    """

    def __init__(
        self,
        rate: float = 1.0,
        *,
        by: str = "decision",
        actions: Mapping[str, float] | None = None,
        units: Mapping[str, float] | None = None,
        band: tuple[str, float, float, float] | None = None,
    ) -> None:
        self.rate = _rate(rate, "'rate'")
        if by not in ("decision", "unit"):
            raise SpecError(f"The sampling 'by' option must be 'decision' or 'unit'. Got {by!r} instead.")
        self.by = by
        self.actions = {str(a): _rate(r, f"for action {a!r}") for a, r in (actions or {}).items()}
        self.units = {str(u): _rate(r, f"for unit {u!r}") for u, r in (units or {}).items()}
        if band is not None:
            if not (isinstance(band, tuple | list) and len(band) == 4 and isinstance(band[0], str)):
                raise SpecError(f"The sampling 'band' must be (score, low, high, rate). Got {band!r} instead.")
            lo, hi = float(band[1]), float(band[2])
            if not (math.isfinite(lo) or math.isinf(lo)) or not lo <= hi:
                raise SpecError(f"The sampling band needs low ≤ high. Got {band!r} instead.")
            band = (band[0], lo, hi, _rate(band[3], "of the band"))
        self.band = band
        self.keeps_all = self.rate == 1.0 and not self.actions and not self.units and band is None

    def describe(self) -> dict[str, Any]:
        return {"rate": self.rate, "by": self.by, "actions": self.actions, "units": self.units,
                "band": list(self.band) if self.band else None}

    def prob(self, unit: str, action: str, scores: Mapping[str, float]) -> float:
        """The keep probability of one decision."""
        if self.band is not None:
            v = scores.get(self.band[0])
            if v is not None and self.band[1] <= v <= self.band[2]:
                return self.band[3]
        p = self.actions.get(action)
        if p is not None:
            return p
        return self.units.get(unit, self.rate)

    def keep(self, decision_id: str, unit: str, p: float) -> bool:
        if p >= 1.0:
            return True
        u = uniform(unit, _SALT_UNIT) if self.by == "unit" else uniform(decision_id, _SALT_DECISION)
        return u < p

    def prob_batch(self, units: list[str], actions: np.ndarray, action_names: tuple[str, ...],
                   scores: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(units)
        p = np.full(n, self.rate, dtype=np.float64)
        if self.units:
            p = np.array([self.units.get(u, self.rate) for u in units], dtype=np.float64)
        for j, name in enumerate(action_names):
            r = self.actions.get(name)
            if r is not None:
                p = np.where(actions == j, r, p)
        if self.band is not None and self.band[0] in scores:
            v = scores[self.band[0]]
            p = np.where((v >= self.band[1]) & (v <= self.band[2]), self.band[3], p)
        return p

    def keep_batch(self, decision_ids: Any, units: list[str], p: np.ndarray) -> np.ndarray:
        if bool((p >= 1.0).all()):
            return np.ones(p.shape[0], dtype=bool)
        if self.by == "unit":
            u = uniform_batch(units, _SALT_UNIT)
        else:
            u = uniform_batch(decision_ids, _SALT_DECISION)
        return (p >= 1.0) | (u < p)

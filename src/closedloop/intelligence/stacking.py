"""Stacking: a meta-model over one-output members' scores, ``link(intercept + Σ wᵢ·t(sᵢ))``,
with the log-odds transform it may apply (:func:`logit`, :func:`logit_array`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from closedloop.base.numeric import log1p, log1p_array, sigmoid, sigmoid_array
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, check_output, spec_get
from closedloop.intelligence.members import (
    MemberBlend,
    _check_members,
    _check_weights,
    _member_column,
    _member_from_dict,
    _member_to_dict,
    _saved_list,
)

__all__ = ["LINKS", "LOGIT_EPS", "TRANSFORMS", "Stacking", "logit", "logit_array"]

#: The link functions a :class:`Stacking` meta-model may apply to its linear score.
LINKS = ("logistic", "identity")
#: What a :class:`Stacking` meta-model may apply to each member's score before weighing it.
TRANSFORMS = ("identity", "logit")
#: ``logit`` clips scores to [LOGIT_EPS, 1 − LOGIT_EPS] (a heuristic's 0 or 1 is not infinitely sure).
LOGIT_EPS = 1e-9
_LOGIT_HI = 1.0 - LOGIT_EPS


def logit(p: float) -> float:
    """The log-odds ``log(p) − log(1 − p)`` of ``p`` clipped to [LOGIT_EPS, 1 − LOGIT_EPS]
    (NaN stays NaN), as ``log1p(p − 1) − log1p(−p)`` — the kernel :func:`logit_array` shares."""
    p = LOGIT_EPS if p < LOGIT_EPS else (_LOGIT_HI if p > _LOGIT_HI else p)
    return log1p(p - 1.0) - log1p(-p)


def logit_array(p: np.ndarray) -> np.ndarray:
    """:func:`logit` over a column, bitwise equal to it element by element."""
    p = np.where(p < LOGIT_EPS, LOGIT_EPS, np.where(p > _LOGIT_HI, _LOGIT_HI, p))
    return log1p_array(p - 1.0) - log1p_array(-p)


class _StackingScorer(Scorer):
    def __init__(
        self, features: FeatureSet, scorers: list[Scorer], weights: tuple[float, ...], intercept: float,
        logistic: bool, log_odds: bool, output: str,
    ) -> None:
        self.features = features
        self.outputs = (output,)
        self._pairs = list(zip(scorers, weights, strict=True))
        self._b = intercept
        self._logistic = logistic
        self._log_odds = log_odds

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        z = self._b
        for s, w in self._pairs:
            v = float(s.one(x, context)[0])
            if self._log_odds:
                v = logit(v)
            z = z + v * w
        return (sigmoid(z),) if self._logistic else (z,)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        z = np.full(X.shape[0], self._b, dtype=np.float64)
        with np.errstate(all="ignore"):  # ±inf / NaN propagate as in the scalar form
            for s, w in self._pairs:
                v = _member_column(s, X, cols)
                if self._log_odds:
                    v = logit_array(v)
                z = z + v * w
        if self._logistic:
            z = sigmoid_array(z)
        return z.reshape(-1, 1)


class Stacking(MemberBlend):
    """A meta-model over one-output members: ``link(intercept + Σ wᵢ·t(sᵢ))``.

    Fit it with :func:`closedloop.training.fit_stacking` (a logistic regression on the members'
    scores, on data the members were not trained on).

    Parameters
    ----------
    members:
        The intelligences whose scores the meta-model reads; each has exactly one output.
    weights:
        One weight per member (finite; any sign).
    intercept:
        The bias term (finite).
    link:
        ``"logistic"`` (a probability; the default) or ``"identity"`` (a raw score).
    output:
        The name of the score.
    transform:
        ``t``: ``"identity"`` (the default) weighs the scores themselves; ``"logit"`` weighs
        their log-odds (:func:`logit`, scores clipped to [1e-9, 1 − 1e-9]) — the natural scale
        for combining probabilities: a logistic member keeps its ranking at weight 1.
    """

    kind: ClassVar[str] = "stacking"

    def __init__(
        self,
        members: Sequence[Intelligence],
        weights: Sequence[float],
        intercept: float = 0.0,
        link: str = "logistic",
        output: str = "score",
        transform: str = "identity",
    ) -> None:
        owner = type(self).__name__
        self.members = _check_members(members, owner, single_output=True)
        self.weights = _check_weights(weights, len(self.members), owner, positive=False)
        if isinstance(intercept, np.floating | np.integer):
            intercept = intercept.item()
        self.intercept = check_finite("intercept", intercept, owner)
        if not isinstance(link, str) or link not in LINKS:
            raise IntelligenceError(f"The 'link' of {owner} must be one of {list(LINKS)}. Got {link!r} instead.")
        self.link = link
        if not isinstance(transform, str) or transform not in TRANSFORMS:
            raise IntelligenceError(
                f"The 'transform' of {owner} must be one of {list(TRANSFORMS)}. Got {transform!r} instead."
            )
        self.transform = transform
        self.output = check_output(output, owner)

    def bind(self, features: FeatureSet) -> Scorer:
        scorers = [m.bind(features) for m in self.members]
        return _StackingScorer(
            features, scorers, self.weights, self.intercept, self.link == "logistic",
            self.transform == "logit", self.output,
        )

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "output": self.output,
            "link": self.link,
            "transform": self.transform,
            "intercept": self.intercept,
            "weights": list(self.weights),
            "members": [_member_to_dict(m, files, f"m{i}.") for i, m in enumerate(self.members)],
        }

    @classmethod
    def from_dict(
        cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]]
    ) -> Intelligence:
        owner = cls.__name__
        raw = _saved_list(spec, "members", owner)
        members = [_member_from_dict(m, files, kinds, f"m{i}.") for i, m in enumerate(raw)]
        return cls(
            members,
            weights=_saved_list(spec, "weights", owner),
            intercept=spec_get(spec, "intercept", owner),
            link=spec_get(spec, "link", owner),
            output=spec_get(spec, "output", owner),
            transform=spec_get(spec, "transform", owner),
        )

    def __repr__(self) -> str:
        return (
            f"Stacking({len(self.members)} members, weights={list(self.weights)}, "
            f"intercept={self.intercept!r}, link={self.link!r}, transform={self.transform!r}, "
            f"outputs={self.outputs})"
        )

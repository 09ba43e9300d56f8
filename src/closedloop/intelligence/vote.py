"""The weighted vote: the weighted mean of one-output members' scores (see
:mod:`closedloop.intelligence.combine` for what every combination shares)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np

from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_output, spec_get
from closedloop.intelligence.members import (
    MemberBlend,
    _check_members,
    _check_weights,
    _member_column,
    _member_from_dict,
    _member_to_dict,
    _saved_list,
)

__all__ = ["WeightedVote"]


class _VoteScorer(Scorer):
    def __init__(
        self, features: FeatureSet, scorers: list[Scorer], weights: tuple[float, ...], total: float, output: str
    ) -> None:
        self.features = features
        self.outputs = (output,)
        self._pairs = list(zip(scorers, weights, strict=True))
        self._total = total

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        acc = 0.0
        for s, w in self._pairs:
            acc = acc + float(s.one(x, context)[0]) * w
        return (acc / self._total,)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        acc = np.zeros(X.shape[0], dtype=np.float64)
        with np.errstate(all="ignore"):  # ±inf / NaN propagate as in the scalar form
            for s, w in self._pairs:
                acc = acc + _member_column(s, X, cols) * w
            acc = acc / self._total
        return acc.reshape(-1, 1)


class WeightedVote(MemberBlend):
    """The weighted mean of one-output members: ``Σ wᵢ·sᵢ / Σ wᵢ``.

    Members of scores in [0, 1] give a score in [0, 1].

    Parameters
    ----------
    members:
        ``[(intelligence, weight), …]``, or ``[intelligence, …]`` with ``weights``. Each member
        has exactly one output.
    weights:
        One weight per member (finite, > 0), when ``members`` holds intelligences only;
        by default every member weighs 1 (the plain mean).
    output:
        The name of the score.

    >>> WeightedVote([(model, 3.0), (heuristic, 1.0)], output="phish")
    """

    kind: ClassVar[str] = "weighted_vote"

    def __init__(
        self,
        members: Sequence[tuple[Intelligence, float]] | Sequence[Intelligence],
        weights: Sequence[float] | None = None,
        output: str = "score",
    ) -> None:
        owner = type(self).__name__
        if isinstance(members, Sequence) and not isinstance(members, str | bytes) and members and all(
            isinstance(m, tuple) for m in members
        ):
            if weights is not None:
                raise IntelligenceError(
                    f"{owner} takes weights either in 'members' as (intelligence, weight) pairs or in "
                    f"'weights', not both. Got both instead."
                )
            pairs = cast("list[tuple[Any, ...]]", list(members))  # every member is a tuple (checked above)
            for i, p in enumerate(pairs):
                if len(p) != 2:
                    raise IntelligenceError(
                        f"Member {i} of {owner} must be an (intelligence, weight) pair. Got {p!r} instead."
                    )
            members = [p[0] for p in pairs]
            weights = [p[1] for p in pairs]
        self.members = _check_members(members, owner, single_output=True)
        if weights is None:
            weights = [1.0] * len(self.members)
        self.weights = _check_weights(weights, len(self.members), owner, positive=True)
        total = 0.0
        for w in self.weights:
            total = total + w
        if not math.isfinite(total):
            raise IntelligenceError(
                f"The 'weights' of {owner} must have a finite sum. Got a sum of {total!r} instead."
            )
        self.total = total
        self.output = check_output(output, owner)

    def bind(self, features: FeatureSet) -> Scorer:
        scorers = [m.bind(features) for m in self.members]
        return _VoteScorer(features, scorers, self.weights, self.total, self.output)

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "output": self.output,
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
        return cls(members, weights=_saved_list(spec, "weights", owner), output=spec_get(spec, "output", owner))

    def __repr__(self) -> str:
        return f"WeightedVote({len(self.members)} members, weights={list(self.weights)}, outputs={self.outputs})"

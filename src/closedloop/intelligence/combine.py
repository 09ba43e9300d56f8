"""Combinations of intelligences: ensembles, meta-models and per-segment intelligence.

:class:`WeightedVote`
    The weighted mean of its members' scores: ``Σ wᵢ·sᵢ / Σ wᵢ`` (weights finite and > 0).
:class:`Stacking`
    A meta-model over its members' scores: ``link(intercept + Σ wᵢ·t(sᵢ))`` with ``link`` the
    logistic function or the identity, and ``t`` the identity or the log-odds (``logit``) of
    each score. :func:`closedloop.training.fit_stacking` fits the weights.
:class:`Partitioned`
    A different intelligence per value of a text context field (per browser, per country…),
    with a ``default`` for every other value.

Members are any intelligences (combinations included); they are parameters too, saved inside
the combination's JSON and rebuilt with :func:`closedloop.intelligence.load_intelligence`, so a
bundle naming a kind outside ``kinds`` is refused however deep it is nested. Files a member
writes (larger models) are saved under a prefix of its position (``m0.``, ``m1.``…; for
:class:`Partitioned` ``p0.``… in sorted key order and ``default.``), so two members of the same
kind never overwrite each other's files; each member reads its own files back un-prefixed.

Both paths perform the same operations in the same order: sums accumulate left to right in
member order (Python floats in :meth:`~closedloop.intelligence.Scorer.one`, numpy columns in
:meth:`~closedloop.intelligence.Scorer.batch`), the logistic link and the log-odds run the
shared kernels of :mod:`closedloop.base.numeric` (``sigmoid``, ``log1p``), and a partition scores
each row with the member the single path would pick — so ``one`` equals the batch row bitwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.base.numeric import log1p, log1p_array, sigmoid, sigmoid_array
from closedloop.context.features import FeatureSet
from closedloop.context.schema import Columns, Str
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, check_output, spec_get

__all__ = ["LINKS", "LOGIT_EPS", "TRANSFORMS", "Partitioned", "Stacking", "WeightedVote", "logit", "logit_array"]

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


# ---------------------------------------------------------------------------------------------
# helpers shared by the three kinds


def _check_members(members: Any, owner: str, *, single_output: bool) -> tuple[Intelligence, ...]:
    if isinstance(members, Intelligence | str | bytes | Mapping) or not isinstance(members, Sequence):
        raise IntelligenceError(
            f"The 'members' of {owner} must be a non-empty list of Intelligence. Got {members!r} instead."
        )
    members = tuple(members)
    if not members:
        raise IntelligenceError(f"The 'members' of {owner} must be a non-empty list of Intelligence. Got [] instead.")
    for i, m in enumerate(members):
        if not isinstance(m, Intelligence):
            raise IntelligenceError(f"Member {i} of {owner} must be an Intelligence. Got {m!r} instead.")
        if single_output and len(m.outputs) != 1:
            raise IntelligenceError(
                f"Member {i} of {owner} must have exactly one output. Got {m.outputs} instead."
            )
    return members


def _union(groups: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Names of all groups, in first-seen order, each once."""
    return tuple(dict.fromkeys(name for group in groups for name in group))


def _member_to_dict(member: Intelligence, files: dict[str, bytes], prefix: str) -> dict[str, Any]:
    """The member's parameters; its files are stored in ``files`` under ``prefix``."""
    own: dict[str, bytes] = {}
    spec = member.to_dict(own)
    for name, data in own.items():
        files[prefix + name] = data
    return spec


def _member_from_dict(
    spec: Any, files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]], prefix: str
) -> Intelligence:
    """Rebuild a member from its parameters, handing it its own files (``prefix`` removed)."""
    from closedloop.intelligence import load_intelligence

    own = {name[len(prefix):]: data for name, data in files.items() if name.startswith(prefix)}
    try:
        return load_intelligence(spec, own, kinds)
    except RecursionError:
        raise IntelligenceError(
            "Saved combinations must not be nested deeper than Python's recursion limit. Got deeper ones instead."
        ) from None


def _saved_list(spec: Mapping[str, Any], key: str, owner: str) -> list[Any]:
    value = spec_get(spec, key, owner)
    if not isinstance(value, list):
        raise IntelligenceError(f"The saved '{key}' of {owner} must be a list. Got {value!r} instead.")
    return value


def _check_weights(weights: Any, n: int, owner: str, *, positive: bool) -> tuple[float, ...]:
    if isinstance(weights, str | bytes | Mapping) or not isinstance(weights, Sequence | np.ndarray):
        raise IntelligenceError(
            f"The 'weights' of {owner} must be a list of {n} numbers (one per member). Got {weights!r} instead."
        )
    weights = list(weights)
    if len(weights) != n:
        raise IntelligenceError(
            f"The 'weights' of {owner} must have one weight per member ({n}). Got {len(weights)} instead."
        )
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, np.floating | np.integer):
            w = w.item()
        w = check_finite(f"weights[{i}]", w, owner)
        if positive and not w > 0.0:
            raise IntelligenceError(f"The 'weights[{i}]' parameter of {owner} must be > 0. Got {w!r} instead.")
        out.append(w)
    return tuple(out)


def _member_column(scorer: Scorer, X: np.ndarray, cols: Columns) -> np.ndarray:
    return np.asarray(scorer.batch(X, cols), dtype=np.float64)[:, 0]


# ---------------------------------------------------------------------------------------------
# WeightedVote


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


class WeightedVote(Intelligence):
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

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return _union([m.inputs() for m in self.members])

    def context_fields(self) -> tuple[str, ...]:
        return _union([m.context_fields() for m in self.members])

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


# ---------------------------------------------------------------------------------------------
# Stacking


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


class Stacking(Intelligence):
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

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return _union([m.inputs() for m in self.members])

    def context_fields(self) -> tuple[str, ...]:
        return _union([m.context_fields() for m in self.members])

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


# ---------------------------------------------------------------------------------------------
# Partitioned


class _PartitionedScorer(Scorer):
    def __init__(
        self, features: FeatureSet, field: str, keys: list[str], scorers: list[Scorer], default: Scorer,
        outputs: tuple[str, ...],
    ) -> None:
        self.features = features
        self.outputs = outputs
        self._field = field
        self._by_key = dict(zip(keys, scorers, strict=True))
        self._scorers = scorers
        self._default = default
        self._keys = pa.array(keys, type=pa.string())

    def one(self, x: tuple[float, ...], context: Any) -> tuple[float, ...]:
        return self._by_key.get(getattr(context, self._field), self._default).one(x, context)

    def batch(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        n = X.shape[0]
        k = len(self.outputs)
        # position of each row's key among the parts' keys; -1 (the default) for any other value
        pos = pc.fill_null(pc.index_in(cols[self._field], value_set=self._keys), -1)
        group = np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64) + 1  # 0 = default
        counts = np.bincount(group, minlength=len(self._scorers) + 1)
        if n == 0:
            return np.empty((0, k), dtype=np.float64)
        scorers = [self._default, *self._scorers]
        only = np.flatnonzero(counts == n)
        if only.size:  # every row goes to one member: no copies
            return np.asarray(scorers[int(only[0])].batch(X, cols), dtype=np.float64).reshape(n, k)
        out = np.empty((n, k), dtype=np.float64)
        order = np.argsort(group, kind="stable")  # rows of each group, in their original order
        start = 0
        for g, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            idx = order[start:start + count]
            start += count
            Xg = np.empty((count, X.shape[1]), dtype=np.float64, order="F")  # column-major, as features make it
            for j in range(X.shape[1]):
                Xg[:, j] = X[idx, j]
            out[idx] = np.asarray(scorers[g].batch(Xg, cols.take(idx)), dtype=np.float64).reshape(count, k)
        return out


class Partitioned(Intelligence):
    """A different intelligence per value of a text context field.

    A row whose ``field`` equals a key of ``parts`` is scored by that part; any other value by
    ``default``. All members have the same number of outputs; the combination's outputs are named
    by ``output`` (by default, the default member's names).

    Parameters
    ----------
    field:
        A text (:class:`~closedloop.Str`) context field of the system, e.g. ``"browser"``. When the
        field declares ``choices``, every key must be one of them (checked at bind).
    parts:
        Field value → intelligence (at least one).
    default:
        The intelligence for every other value.
    output:
        The output name (members with one output), a list of names (one per output), or ``None``.

    >>> Partitioned("browser", {"safari": safari_model}, default=model, output="phish")
    """

    kind: ClassVar[str] = "partitioned"

    def __init__(
        self,
        field: str,
        parts: Mapping[str, Intelligence],
        default: Intelligence,
        output: str | Sequence[str] | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(field, str) or not field:
            raise IntelligenceError(f"The 'field' of {owner} must be a context field name. Got {field!r} instead.")
        if not isinstance(parts, Mapping) or not parts:
            raise IntelligenceError(
                f"The 'parts' of {owner} must be a non-empty mapping of field value to Intelligence. "
                f"Got {parts!r} instead."
            )
        for key, part in parts.items():
            if not isinstance(key, str):
                raise IntelligenceError(f"The keys of {owner}'s parts must be strings. Got {key!r} instead.")
            if not isinstance(part, Intelligence):
                raise IntelligenceError(f"The part {key!r} of {owner} must be an Intelligence. Got {part!r} instead.")
        if not isinstance(default, Intelligence):
            raise IntelligenceError(f"The 'default' of {owner} must be an Intelligence. Got {default!r} instead.")
        k = len(default.outputs)
        for key, part in parts.items():
            if len(part.outputs) != k:
                raise IntelligenceError(
                    f"The members of {owner} must have the same number of outputs: the part {key!r} has "
                    f"{len(part.outputs)} {part.outputs}, the default has {k} {default.outputs}."
                )
        self.field = field
        self.parts = {key: parts[key] for key in sorted(parts)}
        self.default = default
        if output is None:
            names = default.outputs
        elif isinstance(output, str):
            names = (output,)
        elif isinstance(output, Sequence):
            names = tuple(output)
        else:
            raise IntelligenceError(
                f"The 'output' parameter of {owner} must be a name or a list of names. Got {output!r} instead."
            )
        names = tuple(check_output(name, owner) for name in names)
        if len(names) != k:
            raise IntelligenceError(
                f"The 'output' parameter of {owner} must name each of the members' {k} outputs. "
                f"Got {list(names)} instead."
            )
        if len(set(names)) != len(names):
            raise IntelligenceError(f"The 'output' names of {owner} must be unique. Got {list(names)} instead.")
        self._outputs = names

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    def _members(self) -> list[Intelligence]:
        return [*self.parts.values(), self.default]

    def inputs(self) -> tuple[str, ...]:
        return _union([m.inputs() for m in self._members()])

    def context_fields(self) -> tuple[str, ...]:
        return _union([(self.field,), *[m.context_fields() for m in self._members()]])

    def bind(self, features: FeatureSet) -> Scorer:
        f = features.schema.by_name.get(self.field)
        if not isinstance(f, Str):
            raise IntelligenceError(
                f"The 'field' of Partitioned must be a text context field. Got {self.field!r} "
                f"({'undeclared' if f is None else type(f).__name__}) instead."
            )
        if f.choices is not None:
            unknown = [key for key in self.parts if key not in f.choices]
            if unknown:
                raise IntelligenceError(
                    f"The keys of Partitioned's parts must be values of context field {self.field!r} "
                    f"(one of {list(f.choices)}). Got {unknown} instead."
                )
        scorers = [part.bind(features) for part in self.parts.values()]
        return _PartitionedScorer(
            features, self.field, list(self.parts), scorers, self.default.bind(features), self._outputs
        )

    def to_dict(self, files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "outputs": list(self._outputs),
            "field": self.field,
            "parts": [
                [key, _member_to_dict(part, files, f"p{i}.")] for i, (key, part) in enumerate(self.parts.items())
            ],
            "default": _member_to_dict(self.default, files, "default."),
        }

    @classmethod
    def from_dict(
        cls, spec: Mapping[str, Any], files: Mapping[str, bytes], kinds: Mapping[str, type[Intelligence]]
    ) -> Intelligence:
        owner = cls.__name__
        raw = _saved_list(spec, "parts", owner)
        if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in raw):
            raise IntelligenceError(f"The saved 'parts' of {owner} must be a list of [value, intelligence] pairs.")
        keys = [p[0] for p in raw]
        if keys != sorted(set(keys)):
            raise IntelligenceError(
                f"The saved 'parts' of {owner} must be sorted by value, each value once. Got {keys} instead."
            )
        parts = {key: _member_from_dict(p, files, kinds, f"p{i}.") for i, (key, p) in enumerate(raw)}
        default = _member_from_dict(spec_get(spec, "default", owner), files, kinds, "default.")
        return cls(
            spec_get(spec, "field", owner), parts, default, output=_saved_list(spec, "outputs", owner)
        )

    def __repr__(self) -> str:
        return f"Partitioned(field={self.field!r}, parts={list(self.parts)}, outputs={self.outputs})"

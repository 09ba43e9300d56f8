"""What the combinations of :mod:`closedloop.intelligence.combine` share: their members checked,
their names merged, and each member saved and rebuilt with its own files under a prefix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from closedloop.context.schema import Columns
from closedloop.errors import IntelligenceError
from closedloop.intelligence.base import Intelligence, Scorer, check_finite, spec_get


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


class MemberBlend(Intelligence):
    """Base of the combinations that blend their ``members``' one score each into one
    ``output`` (WeightedVote, Stacking): they read what any member reads."""

    members: tuple[Intelligence, ...]
    output: str

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def inputs(self) -> tuple[str, ...]:
        return _union([m.inputs() for m in self.members])

    def context_fields(self) -> tuple[str, ...]:
        return _union([m.context_fields() for m in self.members])


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

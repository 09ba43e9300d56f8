"""The arguments of one dataset build, checked: :class:`JoinInputs`.

Each check raises :class:`~closedloop.errors.DatasetError` naming the parameter, its rule and the
value given, in the order :func:`check_inputs` lists them. ``exclude_ingested`` is checked by the
select stage (:func:`ingest_ranges`), where it becomes SQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.errors import DatasetError
from closedloop.system.spec import LabelPolicy, System

__all__ = ["JoinInputs", "check_inputs", "check_source_weights", "check_sources", "ingest_ranges"]


@dataclass(frozen=True)
class JoinInputs:
    """What one build joins, checked: the system and its label policy, the time range and cut-off
    (ns), the files (sorted: one order), the outcome sources left out or weighted, and where the
    dataset goes."""

    system: System
    policy: LabelPolicy
    since_ns: int
    until_ns: int
    cutoff_ns: int
    window_ns: int
    decision_files: list[str]
    outcome_files: list[str]
    out: Path
    feature_names: Mapping[str, Sequence[str]]
    excluded: list[str]
    weights: dict[str, float]
    exclude_ingested: Sequence[tuple[str, int, int]]
    early_labels: bool

    @property
    def params(self) -> dict[str, int]:
        """The statements' named parameters ($cutoff, $window, $since, $until)."""
        return {"cutoff": self.cutoff_ns, "window": self.window_ns, "since": self.since_ns, "until": self.until_ns}


def check_inputs(
    system: System,
    *,
    policy: LabelPolicy | None,
    since_ns: int,
    until_ns: int,
    cutoff_ns: int,
    early_labels: bool,
    exclude_sources: Sequence[str],
    source_weights: Mapping[str, float] | None,
    exclude_ingested: Sequence[tuple[str, int, int]],
    decision_files: Sequence[Path | str],
    outcome_files: Sequence[Path | str],
    out: Path | str,
    feature_names: Mapping[str, Sequence[str]] | None,
) -> JoinInputs:
    """The arguments of :func:`~closedloop.datasets.dataset.build_dataset` checked and completed
    (the policy defaults to the system's, the feature names to the system's own feature set)."""
    policy = policy if policy is not None else system.label_policy
    if policy is None:
        raise DatasetError(
            f"System '{system.name}' declares no label policy and none was given; pass policy=."
        )
    for name, v in (("since_ns", since_ns), ("until_ns", until_ns), ("cutoff_ns", cutoff_ns)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DatasetError(f"The dataset '{name}' must be an integer (ns). Got {v!r} instead.")
    if not isinstance(early_labels, bool):
        raise DatasetError(f"The dataset 'early_labels' must be True or False. Got {early_labels!r} instead.")
    if until_ns <= since_ns:
        raise DatasetError(
            f"The dataset time range must have until_ns > since_ns. Got [{since_ns}, {until_ns}) instead."
        )
    excluded = check_sources(exclude_sources)
    weights = check_source_weights(source_weights)
    decisions = sorted(str(f) for f in decision_files)  # one order: docs/datasets.md, "Row order"
    outcomes = sorted(str(f) for f in outcome_files)
    out = Path(out)
    if out.exists():
        raise DatasetError(f"The dataset directory '{out}' already exists; datasets are immutable.")
    if feature_names is None:
        feature_names = {system.feature_fingerprint: [f.name for f in system.features.features]}
    return JoinInputs(
        system=system, policy=policy, since_ns=since_ns, until_ns=until_ns, cutoff_ns=cutoff_ns,
        window_ns=int(policy.window.total_seconds() * 1_000_000_000),
        decision_files=decisions, outcome_files=outcomes,
        out=out, feature_names=feature_names, excluded=excluded, weights=weights,
        exclude_ingested=exclude_ingested, early_labels=early_labels,
    )


def check_sources(sources: Sequence[str]) -> list[str]:
    """``exclude_sources`` as a sorted list of distinct source names."""
    if isinstance(sources, str) or not all(isinstance(x, str) and x for x in sources):
        raise DatasetError(
            f"The dataset 'exclude_sources' must be a list of source names. Got {sources!r} instead."
        )
    return sorted(set(sources))


def check_source_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """``source_weights`` as a dict of source name → weight in [0, 1] (``None`` → empty)."""
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise DatasetError(f"The dataset 'source_weights' must map a source to a weight. Got {weights!r} instead.")
    out = {}
    for k, v in weights.items():
        if not isinstance(k, str) or not k:
            raise DatasetError(f"The dataset 'source_weights' must be keyed by source names. Got {k!r} instead.")
        if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise DatasetError(
                f"The weight of source {k!r} in 'source_weights' must be a number in [0, 1]. Got {v!r} instead."
            )
        out[k] = float(v)
    return out


def ingest_ranges(ranges: Any) -> list[tuple[str, int, int]]:
    """``exclude_ingested`` as a list of ``(kind, start_ns, end_ns)`` with ``start_ns < end_ns``."""
    out = []
    for r in ranges or ():
        ok = isinstance(r, tuple | list) and len(r) == 3 and isinstance(r[0], str) and r[0]
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in r[1:]) and r[1] < r[2]
        if not ok:
            raise DatasetError(
                f"Each 'exclude_ingested' entry must be (kind, start_ns, end_ns) with start < end. Got {r!r} instead."
            )
        out.append((str(r[0]), int(r[1]), int(r[2])))
    return out

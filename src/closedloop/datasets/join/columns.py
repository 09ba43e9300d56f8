"""The columns of a dataset: the fixed ones, and one per feature name (renamed on a clash)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from closedloop.datasets.join.sql import quote

__all__ = ["FIXED_COLUMNS", "feature_column", "feature_columns"]

FIXED_COLUMNS = (
    "decision_id", "unit", "timestamp_ns", "ingest_ns", "context_json", "features", "score_names",
    "scores", "action", "propensity", "sample_prob", "weight", "bundle_version", "flight",
    "schema_version", "feature_fingerprint", "label", "label_value",
)


def feature_column(name: str) -> str:
    """The column of feature ``name``: the name itself, or ``feature:<name>`` when it would clash
    with a fixed column or an ``outcome:`` column."""
    return name if name not in FIXED_COLUMNS and not name.startswith("outcome:") else f"feature:{name}"


def feature_columns(
    names_by_fp: Mapping[str, Sequence[str]],
) -> list[tuple[str, str]]:
    """(column name, SQL expression) per feature name, across fingerprints."""
    order: list[str] = []
    for names in names_by_fp.values():
        for n in names:
            if n not in order:
                order.append(n)
    out = []
    for n in order:
        cases = [
            f"WHEN {quote(fp)} THEN d.features[{list(names).index(n) + 1}]"
            for fp, names in names_by_fp.items()
            if n in names
        ]
        out.append((feature_column(n), f"CASE d.feature_fingerprint {' '.join(cases)} END"))
    return out

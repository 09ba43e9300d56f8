"""Abuse: outcome sources whose reports disagree with the analysts' labels.

Some reporters lie — a phishing campaign reports its own blocked pages as false blocks, a
competitor reports legitimate sites as phishing — and their outcomes would poison the labels.
:class:`AbusePolicy` compares every outcome source with a *reference* (the analysts' labels,
outcomes of kind ``reference_kind``) on the decisions both labeled:

* a source's outcome implies a label through the system's label policy (``reported_phish`` →
  ``phish``; a rule with ``label=None`` → positive when the value is non-zero); only outcomes
  linked by decision id count, and per (source, decision) the source's latest outcome;
* the reference label of a decision is its latest reference outcome;
* per source: ``n`` decisions in common, ``disagree`` of them with a different label, their
  share, and a one-sided binomial test of "the source disagrees more often than
  ``expected_disagreement``" (the disagreement an honest source shows: analysts make mistakes
  too).

Verdicts (needs ``n >= min_count`` and a p-value below ``alpha``): a share above
``quarantine_above`` → **quarantined** (its outcomes are excluded from datasets:
``build_dataset(exclude_sources=...)``); above ``downweight_above`` → **down-weighted** (rows whose
label rests on it weigh ``1 − share``: ``build_dataset(source_weights=...)``); otherwise trusted.
Sources that emit the reference kind are the reference and are not judged. Each verdict carries
its reason in words, which the cycle's record and ``closedloop loop status`` show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.datasets.dataset import _q
from closedloop.errors import SpecError
from closedloop.orchestration import _data
from closedloop.system.spec import System

__all__ = ["AbusePolicy", "AbuseReport"]


@dataclass(frozen=True)
class AbuseReport:
    """Per source: ``{"source", "n", "disagree", "share", "p_value", "verdict", "weight",
    "reason"}``; ``quarantined`` and ``weights`` are what the dataset build takes."""

    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def quarantined(self) -> list[str]:
        return sorted(s["source"] for s in self.sources if s["verdict"] == "quarantined")

    @property
    def weights(self) -> dict[str, float]:
        return {s["source"]: s["weight"] for s in self.sources if s["verdict"] == "downweighted"}

    def to_dict(self) -> dict[str, Any]:
        return {"sources": self.sources, "quarantined": self.quarantined, "weights": self.weights}


def _prob(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and 0.0 < v < 1.0):
        raise SpecError(f"The '{name}' parameter of AbusePolicy must be a number in (0, 1). Got {v!r} instead.")
    return float(v)


class AbusePolicy:
    """Judges outcome sources against the analysts' labels (module docstring)."""

    def __init__(
        self,
        *,
        reference_kind: str = "analyst_label",
        expected_disagreement: float = 0.1,
        downweight_above: float = 0.3,
        quarantine_above: float = 0.5,
        min_count: int = 20,
        alpha: float = 0.01,
        trusted: Sequence[str] = (),
    ) -> None:
        if not isinstance(reference_kind, str) or not reference_kind:
            raise SpecError(f"The 'reference_kind' parameter of AbusePolicy must be an outcome kind. Got {reference_kind!r} instead.")
        self.reference_kind = reference_kind
        self.expected_disagreement = _prob("expected_disagreement", expected_disagreement)
        self.downweight_above = _prob("downweight_above", downweight_above)
        self.quarantine_above = _prob("quarantine_above", quarantine_above)
        if not self.downweight_above <= self.quarantine_above:
            raise SpecError(
                f"AbusePolicy needs downweight_above ≤ quarantine_above. Got {downweight_above!r} > {quarantine_above!r}."
            )
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise SpecError(f"The 'min_count' parameter of AbusePolicy must be an integer ≥ 1. Got {min_count!r} instead.")
        self.min_count = min_count
        self.alpha = _prob("alpha", alpha)
        self.trusted = sorted(set(trusted))

    def describe(self) -> dict[str, Any]:
        return {
            "reference_kind": self.reference_kind, "expected_disagreement": self.expected_disagreement,
            "downweight_above": self.downweight_above, "quarantine_above": self.quarantine_above,
            "min_count": self.min_count, "alpha": self.alpha, "trusted": self.trusted,
        }

    def check(self, system: System, *, outcome_files: Sequence[Path | str], now_ns: int) -> AbuseReport:
        """Judge every source from the outcomes ingested by ``now_ns``."""
        from scipy.stats import binomtest

        policy = system.label_policy
        if policy is None:
            raise SpecError(f"AbusePolicy needs a label policy; system '{system.name}' declares none.")
        implied = []
        for r in policy.rules:
            if r.kind == self.reference_kind:
                continue
            if r.label is not None:
                implied.append(f"WHEN {_q(r.kind)} THEN {system.labels.index(r.label)}")
            else:
                implied.append(f"WHEN {_q(r.kind)} THEN CASE WHEN value <> 0 THEN 1 ELSE 0 END")
        if not implied:
            return AbuseReport([])
        kinds = [r.kind for r in policy.rules if r.kind != self.reference_kind]
        key = "struct_pack(e := event_ns, i := ingest_ns, o := outcome_id)"
        ref = _q(self.reference_kind)
        con = _data.connect(system.name, (), outcome_files, now_ns)
        try:
            # the deduplicated outcomes, once (the query below reads them four times; the view
            # would deduplicate the whole history again each time)
            con.execute("CREATE TEMP TABLE o AS SELECT source, kind, decision_id, value, event_ns, ingest_ns, "
                        "outcome_id FROM outcomes")
            rows = con.execute(
                f"""
                WITH outcomes AS (SELECT * FROM o),
                refsrc AS (SELECT DISTINCT source FROM outcomes WHERE kind = {ref}),
                ref AS (
                  SELECT decision_id, CASE WHEN arg_max(value, {key}) <> 0 THEN 1 ELSE 0 END AS y
                  FROM outcomes WHERE kind = {ref} AND decision_id IS NOT NULL GROUP BY decision_id
                ),
                so AS (
                  SELECT source, decision_id, arg_max(CASE kind {' '.join(implied)} END, {key}) AS lab
                  FROM outcomes
                  WHERE kind IN {_data.sql_list(kinds)} AND decision_id IS NOT NULL
                    AND source NOT IN (SELECT source FROM refsrc)
                  GROUP BY source, decision_id
                ),
                totals AS (
                  SELECT source, count(*) AS outcomes FROM outcomes
                  WHERE source NOT IN (SELECT source FROM refsrc) AND kind IN {_data.sql_list(kinds)}
                  GROUP BY source
                )
                SELECT t.source, t.outcomes, count(ref.y) AS n,
                       coalesce(sum(CASE WHEN so.lab <> ref.y THEN 1 ELSE 0 END), 0) AS k
                FROM totals t
                LEFT JOIN so ON so.source = t.source
                LEFT JOIN ref ON ref.decision_id = so.decision_id
                GROUP BY t.source, t.outcomes ORDER BY t.source
                """
            ).fetchall()
        finally:
            con.close()
        out = []
        for source, total, n, k in rows:
            n, k = int(n), int(k)
            share = k / n if n else None
            p = float(binomtest(k, n, self.expected_disagreement, alternative="greater").pvalue) if n else None
            verdict, weight = "trusted", 1.0
            if source in self.trusted:
                reason = "declared trusted"
            elif n < self.min_count:
                reason = f"{n} decisions in common with the analysts, fewer than the {self.min_count} needed to judge"
            elif p is not None and share is not None and p < self.alpha and share > self.quarantine_above:
                verdict, weight = "quarantined", 0.0
                reason = (f"disagrees with the analysts on {k} of {n} decisions ({share:.0%} > {self.quarantine_above:.0%}; "
                          f"binomial p = {p:.2g} < {self.alpha} against an honest {self.expected_disagreement:.0%})")
            elif p is not None and share is not None and p < self.alpha and share > self.downweight_above:
                verdict, weight = "downweighted", 1.0 - share
                reason = (f"disagrees with the analysts on {k} of {n} decisions ({share:.0%} > {self.downweight_above:.0%}; "
                          f"binomial p = {p:.2g} < {self.alpha}): its labels weigh {weight:.2f}")
            else:
                reason = f"agrees with the analysts on {n - k} of {n} decisions"
            out.append({"source": source, "outcomes": int(total), "n": n, "disagree": k, "share": share,
                        "p_value": p, "verdict": verdict, "weight": weight, "reason": reason})
        return AbuseReport(out)

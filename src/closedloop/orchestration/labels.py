"""Label checks: a batch of labels that does not look like the others is not trained on.

A label pipeline can break — a join against the wrong table, a flipped encoding, a tool that
answers "legitimate" to everything — and a day of confidently wrong labels then becomes a
candidate that the evaluation, made from the same labels, cannot tell apart from a good one.
:class:`LabelCheck` looks at the labels of one outcome kind (by default the analysts') *by the
day they arrived*: a day whose positive share departs from the other days' by more than
``ratio`` (and significantly: a two-sided binomial test below ``alpha``) is an anomaly. The
cycle's gate refuses a candidate trained on an anomalous day's labels — naming the day, the
shares and the test — and later datasets leave that day's labels of that kind out
(``build_dataset(exclude_ingested=…)``), so the loop goes on learning from the good days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.base.times import iso_date
from closedloop.errors import SpecError
from closedloop.orchestration import _data
from closedloop.system.spec import System

__all__ = ["LabelCheck"]

_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class LabelCheck:
    """Parameters
    ----------
    kind:
        The outcome kind whose values are labels (non-zero = the positive class).
    ratio:
        A day is anomalous when its positive share is above ``ratio`` × the other days' median
        share, or below it ÷ ``ratio``, or its negative share is above ``ratio`` × theirs.
    alpha:
        … and the two-sided binomial test of its count against the other days' share is below
        ``alpha``.
    min_count:
        Labels a day needs to be judged.
    """

    kind: str = "analyst_label"
    ratio: float = 2.0
    alpha: float = 1e-6
    min_count: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise SpecError(f"The 'kind' of LabelCheck must be an outcome kind. Got {self.kind!r} instead.")
        r = self.ratio
        if isinstance(r, bool) or not isinstance(r, int | float) or not (math.isfinite(r) and r > 1.0):
            raise SpecError(f"The 'ratio' of LabelCheck must be a number > 1. Got {r!r} instead.")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0.0 < a < 1.0:
            raise SpecError(f"The 'alpha' of LabelCheck must be a number in (0, 1). Got {a!r} instead.")
        m = self.min_count
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise SpecError(f"The 'min_count' of LabelCheck must be an integer ≥ 1. Got {m!r} instead.")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "ratio": self.ratio, "alpha": self.alpha, "min_count": self.min_count}

    def check(
        self, system: System, *, outcome_files: Sequence[Path | str], since_ns: int, until_ns: int, cutoff_ns: int,
        day0_ns: int = 0, exclude: Sequence[tuple[str, int, int]] = (),
    ) -> dict[str, Any]:
        """Judge the ``kind`` labels ingested in ``[since_ns, until_ns)`` (and by ``cutoff_ns``),
        day by day (days start at ``day0_ns`` modulo 24 h); labels in an ``exclude`` range do not
        count. Returns ``{"days": [...], "anomalies": [...]}``; each anomaly has ``kind``,
        ``start_ns``, ``end_ns``, ``n``, ``positives``, ``share``, ``others_share``, ``p_value``
        and a ``reason`` in words."""
        from scipy.stats import binomtest

        off = int(day0_ns) % _DAY_NS
        skip = " ".join(f"AND NOT (ingest_ns >= {int(a)} AND ingest_ns < {int(b)})" for k, a, b in exclude
                        if k == self.kind)
        con = _data.connect(system.name, (), outcome_files, cutoff_ns)
        try:
            rows = con.execute(
                f"""SELECT (ingest_ns - {off}) // {_DAY_NS} AS d, count(*) AS n,
                           count(*) FILTER (WHERE value <> 0) AS pos
                    FROM outcomes WHERE kind = $k AND ingest_ns >= $s AND ingest_ns < $u {skip}
                    GROUP BY d ORDER BY d""",
                {"k": self.kind, "s": int(since_ns), "u": int(until_ns)},
            ).fetchall()
        finally:
            con.close()
        days: list[dict[str, Any]] = [{"start_ns": int(d) * _DAY_NS + off, "n": int(n), "positives": int(p)} for d, n, p in rows]
        judged = [x for x in days if x["n"] >= self.min_count]
        anomalies = []
        for x in days:
            n, k = x["n"], x["positives"]
            x["share"] = k / n if n else None
            others = [y["positives"] / y["n"] for y in judged if y is not x]
            if n < self.min_count or len(others) < 2:
                continue
            # the other days' median share: robust to the bad day itself and to another one
            ref = float(np.median(others))
            m = sum(y["n"] for y in judged if y is not x)
            base = min(max(ref, 0.5 / m), 1.0 - 0.5 / m)  # kept off 0 and 1
            share = k / n
            if not (share > base * self.ratio or (1.0 - share) > (1.0 - base) * self.ratio or share < base / self.ratio):
                continue
            p = float(binomtest(k, n, base, alternative="two-sided").pvalue)
            if p >= self.alpha:
                continue
            anomalies.append({
                "kind": self.kind, "start_ns": x["start_ns"], "end_ns": x["start_ns"] + _DAY_NS, "n": n,
                "positives": k, "share": share, "others_share": ref, "p_value": p,
                "reason": (f"{k} of the {n} '{self.kind}' labels that arrived on {iso_date(x['start_ns'])} say positive "
                           f"({share:.1%}) against a median of {ref:.1%} on the other days (binomial p = {p:.2g} < "
                           f"{self.alpha:g}): a broken label pipeline, not a changed world"),
            })
        return {"days": days, "anomalies": anomalies}

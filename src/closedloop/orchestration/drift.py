"""Drift and mistake spikes: when the world the intelligence learned from is no longer the world.

:class:`DriftMonitor` compares a *current* window of decisions (default: the last day) with the
*reference* window before it (default: the 7 days before) by the **population stability index**
of every feature (as logged at decision time) and of the production score::

    PSI = Σ_bins (c − r) · ln(c / r)        r, c: the bin's share in reference, current

Bins are the reference's deciles (a feature with at most ``bins`` distinct values is binned by
value); a share is floored at 1e-4 so an empty bin counts as rare, not impossible. Rules of thumb:
< 0.1 stable, 0.1–0.25 moderate, > 0.25 a shift. The score is compared only between decisions of
the same production bundle (a new model has a new score distribution, which is not drift), and
only when both windows hold at least ``min_rows`` decisions. A PSI above the declared threshold
raises an :class:`~.alerts.Alert` (``feature_drift`` / ``score_drift``) with the declared action.

:class:`MistakeSpikes` watches outcome-based mistake rates (metrics of the goal grammar, e.g.
``reported_false_block_per_1k@block``), measured per cadence window into a series, with River's
change detectors (``PageHinkley`` in "up" mode, or ``ADWIN``): the series is replayed through a
fresh detector each time (deterministic, so a rerun finds the same detections) and every window
where it detects an increase raises a ``mistake_spike`` alert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.base.times import iso_seconds
from closedloop.errors import SpecError
from closedloop.orchestration import _data
from closedloop.orchestration.alerts import ACTIONS, Alert
from closedloop.orchestration.goals import GoalTracker, Measure, SeriesStore, parse_metric
from closedloop.orchestration.windows import CADENCES
from closedloop.system.spec import System

__all__ = ["DriftMonitor", "MistakeSpikes", "psi"]

_EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """The population stability index of ``current`` against ``reference`` (1-d arrays; NaN
    values are their own bin)."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.size == 0 or c.size == 0:
        raise SpecError(f"PSI needs values in both windows. Got {r.size} reference and {c.size} current values.")
    rn, cn = np.isnan(r), np.isnan(c)
    rf, cf = r[~rn], c[~cn]
    rs = np.sort(rf)  # sorted once: its distinct values (as np.unique finds them) and its quantiles
    values = rs[np.r_[True, rs[1:] != rs[:-1]]] if rs.size else rs
    if values.size <= bins:  # categorical: a bin per value seen in either window
        cats = np.unique(np.concatenate([values, np.unique(cf)]))
        rb = np.searchsorted(cats, rf)
        cb = np.searchsorted(cats, cf)
        k = cats.size
    else:
        edges = np.unique(np.quantile(rs, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        rb = np.searchsorted(edges, rf, side="right")
        cb = np.searchsorted(edges, cf, side="right")
        k = edges.size + 1
    rc = np.bincount(rb, minlength=k).astype(np.float64)
    cc = np.bincount(cb, minlength=k).astype(np.float64)
    rc = np.append(rc, float(rn.sum()))
    cc = np.append(cc, float(cn.sum()))
    rp = np.maximum(rc / r.size, _EPS)
    cp = np.maximum(cc / c.size, _EPS)
    return float(np.sum((cp - rp) * np.log(cp / rp)))


def _td(name: str, owner: str, v: Any) -> timedelta:
    if not isinstance(v, timedelta) or v <= timedelta(0):
        raise SpecError(f"The '{name}' parameter of {owner} must be a positive timedelta. Got {v!r} instead.")
    return v


def _num(name: str, owner: str, v: Any, lo: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > lo):
        raise SpecError(f"The '{name}' parameter of {owner} must be a number > {lo}. Got {v!r} instead.")
    return float(v)


def _action(owner: str, v: Any) -> str:
    if v not in ACTIONS:
        raise SpecError(f"The 'action' parameter of {owner} must be one of {list(ACTIONS)}. Got {v!r} instead.")
    return v


class DriftMonitor:
    """Feature and score drift by PSI, current window vs reference window (module docstring).

    Parameters
    ----------
    current, reference:
        The current window (ending at the check time) and the reference window before it.
    feature_threshold, score_threshold:
        PSI above which a feature / the score raises an alert.
    bins:
        Quantile bins of the reference.
    min_rows:
        Decisions each window needs before anything is compared.
    features:
        The features to watch (default: all of the system's).
    action:
        What the cycle does on a drift alert (default ``retrain``).
    """

    def __init__(
        self,
        *,
        current: timedelta = timedelta(days=1),
        reference: timedelta = timedelta(days=7),
        feature_threshold: float = 0.25,
        score_threshold: float = 0.25,
        bins: int = 10,
        min_rows: int = 500,
        features: Sequence[str] | None = None,
        action: str = "retrain",
    ) -> None:
        self.current = _td("current", "DriftMonitor", current)
        self.reference = _td("reference", "DriftMonitor", reference)
        self.feature_threshold = _num("feature_threshold", "DriftMonitor", feature_threshold)
        self.score_threshold = _num("score_threshold", "DriftMonitor", score_threshold)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise SpecError(f"The 'bins' parameter of DriftMonitor must be an integer ≥ 2. Got {bins!r} instead.")
        if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
            raise SpecError(f"The 'min_rows' parameter of DriftMonitor must be an integer ≥ 1. Got {min_rows!r} instead.")
        self.bins, self.min_rows = bins, min_rows
        self.features = None if features is None else list(features)
        self.action = _action("DriftMonitor", action)

    def describe(self) -> dict[str, Any]:
        return {
            "current_seconds": self.current.total_seconds(), "reference_seconds": self.reference.total_seconds(),
            "feature_threshold": self.feature_threshold, "score_threshold": self.score_threshold,
            "bins": self.bins, "min_rows": self.min_rows, "features": self.features, "action": self.action,
        }

    def check(
        self, system: System, *, decision_files: Sequence[Path | str], now_ns: int, con: Any = None,
    ) -> tuple[list[Alert], dict[str, Any]]:
        """PSI of each feature and of the score; returns (alerts, a report of every value).
        ``con``: an open ``_data.connect`` connection over the same decisions and cut-off, to
        reuse (it is left open)."""
        names = list(system.features.names)
        watch = names if self.features is None else self.features
        unknown = sorted(set(watch) - set(names))
        if unknown:
            raise SpecError(f"DriftMonitor 'features' must be features of system '{system.name}'. Got {unknown} instead.")
        cur_ns = int(self.current.total_seconds() * 1e9)
        ref_ns = int(self.reference.total_seconds() * 1e9)
        c0, r0 = now_ns - cur_ns, now_ns - cur_ns - ref_ns
        window = f"{iso_seconds(c0)}/{iso_seconds(now_ns)}"
        report: dict[str, Any] = {"window": window, "reference": f"{iso_seconds(r0)}/{iso_seconds(c0)}", "features": {}, "score": None}
        own = con is None
        if own:
            con = _data.connect(system.name, decision_files, (), now_ns)
        try:
            t = _data.arrow(
                con,
                "SELECT timestamp_ns, features, score_names, scores, bundle_version, flight FROM decisions "
                "WHERE timestamp_ns >= $r AND timestamp_ns < $n AND feature_fingerprint = $fp AND features IS NOT NULL",
                {"r": r0, "n": now_ns, "fp": system.feature_fingerprint},
            )
        finally:
            if own:
                con.close()
        ts = t["timestamp_ns"].to_numpy()
        cur = ts >= c0
        report["rows"] = {"reference": int((~cur).sum()), "current": int(cur.sum())}
        alerts: list[Alert] = []
        if cur.sum() < self.min_rows or (~cur).sum() < self.min_rows:
            report["skipped"] = f"fewer than {self.min_rows} decisions in a window"
            return alerts, report
        X = np.asarray(t["features"].combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        X = X.reshape(t.num_rows, len(names))
        for name in watch:
            j = names.index(name)
            v = psi(X[~cur, j], X[cur, j], bins=self.bins)
            report["features"][name] = v
            if v > self.feature_threshold:
                alerts.append(Alert(
                    "feature_drift", name, v, self.feature_threshold,
                    f"feature '{name}' drifted: PSI {v:.3f} > {self.feature_threshold} ({window} vs the {self.reference} before)",
                    self.action, window, now_ns,
                ))
        report["score"] = self._score(system, t, cur, window, now_ns, alerts)
        return alerts, report

    def _score(self, system: System, t: Any, cur: np.ndarray, window: str, now_ns: int, alerts: list[Alert]) -> Any:
        score = getattr(system.experience, "score", None)
        if score is None:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        prod = np.asarray(pc.is_null(t["flight"]).to_numpy(zero_copy_only=False), dtype=bool)
        cur_prod = pa.array(cur & prod)
        cv = t["bundle_version"].filter(cur_prod)
        if len(cv) == 0:
            return None
        vc = pc.value_counts(cv.combine_chunks()).to_pylist()
        best = max(c["counts"] for c in vc)
        version = str(min(c["values"] for c in vc if c["counts"] == best))  # ties: the smallest version
        sel = prod & np.asarray(pc.fill_null(pc.equal(t["bundle_version"], version), False).to_numpy(
            zero_copy_only=False), dtype=bool)
        s = _score_column(t.filter(pa.array(sel)), score)
        cur_sel = cur[sel]
        ref, now = s[~cur_sel], s[cur_sel]
        if ref.size < self.min_rows or now.size < self.min_rows:
            return {"bundle_version": version, "psi": None,
                    "skipped": f"fewer than {self.min_rows} decisions of {version} in a window"}
        v = psi(ref, now, bins=self.bins)
        if v > self.score_threshold:
            alerts.append(Alert(
                "score_drift", f"{score}:{version}", v, self.score_threshold,
                f"the score '{score}' of {version} drifted: PSI {v:.3f} > {self.score_threshold}",
                self.action, window, now_ns,
            ))
        return {"bundle_version": version, "psi": v}


def _score_column(t: Any, score: str) -> np.ndarray:
    """Each row's value of the score named ``score`` (NaN where the row has none), from the
    ``score_names`` / ``scores`` list columns — vectorized: no Python loop per decision."""
    import pyarrow.compute as pc

    n = t.num_rows
    out = np.full(n, np.nan, dtype=np.float64)
    if n == 0:
        return out
    names = t["score_names"].combine_chunks()
    scores = t["scores"].combine_chunks()
    parent = np.asarray(pc.list_parent_indices(names).to_numpy(zero_copy_only=False), dtype=np.int64)
    hit = np.asarray(pc.fill_null(pc.equal(pc.list_flatten(names), score), False).to_numpy(zero_copy_only=False),
                     dtype=bool)
    rows_all = np.arange(n)
    start = np.searchsorted(parent, rows_all)
    rows = parent[hit]
    pos = np.flatnonzero(hit) - start[rows]
    rows, first = np.unique(rows, return_index=True)  # the first match in each row, as list.index does
    pos = pos[first]
    sparent = np.asarray(pc.list_parent_indices(scores).to_numpy(zero_copy_only=False), dtype=np.int64)
    sstart = np.searchsorted(sparent, rows_all)
    slen = np.asarray(pc.fill_null(pc.list_value_length(scores), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    ok = pos < slen[rows]
    flat = np.asarray(pc.list_flatten(scores).to_numpy(zero_copy_only=False), dtype=np.float64)
    out[rows[ok]] = flat[sstart[rows[ok]] + pos[ok]]
    return out


class MistakeSpikes:
    """Change detection on outcome-based mistake rates (module docstring).

    Parameters
    ----------
    metrics:
        Rates in the goal grammar (``reported_false_block_per_1k@block``, ``rate:reported_phish``).
    cadence:
        The window each value covers (default daily).
    detector:
        ``"page_hinkley"`` (River's ``PageHinkley``, mode "up": increases only) or ``"adwin"``
        (River's ``ADWIN``; only increases are alerted).
    threshold:
        Page-Hinkley's λ, in the metric's units (the cumulative excess over the running mean
        that signals a change).
    delta:
        Page-Hinkley's tolerated magnitude of change, or ADWIN's confidence.
    min_instances:
        Values the detector sees before it may signal (Page-Hinkley), or ADWIN's
        ``min_window_length``.
    action:
        What the cycle does on a spike (default ``retrain``).
    """

    def __init__(
        self,
        metrics: Sequence[str],
        *,
        cadence: str = "daily",
        detector: str = "page_hinkley",
        threshold: float = 10.0,
        delta: float = 0.005,
        min_instances: int = 5,
        action: str = "retrain",
    ) -> None:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        if not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise SpecError(f"The 'metrics' parameter of MistakeSpikes must be a non-empty list of metrics. Got {metrics!r} instead.")
        if cadence not in CADENCES:
            raise SpecError(f"The 'cadence' parameter of MistakeSpikes must be one of {list(CADENCES)}. Got {cadence!r} instead.")
        if detector not in ("page_hinkley", "adwin"):
            raise SpecError(f"The 'detector' parameter of MistakeSpikes must be 'page_hinkley' or 'adwin'. Got {detector!r} instead.")
        if isinstance(min_instances, bool) or not isinstance(min_instances, int) or min_instances < 1:
            raise SpecError(f"The 'min_instances' parameter of MistakeSpikes must be an integer ≥ 1. Got {min_instances!r} instead.")
        self.metrics, self.cadence, self.detector = metrics, cadence, detector
        self.threshold = _num("threshold", "MistakeSpikes", threshold)
        self.delta = _num("delta", "MistakeSpikes", delta)
        self.min_instances = min_instances
        self.action = _action("MistakeSpikes", action)

    def describe(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "cadence": self.cadence, "detector": self.detector,
                "threshold": self.threshold, "delta": self.delta, "min_instances": self.min_instances,
                "action": self.action}

    def measures(self, system: System) -> list[Measure]:
        for m in self.metrics:
            if parse_metric(m, system).kind not in ("rate", "classify", "labeled", "cost"):
                raise SpecError(f"MistakeSpikes watches rates; {m!r} is not one.")
        return [Measure(f"mistakes:{m}", m, self.cadence) for m in self.metrics]

    def _new(self) -> Any:
        from river import drift

        if self.detector == "page_hinkley":
            return drift.PageHinkley(min_instances=self.min_instances, delta=self.delta, threshold=self.threshold, mode="up")
        return drift.ADWIN(delta=self.delta, clock=1, min_window_length=self.min_instances, grace_period=self.min_instances)

    def check(
        self, system: System, tracker: GoalTracker, store: SeriesStore, *,
        decision_files: Sequence[Path | str], outcome_files: Sequence[Path | str], now_ns: int,
        exclude_sources: Sequence[str] = (), scratch: Path | str | None = None, con: Any = None,
        first_ns: int | None = None,
    ) -> tuple[list[Alert], dict[str, Any]]:
        """Measure the rates' new windows into ``store``, replay each series through a fresh
        detector, and return an alert per window where it signals an increase. ``con`` and
        ``first_ns``: as in :meth:`GoalTracker.measure`."""
        tracker.measure(store, decision_files=decision_files, outcome_files=outcome_files, now_ns=now_ns,
                        measures=self.measures(system), exclude_sources=exclude_sources, scratch=scratch, con=con,
                        first_ns=first_ns)
        alerts: list[Alert] = []
        report: dict[str, Any] = {}
        for m in self.measures(system):
            pts = [p for p in store.series(m.name) if p.get("value") is not None]
            det = self._new()
            seen: list[float] = []
            hits = []
            for p in pts:
                v = float(p["value"])
                det.update(v)
                if det.drift_detected and (self.detector == "page_hinkley" or (seen and v > float(np.mean(seen)))):
                    hits.append(p)
                    alerts.append(Alert(
                        "mistake_spike", m.metric, v, self.threshold,
                        f"mistake rate {m.metric} rose to {v:.4g} in {p['window']} "
                        f"(mean before {float(np.mean(seen)) if seen else float('nan'):.4g}; {self.detector})",
                        self.action, p["window"], now_ns,
                    ))
                seen.append(v)
            report[m.metric] = {"values": len(pts), "detections": [p["window"] for p in hits],
                                "last": pts[-1]["value"] if pts else None}
        return alerts, report

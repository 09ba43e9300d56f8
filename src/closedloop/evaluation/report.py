"""The evaluation report: every bundle re-run through the runtime on a dataset's labeled rows,
as one JSON-ready dict.

:func:`evaluate` scores the evaluation rows with ``Runtime(system, bundle).decide_batch`` (the
runtime's path, with the dataset's decision ids and timestamps), measures the scores with
:mod:`closedloop.evaluation.metrics` (quality, curves, calibration, mistakes and their costs,
slices), compares each later bundle with the first (a paired Poisson bootstrap by unit) and
applies the :class:`Gate`. The report's fields (``schema_version`` 1) and how to read them:
docs/evaluation.md.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import DatasetError, SpecError
from closedloop.evaluation import metrics as M
from closedloop.experience.experiences import Thresholds
from closedloop.system.splits import Split
from closedloop.system.splits import split as split_rows

__all__ = ["DEFAULT_SLICE_BINS", "HEURISTIC_KINDS", "MAX_CURVE_POINTS", "SCHEMA_VERSION", "Gate", "Measured", "SliceField",
           "evaluate", "measure", "paired_intervals", "slice_intervals", "write_report"]

SCHEMA_VERSION = 1
HEURISTIC_KINDS = frozenset({"scoring_rules", "threshold_rule", "lookup_table"})
HEURISTIC_NOTE = "the heuristic solves this: consider not using machine learning here"


@dataclass(frozen=True)
class Gate:
    """A promotion rule: the candidate (last bundle) against the baseline (first).

    Fails when the candidate's AUC is below the baseline's by more than ``max_auc_drop``
    overall or in any slice value with at least ``min_slice_n`` rows (both AUCs defined), or,
    with ``cost_must_not_rise``, when its expected cost per 1,000 is higher than the baseline's
    (by more than ``cost_tolerance``, relative: 0.02 lets it be up to 2 % higher).
    """

    max_auc_drop: float = 0.005
    min_slice_n: int = 500
    cost_must_not_rise: bool = True
    cost_tolerance: float = 0.0

    def __post_init__(self) -> None:
        t = self.cost_tolerance
        if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and t >= 0):
            raise SpecError(f"The 'cost_tolerance' of Gate must be a number ≥ 0. Got {t!r} instead.")

    def check(self, base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
        reasons: list[str] = []
        a0, a1 = base["quality"]["auc"], cand["quality"]["auc"]
        if a1 < a0 - self.max_auc_drop:
            reasons.append(f"AUC {a1:.4f} is below the baseline's {a0:.4f} by more than {self.max_auc_drop}")
        for field, rows in cand["slices"].items():
            base_rows = {r["value"]: r for r in base["slices"].get(field, [])}
            for r in rows:
                b = base_rows.get(r["value"])
                if r["n"] < self.min_slice_n or b is None or r["auc"] is None or b["auc"] is None:
                    continue
                if r["auc"] < b["auc"] - self.max_auc_drop:
                    reasons.append(
                        f"AUC in slice {field}={r['value']!r} (n={r['n']}) is {r['auc']:.4f}, below the "
                        f"baseline's {b['auc']:.4f} by more than {self.max_auc_drop}"
                    )
        c0, c1 = base["mistakes"]["cost_per_1000"], cand["mistakes"]["cost_per_1000"]
        if self.cost_must_not_rise and c0 is not None and c1 is not None and c1 > c0 * (1.0 + self.cost_tolerance):
            more = f" (more than {self.cost_tolerance:.0%})" if self.cost_tolerance else ""
            reasons.append(f"expected cost per 1,000 decisions rises from {c0:.4f} to {c1:.4f}{more}")
        return {
            "rule": asdict(self), "baseline": base["version"], "candidate": cand["version"],
            "passed": not reasons, "reasons": reasons,
        }


def _clean(x: Any) -> Any:
    """JSON-ready: numpy → Python, non-finite floats → None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_clean(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


#: Points kept per curve (ROC, precision–recall) in the report, whatever the number of rows.
MAX_CURVE_POINTS = 200
#: Equal-width bins of the reliability curve.
CALIBRATION_BINS = 10
#: The slice value of rows whose stored context lacks the slice field.
NOT_RECORDED = "(not recorded)"
#: Quantile bins of a numeric slice field (``evaluate(slice_bins=…)``).
DEFAULT_SLICE_BINS = 5


def _edge_text(edges: Sequence[float], integer: bool) -> list[str]:
    """Bin edges as text: integers as such; else the fewest significant digits (at least 3) that
    keep distinct edges distinct."""
    if integer and all(math.isfinite(e) and e == int(e) for e in edges):
        return [str(int(e)) for e in edges]
    for digits in range(3, 18):
        text = [f"{e:.{digits}g}" for e in edges]
        if len(set(text)) == len(set(edges)):
            return text
    return [repr(e) for e in edges]


@dataclass(frozen=True)
class SliceField:
    """A slice field's values coded once for every bundle: ``codes`` (one int per row) index
    ``values`` (the distinct values as text, sorted)."""

    name: str
    codes: np.ndarray
    values: tuple[str, ...]
    #: a binned numeric field's bin edges (lowest value, inner edges, highest value); None: one
    #: slice per value
    edges: tuple[float, ...] | None = None

    @classmethod
    def binned(cls, name: str, column: Any, missing: np.ndarray | None = None, bins: int = DEFAULT_SLICE_BINS,
               integer: bool = False) -> SliceField:
        """A numeric field in at most ``bins`` quantile bins, edges from the data: with the
        recorded values' ``k/bins`` quantiles (numpy's ``higher``: each edge is a value the
        data holds; repeated edges merged), bin ``j`` holds ``edge[j] ≤ value < edge[j+1]``, the
        last one up to and including the highest value. Labels are ranges: ``"[3.2, 7.9)"``, the
        last ``"[7.9, 12]"`` (numbers in the fewest significant digits that tell the edges apart;
        ``integer``: as integers). Bins are in value order, then ``"NaN"`` and
        :data:`NOT_RECORDED` when some rows are. A field with at most ``bins`` distinct values
        keeps one slice per value (:meth:`of`)."""
        x = np.asarray(column, dtype=np.float64).reshape(-1)
        rec = np.ones(x.size, dtype=bool) if missing is None else ~np.asarray(missing, dtype=bool)
        nan = np.isnan(x) & rec
        vals = x[rec & ~nan]
        distinct = np.unique(vals)
        if distinct.size <= bins:
            return cls.of(name, column, missing)
        q = np.quantile(vals, np.arange(1, bins) / bins, method="higher")
        inner = np.unique(q)
        inner = inner[inner > distinct[0]]  # an edge at the lowest value would leave its bin empty
        edges = (float(distinct[0]), *(float(e) for e in inner), float(distinct[-1]))
        text = _edge_text(edges, integer)
        k = len(edges) - 1
        labels = [f"[{text[j]}, {text[j + 1]})" for j in range(k - 1)] + [f"[{text[k - 1]}, {text[k]}]"]
        codes = np.searchsorted(inner, x, side="right").astype(np.int64)
        if nan.any():
            labels.append("NaN")
            codes[nan] = len(labels) - 1
        if missing is not None and np.any(missing):
            labels.append(NOT_RECORDED)
            codes[np.asarray(missing, dtype=bool)] = len(labels) - 1
        return cls(name, codes, tuple(labels), edges)

    @classmethod
    def of(cls, name: str, column: Any, missing: np.ndarray | None = None) -> SliceField:
        """From a column (Arrow array, numpy array or list); rows where ``missing`` is True take
        the value :data:`NOT_RECORDED`."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if isinstance(column, pa.Array):
            enc = column.dictionary_encode()
            idx = np.asarray(enc.indices.fill_null(-1), dtype=np.int64)
            labels = [str(v) for v in enc.dictionary.to_pylist()]
            if (idx < 0).any():
                labels.append("None")
                idx = np.where(idx < 0, len(labels) - 1, idx)
        else:
            arr = np.asarray(column)
            if arr.dtype == object:
                arr = np.asarray([str(v) for v in arr.tolist()])
            uniq, idx = np.unique(arr, return_inverse=True)
            labels = [str(v) for v in uniq.tolist()]
            idx = idx.astype(np.int64).reshape(-1)
        if missing is not None and missing.any():
            labels.append(NOT_RECORDED)
            idx = np.where(missing, len(labels) - 1, idx)
        # one code per distinct text, codes in sorted order of the text
        names = sorted(set(labels))
        where = {v: i for i, v in enumerate(names)}
        remap = np.asarray([where[v] for v in labels], dtype=np.int64)
        codes = remap[idx] if idx.size else idx
        present = np.bincount(codes, minlength=len(names)) > 0
        if not present.all():  # drop values no row holds (e.g. dictionary entries filtered out)
            keep = np.flatnonzero(present)
            new = np.full(len(names), -1, dtype=np.int64)
            new[keep] = np.arange(keep.size)
            codes, names = new[codes], [names[i] for i in keep]
        return cls(name, codes, tuple(names))


def _probabilities(s: np.ndarray) -> bool:
    return bool(s.size) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _row_costs(y: np.ndarray, s: np.ndarray, th: Thresholds, labels: Sequence[str],
               costs: Any) -> np.ndarray:
    """Each row's mistake cost under ``th`` (the runtime's choice of action from the score)."""
    k = len(th.levels)
    action = np.full(y.size, k, dtype=np.int64)
    for j in range(k - 1, -1, -1):
        action[s >= th.levels[j][1]] = j
    table = np.zeros((k + 1, 2))
    for i, a in enumerate(th.actions):
        row = costs.get(a, {})
        table[i] = (float(row.get(labels[0], 0.0)), float(row.get(labels[1], 0.0)))
    return table[action, y]


@dataclass
class Measured:
    """What :func:`slice_intervals` and :func:`paired_intervals` reuse of one bundle's :func:`measure`: the scores sorted once
    (``ranked``), each slice field's ``parts``, each row's mistake cost (None: no costs; weighted
    when the rows are) and the row weights (None: all 1)."""

    ranked: M.Ranked
    parts: list[M.Partition]
    row_cost: np.ndarray | None
    weights: np.ndarray | None = None


def measure(y: np.ndarray, s: np.ndarray, thresholds: Thresholds, *, labels: Sequence[str],
            costs: Any = None, slices: Sequence[SliceField] = (), max_points: int = MAX_CURVE_POINTS,
            weights: np.ndarray | None = None) -> tuple[dict[str, Any], Measured]:
    """The metrics of one bundle's scores ``s`` on labels ``y`` (0/1): ``quality``, ``curves``,
    ``calibration``, ``mistakes`` and ``slices`` as in the report (slice ``auc_ci`` left None:
    :func:`slice_intervals` fills them) — and the :class:`Measured` structures (scores sorted once)
    that every part, and the bootstrap, reuse.

    Log loss, Brier score and calibration are None when the scores are not probabilities
    (outside [0, 1]). ``costs`` (``System.costs``; None or empty: no cost figures). ``weights``
    (per row, or None): every figure is a weighted one — a row of weight 3 counts as three rows.
    """
    y = np.asarray(y, dtype=np.int64)
    s = np.asarray(s, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    ranked = M.Ranked.of(y, s, w, where="evaluate")
    op = float(thresholds.levels[-1][1])
    pred = s >= op
    p, r, f1 = M.precision_recall_f1(y, pred, w)
    probs = _probabilities(s)
    if probs:
        q = np.clip(s, 1e-15, 1.0 - 1e-15)
        row_loss = -np.where(y == 1, np.log(q), np.log1p(-q))
        row_sq = (s - y) ** 2
    quality = {"auc": ranked.auc(), "log_loss": float(np.average(row_loss, weights=w)) if probs else None,
               "brier": float(np.average(row_sq, weights=w)) if probs else None, "precision": p, "recall": r,
               "f1": f1}
    calibration = None
    if probs:
        rel = M.reliability(y, s, bins=CALIBRATION_BINS, weights=w)
        full = rel.counts > 0
        ece = float(np.dot(rel.counts[full], np.abs(rel.observed[full] - rel.mean_predicted[full]))
                    / rel.counts.sum())
        calibration = {"reliability": rel._asdict(), "ece": ece}
    confusion = M.confusion_at_thresholds(y, s, thresholds, weights=w, labels=labels)
    lo, hi = (float(ranked.distinct[-1]), float(ranked.distinct[0])) if ranked.distinct.size else (math.nan, math.nan)
    cost = best = best_cost = best_confusion = best_meaning = None
    row_cost = None
    if costs:
        cost = M.expected_cost(confusion, costs)
        row_cost = _row_costs(y, s, thresholds, labels, costs)
        if w is not None:
            row_cost = row_cost * w
        try:
            best = M._best_from_groups(ranked.distinct, ranked.pos, ranked.neg, thresholds, costs, *labels)
            best_confusion = M.confusion_at_thresholds(y, s, thresholds.with_levels(best), weights=w, labels=labels)
            best_cost = M.expected_cost(best_confusion, costs)
            best_meaning = M.explain_thresholds(thresholds, best, lo, hi, best_confusion)
        except (M.EvaluationError, SpecError):
            best = best_cost = best_confusion = best_meaning = None
    out = {
        "quality": quality,
        "score_range": {"min": lo, "max": hi, "probability": probs},
        "curves": {"roc": ranked.roc(max_points)._asdict(), "pr": ranked.pr(max_points)._asdict()},
        "calibration": calibration,
        "mistakes": {"confusion": confusion, "costs": costs or {}, "cost_per_1000": cost,
                     "thresholds_meaning": M.explain_thresholds(thresholds, dict(thresholds.levels), lo, hi, confusion),
                     "best_thresholds": best, "best_thresholds_meaning": best_meaning,
                     "best_confusion": best_confusion, "best_cost_per_1000": best_cost},
    }
    parts = [M.Partition(ranked, f.codes, len(f.values)) for f in slices]
    out["slices"] = _slices(ranked, parts, y, pred, slices, row_loss if probs else None,
                            row_sq if probs else None, row_cost, w)
    return out, Measured(ranked, parts, row_cost, w)


def _slices(ranked: M.Ranked, parts: Sequence[M.Partition], y: np.ndarray, pred: np.ndarray,
            fields: Sequence[SliceField], row_loss: np.ndarray | None, row_sq: np.ndarray | None,
            row_cost: np.ndarray | None, w: np.ndarray | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per slice value; with row weights ``w`` every count is weighted (``row_cost`` comes weighted)."""
    n = y.size if w is None else float(w.sum())
    one = np.ones(y.size) if w is None else w
    err = (pred != (y == 1)) * one
    tp_row = (pred & (y == 1)) * one
    fp_row = (pred & (y == 0)) * one
    if w is not None:
        row_loss = None if row_loss is None else row_loss * w
        row_sq = None if row_sq is None else row_sq * w
    out: dict[str, list[dict[str, Any]]] = {}
    p_auc: list[tuple[str, int, float]] = []
    for f, part in zip(fields, parts, strict=True):
        k = len(f.values)
        a_in, a_rest = part.aucs()
        cnt, pos = part.count, part.pos

        def per(w: np.ndarray, f: SliceField = f, k: int = k) -> np.ndarray:
            return np.bincount(f.codes, weights=w, minlength=k)

        errs, tps, fps = per(err), per(tp_row), per(fp_row)
        e_all = float(errs.sum()) / n
        loss = _ratio(per(row_loss), cnt) if row_loss is not None else None
        sq = _ratio(per(row_sq), cnt) if row_sq is not None else None
        cost = 1000.0 * _ratio(per(row_cost), cnt) if row_cost is not None else None
        rows = []
        for j, v in enumerate(f.values):
            nj = float(cnt[j])
            whole = nj == n
            pa_ = pe_ = None
            if not whole and math.isfinite(a_in[j]) and math.isfinite(a_rest[j]):
                pa_ = M.p_auc_worse(float(a_in[j]), float(pos[j]), float(part.neg[j]), float(a_rest[j]),
                                    float(ranked.pos.sum() - pos[j]), float(ranked.neg.sum() - part.neg[j]))
                p_auc.append((f.name, j, pa_))
            if not whole:
                e_rest = (e_all * n - float(errs[j])) / (n - nj)
                pe_ = M.p_error_worse(float(errs[j]) / nj, nj, e_rest, n - nj)
            rows.append({
                "value": v, "n": int(round(nj)), "positives": int(round(float(pos[j]))),
                "auc": float(a_in[j]) if math.isfinite(a_in[j]) else None, "auc_ci": None,
                "log_loss": None if loss is None else float(loss[j]),
                "brier": None if sq is None else float(sq[j]),
                "precision": float(_ratio(tps[j:j + 1], tps[j:j + 1] + fps[j:j + 1])[0]),
                "recall": float(_ratio(tps[j:j + 1], pos[j:j + 1])[0]),
                "error_rate": float(errs[j]) / nj,
                "cost_per_1000": None if cost is None else float(cost[j]),
                "p_auc": pa_, "p_error": pe_, "significantly_worse": False,
            })
        out[f.name] = rows
    if p_auc:
        flags = M.benjamini_hochberg([p for _, _, p in p_auc])
        for (field, j, _), flag in zip(p_auc, flags, strict=True):
            if flag:
                out[field][j]["significantly_worse"] = True
    return out


def _percentile(stats: np.ndarray, level: float = 0.95) -> list[float] | None:
    """A percentile interval over the defined (finite) resamples; None when fewer than half are."""
    ok = stats[np.isfinite(stats)]
    if ok.size < stats.size / 2 or ok.size == 0:
        return None
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


#: P(K ≤ k) for K ~ Poisson(1), k = 0 … 24 (beyond: < 1e-25).
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(25)])


def _poisson1(rng: np.random.Generator, size: int) -> np.ndarray:
    """Poisson(1) draws by inverting the tabulated distribution function: the same distribution
    as ``rng.poisson(1.0, size)``, and cheaper (docs/performance.md, "Evaluation")."""
    return np.searchsorted(_POISSON1_CDF, rng.random(size), side="right").astype(np.float64)


def slice_intervals(measured: Measured, units: Any, level: float = 0.95) -> list[list[list[float] | None]]:
    """Each slice value's AUC interval (per field, per value: [low, high] or None): DeLong's
    variance with rows clustered by unit (:meth:`~closedloop.evaluation.metrics.Partition.auc_intervals`),
    one pass over the rows per field — no resampling."""
    out = []
    for part in measured.parts:
        lo, hi = part.auc_intervals(units, level)
        out.append([[float(a), float(b)] if math.isfinite(a) else None for a, b in zip(lo, hi, strict=True)])
    return out


def _minus(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
    """``x - y``, or None when either is unknown."""
    return None if x is None or y is None else x - y


def paired_intervals(measured: Sequence[Measured], pairs: Sequence[tuple[int, int]], units: np.ndarray,
                     n_units: int, bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """For each ``(a, b)`` pair of bundles, intervals of the differences in AUC and expected cost
    (b − a) from one paired Poisson bootstrap by unit: resample r gives every unit a Poisson(1)
    weight (:func:`_poisson1` from ``numpy.random.default_rng(seed)``), the same draws for every
    pair and both sides of each; ``units`` are each row's unit as an integer code in
    [0, ``n_units``). Each AUC reuses its bundle's scores sorted once
    (:class:`~closedloop.evaluation.metrics.Ranked`), each cost the rows' precomputed costs, so a
    resample costs a few vectorized passes over the rows.

    Returns, per pair, ``{"auc_diff_ci", "cost_diff_ci"}`` (cost None without costs).
    """
    if not pairs:
        return []
    rng = np.random.default_rng(seed)
    # int32 indices when they fit: numpy's take is about twice as fast with them
    itype = np.int32 if n_units < 2**31 else np.int64
    units = np.asarray(units).astype(itype, copy=False)
    need = sorted({i for pr in pairs for i in pr})
    row_w = measured[need[0]].weights  # the same rows (and weights) for every bundle
    rank_units = {i: units[measured[i].ranked.order] for i in need}
    d_auc = np.empty((bootstrap, len(pairs)))
    d_cost = np.empty((bootstrap, len(pairs)))
    cost_diff = [_minus(measured[b].row_cost, measured[a].row_cost) for a, b in pairs]
    for r in range(bootstrap):
        draw = _poisson1(rng, n_units)
        aucs = {}
        for i in need:
            try:
                aucs[i] = measured[i].ranked.resampled_auc(np.take(draw, rank_units[i]))
            except M.EvaluationError:
                aucs[i] = math.nan
        w = np.take(draw, units)
        if row_w is not None:
            w = w * row_w
        total = float(w.sum())
        for q, (a, b) in enumerate(pairs):
            d_auc[r, q] = aucs[b] - aucs[a]
            cd = cost_diff[q]
            d_cost[r, q] = 1000.0 * M._dot(w, cd) / total if cd is not None and total > 0 else math.nan
    return [{"auc_diff_ci": _percentile(d_auc[:, q]),
             "cost_diff_ci": None if cost_diff[q] is None else _percentile(d_cost[:, q])}
            for q in range(len(pairs))]


def _rows(system: Any, dataset: Path, split: Split | str | None,
          loaded: tuple[Any, Any] | None = None) -> tuple[Any, Any, np.ndarray, Any, Any]:
    from closedloop.datasets.dataset import MANIFEST_FILE, DatasetManifest, load_dataset

    if not (dataset / MANIFEST_FILE).is_file():
        raise DatasetError(f"The dataset directory '{dataset}' must hold a {MANIFEST_FILE}. Got no such file instead.")
    manifest = DatasetManifest.read(dataset)
    built_for = manifest.content.get("system")
    if built_for is not None and built_for != system.name:
        raise DatasetError(
            f"The dataset {manifest.id!r} was built for system {built_for!r}; it cannot evaluate system "
            f"{system.name!r}."
        )
    table, cols = loaded if loaded is not None else load_dataset(dataset, system)
    if "label_value" not in table.column_names:
        raise DatasetError(f"The dataset {manifest.id!r} has no labels (no 'label_value' column) to evaluate on.")
    # only the columns the evaluation reads are carried through the takes below
    table = table.select([c for c in ("decision_id", "unit", "timestamp_ns", "context_json", "label_value", "weight")
                          if c in table.column_names])
    labeled = np.flatnonzero(np.asarray(pc.is_valid(table["label_value"]), dtype=bool))
    if labeled.size == 0:
        raise DatasetError(f"The dataset {manifest.id!r} must have labeled rows to evaluate on. Got none instead.")
    # the rows are chosen on the narrow columns; the wide ones (contexts) are taken once, at the end
    narrow = table.select([c for c in table.column_names if c != "context_json"])
    rows = labeled if labeled.size < table.num_rows else None
    if rows is not None:
        narrow = narrow.take(rows)
    sp = system.split if split is None else split
    if isinstance(sp, str) and sp == "all":
        idx = None
    elif isinstance(sp, Split):
        _, idx = split_rows(narrow, sp)
    else:
        raise SpecError(f"The 'split' parameter of evaluate must be a closedloop Split, 'all' or None. Got {sp!r} instead.")
    if idx is not None and idx.size == 0:
        raise DatasetError(f"The split {sp.describe() if isinstance(sp, Split) else sp} leaves no evaluation rows "
                           f"in dataset {manifest.id!r}.")
    if idx is not None and idx.size < narrow.num_rows:
        rows = idx if rows is None else rows[idx]
    if rows is not None:
        table, cols = table.take(rows), cols.take(rows)
    y = np.asarray(table["label_value"].to_numpy(zero_copy_only=False), dtype=np.int64)
    if np.unique(y).size < 2:
        raise DatasetError(
            f"The evaluation rows of dataset {manifest.id!r} must hold both classes. Got only "
            f"{system.labels[int(y[0])]!r} ({y.size} rows) instead."
        )
    return manifest, table, y, cols, sp


def _slice_fields(system: Any, table: Any, cols: Any, manifest: Any,
                  bins: int | None = DEFAULT_SLICE_BINS) -> list[SliceField]:
    """The declared slice fields, coded: a numeric field (``Float``, ``Int``) in ``bins``
    quantile bins (:meth:`SliceField.binned`; None: one slice per value), the others one slice
    per value. A field the imported file had no column for, or that no stored context records,
    is an error (its slices would all hold the default); one that some stored contexts lack
    gives those rows :data:`NOT_RECORDED`."""
    from closedloop.context.schema import Float, Int

    out = []
    manifest_id = manifest.id
    absent = (manifest.content.get("source") or {}).get("absent_fields") or []
    for name in system.slices:
        if name in absent:
            raise DatasetError(
                f"The slice field {name!r} declared by system '{system.name}' must be a column of the file "
                f"imported as dataset {manifest_id!r}. Got no such column instead: every row holds the "
                f"field's default, so its slices would say nothing."
            )
        has = np.asarray(pc.match_substring(table["context_json"], f'"{name}":').fill_null(False), dtype=bool)
        if not has.any():
            raise DatasetError(
                f"The slice field {name!r} declared by system '{system.name}' must be recorded in the contexts "
                f"of dataset {manifest_id!r}. Got no row that records it instead (the file or the telemetry "
                f"did not carry it, or it is dropped as sensitive): every slice would hold its default."
            )
        field = system.schema.by_name[name]
        if bins is not None and isinstance(field, Float | Int):
            out.append(SliceField.binned(name, cols[name], missing=~has, bins=bins, integer=isinstance(field, Int)))
        else:
            out.append(SliceField.of(name, cols[name], missing=~has))
    return out


def _notes(source: dict[str, Any]) -> list[str]:
    notes = []
    if source.get("unit_stand_in"):
        notes.append("The dataset has no unit column: the row index stands in for the unit, so the split and "
                     "the confidence intervals treat every row as its own unit.")
    if source.get("time_stand_in"):
        notes.append("The dataset has no time column: the row index stands in for the time (rows in file order).")
    return notes


def _mistake(i: int, ids: list[Any], s: np.ndarray, act: np.ndarray, y: np.ndarray, system: Any,
             at: dict[int, tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    context, unit = at[i]
    return {
        "decision_id": ids[i], "unit": unit, "score": float(s[i]), "action": str(act[i]),
        "label": system.labels[int(y[i])], "context": context,
    }


def _contexts(cols: Any, rows: np.ndarray) -> list[dict[str, Any]]:
    """The contexts of a few rows as plain dicts."""
    if rows.size == 0:
        return []
    sub = cols.take(rows)
    return [sub.row(j) for j in range(rows.size)]


def _one(system: Any, bundle: Any, y: np.ndarray, cols: Any, table: Any, ids: list[Any], ts: np.ndarray,
         slice_fields: Sequence[SliceField], *, worst: int, golden: int, seed: int,
         weights: np.ndarray | None = None) -> tuple[dict[str, Any], Measured]:
    from closedloop.runtime.runtime import Runtime

    bundle.check_compatible(system)
    th = bundle.experience(system)
    if not isinstance(th, Thresholds):
        raise SpecError(f"evaluate needs a Thresholds experience; the system '{system.name}' has {th!r}.")
    names = [f.name for f in system.schema.fields]
    batch = Runtime(system, bundle).decide_batch({n: cols[n] for n in names}, decision_ids=ids, timestamps_ns=ts)
    s = np.asarray(batch.scores(th.score), dtype=np.float64)
    act = batch.action
    op = float(th.levels[-1][1])
    body, measured = measure(y, s, th, labels=system.labels, costs=system.costs, slices=slice_fields, weights=weights)
    pred = s >= op
    fp = np.flatnonzero((y == 0) & pred)
    fp = fp[np.argsort(-s[fp], kind="stable")][:worst]
    fn = np.flatnonzero((y == 1) & ~pred)
    fn = fn[np.argsort(s[fn], kind="stable")][:worst]
    rng = np.random.default_rng(seed)
    g = np.sort(rng.choice(y.size, size=min(golden, y.size), replace=False))
    few = np.r_[fp, fn, g].astype(np.int64)
    ctx = _contexts(cols, few)
    units = table["unit"].take(pa.array(few)).to_pylist() if few.size else []
    at = {int(r): (ctx[j], units[j]) for j, r in enumerate(few.tolist())}
    out = {
        "version": bundle.version, "kind": bundle.intelligence.kind, "score": th.score, "n": int(y.size),
        "thresholds": th.as_dict(), "operating_point": op, **body,
        "worst": {"false_positives": [_mistake(int(i), ids, s, act, y, system, at) for i in fp],
                  "false_negatives": [_mistake(int(i), ids, s, act, y, system, at) for i in fn]},
        "golden": [
            {"decision_id": ids[i], "timestamp_ns": int(ts[i]), "context": at[i][0],
             "scores": {o: float(batch.score_matrix[i, j]) for j, o in enumerate(batch.outputs)},
             "action": str(act[i])}
            for i in g.tolist()
        ],
    }
    return out, measured


def _within_noise(model_minus_heuristic: dict[str, Any]) -> bool:
    ci = model_minus_heuristic["auc_diff_ci"]
    auc_ok = (ci[0] <= 0.0) if ci is not None else model_minus_heuristic["auc_diff"] <= 0.0
    cci = model_minus_heuristic["cost_diff_ci"]
    if model_minus_heuristic["cost_diff"] is None:
        return auc_ok
    cost_ok = (cci[1] >= 0.0) if cci is not None else model_minus_heuristic["cost_diff"] >= 0.0
    return auc_ok and cost_ok


def _check_int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise SpecError(f"The '{name}' parameter of evaluate must be an integer ≥ {lo}. Got {v!r} instead.")
    return int(v)


def evaluate(
    system: Any,
    bundles: Sequence[Any],
    dataset: Path | str,
    *,
    split: Split | str | None = None,
    worst: int = 20,
    golden: int = 50,
    bootstrap: int = 100,
    seed: int = 0,
    gate: Gate | None = None,
    loaded: tuple[Any, Any] | None = None,
    weights: bool = False,
    slice_bins: int | None = DEFAULT_SLICE_BINS,
) -> dict[str, Any]:
    """Evaluate ``bundles`` (the first is the baseline, the last the candidate) on the labeled
    rows of the dataset directory ``dataset``: its test side under ``split`` (default
    ``system.split``), or every labeled row with ``split="all"``. Returns the report described
    in docs/evaluation.md, "The report's fields" (JSON-ready). ``gate`` (default :class:`Gate`) is checked when
    there are at least two bundles. ``loaded``: what ``load_dataset(dataset, system)`` returned,
    when the caller has it already (the dataset is then not read again). ``weights=True``: every
    figure weighs each row by the dataset's ``weight`` column (inverse propensity, sampling, a
    label policy's audit) — the metrics of the population the rows stand for. ``slice_bins``:
    the quantile bins of a numeric slice field (default 5; None: one slice per distinct value)."""
    from closedloop.runtime.bundle import Bundle
    from closedloop.system.spec import System

    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of evaluate must be a closedloop.System. Got {system!r} instead.")
    bundles = list(bundles)
    if not bundles or not all(isinstance(b, Bundle) for b in bundles):
        raise SpecError(f"The 'bundles' parameter of evaluate must be a non-empty list of Bundles. Got {bundles!r} instead.")
    worst, golden = _check_int("worst", worst, 0), _check_int("golden", golden, 0)
    if slice_bins is not None:
        slice_bins = _check_int("slice_bins", slice_bins, 2)
    bootstrap, seed = _check_int("bootstrap", bootstrap, 0), _check_int("seed", seed, 0)
    if gate is not None and not isinstance(gate, Gate):
        raise SpecError(f"The 'gate' parameter of evaluate must be a closedloop Gate or None. Got {gate!r} instead.")
    for b in bundles:
        b.check_compatible(system)
    names = [f.name for f in system.schema.fields]
    for field in system.slices:
        if field not in names:
            raise DatasetError(
                f"The slice field {field!r} declared by system '{system.name}' is missing from its context "
                f"fields {names}."
            )
    dataset = Path(dataset)
    manifest, table, y, cols, sp = _rows(system, dataset, split, loaded)
    slice_fields = _slice_fields(system, table, cols, manifest, slice_bins)
    unit_col = table["unit"].cast(pa.string()).combine_chunks().dictionary_encode()
    units = np.asarray(unit_col.indices, dtype=np.int64)
    n_units = len(unit_col.dictionary)
    ids = table["decision_id"].to_pylist()
    ts = table["timestamp_ns"].to_numpy(zero_copy_only=False).astype(np.int64)
    reports: list[dict[str, Any]] = []
    measured: list[Measured] = []
    if not isinstance(weights, bool):
        raise SpecError(f"The 'weights' parameter of evaluate must be True or False. Got {weights!r} instead.")
    w = np.asarray(table["weight"].to_numpy(zero_copy_only=False), dtype=np.float64) if weights else None
    for b in bundles:
        rep, m = _one(system, b, y, cols, table, ids, ts, slice_fields, worst=worst, golden=golden, seed=seed,
                      weights=w)
        reports.append(rep)
        measured.append(m)
    # pairs: each later bundle against the first, then each (heuristic, model) pair
    heur = [i for i, r in enumerate(reports) if r["kind"] in HEURISTIC_KINDS]
    models = [i for i, r in enumerate(reports) if r["kind"] not in HEURISTIC_KINDS]
    against_first = [(0, j) for j in range(1, len(bundles))]
    pairs = list(dict.fromkeys(against_first + [(h, m) for h in heur for m in models]))
    for rep, m in zip(reports, measured, strict=True):
        for f, cis in zip(slice_fields, slice_intervals(m, units), strict=True):
            for row, ci in zip(rep["slices"][f.name], cis, strict=True):
                row["auc_ci"] = ci if row["auc"] is not None else None
    paired_ci: list[dict[str, Any]] = [{"auc_diff_ci": None, "cost_diff_ci": None} for _ in pairs]
    if bootstrap > 0 and len(bundles) >= 2:
        paired_ci = paired_intervals(measured, pairs, units, n_units, bootstrap, seed)
    diffs: dict[tuple[int, int], dict[str, Any]] = {}
    if len(bundles) >= 2:
        for q, (a, b) in enumerate(pairs):
            ra, rb = reports[a], reports[b]
            c0, c1 = ra["mistakes"]["cost_per_1000"], rb["mistakes"]["cost_per_1000"]
            diffs[(a, b)] = {
                "auc_diff": rb["quality"]["auc"] - ra["quality"]["auc"], "auc_diff_ci": paired_ci[q]["auc_diff_ci"],
                "cost_diff": None if c0 is None or c1 is None else c1 - c0,
                "cost_diff_ci": paired_ci[q]["cost_diff_ci"],
            }
    comparison = None
    note = None
    if len(bundles) >= 2:
        comparison = [{"baseline": bundles[0].version, "candidate": bundles[j].version, **diffs[(0, j)]}
                      for j in range(1, len(bundles))]
        for h in heur:
            for mi in models:
                d = diffs[(h, mi)]
                if _within_noise(d):
                    note = (f"{HEURISTIC_NOTE} (heuristic {bundles[h].version} is within the noise of "
                            f"model {bundles[mi].version}: AUC difference {d['auc_diff']:+.4f}, 95% CI "
                            f"{d['auc_diff_ci']})")
                    break
            if note:
                break
    verdict = None
    if len(bundles) >= 2:
        verdict = (gate or Gate()).check(reports[0], reports[-1])
    source = manifest.content.get("source") or {}
    report = {
        "schema_version": SCHEMA_VERSION,
        "system": system.name,
        "metadata": {
            "dataset_id": manifest.id, "dataset_path": str(dataset),
            "split": sp.describe() if isinstance(sp, Split) else "all",
            "side": "test" if isinstance(sp, Split) else "all",
            "unit_stand_in": source.get("unit_stand_in"), "time_stand_in": source.get("time_stand_in"),
            "created": _dt.datetime.now(_dt.UTC).isoformat(), "bootstrap": bootstrap, "seed": seed,
            "weighted": weights,
            "slice_bins": {f.name: {"bins": len(f.edges) - 1, "edges": list(f.edges)}
                           for f in slice_fields if f.edges is not None},
            "notes": _notes(source),
        },
        "rows": {"n": int(y.size), "positives": int(y.sum())},
        "bundles": reports,
        "comparison": comparison,
        "heuristic_note": note,
        "gate": verdict,
    }
    return _clean(report)


def write_report(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write ``report`` as indented JSON to ``path``, atomically (a temporary name renamed into
    place) and privately (``0600``; folders created ``0700``: a report quotes contexts); returns
    the path."""
    import json

    from closedloop.base.files import atomic_write, make_private_dirs

    path = Path(path)
    make_private_dirs(path.parent)
    data = json.dumps(report, allow_nan=False, indent=1).encode()
    return atomic_write(path, data, durable=False)

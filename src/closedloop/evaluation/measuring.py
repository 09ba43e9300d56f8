"""The metrics of one bundle's scores, as the report's parts: :func:`measure` gives ``quality``,
``curves``, ``calibration``, ``mistakes`` and ``slices`` (each slice value's metrics and its tests
against the rest, :func:`_slices`) and the :class:`Measured` structures (scores sorted once) the
intervals reuse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.evaluation import metrics as M
from closedloop.evaluation.slicing import SliceField
from closedloop.experience.experiences import Thresholds

__all__ = ["CALIBRATION_BINS", "MAX_CURVE_POINTS", "Measured", "measure"]

#: Points kept per curve (ROC, precision–recall) in the report, whatever the number of rows.
MAX_CURVE_POINTS = 200
#: Equal-width bins of the reliability curve.
CALIBRATION_BINS = 10


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
    """What :func:`~closedloop.evaluation.intervals.slice_intervals` and
    :func:`~closedloop.evaluation.intervals.paired_intervals` reuse of one bundle's :func:`measure`:
    the scores sorted once (``ranked``), each slice field's ``parts``, each row's mistake cost
    (None: no costs; weighted when the rows are) and the row weights (None: all 1)."""

    ranked: M.Ranked
    parts: list[M.Partition]
    row_cost: np.ndarray | None
    weights: np.ndarray | None = None


def measure(y: np.ndarray, s: np.ndarray, thresholds: Thresholds, *, labels: Sequence[str],
            costs: Any = None, slices: Sequence[SliceField] = (), max_points: int = MAX_CURVE_POINTS,
            weights: np.ndarray | None = None) -> tuple[dict[str, Any], Measured]:
    """The metrics of one bundle's scores ``s`` on labels ``y`` (0/1): ``quality``, ``curves``,
    ``calibration``, ``mistakes`` and ``slices`` as in the report (slice ``auc_ci`` left None:
    :func:`~closedloop.evaluation.intervals.slice_intervals` fills them) — and the
    :class:`Measured` structures (scores sorted once) that every part, and the bootstrap, reuse.

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

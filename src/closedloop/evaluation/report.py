"""The evaluation report (issue 5, "Evaluation"): every bundle re-run through the runtime on a
dataset's labeled rows, as one JSON-ready dict.

:func:`evaluate` scores the evaluation rows with ``Runtime(system, bundle).decide_batch`` (the
runtime's path, with the dataset's decision ids and timestamps) and measures the scores with
:mod:`closedloop.evaluation.metrics`. The report, ``schema_version`` 1::

    {
      "schema_version": 1,
      "system": str,
      "metadata": {"dataset_id", "dataset_path", "split": Split.describe() | "all",
                   "side": "test" | "all", "unit_stand_in": bool | None,
                   "time_stand_in": bool | None, "created": ISO-8601 UTC,
                   "bootstrap": int, "seed": int},
      "rows": {"n", "positives"},
      "bundles": [                                  # in the order given; the first is the baseline
        {"version", "kind", "score", "n",
         "thresholds": {action: value}, "operating_point": float (the lowest level's threshold),
         "quality": {"auc", "log_loss", "brier", "precision", "recall", "f1"},
         "curves": {"roc": {"x": fpr[], "y": tpr[], "thresholds": []},
                    "pr": {"x": recall[], "y": precision[], "thresholds": []}},
         "calibration": {"reliability": {"centers", "mean_predicted", "observed", "counts"}, "ece"},
         "mistakes": {"confusion": {action: {label: count}}, "costs": System.costs,
                      "cost_per_1000": float | null, "best_thresholds": {action: value} | null,
                      "best_cost_per_1000": float | null},
         "slices": {field: [{"value", "n", "positives", "auc" (null: one class), "auc_ci": [lo, hi] | null,
                             "error_rate", "p_auc" | null, "p_error" | null,
                             "significantly_worse": bool}]},
         "worst": {"false_positives": [mistake], "false_negatives": [mistake]},
         "golden": [{"decision_id", "timestamp_ns", "context", "scores": {output: value}, "action"}]}
      ],
      "comparison": null | [{"baseline", "candidate", "auc_diff", "auc_diff_ci",
                             "cost_diff", "cost_diff_ci"}]            # candidate − baseline
      "heuristic_note": null | str,
      "gate": null | {"rule": Gate fields, "baseline", "candidate", "passed": bool, "reasons": [str]}
    }

A mistake is ``{"decision_id", "unit", "score", "action", "label", "context"}``: false positives
are negatives at or above the operating point, most confident (highest score) first; false
negatives are positives below it, lowest score first. Errors on the operating point and the
error rate use "predicted positive ⇔ score ≥ operating point".

Slices: for every field of ``System.slices``, each distinct value. ``p_auc`` / ``p_error`` are
:func:`~closedloop.evaluation.metrics.slice_vs_rest` p-values (slice worse than the rest);
``significantly_worse`` is the Benjamini–Hochberg rejection (FDR 0.05) of the AUC test over all
slice values of all fields. The error-rate test is reported, not flagged on: a slice whose base
rate differs (new users meet more phishing) has a different error rate without the model being
worse there, while the AUC does not move with the base rate.
The AUC confidence interval is a Poisson bootstrap by unit (95 %).

Comparison: each later bundle against the first, on the same rows with the same bootstrap
weights for both (a paired Poisson bootstrap by unit). When a heuristic bundle (kind
``scoring_rules``, ``threshold_rule`` or ``lookup_table``) is within the noise of a model
(the model's AUC gain interval reaches 0, and its cost saving interval, when costs are
declared, reaches 0), ``heuristic_note`` says so plainly.

Values that are not finite (NaN, ±inf) are written as ``null``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from ..errors import DatasetError, SpecError
from ..experience import Thresholds
from . import metrics as M
from .splits import Split
from .splits import split as split_rows

__all__ = ["HEURISTIC_KINDS", "SCHEMA_VERSION", "Gate", "evaluate"]

SCHEMA_VERSION = 1
HEURISTIC_KINDS = frozenset({"scoring_rules", "threshold_rule", "lookup_table"})
HEURISTIC_NOTE = "the heuristic solves this: consider not using machine learning here"


@dataclass(frozen=True)
class Gate:
    """A promotion rule: the candidate (last bundle) against the baseline (first).

    Fails when the candidate's AUC is below the baseline's by more than ``max_auc_drop``
    overall or in any slice value with at least ``min_slice_n`` rows (both AUCs defined), or,
    with ``cost_must_not_rise``, when its expected cost per 1,000 is higher than the baseline's.
    """

    max_auc_drop: float = 0.005
    min_slice_n: int = 500
    cost_must_not_rise: bool = True

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
        if self.cost_must_not_rise and c0 is not None and c1 is not None and c1 > c0:
            reasons.append(f"expected cost per 1,000 decisions rises from {c0:.4f} to {c1:.4f}")
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


def _rows(system: Any, dataset: Path, split: Split | str | None) -> tuple[Any, Any, np.ndarray, Any, Any]:
    from ..loop.dataset import DatasetManifest, load_dataset

    manifest = DatasetManifest.read(dataset)
    table, cols = load_dataset(dataset, system)
    if "label_value" not in table.column_names:
        raise DatasetError(f"The dataset {manifest.id!r} has no labels (no 'label_value' column) to evaluate on.")
    labeled = np.flatnonzero(np.asarray(pc.is_valid(table["label_value"]), dtype=bool))
    if labeled.size == 0:
        raise DatasetError(f"The dataset {manifest.id!r} must have labeled rows to evaluate on. Got none instead.")
    table, cols = table.take(labeled), cols.take(labeled)
    sp = system.split if split is None else split
    if isinstance(sp, str) and sp == "all":
        idx = np.arange(table.num_rows, dtype=np.int64)
    elif isinstance(sp, Split):
        _, idx = split_rows(table, sp)
    else:
        raise SpecError(f"The 'split' parameter of evaluate must be a closedloop Split, 'all' or None. Got {sp!r} instead.")
    if idx.size == 0:
        raise DatasetError(f"The split {sp.describe() if isinstance(sp, Split) else sp} leaves no evaluation rows "
                           f"in dataset {manifest.id!r}.")
    table, cols = table.take(idx), cols.take(idx)
    y = np.asarray(table["label_value"].to_numpy(zero_copy_only=False), dtype=np.int64)
    if np.unique(y).size < 2:
        raise DatasetError(
            f"The evaluation rows of dataset {manifest.id!r} must hold both classes. Got only "
            f"{system.labels[int(y[0])]!r} ({y.size} rows) instead."
        )
    return manifest, table, y, cols, sp


def _cost(y: np.ndarray, s: np.ndarray, th: Thresholds, system: Any, w: Any = None) -> float:
    return M.expected_cost(M.confusion_at_thresholds(y, s, th, weights=w, labels=system.labels), system.costs)


def _mistake(i: int, ids: list[Any], units: list[Any], s: np.ndarray, act: np.ndarray, y: np.ndarray,
             system: Any, contexts: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "decision_id": ids[i], "unit": units[i], "score": float(s[i]), "action": str(act[i]),
        "label": system.labels[int(y[i])], "context": {k: v[i] for k, v in contexts.items()},
    }


def _one(system: Any, bundle: Any, y: np.ndarray, cols: Any, table: Any, contexts: dict[str, list[Any]],
         units: np.ndarray, *, worst: int, golden: int, bootstrap: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    from ..runtime import Runtime

    bundle.check_compatible(system)
    th = bundle.experience(system)
    if not isinstance(th, Thresholds):
        raise SpecError(f"evaluate needs a Thresholds experience; the system '{system.name}' has {th!r}.")
    ids = table["decision_id"].to_pylist()
    ts = table["timestamp_ns"].to_numpy(zero_copy_only=False).astype(np.int64)
    batch = Runtime(system, bundle).decide_batch(contexts, decision_ids=ids, timestamps_ns=ts)
    s = np.asarray(batch.scores(th.score), dtype=np.float64)
    act = batch.action
    op = float(th.levels[-1][1])
    pred = s >= op
    p, r, f1 = M.precision_recall_f1(y, pred)
    quality = {"auc": M.auc(y, s), "log_loss": M.log_loss(y, s), "brier": M.brier(y, s),
               "precision": p, "recall": r, "f1": f1}
    roc, pr = M.roc_curve(y, s), M.pr_curve(y, s)
    rel = M.reliability(y, s)
    confusion = M.confusion_at_thresholds(y, s, th, labels=system.labels)
    cost = best = best_cost = None
    if system.costs:
        cost = M.expected_cost(confusion, system.costs)
        try:
            best = M.best_thresholds(y, s, th, system.costs, labels=system.labels)
            best_cost = _cost(y, s, th.with_levels(best), system)
        except (M.EvaluationError, SpecError):
            best = best_cost = None
    ulist = units.tolist()
    fp = np.flatnonzero((y == 0) & pred)
    fp = fp[np.argsort(-s[fp], kind="stable")][:worst]
    fn = np.flatnonzero((y == 1) & ~pred)
    fn = fn[np.argsort(s[fn], kind="stable")][:worst]
    rng = np.random.default_rng(seed)
    g = np.sort(rng.choice(y.size, size=min(golden, y.size), replace=False))
    out = {
        "version": bundle.version, "kind": bundle.intelligence.kind, "score": th.score, "n": int(y.size),
        "thresholds": th.as_dict(), "operating_point": op, "quality": quality,
        "curves": {"roc": roc._asdict(), "pr": pr._asdict()},
        "calibration": {"reliability": rel._asdict(), "ece": M.ece(y, s)},
        "mistakes": {"confusion": confusion, "costs": system.costs, "cost_per_1000": cost,
                     "best_thresholds": best, "best_cost_per_1000": best_cost},
        "slices": _slices(system, y, s, pred, contexts, units, bootstrap, seed),
        "worst": {"false_positives": [_mistake(int(i), ids, ulist, s, act, y, system, contexts) for i in fp],
                  "false_negatives": [_mistake(int(i), ids, ulist, s, act, y, system, contexts) for i in fn]},
        "golden": [
            {"decision_id": ids[i], "timestamp_ns": int(ts[i]), "context": {k: v[i] for k, v in contexts.items()},
             "scores": {o: float(batch.score_matrix[i, j]) for j, o in enumerate(batch.outputs)},
             "action": str(act[i])}
            for i in g.tolist()
        ],
    }
    return out, s


def _slices(system: Any, y: np.ndarray, s: np.ndarray, pred: np.ndarray, contexts: dict[str, list[Any]],
            units: np.ndarray, bootstrap: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    err = (pred.astype(np.int64) != y)
    out: dict[str, list[dict[str, Any]]] = {}
    p_auc: list[tuple[str, int, float]] = []
    for field in system.slices:
        vals = np.asarray([str(v) for v in contexts[field]], dtype=object)
        rows = []
        for v in sorted(set(vals.tolist())):
            m = vals == v
            ys, ss = y[m], s[m]
            both = np.unique(ys).size == 2
            a = M.auc(ys, ss) if both else None
            ci = None
            if both and bootstrap > 0:
                try:
                    ci = list(M.poisson_bootstrap(M.auc, ys, ss, units=units[m], n=bootstrap, seed=seed))
                except M.EvaluationError:
                    ci = None
            pa_ = pe_ = None
            if not m.all():
                try:
                    pa_ = M.slice_vs_rest(y, s, m, metric="auc")
                except M.EvaluationError:
                    pa_ = None
                pe_ = M.slice_vs_rest(y, pred.astype(np.float64), m, metric="error")
            if pa_ is not None:
                p_auc.append((field, len(rows), pa_))
            rows.append({"value": v, "n": int(m.sum()), "positives": int(ys.sum()), "auc": a, "auc_ci": ci,
                         "error_rate": float(err[m].mean()), "p_auc": pa_, "p_error": pe_,
                         "significantly_worse": False})
        out[field] = rows
    if p_auc:
        flags = M.benjamini_hochberg([p for _, _, p in p_auc])
        for (field, j, _), flag in zip(p_auc, flags, strict=True):
            if flag:
                out[field][j]["significantly_worse"] = True
    return out


def _paired(y: np.ndarray, sa: np.ndarray, sb: np.ndarray, ta: Thresholds, tb: Thresholds, system: Any,
            units: np.ndarray, bootstrap: int, seed: int) -> dict[str, Any]:
    def d_auc(yy: Any, a: Any, b: Any, weights: Any = None) -> float:
        return M.auc(yy, b, weights=weights) - M.auc(yy, a, weights=weights)

    def d_cost(yy: Any, a: Any, b: Any, weights: Any = None) -> float:
        return _cost(yy, b, tb, system, weights) - _cost(yy, a, ta, system, weights)

    out: dict[str, Any] = {"auc_diff": d_auc(y, sa, sb), "auc_diff_ci": None, "cost_diff": None, "cost_diff_ci": None}
    if bootstrap > 0:
        out["auc_diff_ci"] = list(M.poisson_bootstrap(d_auc, y, sa, sb, units=units, n=bootstrap, seed=seed))
    if system.costs:
        out["cost_diff"] = d_cost(y, sa, sb)
        if bootstrap > 0:
            out["cost_diff_ci"] = list(M.poisson_bootstrap(d_cost, y, sa, sb, units=units, n=bootstrap, seed=seed))
    return out


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
) -> dict[str, Any]:
    """Evaluate ``bundles`` (the first is the baseline, the last the candidate) on the labeled
    rows of the dataset directory ``dataset``: its test side under ``split`` (default
    ``system.split``), or every labeled row with ``split="all"``. Returns the report described
    in this module's docstring (JSON-ready). ``gate`` (default :class:`Gate`) is checked when
    there are at least two bundles."""
    from ..bundle import Bundle
    from ..spec import System

    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of evaluate must be a closedloop.System. Got {system!r} instead.")
    bundles = list(bundles)
    if not bundles or not all(isinstance(b, Bundle) for b in bundles):
        raise SpecError(f"The 'bundles' parameter of evaluate must be a non-empty list of Bundles. Got {bundles!r} instead.")
    worst, golden = _check_int("worst", worst, 0), _check_int("golden", golden, 0)
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
    manifest, table, y, cols, sp = _rows(system, dataset, split)
    contexts = {n: cols.pylist(n) for n in names}
    units = np.asarray([str(u) for u in table["unit"].to_pylist()], dtype=object)
    reports: list[dict[str, Any]] = []
    scores: list[np.ndarray] = []
    for b in bundles:
        rep, s = _one(system, b, y, cols, table, contexts, units, worst=worst, golden=golden,
                      bootstrap=bootstrap, seed=seed)
        reports.append(rep)
        scores.append(s)
    ths = [b.experience(system) for b in bundles]
    comparison = None
    note = None
    if len(bundles) >= 2:
        comparison = []
        for j in range(1, len(bundles)):
            d = _paired(y, scores[0], scores[j], ths[0], ths[j], system, units, bootstrap, seed)
            comparison.append({"baseline": bundles[0].version, "candidate": bundles[j].version, **d})
        heur = [i for i, r in enumerate(reports) if r["kind"] in HEURISTIC_KINDS]
        models = [i for i, r in enumerate(reports) if r["kind"] not in HEURISTIC_KINDS]
        for h in heur:
            for m in models:
                d = _paired(y, scores[h], scores[m], ths[h], ths[m], system, units, bootstrap, seed)
                if _within_noise(d):
                    note = (f"{HEURISTIC_NOTE} (heuristic {bundles[h].version} is within the noise of "
                            f"model {bundles[m].version}: AUC difference {d['auc_diff']:+.4f}, 95% CI "
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
        },
        "rows": {"n": int(y.size), "positives": int(y.sum())},
        "bundles": reports,
        "comparison": comparison,
        "heuristic_note": note,
        "gate": verdict,
    }
    return _clean(report)

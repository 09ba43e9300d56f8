"""The evaluation report: every bundle re-run through the runtime on a dataset's labeled rows,
as one JSON-ready dict.

:func:`evaluate` scores the evaluation rows with ``Runtime(system, bundle).decide_batch`` (the
runtime's path, with the dataset's decision ids and timestamps), measures the scores with
:mod:`closedloop.evaluation.metrics` (quality, curves, calibration, mistakes and their costs,
slices), compares each later bundle with the first (a paired Poisson bootstrap by unit) and
applies the :class:`Gate`. The report's fields (``schema_version`` 1) and how to read them:
docs/evaluation.md.

:func:`evaluate` runs as named stages, each in its module: the rows (:mod:`~closedloop.evaluation.rows`)
and their slice fields (:mod:`~closedloop.evaluation.slicing`), each bundle scored and measured
(:mod:`~closedloop.evaluation.scoring`, :mod:`~closedloop.evaluation.measuring`), the intervals
(:mod:`~closedloop.evaluation.intervals`), the comparisons and the heuristic note, the gate
(:mod:`~closedloop.evaluation.gate`), and the report assembled (here).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from closedloop.errors import DatasetError, SpecError
from closedloop.evaluation.bounds import bootstrap_rates, goal_bounds, unit_sums
from closedloop.evaluation.gate import Gate
from closedloop.evaluation.intervals import _poisson1 as _poisson1  # the bootstrap's Poisson(1) draws (tested here)
from closedloop.evaluation.intervals import paired_intervals, slice_intervals
from closedloop.evaluation.measuring import CALIBRATION_BINS as CALIBRATION_BINS
from closedloop.evaluation.measuring import MAX_CURVE_POINTS, Measured, measure
from closedloop.evaluation.rows import _rows
from closedloop.evaluation.scoring import _one
from closedloop.evaluation.slicing import DEFAULT_SLICE_BINS, SliceField, _slice_fields
from closedloop.evaluation.slicing import NOT_RECORDED as NOT_RECORDED
from closedloop.system.splits import Split

__all__ = ["DEFAULT_SLICE_BINS", "HEURISTIC_KINDS", "MAX_CURVE_POINTS", "SCHEMA_VERSION", "Gate", "Measured", "SliceField",
           "evaluate", "measure", "paired_intervals", "slice_intervals", "write_report"]

SCHEMA_VERSION = 1
HEURISTIC_KINDS = frozenset({"scoring_rules", "threshold_rule", "lookup_table"})
HEURISTIC_NOTE = "the heuristic solves this: consider not using machine learning here"


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


def _notes(source: dict[str, Any]) -> list[str]:
    notes = []
    if source.get("unit_stand_in"):
        notes.append("The dataset has no unit column: the row index stands in for the unit, so the split and "
                     "the confidence intervals treat every row as its own unit.")
    if source.get("time_stand_in"):
        notes.append("The dataset has no time column: the row index stands in for the time (rows in file order).")
    return notes


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


class _Rows(NamedTuple):
    """The evaluation rows (stage 1 of :func:`evaluate`) and what every later stage reads of them:
    the labels ``y``, the contexts ``cols``, the split used, the coded slice fields, each row's
    unit as an integer code in [0, ``n_units``), the decision ids and timestamps and the row
    weights (None: unweighted)."""

    manifest: Any
    table: Any
    y: np.ndarray
    cols: Any
    split: Any
    slice_fields: list[SliceField]
    units: np.ndarray
    n_units: int
    ids: list[Any]
    ts: np.ndarray
    weights: np.ndarray | None
    #: the dataset's ``weight`` column whatever ``weights`` says (None: the dataset has none): the
    #: goals' projections are always audit-weighted, as the thresholds that keep them were chosen
    row_weights: np.ndarray | None = None


def _check_arguments(system: Any, bundles: Sequence[Any], worst: Any, golden: Any, slice_bins: Any, bootstrap: Any,
                     seed: Any, gate: Any) -> tuple[list[Any], int, int, int | None, int, int]:
    """The parameters of :func:`evaluate` checked before any row is read (SpecError, or
    DatasetError for a slice field the schema lacks) → (bundles as a list, worst, golden,
    slice_bins, bootstrap, seed)."""
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
    return bundles, worst, golden, slice_bins, bootstrap, seed


def _load(system: Any, dataset: Path, split: Split | str | None, loaded: tuple[Any, Any] | None,
          slice_bins: int | None, weights: Any) -> _Rows:
    """Stage 1, the rows: the dataset's evaluation rows (:func:`~closedloop.evaluation.rows._rows`),
    their slice fields coded (:func:`~closedloop.evaluation.slicing._slice_fields`), each row's
    unit coded, the decision ids and timestamps and, with ``weights``, the rows' ``weight``."""
    manifest, table, y, cols, sp = _rows(system, dataset, split, loaded)
    slice_fields = _slice_fields(system, table, cols, manifest, slice_bins)
    unit_col = table["unit"].cast(pa.string()).combine_chunks().dictionary_encode()
    units = np.asarray(unit_col.indices, dtype=np.int64)
    n_units = len(unit_col.dictionary)
    ids = table["decision_id"].to_pylist()
    ts = table["timestamp_ns"].to_numpy(zero_copy_only=False).astype(np.int64)
    if not isinstance(weights, bool):
        raise SpecError(f"The 'weights' parameter of evaluate must be True or False. Got {weights!r} instead.")
    rw = (np.asarray(table["weight"].to_numpy(zero_copy_only=False), dtype=np.float64)
          if "weight" in table.column_names else None)
    return _Rows(manifest, table, y, cols, sp, slice_fields, units, n_units, ids, ts, rw if weights else None, rw)


def _score_bundles(system: Any, bundles: Sequence[Any], rows: _Rows, *, worst: int, golden: int, seed: int
                   ) -> tuple[list[dict[str, Any]], list[Measured]]:
    """Stage 2, each bundle scored and measured on the rows
    (:func:`~closedloop.evaluation.scoring._one`) → (its report parts, its :class:`Measured`)."""
    reports: list[dict[str, Any]] = []
    measured: list[Measured] = []
    for b in bundles:
        rep, m = _one(system, b, rows.y, rows.cols, rows.table, rows.ids, rows.ts, rows.slice_fields, worst=worst,
                      golden=golden, seed=seed, weights=rows.weights)
        reports.append(rep)
        measured.append(m)
    return reports, measured


#: the goal intervals' resamples when the report's ``bootstrap`` is 0: the gate never judges a goal on a point estimate
GOAL_RESAMPLES = 200


def _fill_goals(system: Any, bundles: Sequence[Any], reports: Sequence[dict[str, Any]], measured: Sequence[Measured],
                rows: _Rows, *, bootstrap: int, seed: int) -> None:
    """Each bundle's figures for the goals that bound a rate its thresholds control: the
    projection the gate holds against production's — the rate at the bundle's own thresholds on
    these rows, **audit-weighted** (the dataset's ``weight`` column: inverse propensity, sampling,
    a label policy's audit) even when the report's other figures are not (``weights=False``),
    because that is the estimate the thresholds were chosen to keep (``train(thresholds="cost")``);
    ``weighted`` says whether the dataset had weights. The ``ci`` (``"interval": "bootstrap"``) is
    the 95% percentile interval of a Poisson bootstrap by unit on the same rows, weights and units
    (:func:`~closedloop.evaluation.bounds.bootstrap_rates`, the same draws for every bundle):
    ``bootstrap`` resamples from ``seed``, or :data:`GOAL_RESAMPLES` when ``bootstrap`` is 0 — the
    gate must not judge a goal on a point estimate, so the goals are resampled even when the
    comparisons are not. ``n`` is the weight of the rate's denominator. Each bundle's scores are
    read in the sorted order its :class:`Measured` keeps (no scoring twice)."""
    bounds = goal_bounds(system)
    if not bounds:
        return
    gw = rows.row_weights
    sums = []
    for b, m in zip(bundles, measured, strict=True):
        r = m.ranked
        sums.append(unit_sums(bounds, r.ys, r.ss, b.experience(system), weights=None if gw is None else gw[r.order],
                              units=rows.units[r.order], n_units=rows.n_units))
    boot = bootstrap_rates(bounds, sums, resamples=bootstrap if bootstrap > 0 else GOAL_RESAMPLES, seed=seed)
    k = len(bounds)
    for rep, x, figures in zip(reports, sums, boot, strict=True):
        t = x.sum(axis=0)
        goals = []
        for i, (bd, f) in enumerate(zip(bounds, figures, strict=True)):
            n = float(t[1] if bd.metric == "false_positive_rate" else (t[2 + i] + t[2 + k + i] if bd.metric == "precision"
                                                                        else t[0]))
            v = f["value"]
            met = None if v is None else bool(v <= bd.target if bd.direction == "at_most" else v >= bd.target)
            goals.append({**bd.describe(), "value": v, "ci": f["ci"] if v is not None else None, "interval": "bootstrap",
                          "n": n, "met": met, "weighted": gw is not None})
        rep["goals"] = goals


def _pairs(reports: Sequence[dict[str, Any]]) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """The bundles compared → (the heuristics, the models, the pairs): each later bundle against
    the first, then each (heuristic, model) pair, each pair once."""
    heur = [i for i, r in enumerate(reports) if r["kind"] in HEURISTIC_KINDS]
    models = [i for i, r in enumerate(reports) if r["kind"] not in HEURISTIC_KINDS]
    against_first = [(0, j) for j in range(1, len(reports))]
    pairs = list(dict.fromkeys(against_first + [(h, m) for h in heur for m in models]))
    return heur, models, pairs


def _fill_slice_intervals(reports: Sequence[dict[str, Any]], measured: Sequence[Measured],
                          slice_fields: Sequence[SliceField], units: np.ndarray) -> None:
    """Stage 3, the slice values' AUC intervals (:func:`slice_intervals`) written into each
    bundle's ``slices`` rows (None where the slice has no AUC)."""
    for rep, m in zip(reports, measured, strict=True):
        for f, cis in zip(slice_fields, slice_intervals(m, units), strict=True):
            for row, ci in zip(rep["slices"][f.name], cis, strict=True):
                row["auc_ci"] = ci if row["auc"] is not None else None


def _differences(reports: Sequence[dict[str, Any]], pairs: Sequence[tuple[int, int]],
                 paired_ci: Sequence[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """Each pair's differences (b − a) in AUC and expected cost per 1,000, with their paired
    intervals."""
    diffs: dict[tuple[int, int], dict[str, Any]] = {}
    for q, (a, b) in enumerate(pairs):
        ra, rb = reports[a], reports[b]
        c0, c1 = ra["mistakes"]["cost_per_1000"], rb["mistakes"]["cost_per_1000"]
        diffs[(a, b)] = {
            "auc_diff": rb["quality"]["auc"] - ra["quality"]["auc"], "auc_diff_ci": paired_ci[q]["auc_diff_ci"],
            "cost_diff": None if c0 is None or c1 is None else c1 - c0,
            "cost_diff_ci": paired_ci[q]["cost_diff_ci"],
        }
    return diffs


def _heuristic_note(bundles: Sequence[Any], heur: Sequence[int], models: Sequence[int],
                    diffs: Mapping[tuple[int, int], dict[str, Any]]) -> str | None:
    """The report's ``heuristic_note``: the first (heuristic, model) pair where the model does
    not beat the heuristic beyond the noise; None when every model does."""
    for h in heur:
        for mi in models:
            d = diffs[(h, mi)]
            if _within_noise(d):
                return (f"{HEURISTIC_NOTE} (heuristic {bundles[h].version} is within the noise of "
                        f"model {bundles[mi].version}: AUC difference {d['auc_diff']:+.4f}, 95% CI "
                        f"{d['auc_diff_ci']})")
    return None


def _assemble(system: Any, dataset: Path, rows: _Rows, reports: list[dict[str, Any]], comparison: Any, note: str | None,
              verdict: dict[str, Any] | None, *, bootstrap: int, seed: int, weights: bool) -> dict[str, Any]:
    """The last stage: the report's fields (docs/evaluation.md) around the bundles' parts, before
    :func:`_clean` makes it JSON-ready."""
    sp, source = rows.split, rows.manifest.content.get("source") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "system": system.name,
        "metadata": {
            "dataset_id": rows.manifest.id, "dataset_path": str(dataset),
            "split": sp.describe() if isinstance(sp, Split) else "all",
            "side": "test" if isinstance(sp, Split) else "all",
            "unit_stand_in": source.get("unit_stand_in"), "time_stand_in": source.get("time_stand_in"),
            "created": _dt.datetime.now(_dt.UTC).isoformat(), "bootstrap": bootstrap, "seed": seed,
            "weighted": weights,
            "slice_bins": {f.name: {"bins": len(f.edges) - 1, "edges": list(f.edges)}
                           for f in rows.slice_fields if f.edges is not None},
            "notes": _notes(source),
        },
        "rows": {"n": int(rows.y.size), "positives": int(rows.y.sum())},
        "bundles": reports,
        "comparison": comparison,
        "heuristic_note": note,
        "gate": verdict,
    }


def _policy_kind(system: Any) -> str | None:
    """``"ranking"`` or ``"choice"`` for a system evaluated by its policy on a reward dataset
    (a Ranking or BestAction experience), None for one that decides by thresholds."""
    from closedloop.experience.experiences import BestAction, Ranking
    from closedloop.system.spec import System

    if not isinstance(system, System):
        return None
    return "ranking" if isinstance(system.experience, Ranking) else "choice" if isinstance(system.experience, BestAction) else None


def _policy_report(kind: str, system: Any, bundles: Sequence[Any], dataset: Path | str, *, split: Split | str | None,
                   bootstrap: int, seed: int, gate: Gate | None, loaded: tuple[Any, Any] | None, weights: bool,
                   policy_value: bool, reward_model: Any, logged: Any) -> dict[str, Any]:
    """A ranking system's report (:mod:`closedloop.evaluation.ranking_report`) or a choice system's
    (:mod:`closedloop.evaluation.choice_report`)."""
    if weights is not False:
        rows = "slots" if kind == "ranking" else "rows"
        raise SpecError(f"The 'weights' parameter of evaluate must be False for a {kind} system (weighting {rows} by "
                        f"their inverse propensity is the policy value's business). Got {weights!r} instead.")
    from closedloop.evaluation.choice_report import evaluate_choice
    from closedloop.evaluation.ranking_report import evaluate_ranking

    if kind == "ranking":
        return evaluate_ranking(system, bundles, dataset, split=split, bootstrap=bootstrap, seed=seed, loaded=loaded,
                                policy_value=policy_value, reward_model=reward_model, gate=gate, logged=logged)
    if logged is not None:
        raise SpecError(f"The 'logged' parameter of evaluate applies to a ranking system; system '{system.name}' chooses "
                        f"one action. Got {type(logged).__name__} instead.")
    return evaluate_choice(system, bundles, dataset, split=split, bootstrap=bootstrap, seed=seed, loaded=loaded,
                           policy_value=policy_value, reward_model=reward_model, gate=gate)


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
    policy_value: bool = True,
    reward_model: Any = None,
    logged: Any = None,
) -> dict[str, Any]:
    """Evaluate ``bundles`` (the first is the baseline, the last the candidate) on the labeled
    rows of the dataset directory ``dataset``: its test side under ``split`` (default
    ``system.split``), or every labeled row with ``split="all"``. Returns the report described
    in docs/evaluation.md, "The report's fields" (JSON-ready). ``gate`` (default :class:`Gate`) is checked when
    there are at least two bundles. ``loaded``: what ``load_dataset(dataset, system)`` returned,
    when the caller has it already (the dataset is then not read again). ``weights=True``: every
    figure weighs each row by the dataset's ``weight`` column (inverse propensity, sampling, a
    label policy's audit) — the metrics of the population the rows stand for. ``slice_bins``:
    the quantile bins of a numeric slice field (default 5; None: one slice per distinct value).
    ``bootstrap`` / ``seed``: the resamples of the comparisons' and the goals' bootstrap by unit
    (0: no comparison intervals; the goals then take :data:`GOAL_RESAMPLES`).

    A system with a :class:`~closedloop.experience.experiences.Ranking` experience is evaluated
    on a per-slot reward dataset by :func:`~closedloop.evaluation.ranking_report.evaluate_ranking`
    (its report: docs/evaluation.md, "Ranking systems"); ``worst``, ``golden`` and ``slice_bins``
    do not apply to it, nor ``weights``; ``policy_value`` (default True: when the dataset carries logged
    propensities) and ``reward_model`` (a Bundle predicting the reward, for DM and the doubly robust
    estimators) apply only to it, and its ``gate`` judges the candidate's policy value
    (:meth:`Gate.check_ranking <closedloop.evaluation.gate.Gate.check_ranking>`); ``logged`` (what
    :func:`~closedloop.evaluation.ranking_report.logged_side` returned for the same dataset, split and
    seed) spares it reading what no bundle changes.

    A system with a :class:`~closedloop.experience.experiences.BestAction` experience (one action per
    decision) is evaluated on a logged reward dataset by
    :func:`~closedloop.evaluation.choice_report.evaluate_choice` (docs/evaluation.md, "Choice
    systems"): its policy value, ``reward_model`` and ``gate`` as a ranking system's."""
    kind = _policy_kind(system)
    if kind is not None:
        return _policy_report(kind, system, bundles, dataset, split=split, bootstrap=bootstrap, seed=seed, gate=gate,
                              loaded=loaded, weights=weights, policy_value=policy_value, reward_model=reward_model,
                              logged=logged)
    if policy_value is not True or reward_model is not None or logged is not None:
        raise SpecError(f"The 'policy_value', 'reward_model' and 'logged' parameters of evaluate apply to a ranking system; "
                        f"system '{system.name}' decides by thresholds. Got policy_value={policy_value!r}, "
                        f"reward_model={reward_model!r}, logged={type(logged).__name__ if logged is not None else None} instead.")
    bundles, worst, golden, slice_bins, bootstrap, seed = _check_arguments(
        system, bundles, worst, golden, slice_bins, bootstrap, seed, gate)
    dataset = Path(dataset)
    rows = _load(system, dataset, split, loaded, slice_bins, weights)
    reports, measured = _score_bundles(system, bundles, rows, worst=worst, golden=golden, seed=seed)
    _fill_goals(system, bundles, reports, measured, rows, bootstrap=bootstrap, seed=seed)
    heur, models, pairs = _pairs(reports)
    _fill_slice_intervals(reports, measured, rows.slice_fields, rows.units)
    paired_ci: list[dict[str, Any]] = [{"auc_diff_ci": None, "cost_diff_ci": None} for _ in pairs]
    if bootstrap > 0 and len(bundles) >= 2:
        paired_ci = paired_intervals(measured, pairs, rows.units, rows.n_units, bootstrap, seed)
    comparison = note = verdict = None
    if len(bundles) >= 2:
        diffs = _differences(reports, pairs, paired_ci)
        comparison = [{"baseline": bundles[0].version, "candidate": bundles[j].version, **diffs[(0, j)]}
                      for j in range(1, len(bundles))]
        note = _heuristic_note(bundles, heur, models, diffs)
        verdict = (gate or Gate()).check(reports[0], reports[-1])
    return _clean(_assemble(system, dataset, rows, reports, comparison, note, verdict, bootstrap=bootstrap, seed=seed,
                            weights=weights))


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

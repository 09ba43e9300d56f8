"""Train a candidate bundle from a dataset, with its lineage.

::

    run = train(phishing, "home/datasets/<id>", model="lightgbm", params={"num_leaves": 15})
    run.bundle.save("home/bundles/" + run.bundle.version)
    run.metrics     # {"lineage": {...}, "train": {...}, "heldout": {...}}

The rules, exactly:

Rows
    :func:`~closedloop.datasets.dataset.load_dataset` reads the dataset (contexts decoded into the
    current schema); only labeled rows (``label_value`` not null) are used. With
    ``weights=True`` the dataset's row weights (``weight``: 1 / (sample probability ×
    propensity)) are fitting weights, rescaled to mean 1 on the rows fitted (heuristics and
    calibration stay unweighted). The default is an unweighted fit: inverse-propensity weights
    remove bias at the price of variance, which is the caller's trade-off to make.
    ``lineage["weighted_rows"]`` and ``lineage["fitted_with_weights"]`` say what happened.
Split
    ``split`` (default: ``system.split``) divides the rows with
    :func:`closedloop.evaluation.split`; the model is fitted on the train side only, and
    ``metrics["heldout"]`` (AUC, log loss) is measured on the test side through the model's bound
    scorer — the runtime's path — with :mod:`closedloop.evaluation.metrics`.
Models
    ``"logistic"``: :func:`~closedloop.training.train_logistic` (params: ``C``, ``max_iter``,
    ``standardize``). ``"lightgbm"``: ``lightgbm.train`` on the system's features with defaults
    ``objective=binary, verbose=-1, deterministic=True, seed=0`` and, sized to the fitted rows'
    smaller class, regularized ``num_leaves``, ``min_data_in_leaf``, ``min_sum_hessian_in_leaf``,
    ``lambda_l2`` and ``learning_rate`` (:func:`lightgbm_defaults`: LightGBM's own defaults from
    10,000 rows of the smaller class on), each overridden by ``params`` (under its name or an
    alias); ``num_boost_round`` (default 100) is taken out of ``params``. The sized values
    used are ``lineage["defaults"]``.
    ``"sklearn:MODULE:CLASS"`` (or ``"sklearn:MODULE.CLASS"``): the class is imported only from a module named ``sklearn.…``
    (anything else is refused with :class:`~closedloop.errors.SpecError`), built with ``params``,
    fitted and wrapped in a :class:`~closedloop.intelligence.SklearnModel` (``predict_proba``).
    ``"heuristic"``: nothing is fitted; ``params["rules"]`` is a list of
    ``[feature, op, value, points]`` making a :class:`~closedloop.intelligence.ScoringRules`
    (optional ``base``, ``lo``, ``hi``) — the library cannot import a system's own heuristic.
Calibration
    ``calibrate="isotonic"|"platt"`` fits :func:`~closedloop.training.calibrate` on a held-out
    slice of the *train* side — the train units that hash to test under
    ``Split("unit", 0.2, seed=split.seed + 1)`` — and the base is fitted on the rest of the train
    side, so the test side stays untouched by both.
Thresholds
    ``thresholds="system"`` (default) keeps the system's thresholds; ``thresholds="cost"`` builds
    the bundle with the thresholds that minimize ``System.costs`` on the calibration rows (when
    calibrated), else on the fitted rows — never the test side — weighted by the dataset's row
    weights: :mod:`closedloop.training.thresholds`, the loop's own code path.
    ``lineage["thresholds"]`` records ``{"rule"}`` and, for ``"cost"``, ``"rows"``
    (``"calibration"`` | ``"fit"``), ``"n"`` and ``"values"``.
Lineage (``metrics["lineage"]``)
    ``dataset_id``, ``dataset_time_range`` ``[since_ns, until_ns]``, ``label_policy``,
    ``code_version`` (``git rev-parse HEAD`` in the working directory when it is a git checkout,
    else ``closedloop <version>``), ``closedloop_version``, ``parent``, ``model``, ``params`` (as
    given), ``defaults`` (the parameters the library chose: :func:`lightgbm_defaults`, else ``{}``),
    ``split`` (:meth:`Split.describe`), ``calibration`` and ``thresholds``. ``parent`` is also the bundle's parent.
"""

from __future__ import annotations

import importlib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from closedloop.errors import ClosedLoopError, IntelligenceError, SpecError
from closedloop.intelligence import Intelligence
from closedloop.runtime.bundle import Bundle
from closedloop.system.spec import System
from closedloop.system.splits import Split
from closedloop.system.splits import split as split_rows
from closedloop.training.logistic import experience_score
from closedloop.training.thresholds import check_threshold_rule, cost_thresholds, threshold_rows

__all__ = ["TrainRun", "code_version", "lightgbm_defaults", "parse_params", "train"]

_MODELS = ("logistic", "lightgbm", "heuristic", "sklearn:MODULE:CLASS")
_CALIBRATIONS = ("isotonic", "platt")
_LGBM_DEFAULTS: dict[str, Any] = {
    "objective": "binary", "verbose": -1, "deterministic": True, "seed": 0,
}
#: LightGBM's names (and aliases, as ``lightgbm.basic._ConfigAliases`` lists them) of what
#: :func:`lightgbm_defaults` sizes: a value the caller gave under any of them is kept.
_LGBM_ALIASES: dict[str, tuple[str, ...]] = {
    "num_leaves": ("num_leaves", "num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"),
    "min_data_in_leaf": ("min_data_in_leaf", "min_data_per_leaf", "min_data", "min_child_samples",
                         "min_samples_leaf"),
    "min_sum_hessian_in_leaf": ("min_sum_hessian_in_leaf", "min_sum_hessian_per_leaf", "min_sum_hessian",
                                "min_hessian", "min_child_weight"),
    "lambda_l2": ("lambda_l2", "reg_lambda", "lambda", "l2_regularization"),
    "learning_rate": ("learning_rate", "shrinkage_rate", "eta"),
    "num_iterations": ("num_boost_round", "num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees",
                       "num_round", "num_rounds", "nrounds", "n_estimators", "max_iter"),
}
#: The smaller class's row count at and below which :func:`lightgbm_defaults` regularizes fully,
#: and from which on it gives LightGBM's own defaults.
_SMALL, _LARGE = 300, 10_000
#: (fully regularized, LightGBM's default) of each sized parameter.
_SIZED: dict[str, tuple[float, float]] = {
    "num_leaves": (5, 31), "min_data_in_leaf": (40, 20), "min_sum_hessian_in_leaf": (1.0, 1e-3),
    "lambda_l2": (2.0, 0.0), "learning_rate": (0.05, 0.1),
}


def lightgbm_defaults(params: Mapping[str, Any], y: np.ndarray) -> dict[str, Any]:
    """The regularized LightGBM parameters for fitting labels ``y`` (0/1), for each of
    ``num_leaves``, ``min_data_in_leaf``, ``min_sum_hessian_in_leaf``, ``lambda_l2`` and
    ``learning_rate`` that ``params`` does not set (under its name or an alias) → ``{name: value}``.

    LightGBM's defaults (31 leaves of ≥ 20 rows, a minimum hessian of 0.001, no L2 penalty, a
    learning rate of 0.1 for 100 rounds) memorize a few thousand noisy rows: train AUC near 1,
    held-out far below. The capacity a dataset supports grows with the rows of its smaller class
    ``m`` (the positives of an imbalanced problem: each leaf value is estimated from them), so
    each parameter moves with ``t = clip(log(m / 300) / log(10,000 / 300), 0, 1)`` from its
    regularized value (``m ≤ 300``: 4 leaves of ≥ 100 rows and a hessian sum ≥ 5 — about five
    positives' worth at a low base rate —, ``lambda_l2`` 10, learning rate 0.03) to LightGBM's
    own (``m ≥ 10,000``): leaves and minimum rows linearly in ``t``, the minimum hessian
    geometrically, ``lambda_l2`` and the learning rate linearly. The learning rate and the number
    of rounds are one choice (their product is what boosting fits): the learning rate is sized
    only when the caller set neither."""
    y = np.asarray(y)
    n = int(y.size)
    pos = int(np.count_nonzero(y))
    m = min(pos, n - pos)
    t = min(1.0, max(0.0, float(np.log(max(m, 1) / _SMALL) / np.log(_LARGE / _SMALL))))
    given = {k for k, names in _LGBM_ALIASES.items() if any(a in params for a in names)}
    out: dict[str, Any] = {}
    for name, (small, large) in _SIZED.items():
        if name in given or (name == "learning_rate" and "num_iterations" in given):
            continue
        if name == "min_sum_hessian_in_leaf":
            out[name] = float(f"{small ** (1.0 - t) * large ** t:.3g}")
        elif name in ("num_leaves", "min_data_in_leaf"):
            out[name] = int(round(small + t * (large - small)))
        else:
            out[name] = float(f"{small + t * (large - small):.3g}")
    return out


@dataclass(frozen=True)
class TrainRun:
    """What :func:`train` produced: a built, unsaved ``bundle``, its ``metrics`` (also in the
    bundle manifest: ``lineage``, ``train``, ``heldout``) and the trained ``model``.

    ``scores`` holds the trained model's scores that :func:`train` computed for its metrics, so
    a caller need not featurize and score the same rows again: ``{"fit": (rows, S), "test":
    (rows, S)}``, and ``"calibration"`` when the model was calibrated (the rows its calibration
    was fitted on, which the cycle's cost thresholds are chosen on) — ``rows`` index the dataset's labeled rows (in file order, as
    :func:`training_rows` gives them), ``S`` is the bound scorer's matrix (one column per
    ``model.outputs``)."""

    bundle: Bundle
    metrics: dict[str, Any]
    model: Intelligence = field(repr=False)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)


def parse_params(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["k=v", …]`` → dict: ints, floats, ``true``/``false``, ``none``/``null``, else strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise SpecError(f"A training parameter must look like 'name=value'. Got {item!r} instead.")
        k, v = (s.strip() for s in item.split("=", 1))
        out[k] = _parse_value(v)
    return out


def _parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def code_version(cwd: Path | str | None = None) -> str:
    """The git commit of ``cwd`` (default: the working directory) when it is a git checkout,
    else ``closedloop <version>``."""
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
        sha = r.stdout.strip()
        if r.returncode == 0 and len(sha) >= 40:
            return sha
    except (OSError, subprocess.SubprocessError):
        pass
    from closedloop.base.version import __version__

    return f"closedloop {__version__}"


def _sklearn_class(model: str) -> Any:
    parts = model.split(":")
    if len(parts) == 2 and "." in parts[1]:  # sklearn:module.Class
        parts = [parts[0], *parts[1].rsplit(".", 1)]
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SpecError(f"An sklearn model must be named 'sklearn:MODULE:CLASS'. Got {model!r} instead.")
    module, name = parts[1], parts[2]
    if not module.startswith("sklearn."):
        raise SpecError(
            f"The module of an sklearn model must start with 'sklearn.' (only scikit-learn classes are "
            f"imported). Got {module!r} (in {model!r}) instead."
        )
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"The sklearn model {model!r} cannot be imported: {exc}.") from exc
    if not isinstance(cls, type) or not callable(getattr(cls, "fit", None)):
        raise SpecError(f"The sklearn model {model!r} must name an estimator class. Got {cls!r} instead.")
    return cls


def _check_model(model: str) -> None:
    if not isinstance(model, str) or not (model in ("logistic", "lightgbm", "heuristic") or model.startswith("sklearn:")):
        raise SpecError(f"The 'model' parameter of train must be one of {list(_MODELS)}. Got {model!r} instead.")
    if model.startswith("sklearn:"):
        _sklearn_class(model)


def _mapping(cols: Any) -> dict[str, Any]:
    """Validated Columns as a column mapping (what the trainers' batch validation takes)."""
    return {n: cols[n] for n in cols.names()}


def _fit(system: System, model: str, params: dict[str, Any], cols: Any, y: np.ndarray,
         w: np.ndarray | None = None, X: np.ndarray | None = None) -> Intelligence:
    output = experience_score(system, "train", has_output=False)
    if model == "heuristic":
        from closedloop.intelligence import Rule, ScoringRules

        rules = params.get("rules")
        if not isinstance(rules, list | tuple) or not rules:
            raise SpecError(
                "The 'heuristic' model needs params {'rules': [[feature, op, value, points], ...]}. "
                f"Got {rules!r} instead."
            )
        extra = {k: params[k] for k in ("base", "lo", "hi") if k in params}
        unknown = sorted(set(params) - {"rules", "base", "lo", "hi"})
        if unknown:
            raise SpecError(f"The 'heuristic' model takes params rules, base, lo, hi. Got {unknown} instead.")
        try:
            made = [Rule(*r) for r in rules]
        except TypeError as exc:
            raise SpecError(f"A heuristic rule must be [feature, op, value, points]. Got {rules!r} instead.") from exc
        return ScoringRules(made, output=output, **extra)
    if model == "logistic":
        from closedloop.training.logistic import train_logistic

        unknown = sorted(set(params) - {"C", "max_iter", "standardize"})
        if unknown:
            raise SpecError(f"The 'logistic' model takes params C, max_iter, standardize. Got {unknown} instead.")
        return train_logistic(system, _mapping(cols), y, output=output, sample_weight=w, **params).model
    if X is None:
        X = system.features.batch(cols)
    names = list(system.features.names)
    if model == "lightgbm":
        import lightgbm

        from closedloop.intelligence import LightGBMModel

        p = dict(params)
        rounds = p.pop("num_boost_round", 100)
        full = {**_LGBM_DEFAULTS, **p}
        booster = lightgbm.train(full, lightgbm.Dataset(X, label=y, weight=w, feature_name=names), num_boost_round=int(rounds))
        return LightGBMModel.from_booster(booster, names, output=output)
    from closedloop.intelligence import SklearnModel

    cls = _sklearn_class(model)
    try:
        est = cls(**params)
    except TypeError as exc:
        raise SpecError(f"The params of {model!r} were refused: {exc}.") from exc
    if w is None:
        est.fit(X, y)
    else:
        try:
            est.fit(X, y, sample_weight=w)
        except TypeError as exc:
            raise SpecError(
                f"{model!r} does not take sample weights ({exc}); train it with weights=False."
            ) from exc
    return SklearnModel(est, names, output=output)


def _score_matrix(system: System, intelligence: Intelligence, cols: Any, X: np.ndarray | None = None) -> np.ndarray:
    if X is None:
        X = system.features.batch(cols)
    return np.asarray(intelligence.bind(system.features).batch(X, cols), dtype=np.float64)


def _rows_of(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a feature matrix, column-major like ``FeatureSet.batch``'s: the same
    values as featurizing those rows alone (each row's features depend on its context only)."""
    out = np.empty((idx.size, X.shape[1]), dtype=X.dtype, order="F")
    for j in range(X.shape[1]):  # column by column: one copy, contiguous on both sides
        np.take(X[:, j], idx, out=out[:, j])
    return out


def _quality(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    from closedloop.evaluation import metrics as m

    out: dict[str, Any] = {"n": int(y.shape[0]), "positives": int(y.sum())}
    try:
        out["auc"] = m.auc(y, s)
    except ClosedLoopError:
        out["auc"] = None  # one class only
    try:
        out["log_loss"] = m.log_loss(y, s) if y.size and np.all((s >= 0) & (s <= 1)) else None
    except ClosedLoopError:
        out["log_loss"] = None
    return out


def calibration_split(split: Split) -> Split:
    """The split of the training side that holds out rows for calibration (a fifth of its units)."""
    return Split("unit", 0.2, seed=int(split.seed) + 1)


def training_rows(table: Any, split: Split, calibrate: bool, dataset_id: str = "?") -> tuple[Any, Any, Any]:
    """The row indices of ``table`` (labeled rows) → ``(fit, calibration, test)``: ``split``
    divides train from test; with ``calibrate`` a fifth of the train side's units
    (:func:`calibration_split`) is held out of the fit for calibration (empty otherwise). The
    cycle chooses cost thresholds on the calibration rows: scores the model was not fitted on."""
    train_idx, test_idx = split_rows(table, split)
    if train_idx.size == 0:
        raise IntelligenceError(f"The split {split.describe()} leaves no training rows in dataset {dataset_id!r}.")
    if not calibrate:
        return train_idx, np.zeros(0, dtype=np.int64), test_idx
    cal_split = calibration_split(split)
    a, b = split_rows(table.take(train_idx), cal_split)
    fit_idx, cal_idx = train_idx[a], train_idx[b]
    if cal_idx.size == 0 or fit_idx.size == 0:
        raise IntelligenceError(
            f"Calibration needs train units on both sides of {cal_split.describe()}; the dataset "
            f"{dataset_id!r} has {train_idx.size} training rows."
        )
    return fit_idx, cal_idx, test_idx


def train(
    system: System,
    dataset: Path | str,
    *,
    model: str = "logistic",
    params: Mapping[str, Any] | None = None,
    calibrate: str | None = None,
    parent: str | None = None,
    split: Split | None = None,
    weights: bool = False,
    loaded: tuple[Any, Any] | None = None,
    thresholds: str = "system",
) -> TrainRun:
    """Train ``model`` on the dataset at ``dataset`` (a directory) → a :class:`TrainRun` whose
    bundle (built, not saved) carries lineage and metrics. Rules: module docstring.
    ``loaded``: what ``load_dataset(dataset, system)`` returned, when the caller has it already
    (the dataset is then not read again). ``thresholds``: ``"system"`` (the system's own) or
    ``"cost"`` (the cost-minimizing ones, :mod:`closedloop.training.thresholds`)."""
    from closedloop.datasets.dataset import DatasetManifest, load_dataset

    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of train must be a closedloop.System. Got {system!r} instead.")
    experience_score(system, "train", has_output=False)  # refused before the dataset is read
    _check_model(model)
    check_threshold_rule(system, thresholds)
    if calibrate is not None and calibrate not in _CALIBRATIONS:
        raise SpecError(
            f"The 'calibrate' parameter of train must be one of {list(_CALIBRATIONS)} or None. Got {calibrate!r} instead."
        )
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(f"The 'params' parameter of train must be a mapping. Got {params!r} instead.")
    params = dict(params or {})
    sp = split if split is not None else system.split
    if not isinstance(sp, Split):
        raise SpecError(f"The 'split' parameter of train must be a closedloop Split. Got {sp!r} instead.")

    path = Path(dataset)
    manifest = DatasetManifest.read(path)
    table, cols = loaded if loaded is not None else load_dataset(path, system)
    labeled = np.flatnonzero(np.asarray(pc.is_valid(table["label_value"]), dtype=bool))
    if labeled.size == 0:
        raise IntelligenceError(f"The dataset {manifest.id!r} must have labeled rows to train on. Got none instead.")
    # only the columns read below are carried through the takes (not the contexts' JSON)
    table = table.select([c for c in ("label_value", "weight", "unit", "timestamp_ns") if c in table.column_names])
    table = table.take(labeled)
    cols = cols.take(labeled)
    y = np.asarray(table["label_value"].to_numpy(zero_copy_only=False), dtype=np.int64)
    fit_idx, cal_idx, test_idx = training_rows(table, sp, calibrate is not None, manifest.id)
    w_all = table["weight"].to_numpy(zero_copy_only=False) if "weight" in table.column_names else None
    fit_w = None
    if weights and w_all is not None:
        fit_w = np.asarray(w_all, dtype=np.float64)[fit_idx]
        if np.all(fit_w == 1.0):
            fit_w = None  # unweighted: keep the exact unweighted fit
        else:
            fit_w = fit_w * (fit_w.size / fit_w.sum())  # mean 1: regularization keeps its meaning
    # the features of the labeled rows, computed once: the fit, the training metrics and the
    # held-out metrics read their rows of it (featurizing is per row, so the values are the same)
    X = system.features.batch(cols)
    fit_cols = cols.take(fit_idx)
    X_fit = _rows_of(X, fit_idx)
    sized = lightgbm_defaults(params, y[fit_idx]) if model == "lightgbm" else {}
    intelligence = _fit(system, model, {**params, **sized}, fit_cols, y[fit_idx], fit_w, X_fit)
    calibration: dict[str, Any] | None = None
    if calibrate is not None:
        from closedloop.training.calibrate import calibrate as fit_calibration

        intelligence = fit_calibration(system, intelligence, _mapping(cols.take(cal_idx)), y[cal_idx], method=calibrate)
        calibration = {"method": calibrate, "rows": int(cal_idx.size), "split": calibration_split(sp).describe()}

    S_fit = _score_matrix(system, intelligence, fit_cols, X_fit)
    train_q = _quality(y[fit_idx], S_fit[:, 0])
    scores = {"fit": (fit_idx, S_fit)}
    held_q: dict[str, Any] = {"n": 0}
    if test_idx.size:
        S_test = _score_matrix(system, intelligence, cols.take(test_idx), _rows_of(X, test_idx))
        held_q = _quality(y[test_idx], S_test[:, 0])
        scores["test"] = (test_idx, S_test)
    if cal_idx.size:
        scores["calibration"] = (cal_idx, _score_matrix(system, intelligence, cols.take(cal_idx), _rows_of(X, cal_idx)))
    chosen: dict[str, Any] = {"rule": thresholds}
    levels = None
    if thresholds == "cost":
        rows, side = threshold_rows(fit_idx, cal_idx)
        S_rows = scores[side][1]
        levels = cost_thresholds(system, y[rows], S_rows, intelligence.bind(system.features).outputs,
                                 None if w_all is None else np.asarray(w_all, dtype=np.float64)[rows])
        chosen.update({"rows": side, "n": int(rows.size), "values": levels})
    content = manifest.content
    w = w_all
    from closedloop.base.version import __version__

    lineage = {
        "dataset_id": manifest.id,
        "dataset_time_range": [content.get("since_ns"), content.get("until_ns")],
        "label_policy": content.get("policy"),
        "code_version": code_version(),
        "closedloop_version": __version__,
        "parent": parent,
        "model": model,
        "params": params,
        "defaults": sized,
        "split": sp.describe(),
        "calibration": calibration,
        "weighted_rows": bool(w is not None and np.any(np.asarray(w, dtype=np.float64) != 1.0)),
        "fitted_with_weights": fit_w is not None,
        "thresholds": chosen,
    }
    metrics = {"lineage": lineage, "train": train_q, "heldout": held_q}
    bundle = Bundle.build(system, intelligence, thresholds=levels, parent=parent, metrics=metrics)
    return TrainRun(bundle=bundle, metrics=bundle.metrics, model=intelligence, scores=scores)

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
Reward datasets (ranking systems)
    A per-slot reward dataset (manifest ``rows: "slot"``: ``build_reward_dataset``,
    ``import_dataset(..., action=…, reward=…)``) trains a ranking system's reward model
    (:mod:`closedloop.training.rewards`): one row per (decision, slot shown), its request fields
    beside its candidate's — the runtime's request × candidate rows — labeled by its ``reward``,
    which must be 0 or 1 (a click model; a graded reward is refused, naming the row, not
    thresholded). Rows without a reward or whose candidate does not validate are left out and
    counted. The model's output is the experience's ``score``, so the bundle ranks candidates
    through the runtime's vectorized candidate path. With ``weights=True`` the rows' ``weight``
    (1 / (sample probability × slot propensity)) corrects the logger's exposure bias: candidates
    the logging policy showed often would otherwise dominate the fit, and each (request,
    candidate) pair counts as if the logger had shown every candidate alike. ``calibrate`` is
    refused for now; ``thresholds="cost"`` needs a Thresholds experience, so it is refused too.
    A reward dataset for a system without candidates is refused (IntelligenceError).
    ``lineage["dataset_kind"]`` is ``"reward"`` (``"labeled"`` otherwise) and
    ``lineage["reward_rows"]`` counts the rows (``read``, ``rows``, ``without_reward``,
    ``invalid_candidate``, and the ``label`` rule); ``metrics["train"]`` / ``["heldout"]`` are the
    AUC and log loss of the reward over the (request, candidate) rows of each side.
Split
    ``split`` (default: ``system.split``) divides the rows with
    :func:`closedloop.evaluation.split`; the model is fitted on the train side only, and
    ``metrics["heldout"]`` (AUC, log loss) is measured on the test side through the model's bound
    scorer — the runtime's path — with :mod:`closedloop.evaluation.metrics`.
Models
    ``"logistic"``: :func:`~closedloop.training.train_logistic` (params: ``C``, ``max_iter``,
    ``standardize``). ``"affinity"``: the logistic model plus a learned logit offset per pair of
    two text fields (params: ``keys`` — required, e.g. ``["user_id", "category"]`` —, ``l2``,
    ``rounds``, and the logistic part's ``C``, ``max_iter``, ``standardize``;
    :mod:`closedloop.training.affinity`). ``"lightgbm"``: ``lightgbm.train`` on the system's features with defaults
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
    ``dataset_id``, ``dataset_kind`` (``"labeled"`` | ``"reward"``; ``reward_rows`` for a reward
    dataset), ``dataset_time_range`` ``[since_ns, until_ns]``, ``label_policy``,
    ``code_version`` (``git rev-parse HEAD`` in the working directory when it is a git checkout,
    else ``closedloop <version>``), ``closedloop_version``, ``parent``, ``model``, ``params`` (as
    given), ``defaults`` (the parameters the library chose: :func:`lightgbm_defaults`, else ``{}``),
    ``split`` (:meth:`Split.describe`), ``calibration`` and ``thresholds``. ``parent`` is also the bundle's parent.

Each kind of model is fitted by :mod:`closedloop.training.fitting`; :func:`train` runs the stages
in order (arguments, rows, split, fit and calibration, scores, thresholds, lineage, bundle).
"""

from __future__ import annotations

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
from closedloop.training.fitting import _LGBM_ALIASES as _LGBM_ALIASES
from closedloop.training.fitting import _LGBM_DEFAULTS as _LGBM_DEFAULTS
from closedloop.training.fitting import _check_model, _fit, _mapping, lightgbm_defaults
from closedloop.training.logistic import experience_score
from closedloop.training.rewards import check_ranking_system, is_reward_dataset, reward_rows
from closedloop.training.thresholds import check_threshold_rule, cost_thresholds, threshold_rows

__all__ = ["TrainRun", "code_version", "lightgbm_defaults", "parse_params", "train"]

_CALIBRATIONS = ("isotonic", "platt")


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


def _check_arguments(system: Any, model: str, thresholds: str, calibrate: str | None, params: Any,
                     split: Split | None) -> tuple[dict[str, Any], Split]:
    """The parameters of :func:`train` checked before the dataset is read (SpecError naming the
    parameter) → (a copy of ``params``, the split to use)."""
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
    return params, sp


def _training_table(system: System, path: Path, loaded: tuple[Any, Any] | None, calibrate: str | None
                    ) -> tuple[Any, Any, Any, np.ndarray, dict[str, Any]]:
    """The dataset's manifest and the rows to train on → (manifest, table of the columns read later,
    the rows' columns, 0/1 labels, the lineage's ``dataset_kind`` and, for a reward dataset,
    ``reward_rows``): a per-slot reward dataset's rows with a reward
    (:func:`~closedloop.training.rewards.reward_rows`), else the labeled rows."""
    from closedloop.datasets.dataset import DatasetManifest

    manifest = DatasetManifest.read(path)
    if not is_reward_dataset(manifest):
        return (*_labeled(system, manifest, path, loaded), {"dataset_kind": "labeled"})
    check_ranking_system(system, manifest)
    if calibrate is not None:
        raise SpecError(f"The 'calibrate' parameter of train must be None for a per-slot reward dataset (dataset "
                        f"{manifest.id!r}): a reward model is not calibrated yet. Got {calibrate!r} instead.")
    table, cols, y, counts = reward_rows(system, path, manifest, loaded)
    return manifest, table, cols, y, {"dataset_kind": "reward", "reward_rows": {"label": "reward > 0", **counts}}


def _labeled(system: System, manifest: Any, path: Path, loaded: tuple[Any, Any] | None) -> tuple[Any, Any, Any, np.ndarray]:
    """The dataset's labeled rows → (manifest, table of the columns read later, contexts, 0/1 labels)."""
    from closedloop.datasets.dataset import load_dataset

    table, cols = loaded if loaded is not None else load_dataset(path, system)
    labeled = np.flatnonzero(np.asarray(pc.is_valid(table["label_value"]), dtype=bool))
    if labeled.size == 0:
        raise IntelligenceError(f"The dataset {manifest.id!r} must have labeled rows to train on. Got none instead.")
    # only the columns read below are carried through the takes (not the contexts' JSON)
    table = table.select([c for c in ("label_value", "weight", "unit", "timestamp_ns") if c in table.column_names])
    table = table.take(labeled)
    cols = cols.take(labeled)
    y = np.asarray(table["label_value"].to_numpy(zero_copy_only=False), dtype=np.int64)
    return manifest, table, cols, y


def _fit_weights(table: Any, fit_idx: np.ndarray, weights: bool) -> tuple[Any, np.ndarray | None]:
    """The rows' ``weight`` column (None without one) and, with ``weights``, the fitted rows'
    weights rescaled to mean 1 (None: an unweighted fit, also when every weight is 1)."""
    w_all = table["weight"].to_numpy(zero_copy_only=False) if "weight" in table.column_names else None
    fit_w = None
    if weights and w_all is not None:
        fit_w = np.asarray(w_all, dtype=np.float64)[fit_idx]
        if np.all(fit_w == 1.0):
            fit_w = None  # unweighted: keep the exact unweighted fit
        else:
            fit_w = fit_w * (fit_w.size / fit_w.sum())  # mean 1: regularization keeps its meaning
    return w_all, fit_w


def _fit_and_calibrate(system: System, model: str, params: dict[str, Any], calibrate: str | None, sp: Split,
                       cols: Any, y: np.ndarray, fit_cols: Any, X_fit: np.ndarray, fit_idx: np.ndarray,
                       cal_idx: np.ndarray, fit_w: np.ndarray | None
                       ) -> tuple[Intelligence, dict[str, Any], dict[str, Any] | None]:
    """The model fitted on the fit rows (LightGBM's defaults sized to them) and, with
    ``calibrate``, calibrated on the calibration rows → (intelligence, the sized defaults, the
    lineage's ``calibration``)."""
    sized = lightgbm_defaults(params, y[fit_idx]) if model == "lightgbm" else {}
    intelligence = _fit(system, model, {**params, **sized}, fit_cols, y[fit_idx], fit_w, X_fit)
    calibration: dict[str, Any] | None = None
    if calibrate is not None:
        from closedloop.training.calibrate import calibrate as fit_calibration

        intelligence = fit_calibration(system, intelligence, _mapping(cols.take(cal_idx)), y[cal_idx], method=calibrate)
        calibration = {"method": calibrate, "rows": int(cal_idx.size), "split": calibration_split(sp).describe()}
    return intelligence, sized, calibration


def _score_sides(system: System, intelligence: Intelligence, cols: Any, X: np.ndarray, y: np.ndarray,
                 fit_cols: Any, X_fit: np.ndarray, fit_idx: np.ndarray, cal_idx: np.ndarray, test_idx: np.ndarray
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The trained model's scores of the fit, test and calibration rows through its bound scorer
    → (the ``train`` metrics, the ``heldout`` metrics, :attr:`TrainRun.scores`)."""
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
    return train_q, held_q, scores


def _chosen_thresholds(system: System, thresholds: str, intelligence: Intelligence, y: np.ndarray, w_all: Any,
                       fit_idx: np.ndarray, cal_idx: np.ndarray, scores: dict[str, tuple[np.ndarray, np.ndarray]]
                       ) -> tuple[dict[str, Any], Any]:
    """The bundle's thresholds under the rule ``thresholds`` → (the lineage's ``thresholds``, the
    levels to build with: None keeps the system's)."""
    chosen: dict[str, Any] = {"rule": thresholds}
    levels = None
    if thresholds == "cost":
        rows, side = threshold_rows(fit_idx, cal_idx)
        S_rows = scores[side][1]
        levels, goals = cost_thresholds(system, y[rows], S_rows, intelligence.bind(system.features).outputs,
                                        None if w_all is None else np.asarray(w_all, dtype=np.float64)[rows])
        chosen.update({"rows": side, "n": int(rows.size), "values": levels})
        if goals:
            chosen["goals"] = goals
    return chosen, levels


def _lineage(manifest: Any, *, parent: str | None, model: str, params: dict[str, Any], sized: dict[str, Any], sp: Split,
             calibration: dict[str, Any] | None, w_all: Any, fit_w: np.ndarray | None, chosen: dict[str, Any],
             kind: dict[str, Any]) -> dict[str, Any]:
    """The bundle's ``metrics["lineage"]`` (the module docstring, "Lineage")."""
    from closedloop.base.version import __version__

    content = manifest.content
    w = w_all
    return {
        "dataset_id": manifest.id,
        **kind,
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
    objective: str | None = None,
) -> TrainRun:
    """Train ``model`` on the dataset at ``dataset`` (a directory) → a :class:`TrainRun` whose
    bundle (built, not saved) carries lineage and metrics. Rules: module docstring.
    ``loaded``: what ``load_dataset(dataset, system)`` returned, when the caller has it already
    (the dataset is then not read again). ``thresholds``: ``"system"`` (the system's own) or
    ``"cost"`` (the cost-minimizing ones, :mod:`closedloop.training.thresholds`).

    The stages: the arguments checked, the labeled rows read, the rows split (fit, calibration,
    test), the model fitted (and calibrated) on features computed once, each side scored, the
    thresholds chosen, the lineage written and the bundle built.

    ``objective`` (a per-slot reward dataset only; :data:`OBJECTIVES`): ``None`` or ``"reward"`` —
    the reward model above; ``"imitate"`` — an apprentice that ranks like the logger
    (:func:`closedloop.training.apprentice.train_apprentice`); ``"dr"`` — a policy fitted on
    doubly robust pseudo-rewards over each decision's whole candidate set
    (:func:`closedloop.training.policy.train_policy`)."""
    if objective is not None and objective != "reward":
        return _by_objective(system, Path(dataset), objective, model=model, params=params, calibrate=calibrate,
                             parent=parent, split=split, weights=weights, loaded=loaded)
    params, sp = _check_arguments(system, model, thresholds, calibrate, params, split)
    manifest, table, cols, y, kind = _training_table(system, Path(dataset), loaded, calibrate)
    fit_idx, cal_idx, test_idx = training_rows(table, sp, calibrate is not None, manifest.id)
    w_all, fit_w = _fit_weights(table, fit_idx, weights)
    # the features of the labeled rows, computed once: the fit, the training metrics and the
    # held-out metrics read their rows of it (featurizing is per row, so the values are the same)
    X = system.features.batch(cols)
    fit_cols = cols.take(fit_idx)
    X_fit = _rows_of(X, fit_idx)
    intelligence, sized, calibration = _fit_and_calibrate(system, model, params, calibrate, sp, cols, y, fit_cols, X_fit,
                                                          fit_idx, cal_idx, fit_w)
    train_q, held_q, scores = _score_sides(system, intelligence, cols, X, y, fit_cols, X_fit, fit_idx, cal_idx, test_idx)
    chosen, levels = _chosen_thresholds(system, thresholds, intelligence, y, w_all, fit_idx, cal_idx, scores)
    lineage = _lineage(manifest, parent=parent, model=model, params=params, sized=sized, sp=sp, calibration=calibration,
                       w_all=w_all, fit_w=fit_w, chosen=chosen, kind=kind)
    metrics = {"lineage": lineage, "train": train_q, "heldout": held_q}
    bundle = Bundle.build(system, intelligence, thresholds=levels, parent=parent, metrics=metrics)
    return TrainRun(bundle=bundle, metrics=bundle.metrics, model=intelligence, scores=scores)


#: What :func:`train` fits on a per-slot reward dataset (``objective``).
OBJECTIVES = ("reward", "imitate", "dr")


def _by_objective(system: System, path: Path, objective: str, *, model: str, params: Mapping[str, Any] | None,
                  calibrate: str | None, parent: str | None, split: Split | None, weights: bool, loaded: Any) -> TrainRun:
    """:func:`train` with an ``objective`` other than the reward model: checked, then dispatched."""
    if objective not in OBJECTIVES:
        raise SpecError(f"The 'objective' parameter of train must be one of {list(OBJECTIVES)}. Got {objective!r} instead.")
    from closedloop.datasets.dataset import DatasetManifest

    manifest = DatasetManifest.read(path)
    if not is_reward_dataset(manifest):
        raise SpecError(f"The 'objective' parameter of train is for a per-slot reward dataset; dataset {manifest.id!r} has "
                        f"labeled rows. Got objective={objective!r} instead.")
    for name, value, default in (("calibrate", calibrate, None), ("split", split, None), ("weights", weights, False)):
        if value != default:
            raise SpecError(f"The '{name}' parameter of train must be {default!r} with objective={objective!r}. "
                            f"Got {value!r} instead.")
    if objective == "dr":
        from closedloop.training.policy import train_policy

        return train_policy(system, path, objective="dr", model=model, params=params, parent=parent, loaded=loaded)
    from closedloop.training.apprentice import train_apprentice

    return train_apprentice(system, path, model=model, params=params, parent=parent, loaded=loaded)

"""Train a logistic model on a system's own features.

::

    result = train_logistic(phishing, columns, labels)   # columns: Arrow table or dict of columns
    result.model        # a LogisticModel (JSON weights; the scaler folded in)
    result.metrics      # {"n", "positives", "train_log_loss", "train_auc", ...}
    Bundle.build(phishing, result.model, metrics=result.metrics)

The batch is validated with the system's schema and featurized with the system's feature set —
the runtime's own batch path — so the model is trained on exactly the numbers it will see when
it decides. scikit-learn fits the weights; only the weights are kept. The training metrics are
computed by scoring through the converted model's bound scorer (what the runtime runs), not
through scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa

from closedloop.errors import IntelligenceError, SpecError
from closedloop.evaluation import metrics as _metrics
from closedloop.experience.experiences import BestAction
from closedloop.intelligence import LogisticModel
from closedloop.system.spec import System

__all__ = ["TrainResult", "encode_labels", "experience_score", "labelled_features", "log_loss", "roc_auc",
           "train_logistic"]

_EPS = 1e-15


# The training run's two metrics are evaluation's (closedloop.evaluation.metrics: the same
# arithmetic, so the same bits); what stays here is their contract — 0/1 labels, scores of the
# same length, no NaN, refused with IntelligenceError — and log_loss's clipping of any score.
def _pair(y: Any, p: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise IntelligenceError(
            f"{owner} needs labels and scores of the same length (1-d). Got shapes "
            f"{y.shape} and {p.shape} instead."
        )
    if y.size == 0:
        raise IntelligenceError(f"{owner} needs at least one example. Got none instead.")
    if not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][0]
        raise IntelligenceError(f"The labels given to {owner} must be 0 or 1. Got {bad!r} instead.")
    if np.isnan(p).any():
        row = int(np.flatnonzero(np.isnan(p))[0])
        raise IntelligenceError(f"The scores given to {owner} must not be NaN. Got NaN at row {row}.")
    return y.astype(np.int64), p


def log_loss(y: Any, p: Any) -> float:
    """Mean negative log-likelihood of 0/1 labels ``y`` under probabilities ``p`` (clipped to
    [1e-15, 1 − 1e-15])."""
    y, p = _pair(y, p, "log_loss")
    return _metrics.log_loss(y, np.clip(p, _EPS, 1.0 - _EPS), eps=_EPS)


def roc_auc(y: Any, p: Any) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half). Needs both classes."""
    y, p = _pair(y, p, "roc_auc")
    pos = int(y.sum())
    neg = int(y.size - pos)
    if pos == 0 or neg == 0:
        raise IntelligenceError(
            f"roc_auc needs both classes among the labels. Got {pos} positive(s) and {neg} negative(s)."
        )
    return _metrics.auc(y, p)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: the ``model`` (an :class:`~closedloop.intelligence.Intelligence`)
    and JSON-ready ``metrics`` measured on the training data through the model's bound scorer.
    ``estimator`` is the fitted scikit-learn object, for inspection (never saved in a bundle)."""

    model: LogisticModel
    metrics: dict[str, Any]
    estimator: Any = field(default=None, repr=False, compare=False)


def encode_labels(system: System, labels: Any, n: int | None = None, *, owner: str = "train_logistic") -> np.ndarray:
    """Labels as an int64 array of 0/1 (1 = ``system.labels[1]``, the positive class).

    Accepts 0/1 numbers or booleans, or the class names in ``system.labels``; with ``n``, the
    length must be ``n``. Refusals name the parameter, the rule and the value.
    """
    if isinstance(labels, pa.ChunkedArray | pa.Array):
        labels = labels.to_pylist()
    if isinstance(labels, str | bytes) or labels is None:
        raise IntelligenceError(f"The 'labels' of {owner} must be an array or a list. Got {labels!r} instead.")
    try:
        arr = np.asarray(labels)
        if arr.dtype.kind in "US" and not isinstance(labels, np.ndarray):
            arr = np.asarray(labels, dtype=object)  # keep mixed names and numbers as they were
    except (TypeError, ValueError) as exc:
        raise IntelligenceError(f"The 'labels' of {owner} must be an array or a list. Got {labels!r} instead.") from exc
    if arr.ndim != 1:
        raise IntelligenceError(
            f"The 'labels' of {owner} must be one-dimensional (one label per row). Got shape {arr.shape} instead."
        )
    if n is not None and arr.shape[0] != n:
        raise IntelligenceError(
            f"The 'labels' of {owner} must have one label per row of the batch ({n} rows). "
            f"Got {arr.shape[0]} labels instead."
        )
    neg, pos = system.labels
    rule = f"0/1 or one of {[neg, pos]}"
    out = np.empty(arr.shape[0], dtype=np.int64)
    if arr.dtype.kind in "biuf":
        ok = (arr == 0) | (arr == 1)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise IntelligenceError(
                f"The 'labels' of {owner} must be {rule}. Got {arr[row].item()!r} instead (row {row})."
            )
        out[:] = arr.astype(np.int64)
        return out
    names = {neg: 0, pos: 1}
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, str) and v in names:
            out[i] = names[v]
        elif isinstance(v, bool | int | float) and not isinstance(v, str) and v in (0, 1):
            out[i] = int(v)
        else:
            raise IntelligenceError(f"The 'labels' of {owner} must be {rule}. Got {v!r} instead (row {i}).")
    return out



def experience_score(system: System, owner: str, *, has_output: bool = True) -> str:
    """The score ``system``'s experience reads (Thresholds, Ranking): what a trainer fits when it
    is not told which output to fit. A BestAction experience reads one score per action, not one:
    refused (SpecError), naming ``owner``'s ``output`` parameter when it ``has_output``."""
    exp = system.experience
    if isinstance(exp, BestAction):
        if has_output:
            raise SpecError(
                f"The 'output' parameter of {owner} must name the score to fit when the system's experience "
                f"reads one score per action (System '{system.name}' has {exp!r}). Got None instead."
            )
        raise SpecError(
            f"{owner} fits one score, and System '{system.name}' cannot use one: its experience {exp!r} "
            f"reads one score per action."
        )
    return exp.score


def labelled_features(system: System, batch: Any, labels: Any, owner: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """Validate ``batch``, encode ``labels`` (both classes required) and compute the features
    through the runtime's own batch path → (columns, 0/1 labels, feature matrix)."""
    cols = system.schema.validate_batch(batch)
    y = encode_labels(system, labels, cols.n, owner=owner)
    positives = int(y.sum())
    if positives == 0 or positives == y.shape[0]:
        only = system.labels[1] if positives else system.labels[0]
        raise IntelligenceError(
            f"The 'labels' of {owner} must contain both classes {list(system.labels)}. "
            f"Got only {only!r} ({y.shape[0]} rows) instead."
        )
    return cols, y, system.features.batch(cols)

def _check_params(C: Any, max_iter: Any, standardize: Any) -> None:
    if isinstance(C, bool) or not isinstance(C, int | float) or not (math.isfinite(C) and C > 0):
        raise SpecError(f"The 'C' parameter of train_logistic must be a finite number > 0. Got {C!r} instead.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise SpecError(f"The 'max_iter' parameter of train_logistic must be an integer ≥ 1. Got {max_iter!r} instead.")
    if not isinstance(standardize, bool):
        raise SpecError(f"The 'standardize' parameter of train_logistic must be True or False. Got {standardize!r} instead.")


def _check_weights(w: Any, n: int, who: str) -> np.ndarray | None:
    """Validated per-row sample weights (float64, finite, ≥ 0, not all 0), or None."""
    if w is None:
        return None
    arr = np.asarray(w, dtype=np.float64)
    if arr.shape != (n,):
        raise SpecError(f"The 'sample_weight' parameter of {who} must hold one weight per row ({n}). Got shape {arr.shape} instead.")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SpecError(f"The 'sample_weight' parameter of {who} must be finite and >= 0. Got {float(arr[i])!r} instead (row {i}).")
    if not arr.any():
        raise SpecError(f"The 'sample_weight' parameter of {who} must not be all zero.")
    return arr


def train_logistic(
    system: System,
    batch: Any,
    labels: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    standardize: bool = True,
    output: str | None = None,
    sample_weight: Any = None,
) -> TrainResult:
    """Fit an L2-regularized logistic model on ``system``'s features of ``batch``.

    Parameters
    ----------
    system:
        The :class:`~closedloop.System`; its schema validates ``batch`` and its features
        featurize it (the runtime's batch path).
    batch:
        A columnar batch: an Arrow table / record batch, or a mapping of column → array or list.
        Every row must be valid (a :class:`~closedloop.errors.BatchContextError` names the bad ones).
    labels:
        One label per row: 0/1 (1 = ``system.labels[1]``, the positive class) or the class names.
        Both classes must occur.
    C:
        Inverse regularization strength (> 0), as in scikit-learn.
    max_iter:
        Iterations of the solver (lbfgs). ``metrics["converged"]`` says whether it converged.
    standardize:
        Fit ``Pipeline(StandardScaler, LogisticRegression)`` (the scaler is folded into the
        weights) rather than ``LogisticRegression`` on raw features.
    output:
        The model's score name; by default the score the system's experience reads.
    sample_weight:
        One non-negative finite weight per row (e.g. a dataset's inverse-propensity ``weight``),
        or None.

    Returns
    -------
    TrainResult
        ``model`` (a :class:`~closedloop.intelligence.LogisticModel`) and ``metrics``:
        ``n``, ``positives``, ``train_log_loss``, ``train_auc`` (None when it is undefined),
        ``converged``, ``C``, ``standardize``.
    """
    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of train_logistic must be a closedloop.System. Got {system!r} instead.")
    _check_params(C, max_iter, standardize)
    output = _check_output(system, output)
    cols, y, X = labelled_features(system, batch, labels, "train_logistic")
    sw = _check_weights(sample_weight, y.shape[0], "train_logistic")
    _check_finite(system, X)
    estimator, converged = _fit_estimator(X, y, sw, C=C, max_iter=max_iter, standardize=standardize)
    model = cast(LogisticModel, LogisticModel.from_sklearn(estimator, system.features.names, output=output))
    metrics = _training_metrics(system, model, X, cols, y, converged=converged, C=C, standardize=standardize)
    return TrainResult(model=model, metrics=metrics, estimator=estimator)


def fit_logistic_features(system: System, X: np.ndarray, y: np.ndarray, *, output: str, C: float = 1.0,
                          max_iter: int = 1000, standardize: bool = True, sample_weight: Any = None) -> LogisticModel:
    """A logistic model fitted on the feature rows ``X`` (``system.features``, computed by the
    caller through the runtime's batch path) with 0/1 labels ``y`` (both classes required) — what
    :func:`train_logistic` fits, for rows its batch validation cannot hold: a ranking system's
    request × candidate rows."""
    _check_params(C, max_iter, standardize)
    y = np.asarray(y, dtype=np.int64)
    positives = int(y.sum())
    if positives == 0 or positives == y.shape[0]:
        raise IntelligenceError(f"The labels of a logistic fit must contain both classes (0 and 1). Got only "
                                f"{int(positives > 0)} ({y.shape[0]} rows) instead.")
    sw = _check_weights(sample_weight, y.shape[0], "train")
    _check_finite(system, X)
    estimator, _ = _fit_estimator(X, y, sw, C=C, max_iter=max_iter, standardize=standardize)
    return cast(LogisticModel, LogisticModel.from_sklearn(estimator, system.features.names, output=output))


def _check_output(system: System, output: Any) -> str:
    """The score the model is fitted as: ``output`` (an identifier), by default the score the
    system's experience reads."""
    if output is None:
        return experience_score(system, "train_logistic")
    if not isinstance(output, str) or not output.isidentifier():
        raise SpecError(f"The 'output' parameter of train_logistic must be an identifier. Got {output!r} instead.")
    return output


def _check_finite(system: System, X: np.ndarray) -> None:
    """Refuse a feature matrix with a non-finite value, naming the feature and the row."""
    finite = np.isfinite(X)
    if not finite.all():
        row, j = (int(v[0]) for v in np.nonzero(~finite))
        raise IntelligenceError(
            f"Feature '{system.features.names[j]}' must be finite to train on. Got {X[row, j]!r} "
            f"instead (row {row})."
        )


def _fit_estimator(X: np.ndarray, y: np.ndarray, sw: np.ndarray | None, *, C: float, max_iter: int,
                   standardize: bool) -> tuple[Any, bool]:
    """scikit-learn's fit: ``LogisticRegression`` (lbfgs), behind a ``StandardScaler`` with
    ``standardize``, with sample weights ``sw`` when given → (the fitted estimator, whether the
    solver converged within ``max_iter``)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=float(C), max_iter=max_iter)
    estimator: Any = Pipeline([("scale", StandardScaler()), ("logistic", clf)]) if standardize else clf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sw is None:
            estimator.fit(X, y)
        elif standardize:
            estimator.fit(X, y, logistic__sample_weight=sw)
        else:
            estimator.fit(X, y, sample_weight=sw)
    converged = bool(np.all(np.asarray(clf.n_iter_) < max_iter))
    return estimator, converged


def _training_metrics(system: System, model: LogisticModel, X: np.ndarray, cols: Any, y: np.ndarray, *,
                      converged: bool, C: float, standardize: bool) -> dict[str, Any]:
    """The :class:`TrainResult`'s ``metrics``, from the converted model's scores through its bound
    scorer (what the runtime runs)."""
    p = model.bind(system.features).batch(X, cols)[:, 0]
    return {
        "n": int(y.shape[0]),
        "positives": int(y.sum()),
        "train_log_loss": log_loss(y, p),
        "train_auc": roc_auc(y, p),
        "converged": converged,
        "C": float(C),
        "standardize": standardize,
    }

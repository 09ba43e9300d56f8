"""Fitting one kind of model for :func:`closedloop.training.train`: ``"logistic"``,
``"affinity"`` (a logistic model plus a learned offset per pair of text fields,
:mod:`closedloop.training.affinity`),
``"lightgbm"`` (with its defaults sized to the data, :func:`lightgbm_defaults`),
``"sklearn:MODULE:CLASS"`` and ``"heuristic"`` — the rules are in
:mod:`closedloop.training.train`'s docstring.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.intelligence import Intelligence
from closedloop.system.spec import System
from closedloop.training.logistic import experience_score

__all__ = ["lightgbm_defaults"]

_MODELS = ("logistic", "affinity", "lightgbm", "heuristic", "sklearn:MODULE:CLASS")
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
    if not isinstance(model, str) or not (model in ("logistic", "affinity", "lightgbm", "heuristic") or model.startswith("sklearn:")):
        raise SpecError(f"The 'model' parameter of train must be one of {list(_MODELS)}. Got {model!r} instead.")
    if model.startswith("sklearn:"):
        _sklearn_class(model)


def _mapping(cols: Any) -> dict[str, Any]:
    """Validated Columns as a column mapping (what the trainers' batch validation takes)."""
    return {n: cols[n] for n in cols.names()}


def _fit(system: System, model: str, params: dict[str, Any], cols: Any, y: np.ndarray,
         w: np.ndarray | None = None, X: np.ndarray | None = None) -> Intelligence:
    """Fit ``model`` (already checked: :func:`_check_model`) on the rows ``cols`` with labels ``y``,
    fitting weights ``w`` and, when the caller has them, their features ``X``."""
    output = experience_score(system, "train", has_output=False)
    if model == "heuristic":
        return _fit_heuristic(params, output)
    if model == "logistic":
        return _fit_logistic(system, params, cols, y, w, output, X)
    if model == "affinity":
        from closedloop.training.affinity import fit_affinity

        return fit_affinity(system, params, cols, y, w, output, X)
    if X is None:
        X = system.features.batch(cols)
    names = list(system.features.names)
    if model == "lightgbm":
        return _fit_lightgbm(params, X, y, w, names, output)
    return _fit_sklearn(model, params, X, y, w, names, output)


def _fit_heuristic(params: dict[str, Any], output: str) -> Intelligence:
    """``"heuristic"``: nothing is fitted; ``params["rules"]`` (with optional ``base``, ``lo``,
    ``hi``) make a :class:`~closedloop.intelligence.ScoringRules`."""
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


def _fit_logistic(system: System, params: dict[str, Any], cols: Any, y: np.ndarray, w: np.ndarray | None,
                  output: str, X: np.ndarray | None = None) -> Intelligence:
    """``"logistic"``: :func:`~closedloop.training.logistic.train_logistic` (params ``C``,
    ``max_iter``, ``standardize``); for a ranking system (request × candidate rows ``cols``, which
    its request schema cannot validate) :func:`~closedloop.training.logistic.fit_logistic_features`
    on their features ``X``."""
    from closedloop.training.logistic import train_logistic

    unknown = sorted(set(params) - {"C", "max_iter", "standardize"})
    if unknown:
        raise SpecError(f"The 'logistic' model takes params C, max_iter, standardize. Got {unknown} instead.")
    if system.candidate_schema is not None:  # request × candidate rows: fitted on their features
        from closedloop.training.logistic import fit_logistic_features

        return fit_logistic_features(system, system.features.batch(cols) if X is None else X, y, output=output,
                                     sample_weight=w, **params)
    return train_logistic(system, _mapping(cols), y, output=output, sample_weight=w, **params).model


def _fit_lightgbm(params: dict[str, Any], X: np.ndarray, y: np.ndarray, w: np.ndarray | None, names: list[str],
                  output: str) -> Intelligence:
    """``"lightgbm"``: ``lightgbm.train`` with :data:`_LGBM_DEFAULTS` under ``params``
    (``num_boost_round``, default 100, taken out of them)."""
    import lightgbm

    from closedloop.intelligence import LightGBMModel

    p = dict(params)
    rounds = p.pop("num_boost_round", 100)
    full = {**_LGBM_DEFAULTS, **p}
    booster = lightgbm.train(full, lightgbm.Dataset(X, label=y, weight=w, feature_name=names), num_boost_round=int(rounds))
    return LightGBMModel.from_booster(booster, names, output=output)


def _fit_sklearn(model: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                 names: list[str], output: str) -> Intelligence:
    """``"sklearn:MODULE:CLASS"``: the estimator built with ``params``, fitted (with sample
    weights when given) and wrapped in a :class:`~closedloop.intelligence.SklearnModel`."""
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

"""The stages of doubly robust policy learning (:func:`closedloop.training.policy.train_policy`):
a split side's candidate sets, the reward model's predictions r̂ of every candidate (cross-fitted
in two folds by unit, or a given reward-model bundle's), the pseudo-rewards Γ and the regression
of Γ on the request × candidate features.

**The pseudo-reward.** For candidate ``c`` of a decision with request ``x``::

    Γ(x, c) = r̂(x, c) + 1{c shown at slot j} · min(1 / p_j, clip) · (r_j − r̂(x, c))

``p_j`` is the logged slot propensity and ``r_j`` the slot's reward. A candidate never shown keeps
the reward model's guess; a shown one is corrected by its residual, weighted by how rarely the
logger shows it there. **Per-slot reading** (``Ranking.k`` > 1): each shown slot is read
independently — its own reward and its own logged propensity, the same (row, pscore) pairs the
ranking report's policy value reads. The logged slot propensity is the probability that slot
``j`` got ``c`` given the candidates of the earlier slots (exact for slot 1; for later slots it
does not undo the earlier slots' choice), and r̂ does not depend on the slot: a click at slot 3
and at slot 1 correct the same score, so the policy's score reads as a position-free click
propensity and position bias is not modeled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import IntelligenceError, SpecError
from closedloop.intelligence import Intelligence
from closedloop.system.spec import System
from closedloop.training.logistic import experience_score

__all__ = ["PolicyRows", "fit_policy", "policy_rows", "pseudo_rewards", "reward_predictions"]

#: The slot rows read from a reward dataset (what :func:`read_candidate_sets` joins).
SLOT_COLUMNS = ("decision_id", "position", "unit", "timestamp_ns", "action", "reward", "propensity", "context_json")


@dataclass(frozen=True)
class PolicyRows:
    """One split side's usable candidates: every candidate of every decision kept (flat rows).

    ``cols`` the request × candidate Columns, ``X`` their features, ``units`` each row's unit,
    ``shown`` whether the logger showed it, ``reward`` / ``propensity`` its slot's (NaN when not
    shown), ``counts`` the decisions read and left out by why."""

    cols: Any
    X: np.ndarray
    units: np.ndarray
    shown: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    counts: dict[str, int]

    @property
    def n(self) -> int:
        return int(self.shown.size)


def slot_table(dataset: Path, loaded: tuple[Any, Any] | None) -> pa.Table:
    """The dataset's slot rows with a context (the columns :data:`SLOT_COLUMNS`)."""
    import pyarrow.parquet as pq

    from closedloop.datasets.dataset import DATA_FILE

    if loaded is not None:
        table = loaded[0]
    else:
        names = set(pq.read_schema(dataset / DATA_FILE).names)
        table = pq.read_table(dataset / DATA_FILE, columns=[c for c in SLOT_COLUMNS if c in names])
    missing = [c for c in SLOT_COLUMNS if c not in table.column_names]
    if missing:
        raise IntelligenceError(f"A per-slot reward dataset must have the columns {list(SLOT_COLUMNS)} to learn a policy. "
                                f"Got no {missing} instead.")
    table = table.select(list(SLOT_COLUMNS))
    return table.filter(pc.is_valid(table["context_json"]))


def _check_rewards(sets: Any, dataset_id: str) -> None:
    """A shown slot's reward must be finite (a null reward reads as NaN and leaves its decision out)."""
    r = sets.reward
    bad = (sets.slot > 0) & np.isinf(r)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        d = int(np.searchsorted(sets.offsets, i, side="right") - 1)
        raise IntelligenceError(
            f"The 'reward' of dataset {dataset_id!r} must be finite to learn a policy. Got {float(r[i])!r} instead "
            f"(decision {sets.decision_ids[d]!r}, slot {int(sets.slot[i])}; {int(bad.sum())} such slots).")


def policy_rows(system: System, dataset: Path, rows: pa.Table, dataset_id: str) -> PolicyRows | None:
    """The candidates of the decisions of ``rows`` (one split side's slot rows), featurized once; a
    decision with a shown slot without a reward (``without_reward``) or without a propensity in
    (0, 1] (``without_propensity``) is left out and counted, as the candidate sets' own exclusions
    are. None when ``rows`` is empty."""
    from closedloop.datasets.candidate_sets import read_candidate_sets

    if rows.num_rows == 0:
        return None
    sets = read_candidate_sets(system, dataset, rows=rows)
    _check_rewards(sets, dataset_id)
    shown = sets.slot > 0
    of = sets.decision_of()
    no_reward = np.zeros(sets.n_decisions, dtype=bool)
    no_prop = np.zeros(sets.n_decisions, dtype=bool)
    p = sets.propensity
    np.logical_or.at(no_reward, of[shown], np.isnan(sets.reward[shown]))
    np.logical_or.at(no_prop, of[shown], ~((p[shown] > 0.0) & (p[shown] <= 1.0)))
    no_prop &= ~no_reward
    keep = ~(no_reward | no_prop)[of]
    idx = np.flatnonzero(keep)
    cols = sets.flat(system)
    if not keep.all():
        cols = cols.take(idx)
    units = np.asarray(sets.units, dtype=object)[of[idx]]
    counts = {"decisions_read": sets.n_decisions + sum(sets.excluded.values()), "decisions": int(sets.n_decisions
              - no_reward.sum() - no_prop.sum()), **sets.excluded}
    for name, mask in (("without_reward", no_reward), ("without_propensity", no_prop)):
        if mask.any():
            counts[name] = int(mask.sum())
    return PolicyRows(cols=cols, X=system.features.batch(cols), units=units, shown=shown[idx], reward=sets.reward[idx],
                      propensity=p[idx], counts=counts)


def check_click_rewards(rows: PolicyRows, dataset_id: str) -> np.ndarray:
    """The shown rows' 0/1 labels: the reward model fitted here is a click model (train's rule)."""
    r = rows.reward[rows.shown]
    bad = (r != 0.0) & (r != 1.0)
    if bad.any():
        raise IntelligenceError(
            f"The 'reward' of dataset {dataset_id!r} must be 0 or 1 for the reward model fitted here (a click model); "
            f"pass reward_model= (a bundle predicting the reward) to learn from a graded reward. Got "
            f"{float(r[np.flatnonzero(bad)[0]])!r} instead ({int(bad.sum())} such slots).")
    return (r > 0.0).astype(np.int64)


def _fit_reward_model(system: System, model: str, params: dict[str, Any], rows: PolicyRows, where: np.ndarray,
                      y_shown: np.ndarray, who: str) -> Intelligence:
    """The reward model (train's fit of ``model``) on the shown rows among ``where``."""
    from closedloop.training.fitting import _fit, lightgbm_defaults

    shown_idx = np.flatnonzero(rows.shown)
    pick = where[shown_idx]
    idx, y = shown_idx[pick], y_shown[pick]
    if idx.size == 0 or y.min() == y.max():
        raise IntelligenceError(f"The reward model of {who} needs shown slots with both rewards 0 and 1. Got {idx.size} "
                                f"shown slots with {int(y.sum())} positive instead.")
    sized = lightgbm_defaults(params, y) if model == "lightgbm" else {}
    return _fit(system, model, {**params, **sized}, rows.cols.take(idx), y, None, rows.X[idx])


def reward_predictions(system: System, rows: PolicyRows, *, model: str, params: dict[str, Any], reward_model: Any,
                       y_shown: np.ndarray | None, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """r̂ of every candidate of ``rows`` → (predictions, the lineage's ``reward_model``): the given
    bundle's score, else the reward model fitted on the units of the other fold (two folds by unit,
    :func:`~closedloop.system.splits.unit_is_test` with ``seed``), so no row's r̂ was fitted on it."""
    score = experience_score(system, "train_policy", has_output=False)
    if reward_model is not None:
        scorer = reward_model.intelligence.bind(system.features)
        S = np.asarray(scorer.batch(rows.X, rows.cols), dtype=np.float64)[:, scorer.outputs.index(score)]
        return S, {"source": "given", "version": reward_model.version, "cross_fitted": False}
    from closedloop.system.splits import unit_is_test

    labels = y_shown if y_shown is not None else np.zeros(0, dtype=np.int64)
    fold = unit_is_test(pa.array(rows.units.tolist(), pa.string()), 0.5, seed)
    r_hat = np.empty(rows.n, dtype=np.float64)
    sizes = []
    for side in (False, True):
        m = _fit_reward_model(system, model, params, rows, fold != side, labels, f"cross-fitting fold {int(side)}")
        scorer = m.bind(system.features)
        here = np.flatnonzero(fold == side)
        r_hat[here] = np.asarray(scorer.batch(rows.X[here], rows.cols.take(here)), dtype=np.float64)[:, 0]
        sizes.append(int(here.size))
    return r_hat, {"source": "fitted", "model": model, "cross_fitted": True, "folds": 2, "fold_rows": sizes,
                   "fold_seed": seed}


def pseudo_rewards(rows: PolicyRows, r_hat: np.ndarray, clip: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Γ of every candidate (module doc) → (Γ, the lineage's figures: rows, shown, clipped, mean Γ)."""
    gamma = r_hat.copy()
    s = np.flatnonzero(rows.shown)
    w = 1.0 / rows.propensity[s]
    clipped = int((w > clip).sum())
    gamma[s] += np.minimum(w, clip) * (rows.reward[s] - r_hat[s])
    return gamma, {"rows": rows.n, "shown": int(s.size), "clip": clip, "clipped": clipped,
                   "mean_pseudo_reward": float(gamma.mean()) if gamma.size else None,
                   "mean_reward_prediction": float(r_hat.mean()) if r_hat.size else None}


def _logistic_on_targets(X: np.ndarray, gamma: np.ndarray, *, C: float) -> tuple[np.ndarray, float]:
    """The logistic model f = b + w·x minimizing mean(softplus(f) − Γ·f) + ‖w‖² / (2·C·n) on standardized
    features (folded back into the raw weights): the log loss with the targets Γ, which is linear in
    Γ — so its expectation over the logging is the log loss against the true reward — and convex in
    (w, b) whatever Γ's sign or size (softplus is convex, −Γ·f linear)."""
    from scipy.optimize import minimize

    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = (X - mu) / sd
    n = Z.shape[0]
    lam = 1.0 / (C * n)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        f = Z @ theta[1:] + theta[0]
        g = 1.0 / (1.0 + np.exp(-f)) - gamma  # d/df of softplus(f) − Γ·f
        val = float(np.mean(np.logaddexp(0.0, f) - gamma * f)) + 0.5 * lam * float(theta[1:] @ theta[1:])
        grad = np.concatenate([[g.mean()], Z.T @ g / n + lam * theta[1:]])
        return val, grad

    res = minimize(loss, np.zeros(Z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    w = res.x[1:] / sd
    return w, float(res.x[0] - w @ mu)


def fit_policy(system: System, model: str, params: dict[str, Any], X: np.ndarray, gamma: np.ndarray
               ) -> tuple[Intelligence, dict[str, Any]]:
    """The fit of Γ on the features → (the policy intelligence, the lineage's ``policy_model``):
    ``"logistic"``: the logistic model minimizing the log loss with the targets Γ
    (:func:`_logistic_on_targets`, ``params["C"]`` its inverse L2 penalty, default 1) as a
    :class:`~closedloop.intelligence.LogisticModel` — the same family and link as the DM reward
    model, so the two differ only by what they are fitted to; ``"lightgbm"``: a LightGBM regression
    (``objective=regression``, train's regularized defaults sized to the shown rows' clicks,
    ``params`` over them) as a :class:`~closedloop.intelligence.LightGBMModel`."""
    names = list(system.features.names)
    output = experience_score(system, "train_policy", has_output=False)
    if not np.isfinite(X).all():
        row, j = (int(v[0]) for v in np.nonzero(~np.isfinite(X)))
        raise IntelligenceError(f"Feature '{names[j]}' must be finite to learn a policy. Got {X[row, j]!r} instead (row {row}).")
    if model == "logistic":
        from closedloop.intelligence import LogisticModel

        w, b = _logistic_on_targets(X, gamma, C=float(params.get("C", 1.0)))
        return LogisticModel(dict(zip(names, w.tolist(), strict=True)), b, output=output), {
            "kind": "logistic", "loss": "softplus(f) − Γ·f", "C": float(params.get("C", 1.0))}
    if model == "lightgbm":
        import lightgbm

        from closedloop.intelligence import LightGBMModel
        from closedloop.training.fitting import _LGBM_DEFAULTS

        p = {k: v for k, v in params.items() if k != "objective"}
        rounds = int(p.pop("num_boost_round", 100))
        full = {**_LGBM_DEFAULTS, "objective": "regression", **p}
        booster = lightgbm.train(full, lightgbm.Dataset(X, label=gamma, feature_name=names), num_boost_round=rounds)
        return LightGBMModel.from_booster(booster, names, output=output), {"kind": "lightgbm", "objective": "regression",
                                                                           "num_boost_round": rounds}
    raise SpecError(f"The 'model' parameter of train_policy must be 'logistic' or 'lightgbm'. Got {model!r} instead.")

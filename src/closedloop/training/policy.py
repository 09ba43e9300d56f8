"""Learn a ranking or choice-of-one policy from a per-slot reward dataset: doubly robust (``"dr"``)
or the direct method (``"dm"``).

::

    run = train_policy(system, "home/datasets/<id>", objective="dr", model="logistic", clip=10.0)
    run.bundle   # its score ranks candidates: the regression of the DR pseudo-rewards

**DM** (``objective="dm"``) ranks by the reward model r̂ itself: exactly what
:func:`~closedloop.training.train` fits on the shown slots (a click model), so both objectives
come from one call. r̂ is fitted where the logger showed items: where it rarely showed them
(low-ranked, unpopular, unexplored) r̂ is an extrapolation, and a misspecified r̂ is biased there.

**DR** (``objective="dr"``) needs each decision's whole candidate set
(:func:`~closedloop.datasets.candidate_sets.read_candidate_sets`: a dataset built from telemetry
that logged its candidates). Every candidate of every decision — shown or not — gets the pseudo-reward
``Γ = r̂ + 1{shown at slot j} · min(1/p_j, clip) · (r_j − r̂)`` (:mod:`closedloop.training.pseudo_rewards`:
the formula and the per-slot reading for ``k`` > 1), and the policy is a regression of Γ on the
request × candidate features over all of them: what was rarely shown is neither ignored (its
r̂ is there) nor over-trusted (a shown candidate's residual corrects r̂ where the log has
evidence, weighted by its inverse propensity, clipped at ``clip``). r̂ is ``reward_model`` (a
bundle whose ``score`` predicts the reward) or is fitted by train's code for ``model`` on the
shown slots, **cross-fitted** in two folds by unit: each candidate's r̂ comes from the model
fitted on the other fold's units, so a row's residual is not shrunk by a fit on itself.

``model``: ``"logistic"`` (a logistic reward model; the policy a logistic model fitted to the
targets Γ — the log loss ``softplus(f) − Γ·f`` is linear in Γ, so its expectation over the logging
is the log loss against the true reward, and convex whatever Γ's sign) or ``"lightgbm"`` (a binary
LightGBM reward model; the policy a LightGBM regression of Γ). ``params`` go to the reward model as train's ``params`` (and,
for LightGBM, to the policy's regression, its objective set to ``regression``).

**Rows.** The train side of ``split`` (default ``system.split``), as :func:`train` takes it (the
split divides the slot rows with a reward; each decision goes to its rows' side), so an
evaluation's test side stays held out. Decisions whose candidate set cannot be read are left out
and counted (the candidate sets' reasons), and so are decisions with a shown slot without a reward
or without a propensity in (0, 1]; a non-finite reward is refused naming the decision and slot.

**Output.** A :class:`~closedloop.training.train.TrainRun` like train's: the bundle (its
intelligence's output is the experience's score), ``metrics`` ``{"lineage", "train",
"heldout"}`` — ``train`` / ``heldout`` the AUC (and log loss when the scores are probabilities) of
the policy's score against the shown slots' rewards on each side — and ``lineage`` train's fields
plus ``objective``, ``dataset_kind: "reward"`` and, for DR, ``candidate_sets`` (decisions read,
kept, left out by why), ``reward_model`` (given or fitted; folds), ``pseudo_rewards`` (rows,
shown, ``clip``, rows clipped, mean Γ) and ``policy_model``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import IntelligenceError, SpecError
from closedloop.runtime.bundle import Bundle
from closedloop.system.spec import System
from closedloop.system.splits import Split
from closedloop.system.splits import split as split_rows
from closedloop.training.pseudo_rewards import (
    PolicyRows,
    check_click_rewards,
    fit_policy,
    policy_rows,
    pseudo_rewards,
    reward_predictions,
    slot_table,
)
from closedloop.training.train import TrainRun, _lineage, _quality, train

__all__ = ["DEFAULT_CLIP", "OBJECTIVES", "train_policy"]

OBJECTIVES = ("dr", "dm")
_MODELS = ("logistic", "lightgbm")
#: The default cap of a shown slot's importance weight 1/p (a propensity below 1/10 counts as 1/10).
#: bench/policy_dr.py: in the bandit world DR's true value against DM's is −0.010…+0.002 at 20,
#: −0.004…+0.001 at 10 and −0.002…+0.001 at 5 — the clip trades the residual's variance for r̂'s bias.
DEFAULT_CLIP = 10.0


def _check_arguments(system: Any, objective: Any, model: Any, params: Any, reward_model: Any, clip: Any,
                     split: Any) -> tuple[dict[str, Any], Split]:
    """train_policy's parameters checked before the dataset is read → (a copy of params, the split)."""
    from closedloop.experience.experiences import Ranking

    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of train_policy must be a closedloop.System. Got {system!r} instead.")
    if system.candidate_schema is None or not isinstance(system.experience, Ranking):
        raise SpecError(f"train_policy learns a ranking policy: the 'system' must have candidates and a Ranking experience. "
                        f"System '{system.name}' has {system.experience!r} instead.")
    if objective not in OBJECTIVES:
        raise SpecError(f"The 'objective' parameter of train_policy must be one of {list(OBJECTIVES)}. Got {objective!r} instead.")
    if model not in _MODELS:
        raise SpecError(f"The 'model' parameter of train_policy must be one of {list(_MODELS)}. Got {model!r} instead.")
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(f"The 'params' parameter of train_policy must be a mapping. Got {params!r} instead.")
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not (math.isfinite(clip) and clip >= 1.0):
        raise SpecError(f"The 'clip' parameter of train_policy must be a finite number ≥ 1 (the largest importance "
                        f"weight 1/p). Got {clip!r} instead.")
    if reward_model is not None:
        if objective == "dm":
            raise SpecError("The 'reward_model' parameter of train_policy applies to objective 'dr' (objective 'dm' fits "
                            f"the reward model itself). Got {reward_model!r} with objective 'dm' instead.")
        if not isinstance(reward_model, Bundle) or system.experience.score not in reward_model.intelligence.outputs:
            raise SpecError(f"The 'reward_model' parameter of train_policy must be a Bundle whose intelligence outputs "
                            f"'{system.experience.score}' (the predicted reward). Got {reward_model!r} instead.")
        reward_model.intelligence.bind(system.features)  # its features must be the system's
    sp = split if split is not None else system.split
    if not isinstance(sp, Split):
        raise SpecError(f"The 'split' parameter of train_policy must be a closedloop Split. Got {sp!r} instead.")
    return dict(params or {}), sp


def _side_quality(system: System, intelligence: Any, rows: PolicyRows | None) -> dict[str, Any]:
    """The policy score's AUC (log loss when a probability) against the shown slots' rewards."""
    if rows is None or not rows.shown.any():
        return {"n": 0}
    s = np.flatnonzero(rows.shown)
    scorer = intelligence.bind(system.features)
    S = np.asarray(scorer.batch(rows.X[s], rows.cols.take(s)), dtype=np.float64)[:, 0]
    return _quality((rows.reward[s] > 0.0).astype(np.int64), S)


def _sides(table: Any, split: Split, dataset_id: str) -> tuple[Any, Any]:
    """The slot rows of the train and the test side: ``split`` divides the rows with a reward, as
    :func:`train` divides them (a time split's cut-off is theirs), and each decision goes wholly to
    the side of its rows (one unit and one time each)."""
    r = pc.fill_null(table["reward"].cast(pa.float64()), float("nan"))
    rewarded = table.filter(pc.invert(pc.is_nan(r)))
    train_idx, test_idx = split_rows(rewarded, split)
    if train_idx.size == 0:
        raise IntelligenceError(f"The split {split.describe()} leaves no training rows in dataset {dataset_id!r}.")
    ids = rewarded["decision_id"]
    on = [pc.is_in(table["decision_id"], value_set=pc.unique(ids.take(pa.array(idx)))) for idx in (train_idx, test_idx)]
    return table.filter(on[0]), table.filter(on[1])


def _dm(system: System, dataset: Path, *, model: str, params: dict[str, Any], parent: str | None, split: Split,
        loaded: tuple[Any, Any] | None) -> TrainRun:
    """DM: train's reward model, its lineage marked ``objective: "dm"``."""
    run = train(system, dataset, model=model, params=params, parent=parent, split=split, loaded=loaded)
    metrics = {**run.metrics, "lineage": {**run.metrics["lineage"], "objective": "dm"}}
    bundle = Bundle.build(system, run.model, parent=parent, metrics=metrics)
    return TrainRun(bundle=bundle, metrics=bundle.metrics, model=run.model, scores=run.scores)


def _dr(system: System, dataset: Path, *, model: str, params: dict[str, Any], reward_model: Bundle | None,
        parent: str | None, split: Split, loaded: tuple[Any, Any] | None, clip: float) -> TrainRun:
    """DR: the train side's candidate sets, r̂ (cross-fitted), Γ, the regression, the lineage, the bundle."""
    from closedloop.datasets.candidate_sets import _manifest

    manifest = _manifest(system, dataset)  # a per-slot dataset with candidate sets, for this system
    table = slot_table(dataset, loaded)
    train_side, test_side = _sides(table, split, manifest.id)
    rows = policy_rows(system, dataset, train_side, manifest.id)
    if rows is None or rows.n == 0 or not rows.shown.any():
        raise IntelligenceError(f"The dataset {manifest.id!r} must have decisions with a readable candidate set and "
                                f"shown slots to learn a policy. Got none on the train side instead.")
    y_shown = check_click_rewards(rows, manifest.id) if reward_model is None else None
    r_hat, rm = reward_predictions(system, rows, model=model, params=params, reward_model=reward_model,
                                   y_shown=y_shown, seed=int(split.seed) + 7)
    gamma, figures = pseudo_rewards(rows, r_hat, clip)
    sized = {}
    if model == "lightgbm":
        from closedloop.training.fitting import lightgbm_defaults

        sized = lightgbm_defaults(params, (rows.reward[rows.shown] > 0.0).astype(np.int64))
    intelligence, policy_model = fit_policy(system, model, {**params, **sized}, rows.X, gamma)
    test_rows = policy_rows(system, dataset, test_side, manifest.id)
    kind = {"dataset_kind": "reward", "objective": "dr", "candidate_sets": rows.counts, "reward_model": rm,
            "pseudo_rewards": figures, "policy_model": policy_model}
    lineage = _lineage(manifest, parent=parent, model=model, params=params, sized=sized, sp=split, calibration=None,
                       w_all=None, fit_w=None, chosen={"rule": "system"}, kind=kind)
    metrics = {"lineage": lineage, "train": _side_quality(system, intelligence, rows),
               "heldout": _side_quality(system, intelligence, test_rows)}
    bundle = Bundle.build(system, intelligence, parent=parent, metrics=metrics)
    return TrainRun(bundle=bundle, metrics=bundle.metrics, model=intelligence)


def train_policy(
    system: System,
    dataset: Path | str,
    *,
    objective: str = "dr",
    model: str = "logistic",
    params: Mapping[str, Any] | None = None,
    reward_model: Bundle | None = None,
    parent: str | None = None,
    split: Split | None = None,
    loaded: tuple[Any, Any] | None = None,
    clip: float = DEFAULT_CLIP,
) -> TrainRun:
    """Learn ``system``'s ranking policy from the per-slot reward dataset at ``dataset`` by
    ``objective`` (``"dr"``: doubly robust; ``"dm"``: the reward model) → a :class:`TrainRun` whose
    bundle (built, not saved) carries lineage and metrics. Rules: module docstring. ``loaded``: what
    ``load_dataset(dataset, system)`` returned, when the caller has it already."""
    params_, sp = _check_arguments(system, objective, model, params, reward_model, clip, split)
    dataset = Path(dataset)
    if objective == "dm":
        return _dm(system, dataset, model=model, params=params_, parent=parent, split=sp, loaded=loaded)
    return _dr(system, dataset, model=model, params=params_, reward_model=reward_model, parent=parent, split=sp,
               loaded=loaded, clip=float(clip))

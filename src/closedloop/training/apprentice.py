"""Apprentice mode: a candidate that first learns to rank like the policy that logged the data.

::

    run = train_apprentice(system, "home/datasets/<id>")    # a per-slot reward dataset with candidate sets
    run.metrics["apprentice"]   # {"agreement", "interval", "n", "top_k_overlap", …} on the held-out decisions
    run.metrics["lineage"]["objective"]    # "imitate"

A system often starts with a heuristic. Its logs say what it chose, not whether that was good: an
apprentice imitates the choices (no reward is read), serves as a shadow until its agreement with
production reaches a declared share (:func:`closedloop.evaluation.agreement.shadow_agreement`), is
promoted, and goes on to learn from rewards. The rules:

Rows
    Every logged decision's **whole** candidate set
    (:func:`~closedloop.datasets.candidate_sets.read_candidate_sets`) on the train side of
    ``system.split`` — the dataset's slot rows divided as :func:`~closedloop.training.train`
    divides them (:func:`~closedloop.training.train.training_rows`), so the evaluation's test side
    stays held out. Each candidate is a request × candidate row, as the runtime scores it.
The reading of a slate (listwise, slot by slot)
    The logger filled slot ``j`` by choosing among the candidates it had not put in slots ``< j``
    (greedily or by a draw: ``Ranking``'s per-slot policy). Each shown slot ``j`` is therefore one
    choice: its rows are the candidates not shown above ``j``, labeled 1 for the candidate shown at
    ``j`` and 0 for the others; a decision that shows ``m`` slots gives ``m`` choices (``N + (N − 1) +
    …`` rows). With ``k = 1`` that is the candidate set with the first choice labeled 1. A pointwise
    classifier fitted on these rows scores a candidate by how likely the logger was to pick it
    next, which orders candidates as the logger's own score did when the logger's choice grows with
    its score (greedy, softmax, ε-greedy). A decision whose shown slots are not 1 … m (a slot's
    reward left out of the dataset) is left out and counted ``slots_missing``: a missing slot would
    leave its candidate among the next slot's rivals.
Model
    ``"logistic"`` (default), ``"lightgbm"`` (defaults sized to the imitation labels as
    :func:`~closedloop.training.fitting.lightgbm_defaults` sizes them) or ``"sklearn:MODULE:CLASS"``,
    fitted by :mod:`closedloop.training.fitting` (unweighted); ``"heuristic"`` is refused (nothing
    would be learned). The output is the experience's ``score``: the bundle ranks through the
    runtime's candidate path.
Metrics
    ``metrics["train"]`` / ``["heldout"]``: the AUC and log loss of the imitation labels over each
    side's choice rows. ``metrics["apprentice"]``: on the held-out decisions, the share whose
    greedy first choice equals the logged first choice with its 95% interval by unit, ``n``, the
    top-k overlap, and the decisions left out (``excluded``: the candidate sets' own counts and
    ``slots_missing``) — :func:`~closedloop.evaluation.agreement.agreement_on_sets`, the measure
    :func:`~closedloop.evaluation.agreement.log_agreement` takes through the runtime. A logger
    that explores caps it: its own greedy choice agrees with its log only as often as its draw kept
    its top candidate.
Lineage
    :func:`~closedloop.training.train`'s (dataset, split, model, params, defaults, code version,
    parent), with ``dataset_kind`` ``"reward"``, ``objective`` ``"imitate"`` and
    ``imitation_rows`` (``decisions``, ``choices``, ``rows``, ``slots_missing``, the candidate sets'
    ``excluded``, and the ``label`` rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.errors import IntelligenceError, SpecError
from closedloop.experience.experiences import Ranking
from closedloop.runtime.bundle import Bundle
from closedloop.system.spec import System
from closedloop.system.splits import Split
from closedloop.training.fitting import _check_model, _fit, lightgbm_defaults
from closedloop.training.logistic import experience_score
from closedloop.training.train import TrainRun, _lineage, _quality, _rows_of, _score_matrix, training_rows

__all__ = ["LABEL_RULE", "imitation_rows", "train_apprentice"]

#: What an imitation row's label means (recorded in the lineage).
LABEL_RULE = "1: the candidate the logger showed at slot j, among the candidates not shown above j"


def _check_arguments(system: Any, model: Any, params: Any) -> dict[str, Any]:
    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of train_apprentice must be a closedloop.System. Got {system!r} instead.")
    if not isinstance(system.experience, Ranking) or system.candidate_schema is None:
        raise SpecError(f"The 'system' parameter of train_apprentice must be a ranking system (candidates and a Ranking "
                        f"experience: an apprentice imitates a ranking policy). Got System '{system.name}' with "
                        f"{system.experience!r} instead.")
    if model == "heuristic":
        raise SpecError("The 'model' parameter of train_apprentice must be a model that is fitted ('logistic', 'lightgbm' "
                        "or 'sklearn:MODULE:CLASS'). Got 'heuristic' instead.")
    _check_model(model)
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(f"The 'params' parameter of train_apprentice must be a mapping. Got {params!r} instead.")
    if not isinstance(system.split, Split):
        raise SpecError(f"The split of System '{system.name}' must be a closedloop Split. Got {system.split!r} instead.")
    return dict(params or {})


def _slot_rows(manifest: Any, loaded: Any) -> pa.Table:
    """The dataset's slot rows: ``loaded`` (a table, or what ``load_dataset`` returned) or its data file."""
    import pyarrow.parquet as pq

    if loaded is not None:
        return loaded[0] if isinstance(loaded, tuple) else loaded
    return pq.read_table(manifest.data_path)


def _complete(sets: Any) -> np.ndarray:
    """Per decision: whether its shown slots are exactly 1 … m (a dataset holds one row per
    (decision, slot), so m shown candidates whose highest slot is m fill 1 … m)."""
    offsets = np.asarray(sets.offsets, dtype=np.int64)
    decision = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    slot = np.asarray(sets.slot, dtype=np.int64)
    n = offsets.size - 1
    shown = np.bincount(decision, weights=slot > 0, minlength=n)
    top = np.zeros(n, dtype=np.int64)
    np.maximum.at(top, decision, slot)
    return (shown == top) & (top > 0)


def imitation_rows(system: System, sets: Any) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The choice rows of the candidate sets ``sets`` (module doc, "The reading of a slate") → (each
    row's flat candidate index in ``sets``, its 0/1 label, counts: ``decisions``, ``choices``,
    ``rows``, ``slots_missing``)."""
    offsets = np.asarray(sets.offsets, dtype=np.int64)
    decision = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    slot = np.asarray(sets.slot, dtype=np.int64)
    ok = _complete(sets)
    k = int(getattr(system.experience, "k", 1))
    top = int(slot.max()) if slot.size else 0
    idx, labels = [], []
    for j in range(1, min(k, top) + 1):
        has_j = np.bincount(decision, weights=slot == j, minlength=ok.size) > 0
        rows = np.flatnonzero(ok[decision] & has_j[decision] & ((slot == 0) | (slot >= j)))
        idx.append(rows)
        labels.append((slot[rows] == j).astype(np.int64))
    flat = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    counts = {"decisions": int(ok.sum()), "choices": int(y.sum()), "rows": int(flat.size), "slots_missing": int((~ok).sum())}
    return flat, y, counts


def _side(system: System, sets: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """One side's flat candidate rows and features, and its choice rows → (flat Columns, features of
    the flat rows, choice rows' flat indices, their labels, counts)."""
    flat = sets.flat(system)
    X = system.features.batch(flat)
    idx, y, counts = imitation_rows(system, sets)
    return flat, X, idx, y, counts


def _scores(system: System, intelligence: Any, cols: Any, X: np.ndarray) -> np.ndarray:
    """The experience's score of each row of ``cols`` through the model's bound scorer (the runtime's path)."""
    bound = intelligence.bind(system.features)
    col = list(bound.outputs).index(experience_score(system, "train_apprentice", has_output=False))
    return _score_matrix(system, intelligence, cols, X)[:, col]


def _held_out(system: System, intelligence: Any, sets: Any | None, excluded: dict[str, int]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The held-out side's imitation quality and agreement → (``heldout``, ``apprentice``)."""
    from closedloop.evaluation.agreement import agreement_on_sets

    if sets is None or sets.n_decisions == 0:
        return {"n": 0}, {"agreement": None, "interval": [None, None], "n": 0, "units": 0, "top_k_overlap": None,
                          "top_k_interval": [None, None], "excluded": excluded}
    flat, X, idx, y, counts = _side(system, sets)
    s = _scores(system, intelligence, flat, X)
    held = _quality(y, s[idx]) if idx.size else {"n": 0}
    agree = agreement_on_sets(sets, s)
    agree.pop("no_first_slot")
    return held, {**agree, "excluded": {**excluded, "slots_missing": counts["slots_missing"]}}


def train_apprentice(
    system: System,
    dataset: Path | str,
    *,
    model: str = "logistic",
    params: Mapping[str, Any] | None = None,
    parent: str | None = None,
    loaded: Any = None,
) -> TrainRun:
    """A bundle that ranks like the policy that logged the per-slot reward dataset at ``dataset``
    (module doc) → a :class:`~closedloop.training.train.TrainRun` (bundle built, not saved).
    ``loaded``: the dataset's slot rows when the caller has them (an Arrow table, or what
    ``load_dataset(dataset, system)`` returned); the candidate sets are read from the dataset.

    The stages: the arguments checked, the slot rows split as :func:`~closedloop.training.train`
    splits them, each side's candidate sets read, the choice rows of the train side fitted, the
    held-out side scored (imitation quality and agreement), the lineage written and the bundle built."""
    from closedloop.datasets.candidate_sets import _manifest, read_candidate_sets

    params = _check_arguments(system, model, params)
    path = Path(dataset)
    manifest = _manifest(system, path)
    rows = _slot_rows(manifest, loaded)
    fit_rows, _, test_rows = training_rows(rows, system.split, False, manifest.id)
    fit_sets = read_candidate_sets(system, path, rows=rows.take(pa.array(fit_rows)))
    test_sets = read_candidate_sets(system, path, rows=rows.take(pa.array(test_rows))) if test_rows.size else None
    flat, X, idx, y, counts = _side(system, fit_sets)
    if y.size == 0 or y.sum() == 0 or y.sum() == y.size:
        raise IntelligenceError(f"train_apprentice needs logged choices among several candidates on the train side of dataset "
                                f"{manifest.id!r}. Got {counts['choices']} choices over {y.size} candidate rows instead.")
    cols, X_fit = flat.take(idx), _rows_of(X, idx)
    sized = lightgbm_defaults(params, y) if model == "lightgbm" else {}
    intelligence = _fit(system, model, {**params, **sized}, cols, y, None, X_fit)
    train_q = _quality(y, _scores(system, intelligence, cols, X_fit))
    excluded = dict(test_sets.excluded) if test_sets is not None else {}
    held_q, agreement = _held_out(system, intelligence, test_sets, excluded)
    kind = {"dataset_kind": "reward", "objective": "imitate",
            "imitation_rows": {"label": LABEL_RULE, **counts, "excluded": fit_sets.excluded}}
    lineage = _lineage(manifest, parent=parent, model=model, params=params, sized=sized, sp=system.split, calibration=None,
                       w_all=None, fit_w=None, chosen={"rule": "system"}, kind=kind)
    metrics = {"lineage": lineage, "train": train_q, "heldout": held_q, "apprentice": agreement}
    bundle = Bundle.build(system, intelligence, parent=parent, metrics=metrics)
    return TrainRun(bundle=bundle, metrics=bundle.metrics, model=intelligence)

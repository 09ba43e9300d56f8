"""Fit a stacking meta-model over existing intelligences.

::

    stack = fit_stacking(phishing, [model, heuristic], columns, labels)   # a Stacking
    Bundle.build(phishing, stack)

The members' scores are computed the way the runtime computes them — the batch is validated by
the system's schema, featurized by its feature set, and each member is scored through its bound
scorer — and scikit-learn's ``LogisticRegression`` fits ``sigmoid(intercept + Σ wᵢ·t(sᵢ))`` on
them. Only the weights are kept. Fit on data the members were not trained on (a held-out split):
scores of a member on its own training data look better than they are, and the meta-model would
trust it too much.

By default ``t`` is the log-odds (``transform="logit"``). Weighing probabilities themselves
(``transform="identity"``) squeezes a confident model's 0.99 and 0.9999 together while a coarse
heuristic's steps stay wide, and on the phishing example such a stack ranked worse than its best
member (held-out AUC up to ≈0.008 lower); on the log-odds scale it matched or beat it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.errors import IntelligenceError, SpecError
from closedloop.intelligence import Intelligence, Stacking
from closedloop.intelligence.combine import logit_array
from closedloop.system.spec import System
from closedloop.training.logistic import experience_score, labelled_features

__all__ = ["fit_stacking"]


def fit_stacking(
    system: System,
    members: Sequence[Intelligence],
    batch: Any,
    labels: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    output: str | None = None,
    transform: str = "logit",
) -> Stacking:
    """A :class:`~closedloop.intelligence.Stacking` of ``members`` whose weights and intercept are
    an L2-regularized logistic regression of ``labels`` on the members' scores of ``batch``.

    Parameters
    ----------
    system:
        The :class:`~closedloop.System` whose schema validates ``batch`` and whose features the
        members read.
    members:
        The intelligences to combine; each has exactly one output.
    batch:
        A columnar batch (Arrow table / record batch, or a mapping of column → array or list);
        every row must be valid. Use data the members were not trained on.
    labels:
        One label per row: 0/1 (1 = ``system.labels[1]``) or the class names. Both classes must occur.
    C:
        Inverse regularization strength (> 0), as in scikit-learn.
    max_iter:
        Iterations of the solver (lbfgs).
    output:
        The score's name; by default the score the system's experience reads.
    transform:
        What the meta-model weighs: each member's score's log-odds (``"logit"``, the default)
        or the score itself (``"identity"``).
    """
    owner = "fit_stacking"
    _check_arguments(system, C, max_iter, owner)
    if output is None:
        output = experience_score(system, owner)
    # Validates the members (non-empty, one output each) and the output name before any work.
    zeros = [0.0] * (len(members) if isinstance(members, Sequence) else 0)
    members = list(Stacking(members, zeros, 0.0, output=output, transform=transform).members)

    cols, y, X = labelled_features(system, batch, labels, owner)
    S = _member_scores(system, members, cols, X, owner)
    if transform == "logit":
        _to_logit(S, members, owner)
    weights, intercept = _fit_meta(S, y, C, max_iter)
    return Stacking(members, weights, intercept, link="logistic", output=output, transform=transform)


def _check_arguments(system: Any, C: Any, max_iter: Any, owner: str) -> None:
    """Refuse a ``system`` that is not a System, a ``C`` that is not a finite number > 0 and a
    ``max_iter`` that is not an integer ≥ 1."""
    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of {owner} must be a closedloop.System. Got {system!r} instead.")
    if isinstance(C, bool) or not isinstance(C, int | float) or not (math.isfinite(C) and C > 0):
        raise SpecError(f"The 'C' parameter of {owner} must be a finite number > 0. Got {C!r} instead.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise SpecError(f"The 'max_iter' parameter of {owner} must be an integer ≥ 1. Got {max_iter!r} instead.")


def _member_scores(system: System, members: Sequence[Intelligence], cols: Any, X: np.ndarray, owner: str) -> np.ndarray:
    """Each member's score of every row through its bound scorer (one column per member), refused
    when one is not finite."""
    S = np.empty((cols.n, len(members)), dtype=np.float64, order="F")
    for i, member in enumerate(members):
        S[:, i] = np.asarray(member.bind(system.features).batch(X, cols), dtype=np.float64)[:, 0]
    finite = np.isfinite(S)
    if not finite.all():
        row, i = (int(v[0]) for v in np.nonzero(~finite))
        raise IntelligenceError(
            f"The score of member {i} ({members[i]!r}) must be finite for {owner}. "
            f"Got {float(S[row, i])!r} instead (row {row})."
        )
    return S


def _to_logit(S: np.ndarray, members: Sequence[Intelligence], owner: str) -> None:
    """The members' scores (probabilities in [0, 1], else refused) replaced in place by their
    log-odds (``transform="logit"``)."""
    outside = (S < 0.0) | (S > 1.0)
    if outside.any():
        row, i = (int(v[0]) for v in np.nonzero(outside))
        raise IntelligenceError(
            f"The score of member {i} ({members[i]!r}) must be in [0, 1] for {owner} with "
            f"transform='logit' (use transform='identity' for raw scores). "
            f"Got {float(S[row, i])!r} instead (row {row})."
        )
    for i in range(S.shape[1]):
        S[:, i] = logit_array(S[:, i])


def _fit_meta(S: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> tuple[list[float], float]:
    """The meta-model: scikit-learn's L2-regularized ``LogisticRegression`` of ``y`` on the
    (transformed) member scores → (the weights, the intercept)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=float(C), max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(S, y)
    weights = np.asarray(clf.coef_, dtype=np.float64).reshape(-1).tolist()
    intercept = float(np.asarray(clf.intercept_, dtype=np.float64).reshape(-1)[0])
    return weights, intercept

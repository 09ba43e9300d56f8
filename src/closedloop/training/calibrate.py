"""Calibrate an intelligence's score on held-out data.

::

    calibrated = calibrate(phishing, model, held_out_columns, held_out_labels, method="isotonic")
    Bundle.build(phishing, calibrated)

The base's scores are computed the way the runtime computes them — the batch is validated by the
system's schema, featurized by its feature set, and scored through the intelligence's bound
scorer — and scikit-learn fits the map from score to probability on them:

``"isotonic"``
    ``IsotonicRegression(increasing=True, y_min=0, y_max=1)``; its knots (``X_thresholds_``,
    ``y_thresholds_``) become a :class:`~closedloop.intelligence.Calibrated` isotonic map. It can
    fix any monotone miscalibration; it needs a few hundred rows of each class to be smooth.
``"platt"``
    ``LogisticRegression`` (almost unregularized) of the labels on the one-column score;
    ``sigmoid(a·s + b)``. Two parameters: fine for small data, but it can only stretch and shift
    the score's log-odds-like scale.

Use data the base was not trained on: a model's scores on its own training data are more
confident than they will be in use, and the map would learn that overconfidence.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from closedloop.errors import IntelligenceError, SpecError
from closedloop.intelligence import Calibrated, Intelligence
from closedloop.system.spec import System
from closedloop.training.logistic import labelled_features

__all__ = ["calibrate"]

_METHODS = ("isotonic", "platt")


def calibrate(
    system: System,
    intelligence: Intelligence,
    batch: Any,
    labels: Any,
    method: str = "isotonic",
    *,
    output: str | None = None,
) -> Calibrated:
    """A :class:`~closedloop.intelligence.Calibrated` of ``intelligence`` fitted on ``batch``.

    Parameters
    ----------
    system:
        The :class:`~closedloop.System` whose schema validates ``batch`` and whose features the
        intelligence reads.
    intelligence:
        The intelligence to calibrate: exactly one output, finite scores on ``batch``.
    batch:
        A columnar batch (Arrow table / record batch, or a mapping of column → array or list);
        every row must be valid. Use data the intelligence was not trained on.
    labels:
        One label per row: 0/1 (1 = ``system.labels[1]``) or the class names. Both classes must occur.
    method:
        ``"isotonic"`` (default) or ``"platt"``.
    output:
        The calibrated score's name; by default the intelligence's.
    """
    owner = "calibrate"
    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of {owner} must be a closedloop.System. Got {system!r} instead.")
    if not isinstance(intelligence, Intelligence):
        raise SpecError(f"The 'intelligence' parameter of {owner} must be an Intelligence. Got {intelligence!r} instead.")
    if len(intelligence.outputs) != 1:
        raise IntelligenceError(
            f"The 'intelligence' of {owner} must have exactly one output. Got {intelligence.outputs} instead."
        )
    if method not in _METHODS:
        raise SpecError(f"The 'method' parameter of {owner} must be one of {list(_METHODS)}. Got {method!r} instead.")
    scorer = intelligence.bind(system.features)

    cols, y, X = labelled_features(system, batch, labels, owner)
    s = np.asarray(scorer.batch(X, cols), dtype=np.float64)[:, 0]
    bad = ~np.isfinite(s)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise IntelligenceError(
            f"The score of {intelligence!r} must be finite for {owner}. Got {float(s[row])!r} instead (row {row})."
        )

    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(s, y.astype(np.float64))
        xs = np.asarray(iso.X_thresholds_, dtype=np.float64).tolist()
        ys = np.asarray(iso.y_thresholds_, dtype=np.float64).tolist()
        return Calibrated(intelligence, "isotonic", x=xs, y=ys, output=output)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e6, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(s.reshape(-1, 1), y)
    a = float(np.asarray(clf.coef_, dtype=np.float64).reshape(-1)[0])
    b = float(np.asarray(clf.intercept_, dtype=np.float64).reshape(-1)[0])
    if not (math.isfinite(a) and math.isfinite(b)):  # pragma: no cover - lbfgs on finite data
        raise IntelligenceError(f"Platt calibration of {intelligence!r} did not converge (a={a!r}, b={b!r}).")
    return Calibrated(intelligence, "platt", a=a, b=b, output=output)

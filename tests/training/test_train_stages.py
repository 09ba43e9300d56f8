"""closedloop.training.train's named stages on their own: the fit weights, the
arguments checked before any row is read, and the fitting of one kind of model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from closedloop.errors import SpecError
from closedloop.training import fitting
from closedloop.training.train import _check_arguments, _fit_weights


def test_fit_weights_are_rescaled_to_mean_one_or_dropped():
    table = pa.table({"weight": [1.0, 2.0, 3.0, 6.0]})
    w_all, fit_w = _fit_weights(table, np.array([1, 3]), True)
    assert list(w_all) == [1.0, 2.0, 3.0, 6.0]
    assert fit_w is not None and np.allclose(fit_w, [0.5, 1.5]) and np.isclose(fit_w.mean(), 1.0)
    assert _fit_weights(table, np.array([1, 3]), False)[1] is None
    assert _fit_weights(pa.table({"weight": [1.0, 1.0]}), np.array([0, 1]), True)[1] is None
    assert _fit_weights(pa.table({"unit": ["a"]}), np.array([0]), True) == (None, None)


def test_arguments_are_checked_in_order(phishing):
    with pytest.raises(SpecError, match="'system' parameter of train"):
        _check_arguments(object(), "logistic", "system", None, None, None)
    with pytest.raises(SpecError, match="'model' parameter of train"):
        _check_arguments(phishing, "nope", "system", "sideways", None, None)
    with pytest.raises(SpecError, match="'calibrate' parameter of train"):
        _check_arguments(phishing, "logistic", "system", "sideways", [], None)
    with pytest.raises(SpecError, match="'params' parameter of train"):
        _check_arguments(phishing, "logistic", "system", None, [], None)
    params, sp = _check_arguments(phishing, "logistic", "system", None, {"C": 2.0}, None)
    assert params == {"C": 2.0} and sp is phishing.split


def test_heuristic_fitting_refuses_unknown_params():
    with pytest.raises(SpecError, match="takes params rules, base, lo, hi"):
        fitting._fit_heuristic({"rules": [["ip_in_url", ">", 0.5, 0.5]], "bias": 1}, "phish")
    with pytest.raises(SpecError, match="needs params"):
        fitting._fit_heuristic({}, "phish")

"""The linear and logistic models' batch form (the compiled row loop, or numpy a column at a time
without it) gives the one-row form's score bit for bit: the same sum, left to right, and the same
sigmoid — on any matrix layout, with NaN, ±inf, −0.0 and huge values among the features."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop import LinearModel, LogisticModel
from closedloop.base.numeric import compiled

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # examples/

from examples.feed.system import feed  # noqa: E402

EDGES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324, 1.0, 36.7, -745.0]


def matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=3.0, size=(rows, cols))
    mask = rng.random((rows, cols)) < 0.1
    X[mask] = rng.choice(EDGES, size=int(mask.sum()))
    X[:len(EDGES), 0] = EDGES
    return X


@pytest.mark.parametrize("cls", [LogisticModel, LinearModel])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_batch_is_the_one_row_form_bitwise(cls, layout):
    names = list(feed.features.names)
    rng = np.random.default_rng(1)
    # weights in a different order than the features, one feature left out
    chosen = [names[i] for i in rng.permutation(len(names))[:-1]]
    model = cls({n: float(rng.normal(scale=2.0)) for n in chosen}, intercept=-0.37)
    scorer = model.bind(feed.features)
    X = matrix(500, len(names), 2)
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = np.repeat(X, 2, axis=0)[::2]
    want = np.array([scorer.one(tuple(row), None)[0] for row in X.tolist()])
    got = scorer.batch(X, None)
    assert got.shape == (500, 1)
    assert got[:, 0].tobytes() == want.tobytes()
    assert scorer.batch_numpy(X)[:, 0].tobytes() == want.tobytes()
    assert scorer.batch(X[:0], None).shape == (0, 1)


def test_the_compiled_loop_is_built():
    # CI and developer machines have a C compiler; without it the numpy form runs (same results).
    assert compiled("linear_rows") is not None

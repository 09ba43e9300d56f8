"""Fit an :class:`~closedloop.intelligence.AffinityModel`: a logistic model plus a learned offset
per pair of text fields (``train(model="affinity", params={"keys": ["user_id", "category"]})``).

Two stages, each a convex fit:

1. **The shared part** — the logistic model over the system's features, fitted as ``"logistic"``
   fits it (:func:`~closedloop.training.logistic.fit_logistic_features`, scikit-learn's lbfgs,
   params ``C``, ``max_iter``, ``standardize``).
2. **The offsets** — with the shared part's logit ``z`` held fixed as an offset, one logit ``o[a, b]``
   per pair seen in the rows, maximizing the weighted log-likelihood minus ``l2 · o² / 2``: a
   Gaussian prior of variance ``1 / l2`` on each pair's logit, so a pair seen a few times moves
   little and an unseen one stays 0. The pairs are independent given ``z``, so Newton's method
   runs on all of them at once (``np.bincount`` of the gradient and the Hessian by pair) for
   ``rounds`` steps — the objective is strictly concave, and 8 steps take the largest step to
   below 1e-9 on click data.

The shared part is not refitted after the offsets (one pass, not alternating): it says what is
good for everyone, the offsets what is particular to a pair, and a second pass moves the shared
weights by less than their sampling noise on the feed world's data (stated, not enforced).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.base.numeric import sigmoid_array
from closedloop.errors import SpecError
from closedloop.intelligence import AffinityModel, LinearModel
from closedloop.system.spec import System

__all__ = ["AFFINITY_PARAMS", "fit_affinity"]

#: The params of ``train(model="affinity")``: ``keys`` (required) and the defaults of the rest.
AFFINITY_PARAMS: dict[str, Any] = {"keys": None, "l2": 1.0, "rounds": 8, "C": 1.0, "max_iter": 1000, "standardize": True}


def _check(system: System, params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(AFFINITY_PARAMS))
    if unknown:
        raise SpecError(f"The 'affinity' model takes params {sorted(AFFINITY_PARAMS)}. Got {unknown} instead.")
    p = {**AFFINITY_PARAMS, **params}
    keys = p["keys"]
    fields = {f.name for f in system.schema.fields} | {f.name for f in (system.candidate_schema.fields if system.candidate_schema else ())}
    if not (isinstance(keys, list | tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys) and keys[0] != keys[1]
            and all(k in fields for k in keys)):
        raise SpecError(f"The 'keys' param of the 'affinity' model must be two different text fields of system '{system.name}' "
                        f"(of its requests or candidates). Got {keys!r} instead.")
    l2 = p["l2"]
    if isinstance(l2, bool) or not isinstance(l2, int | float) or not l2 > 0 or not np.isfinite(l2):
        raise SpecError(f"The 'l2' param of the 'affinity' model must be a number > 0. Got {l2!r} instead.")
    rounds = p["rounds"]
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 100:
        raise SpecError(f"The 'rounds' param of the 'affinity' model must be an int in [1, 100]. Got {rounds!r} instead.")
    return p


def pair_codes(a: Any, b: Any) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Each row's pair as an integer code (nulls read as "") and the pairs in code order."""
    def enc(x: Any) -> tuple[np.ndarray, list[str]]:
        if not isinstance(x, pa.Array | pa.ChunkedArray):
            x = pa.array(x, pa.string())
        arr = pa.chunked_array([x]) if isinstance(x, pa.Array) else x
        d = pc.fill_null(arr, "").combine_chunks().dictionary_encode()
        return np.asarray(d.indices.to_numpy(zero_copy_only=False), dtype=np.int64), d.dictionary.to_pylist()

    ia, va = enc(a)
    ib, vb = enc(b)
    pairs, inv = np.unique(ia * max(len(vb), 1) + ib, return_inverse=True)
    return inv.reshape(-1), [(va[int(c) // max(len(vb), 1)], vb[int(c) % max(len(vb), 1)]) for c in pairs.tolist()]


def newton_offsets(z: np.ndarray, y: np.ndarray, w: np.ndarray, code: np.ndarray, m: int, l2: float, rounds: int) -> np.ndarray:
    """Per pair, the penalized logistic maximum-likelihood offset given the fixed logits ``z`` (module doc)."""
    o = np.zeros(m)
    for _ in range(rounds):
        p = sigmoid_array(z + o[code])
        g = np.bincount(code, weights=w * (p - y), minlength=m) + l2 * o
        h = np.bincount(code, weights=w * p * (1.0 - p), minlength=m) + l2
        o -= g / h
    return o


def fit_affinity(system: System, params: dict[str, Any], cols: Any, y: np.ndarray, w: np.ndarray | None, output: str,
                 X: np.ndarray | None = None) -> AffinityModel:
    """The affinity model of the rows ``cols`` (labels ``y``, weights ``w``; features ``X`` when the
    caller has them) — the two stages of the module doc."""
    from closedloop.training.logistic import fit_logistic_features

    p = _check(system, params)
    X = system.features.batch(cols) if X is None else X
    base = fit_logistic_features(system, X, y, output=output, C=p["C"], max_iter=p["max_iter"], standardize=p["standardize"],
                                 sample_weight=w)
    z = LinearModel(base.weights, base.intercept, output).bind(system.features).batch(X, cols)[:, 0]
    code, pairs = pair_codes(cols[p["keys"][0]], cols[p["keys"][1]])
    ww = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    o = newton_offsets(z, np.asarray(y, dtype=np.float64), ww, code, len(pairs), float(p["l2"]), int(p["rounds"]))
    return AffinityModel(base.weights, base.intercept, keys=(p["keys"][0], p["keys"][1]),
                         table=dict(zip(pairs, o.tolist(), strict=True)), output=output)

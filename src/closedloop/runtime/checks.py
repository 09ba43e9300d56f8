"""The conformance suite: the contract every component obeys, checked the same way for all.

In the spirit of scikit-learn's ``check_estimator`` and River's ``check_estimator``: run these
over every feature set, heuristic and model — the test suite runs them over everything this
package ships, and you can run them over your own components::

    from closedloop import checks
    checks.check_features(system)                       # scalar ≡ vectorized, bitwise
    checks.check_intelligence(system, my_model)         # one ≡ batch, save → load ≡, no mutation
    checks.check_runtime(system, bundle)                # decide ≡ decide_batch, bundle round-trip

Each check raises :class:`~closedloop.errors.ConformanceError` naming what broke, the row and the
values. Contexts are generated from the schema (:func:`generate_contexts`): values at and inside
the bounds, declared defaults left out, NaN/inf where the schema allows them, and text that
stresses the features' text semantics (upper case, non-ASCII letters, digits and dots, ``@``,
IP-address hosts, vertical tabs and newlines, empty strings).
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.context.features import FeatureSet
from closedloop.context.schema import Bool, Float, Int, Schema, Str
from closedloop.errors import BundleError, ConformanceError
from closedloop.intelligence import KINDS, Intelligence, load_intelligence
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.ids import DecisionIds
from closedloop.runtime.runtime import Runtime

__all__ = [
    "check_features",
    "check_intelligence",
    "check_runtime",
    "contexts_strategy",
    "generate_contexts",
    "records",
    "same_float",
]

_TEXT_PIECES = (
    "http://", "https://", "HTTP://", "ftp://", "www.", "login", "LOGIN", "secure", "verify",
    "paypal", "PayPal", "bank", "example", ".com", ".net", ".co.uk", "/", "?", "=", "&", "@",
    "-", "_", ".", "..", ":8080", "1", "23", "192.168.0.1", "10.0.0.12", "999", "é", "İ", "ſ",
    "K", "ß", "日本", "\n", "\x0b", " ", "A", "Z", "a", "z", "0", "9",
)


def same_float(a: float, b: float) -> bool:
    """Bitwise equality of two floats (NaN equals NaN with the same payload; 0.0 ≠ -0.0)."""
    return struct.pack("<d", a) == struct.pack("<d", b)


def _random_text(rng: np.random.Generator, max_len: int | None) -> str:
    k = int(rng.integers(0, 9))
    if k == 0:
        return ""
    text = "".join(_TEXT_PIECES[int(i)] for i in rng.integers(0, len(_TEXT_PIECES), size=k))
    if rng.random() < 0.2:
        text = "http://" + ".".join(str(int(x)) for x in rng.integers(0, 300, size=4)) + "/" + text
    if max_len is not None:
        text = text[:max_len]
    return text


def generate_contexts(schema: Schema, n: int, seed: int = 0) -> dict[str, list[Any]]:
    """``n`` valid contexts as columns of Python values (JSON-ready, as an app would send).

    Optional fields are sometimes left out (``None``, which means "use the default").
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[Any]] = {}
    for f in schema.fields:
        col: list[Any] = []
        for _ in range(n):
            if not f.required and rng.random() < 0.1:
                col.append(None)
                continue
            col.append(_random_value(f, rng))
        out[f.name] = col
    return out


def _random_value(f: Any, rng: np.random.Generator) -> Any:
    r = rng.random()
    if isinstance(f, Bool):
        return bool(r < 0.5)
    if isinstance(f, Str):
        if f.choices is not None:
            return f.choices[int(rng.integers(0, len(f.choices)))]
        return _random_text(rng, f.max_length)
    if isinstance(f, Int):
        lo = f.ge if f.ge is not None else -1000
        hi = f.le if f.le is not None else lo + 100_000
        if r < 0.1:
            return int(lo)
        if r < 0.2:
            return int(hi)
        if r < 0.4:
            return int(rng.integers(lo, min(hi, lo + 5) + 1))
        return int(rng.integers(lo, hi + 1))
    if isinstance(f, Float):
        if f.nonfinite != "reject" and r < 0.08:
            return float(("nan", "inf", "-inf")[int(rng.integers(0, 3))])
        flo = f.ge if f.ge is not None else -1e6
        fhi = f.le if f.le is not None else flo + 2e6
        if r < 0.15:
            return float(flo)
        if r < 0.2:
            return float(fhi)
        if r < 0.3:
            return float(flo) + float(rng.integers(0, 5))  # small whole numbers: thresholds
        x = float(flo + (fhi - flo) * rng.random() ** 3)
        return min(max(x, float(flo)), float(fhi))
    raise ConformanceError(f"No generator for field type {type(f).__name__}")  # pragma: no cover


def records(columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Columns → one dict per row, leaving out ``None`` (absent) values."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    return [{k: columns[k][i] for k in names if columns[k][i] is not None} for i in range(n)]


def contexts_strategy(schema: Schema) -> Any:
    """A hypothesis strategy of valid context dicts for ``schema`` (needs ``hypothesis``)."""
    from hypothesis import strategies as st

    def field_strategy(f: Any) -> Any:
        if isinstance(f, Bool):
            return st.booleans()
        if isinstance(f, Str):
            if f.choices is not None:
                return st.sampled_from(f.choices)
            pieces = st.lists(st.sampled_from(_TEXT_PIECES), max_size=8).map("".join)
            text = st.one_of(pieces, st.text(max_size=30))
            if f.max_length is not None:
                m = f.max_length
                text = text.map(lambda s: s[:m])
            return text
        if isinstance(f, Int):
            lo = f.ge if f.ge is not None else -(2**40)
            hi = f.le if f.le is not None else 2**40
            return st.integers(min_value=lo, max_value=hi)
        allow = f.nonfinite != "reject"
        bounded = st.floats(
            min_value=f.ge, max_value=f.le, allow_nan=False, allow_infinity=False
        )
        if allow:
            return st.one_of(bounded, st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return bounded

    required = {f.name: field_strategy(f) for f in schema.fields if f.required}
    optional = {f.name: field_strategy(f) for f in schema.fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


# ---------------------------------------------------------------------------------------------
# the checks


def _features_of(target: Any) -> FeatureSet:
    fs = target if isinstance(target, FeatureSet) else getattr(target, "features", None)
    if not isinstance(fs, FeatureSet):
        raise ConformanceError(f"Expected a System or FeatureSet. Got {target!r} instead.")
    return fs


def check_features(target: Any, n: int = 400, seed: int = 0) -> None:
    """The scalar and the vectorized form of every feature agree bitwise on generated contexts,
    and computing features does not change the context or the batch."""
    fs = _features_of(target)
    columns = generate_contexts(fs.schema, n, seed)
    rows = records(columns)
    cols = fs.schema.validate_batch(columns)
    before = {k: cols.pylist(k) for k in cols.names()}
    X = fs.batch(cols)
    X2 = fs.batch(cols)
    if not np.array_equal(X.view(np.uint64), X2.view(np.uint64)):
        raise ConformanceError("The vectorized features are not deterministic: two runs differ.")
    for k in cols.names():
        if (cols[k].to_pylist() if hasattr(cols[k], "to_pylist") else cols[k].tolist()) != before[k] and not _nan_equal(before[k], cols[k]):
            raise ConformanceError(f"Computing features changed batch column {k!r}.")
    if X.shape != (n, len(fs)):
        raise ConformanceError(f"The feature matrix has shape {X.shape}; expected {(n, len(fs))}.")
    for i, row in enumerate(rows):
        original = dict(row)
        c = fs.schema.validate(row)
        x = fs.one(c)
        if row != original and not _dict_nan_equal(row, original):
            raise ConformanceError(f"Validating row {i} changed the context dict.")
        if len(x) != len(fs):
            raise ConformanceError(f"The scalar form returned {len(x)} features; expected {len(fs)}.")
        for j, name in enumerate(fs.names):
            if not same_float(float(x[j]), float(X[i, j])):
                raise ConformanceError(
                    f"Feature {name!r} differs between its scalar ({x[j]!r}) and vectorized "
                    f"({X[i, j]!r}) forms on row {i}: {row!r}"
                )


def _nan_equal(a: list[Any], col: Any) -> bool:
    b = col.to_pylist() if hasattr(col, "to_pylist") else col.tolist()
    return all((x == y) or (x != x and y != y) for x, y in zip(a, b, strict=True))


def _dict_nan_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]) or (a[k] != a[k] and b[k] != b[k]) for k in a)


def check_intelligence(
    system: Any,
    intelligence: Intelligence,
    *,
    n: int = 300,
    seed: int = 0,
    kinds: Mapping[str, type[Intelligence]] = KINDS,
    score_range: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """For one intelligence on ``system``'s features:

    * ``Scorer.one`` ≡ ``Scorer.batch`` bitwise, and the batch has one column per output;
    * scoring is deterministic and mutates neither the feature matrix nor the batch;
    * scores of finite features are finite and (by default) in [0, 1];
    * saved parameters are plain JSON, and ``to_dict`` → JSON → ``from_dict`` scores identically.
    """
    fs = system.features
    scorer = intelligence.bind(fs)
    columns = generate_contexts(fs.schema, n, seed)
    cols = fs.schema.validate_batch(columns)
    X = fs.batch(cols)
    X_before = X.copy()
    S = np.asarray(scorer.batch(X, cols))
    if S.shape != (cols.n, len(scorer.outputs)):
        raise ConformanceError(f"{intelligence!r} returned scores of shape {S.shape}; expected {(cols.n, len(scorer.outputs))}.")
    if S.dtype != np.float64:
        raise ConformanceError(f"{intelligence!r} returned {S.dtype} scores; expected float64.")
    if not np.array_equal(X.view(np.uint64), X_before.view(np.uint64)):
        raise ConformanceError(f"{intelligence!r} changed the feature matrix it was given.")
    S2 = np.asarray(scorer.batch(X, cols))
    if not np.array_equal(S.view(np.uint64), S2.view(np.uint64)):
        raise ConformanceError(f"{intelligence!r} is not deterministic: two batch runs differ.")
    finite_rows = np.isfinite(X).all(axis=1)
    if not np.isfinite(S[finite_rows]).all():
        raise ConformanceError(f"{intelligence!r} returned non-finite scores for finite features.")
    if score_range is not None:
        lo, hi = score_range
        s = S[finite_rows]
        if s.size and (s.min() < lo or s.max() > hi):
            raise ConformanceError(
                f"{intelligence!r} returned scores outside [{lo}, {hi}]: min {s.min()!r}, max {s.max()!r}."
            )
    rows = records(columns)
    for i, row in enumerate(rows):
        c = fs.schema.validate(row)
        x = fs.one(c)
        s1 = scorer.one(x, c)
        if len(s1) != len(scorer.outputs):
            raise ConformanceError(f"{intelligence!r}.one returned {len(s1)} scores; expected {len(scorer.outputs)}.")
        for j, name in enumerate(scorer.outputs):
            if not same_float(float(s1[j]), float(S[i, j])):
                raise ConformanceError(
                    f"Score {name!r} of {intelligence!r} differs between one ({s1[j]!r}) and batch "
                    f"({S[i, j]!r}) on row {i}."
                )
    files: dict[str, bytes] = {}
    spec = intelligence.to_dict(files)
    text = json.dumps(spec, allow_nan=False)
    again = load_intelligence(json.loads(text), files, kinds)
    S3 = np.asarray(again.bind(fs).batch(X, cols))
    if not np.array_equal(S.view(np.uint64), S3.view(np.uint64)):
        raise ConformanceError(f"{intelligence!r} scores differently after to_dict → JSON → from_dict.")


def check_runtime(
    system: Any, bundle: Bundle, *, n: int = 300, seed: int = 0,
    kinds: Mapping[str, type[Intelligence]] = KINDS,
) -> None:
    """``Runtime.decide`` ≡ ``Runtime.decide_batch`` (action, propensity, why, bitwise scores)
    on generated contexts; the bundle survives save → load with identical decisions; a bundle
    claiming another system is refused."""
    columns = generate_contexts(system.schema, n, seed)
    rows = records(columns)
    ids = [f"{i:032x}" for i in range(n)]
    ts = [1_767_225_600_000_000_000 + i for i in range(n)]
    # Separate runtimes: frequency caps keep state, and each path must start from the same.
    batch = Runtime(system, bundle, ids=DecisionIds(seed)).decide_batch(columns, decision_ids=ids, timestamps_ns=ts)
    if len(batch) != n:
        raise ConformanceError(f"decide_batch returned {len(batch)} decisions for {n} contexts.")
    rt = Runtime(system, bundle, ids=DecisionIds(seed))
    singles = [rt.decide(r, decision_id=ids[i], timestamp_ns=ts[i]) for i, r in enumerate(rows)]
    _same_decisions(singles, batch, "decide", "decide_batch")
    with tempfile.TemporaryDirectory() as tmp:
        loaded = Bundle.load(bundle.save(Path(tmp) / "b"), system, kinds=kinds)
        if loaded.version != bundle.version:
            raise ConformanceError(f"The bundle version changed on save → load: {bundle.version} → {loaded.version}.")
        rt2 = Runtime(system, loaded)
        again = rt2.decide_batch(columns, decision_ids=ids, timestamps_ns=ts)
        _same_decisions(list(again), batch, "after save → load", "before")
    try:
        foreign = _renamed(system)
        bundle.check_compatible(foreign)
    except BundleError as exc:
        if exc.check != "system":
            raise ConformanceError(f"A foreign system's bundle was refused by the wrong check {exc.check!r}.") from exc
    else:
        raise ConformanceError("A bundle was accepted by a system of another name.")


def _renamed(system: Any) -> Any:
    class _Foreign:
        name = system.name + "-other"
        schema_version = system.schema_version
        feature_fingerprint = system.feature_fingerprint
        features = system.features
        actions = system.actions
        experience = system.experience

    return _Foreign()


def _same_decisions(a: list[Any], b: Any, what_a: str, what_b: str) -> None:
    """Every field equal; every float (scores, shadow scores, propensity) bitwise equal."""
    for i, d in enumerate(a):
        e = b[i]
        x, y = d.to_dict(), e.to_dict()
        if _strip_floats(x) != _strip_floats(y):
            raise ConformanceError(f"Decision {i} differs between {what_a} ({d!r}) and {what_b} ({e!r}).")
        fx, fy = _floats(x), _floats(y)
        if len(fx) != len(fy) or not all(same_float(p, q) for p, q in zip(fx, fy, strict=True)):
            raise ConformanceError(
                f"Scores or propensity of decision {i} differ between {what_a} ({d!r}) and {what_b} ({e!r})."
            )


def _strip_floats(obj: Any) -> Any:
    if isinstance(obj, float):
        return 0.0
    if isinstance(obj, dict):
        return {k: _strip_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strip_floats(v) for v in obj]
    return obj


def _floats(obj: Any) -> list[float]:
    if isinstance(obj, float):
        return [obj]
    if isinstance(obj, dict):
        return [f for k in sorted(obj) for f in _floats(obj[k])]
    if isinstance(obj, list | tuple):
        return [f for v in obj for f in _floats(v)]
    return []

"""The shared numeric kernel: compiled column loops equal the scalar functions bit for bit."""

from __future__ import annotations

import math
import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.base import numeric as _numeric
from closedloop.base.numeric import (
    contains_array,
    count_array,
    log1p,
    log1p_array,
    sigmoid,
    sigmoid_array,
)

EDGES = [0.0, -0.0, 1e-300, -1e-300, 5e-324, -1.0, -1.0 + 1e-16, -2.0, 1e308, -1e308, math.inf, -math.inf,
         math.nan, 0.5, -0.5, 709.0, 710.0, -745.0, -746.0, 36.7, -36.7]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_the_compiled_kernel_is_built():
    # CI and developer machines have a C compiler; without it the fallback is used (same results).
    assert _numeric.COMPILED


@pytest.mark.parametrize("scalar, vector", [(log1p, log1p_array), (sigmoid, sigmoid_array)])
def test_array_functions_equal_the_scalar_ones_on_edge_values(scalar, vector):
    rng = np.random.default_rng(0)
    values = np.array(EDGES + list(rng.normal(scale=30, size=5000)) + list(rng.random(2000) * 1e-3 - 1.0))
    out = vector(values)
    for v, o in zip(values.tolist(), out.tolist(), strict=True):
        assert bits(scalar(v)) == bits(o), (v, scalar(v), o)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_array_functions_equal_the_scalar_ones_property(values):
    arr = np.array(values, dtype=np.float64)
    for scalar, vector in ((log1p, log1p_array), (sigmoid, sigmoid_array)):
        assert [bits(scalar(v)) for v in values] == [bits(o) for o in vector(arr).tolist()]


def test_log1p_domain():
    assert log1p(-1.0) == -math.inf and math.isnan(log1p(-2.0)) and math.isnan(log1p(math.nan))
    assert math.copysign(1.0, log1p(-0.0)) == -1.0


TEXT = ["", "a", "aaa", "aaaa", "xAx", "日本語日本", "é.é.", "a.b..c...", "paypal-login.com", "PayPal"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=3)), min_size=1, max_size=30))
def test_contains_matches_python_in(pairs):
    hay = pa.array([a for a, _ in pairs], type=pa.string())
    needle = pa.array([b for _, b in pairs], type=pa.string())
    assert contains_array(hay, needle).tolist() == [1.0 if b in a else 0.0 for a, b in pairs]


@pytest.mark.parametrize("needle", ["a", "aa", ".", "..", "日本", "é", "-"])
def test_count_matches_python_str_count(needle):
    arr = pa.array(TEXT, type=pa.string())
    assert count_array(arr, needle).tolist() == [float(s.count(needle)) for s in TEXT]


def test_sliced_and_filtered_arrays_use_their_own_offsets():
    arr = pa.array(TEXT, type=pa.string()).slice(3, 5)
    assert count_array(arr, "a").tolist() == [float(s.count("a")) for s in TEXT[3:8]]
    needles = pa.array(["a"] * 5, type=pa.string())
    assert contains_array(arr, needles).tolist() == [1.0 if "a" in s else 0.0 for s in TEXT[3:8]]


def test_all_empty_strings_have_no_data_buffer():
    arr = pa.array(["", ""], type=pa.string())
    assert count_array(arr, "x").tolist() == [0.0, 0.0]
    assert contains_array(arr, arr).tolist() == [1.0, 1.0]


def test_kernel_refuses_wrong_buffers():
    from closedloop import _kernels

    with pytest.raises(TypeError, match="float64"):
        _kernels.log1p_into(np.zeros(3, dtype=np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="same length"):
        _kernels.sigmoid_into(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="offsets out of range"):
        _kernels.count_into(np.array([0, 99], dtype=np.int32), b"abc", b"a", np.zeros(1))


def test_the_pure_python_fallback_gives_the_same_results(monkeypatch):
    rng = np.random.default_rng(1)
    values = np.array(EDGES + list(rng.normal(scale=20, size=500)))
    arr = pa.array(TEXT, type=pa.string())
    compiled = (log1p_array(values), sigmoid_array(values), count_array(arr, "a"), contains_array(arr, arr.slice(0, 10)))
    monkeypatch.setattr(_numeric, "_kernels", None)
    fallback = (log1p_array(values), sigmoid_array(values), count_array(arr, "a"), contains_array(arr, arr.slice(0, 10)))
    for a, b in zip(compiled, fallback, strict=True):
        assert a.tobytes() == b.tobytes()

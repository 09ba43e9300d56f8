"""Text ``==`` against a constant and ``isin`` run as one compiled pass: on a large batch
(base.numeric.text_in_array) they give what Arrow's equal / is_in give, on any text, a sliced
column included — and leave a column with nulls (or without the extension) to Arrow; on a small
batch (list_in_array, lists of str) they give Python's ==."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from closedloop.base import numeric
from closedloop.base.numeric import COMPILED, list_in_array, text_in_array

PIECES = ("", "a", "A", "é", "e\u0301", "😀", "news", "new", "newsy", "\x00", "ß", " ")


@pytest.mark.skipif(not COMPILED, reason="the compiled extension is not built")
@pytest.mark.parametrize("seed", range(10))
def test_text_in_is_arrow_equal_and_is_in(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = ["".join(rng.choice(PIECES, size=int(rng.integers(0, 3))).tolist()) for _ in range(500)]
    col = pa.array(["pad"] + values, type=pa.string()).slice(1)
    for needles in (("news",), ("",), ("é", "e\u0301", "😀"), ("nothing",), ()):
        want = pc.is_in(col, value_set=pa.array(needles, type=pa.string())).to_numpy(zero_copy_only=False).astype(np.float64)
        got = text_in_array(col, needles)
        assert got is not None and got.dtype == np.float64 and np.array_equal(got, want)
    eq = pc.equal(col, "news").to_numpy(zero_copy_only=False).astype(np.float64)
    assert np.array_equal(text_in_array(col, ("news",)), eq)


def test_text_with_nulls_or_another_type_is_left_to_arrow() -> None:
    assert text_in_array(pa.array(["a", None]), ("a",)) is None
    assert text_in_array(pa.array(["a"], type=pa.large_string()), ("a",)) is None


@pytest.mark.parametrize("seed", range(5))
def test_list_in_is_python_equality_with_and_without_the_extension(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The small path's text == / isin / nonempty: Python's == on each str, compiled or not."""
    rng = np.random.default_rng(seed)
    items = ["".join(rng.choice(PIECES, size=int(rng.integers(0, 3))).tolist()) for _ in range(200)]
    for needles in (("news",), ("",), ("é", "e\u0301", "😀"), ("nothing",), ()):
        want = np.array([1.0 if any(x == v for v in needles) else 0.0 for x in items])
        assert np.array_equal(list_in_array(items, needles), want)
        with monkeypatch.context() as m:
            m.setattr(numeric, "_kernels", None)
            assert np.array_equal(list_in_array(items, needles), want)


@pytest.mark.skipif(not COMPILED, reason="the compiled extension is not built")
def test_contains_and_count_with_nulls_are_the_same_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """A null reads as "" in both forms (the compiled loop sees its zero-length bytes)."""
    hay = pa.array(["abc", None, "", "aXa", None, "é"])
    needle = pa.array(["b", "x", None, "a", None, ""])
    compiled = (numeric.contains_array(hay, needle).tobytes(), numeric.count_array(hay, "a").tobytes())
    monkeypatch.setattr(numeric, "_kernels", None)
    assert (numeric.contains_array(hay, needle).tobytes(), numeric.count_array(hay, "a").tobytes()) == compiled

"""Features on a small batch (text in Python, as in the scalar form) equal the Arrow path bit for bit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from closedloop import F, FeatureSet, Float, Int, Schema, Str
from closedloop.context.features.vector import SMALL_ROWS
from closedloop.context.schema import Bool, Columns

SCHEMA = Schema(
    [
        Str("url"),
        Str("domain"),
        Str("brand", default=""),
        Str("kind", choices=("news", "sports", "fun")),
        Float("age", ge=0, default=1.0),
        Float("x", default=0.0, nonfinite="keep"),
        Int("links", ge=0, default=0),
        Bool("flag", default=False),
    ]
)

FEATURES = {
    "ip_in_url": F.col("url").lower().matches(r"^[a-z]+://\d{1,3}(\.\d{1,3}){3}(/|$)"),
    "brand_not_in_domain": F.col("brand").nonempty() & ~F.col("domain").lower().contains(F.col("brand").lower()),
    "lure": F.col("url").matches(r"(login|verify)\b"),
    "len": F.col("url").length(),
    "len_lower": F.col("url").lower().length(),
    "dots": F.col("url").count("."),
    "at": F.col("url").contains("@"),
    "empty_in": F.col("url").contains(""),
    "https": F.col("url").startswith("https://"),
    "dotcom": F.col("domain").endswith(".com"),
    "known": F.col("domain").isin(["paypal.com", "bank.com", "é.com"]),
    "same": F.col("domain").eq(F.col("brand")),
    "differs": F.col("domain").ne(F.col("brand")),
    "news": F.col("kind").eq("news"),
    "not_fun": F.col("kind").ne("fun"),
    "const_eq": F.const("a").eq("a"),
    "const_in_domain": F.col("domain").contains(F.const("é")),
    "age_log": F.log1p(F.col("age")),
    "x_sqrt": F.sqrt(F.col("x")),
    "ratio": F.col("x").div(F.col("age"), on_zero=-1.0),
    "mix": F.where(F.col("age") > 30, F.col("x") * 2.5 + 1, -F.col("x")),
    "logic": (F.col("links") >= 3) | (F.col("age") <= 2.0) & F.col("x").ne(0.0),
    "nan_logic": F.col("x") & F.col("flag") | ~F.col("x"),
    "fresh": F.const(24.0).div(F.col("age") + 24.0),
}

PIECES = ("", "a", "A", "Z", ".", "@", "é", "É", "İ", "ß", "😀", "\u00a0", "paypal", ".com", "https://",
          "HTTP://", "1.2.3.4", "login", "verify", "bank", " ", "/", "é.com")
FLOATS = (0.0, -0.0, 1.0, 2.0, 3.0, 31.0, -1.0, 1e308, -1e308, np.inf, -np.inf, np.nan, 5e-324, 0.5)


def _text(rng: np.random.Generator, n: int) -> list[str]:
    return ["".join(rng.choice(PIECES, size=int(rng.integers(0, 5))).tolist()) for _ in range(n)]


def _columns(rng: np.random.Generator, n: int, nulls: bool = False) -> Columns:
    def text() -> pa.Array:
        values: list[str | None] = list(_text(rng, n))
        if nulls and n:
            values[int(rng.integers(0, n))] = None
        return pa.array(values, type=pa.string())

    data = {
        "url": text(),
        "domain": text(),
        "brand": text(),
        "kind": pa.array(rng.choice(["news", "sports", "fun"], size=n).tolist(), type=pa.string()),
        "age": rng.choice(FLOATS, size=n).astype(np.float64),
        "x": rng.choice(FLOATS, size=n).astype(np.float64),
        "links": rng.integers(0, 6, size=n).astype(np.int64),
        "flag": rng.random(n) < 0.5,
    }
    return Columns(data, n, np.arange(n, dtype=np.int64), [])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


FS = FeatureSet(FEATURES, SCHEMA)


@pytest.mark.parametrize("seed", range(30))
def test_the_small_path_equals_the_arrow_path_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cols = _columns(rng, int(rng.integers(0, 40)) if seed % 3 else int(rng.integers(1, SMALL_ROWS + 1)))
    plan = FS._plan
    assert plan.small(cols)
    small = plan.matrix(cols, small=True)
    arrow = plan.matrix(cols, small=False)
    assert _same_bits(small, arrow), np.argwhere(small.view(np.int64) != arrow.view(np.int64))[:5]
    assert _same_bits(FS.batch(cols), small)


def test_the_small_path_equals_the_scalar_form_row_by_row() -> None:
    rng = np.random.default_rng(99)
    cols = _columns(rng, 60)
    X = FS.batch(cols)
    for i in range(cols.n):
        row = cols.row(i)
        row["flag"] = bool(row["flag"])
        got = FS.one(SCHEMA.struct(**row))
        assert _same_bits(np.array(got), X[i])


def test_a_large_batch_takes_the_arrow_path_and_agrees_with_small_slices() -> None:
    rng = np.random.default_rng(7)
    n = SMALL_ROWS * 2 + 17
    cols = _columns(rng, n)
    assert not FS._plan.small(cols)
    X = FS.batch(cols)
    for a in range(0, n, 100):
        part = cols.take(np.arange(a, min(n, a + 100)))
        assert FS._plan.small(part)
        assert _same_bits(FS.batch(part), X[a : a + 100])


def test_text_with_nulls_takes_the_arrow_path() -> None:
    cols = _columns(np.random.default_rng(3), 20, nulls=True)
    assert not FS._plan.small(cols)
    assert _same_bits(FS.batch(cols), FS._plan.matrix(cols, small=False))


def test_small_text_results_are_what_the_scalar_form_says() -> None:
    schema = Schema([Str("s")])
    fs = FeatureSet(
        {"len": F.col("s").length(), "low_len": F.col("s").lower().length(), "dots": F.col("s").count("."),
         "nonempty": F.col("s").nonempty(), "is_a": F.col("s").lower().eq("a")},
        schema,
    )
    values = ["", "A", "a", "😀.é.", "İ", "..."]
    cols = Columns({"s": pa.array(values, type=pa.string())}, 6, np.arange(6), [])
    X = fs.batch(cols)
    assert X[:, 0].tolist() == [0.0, 1.0, 1.0, 4.0, 1.0, 3.0]
    assert X[:, 1].tolist() == X[:, 0].tolist()  # ASCII lower-casing keeps the length
    assert X[:, 2].tolist() == [0.0, 0.0, 0.0, 2.0, 0.0, 3.0]
    assert X[:, 3].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert X[:, 4].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_constant_columns_are_built_only_when_read_as_columns() -> None:
    rng = np.random.default_rng(11)
    full = _columns(rng, 50)
    consts = {"domain": (SCHEMA.by_name["domain"], "é.com"), "x": (SCHEMA.by_name["x"], float("nan")),
              "links": (SCHEMA.by_name["links"], 4)}
    data = {k: v for k, v in full._data.items() if k not in consts}
    lazy = Columns(data, 50, np.arange(50), [], constants=dict(consts))
    assert lazy.text_list("domain") == ["é.com"] * 50 and "domain" not in lazy._data  # not built
    assert lazy.text_list("x") is None and lazy.text_list("url") == full.pylist("url")
    assert set(lazy.names()) == set(full.names()) and "links" in lazy and "nope" not in lazy
    eager = Columns({**data, "domain": pa.array(["é.com"] * 50, type=pa.string()), "x": np.full(50, np.nan),
                     "links": np.full(50, 4, dtype=np.int64)}, 50, np.arange(50), [])
    small, arrow = FS._plan.matrix(lazy), FS._plan.matrix(lazy, small=False)
    assert _same_bits(small, FS._plan.matrix(eager)) and _same_bits(arrow, FS._plan.matrix(eager, small=False))
    assert _same_bits(small, arrow)
    assert lazy["links"].tolist() == [4] * 50 and lazy.pylist("x")[0] != lazy.pylist("x")[0]
    part = lazy.take(np.array([3, 1]))
    assert part.text_list("domain") == ["é.com"] * 2 and part["links"].tolist() == [4, 4] and part.n == 2

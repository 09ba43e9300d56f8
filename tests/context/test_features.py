"""Features: one declaration, a scalar and a vectorized form that agree bitwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop import (
    ConformanceError,
    F,
    FeatureError,
    FeatureSet,
    Float,
    Int,
    Schema,
    SpecError,
    Str,
    checks,
)
from closedloop.runtime.checks import contexts_strategy, same_float

SCHEMA = Schema(
    [
        Str("url"),
        Str("domain"),
        Str("brand", default=""),
        Float("age", ge=0, default=1.0),
        Float("x", default=0.0, nonfinite="keep"),
        Int("links", ge=0, default=0),
        Int("ext", ge=0, default=0),
    ]
)

EXPRS = {
    "ip_in_url": F.col("url").lower().matches(r"^[a-z]+://\d{1,3}(\.\d{1,3}){3}(/|$)"),
    "brand_not_in_domain": F.col("brand").nonempty() & ~F.col("domain").lower().contains(F.col("brand").lower()),
    "lure": F.col("url").matches(r"(login|verify)\b"),
    "len": F.col("url").length(),
    "dots": F.col("url").count("."),
    "at": F.col("url").contains("@"),
    "https": F.col("url").startswith("https://"),
    "dotcom": F.col("domain").endswith(".com"),
    "known": F.col("domain").isin(["paypal.com", "bank.com"]),
    "same": F.col("domain").eq(F.col("brand")),
    "age_log": F.log1p(F.col("age")),
    "x_log": F.log1p(F.col("x")),
    "x_sqrt": F.sqrt(F.col("x")),
    "x_abs": F.abs_(F.col("x") - 3),
    "ratio": (F.col("ext") / F.col("links")).clip(0.0, 1.0),
    "ratio_x": F.col("x").div(F.col("age"), on_zero=-1.0),
    "mix": F.where(F.col("age") > 30, F.col("x") * 2.5 + 1, -F.col("x")),
    "minmax": F.minimum(F.col("x"), F.col("age")) + F.maximum(F.col("x"), 1.0),
    "logic": (F.col("links") >= 3) | (F.col("age") <= 2.0) & F.col("x").ne(0.0),
    "young": F.col("age") < 30,
}


def test_expressions_compute_what_they_say():
    fs = FeatureSet(EXPRS, SCHEMA)
    c = SCHEMA.validate(
        {"url": "http://192.168.0.1/login", "domain": "PayPa1.COM", "brand": "PayPal", "age": 3, "links": 4, "ext": 3}
    )
    x = dict(zip(fs.names, fs.one(c), strict=True))
    assert x["ip_in_url"] == 1.0 and x["brand_not_in_domain"] == 1.0 and x["lure"] == 1.0
    assert x["len"] == 24.0 and x["dots"] == 3.0 and x["at"] == 0.0 and x["https"] == 0.0
    assert x["dotcom"] == 0.0  # endswith is case-sensitive; lower() first to ignore case
    assert x["known"] == 0.0 and x["ratio"] == 0.75 and x["age_log"] == math.log1p(3.0)
    assert x["young"] == 1.0 and x["ratio_x"] == 0.0


def test_division_by_zero_gives_the_declared_value():
    fs = FeatureSet({"r": F.col("ext") / F.col("links"), "q": F.col("x").div(F.col("links"), on_zero=7.0)}, SCHEMA)
    c = SCHEMA.validate({"url": "", "domain": "", "ext": 3, "x": 1.0})
    assert fs.one(c) == (0.0, 7.0)


def test_scalar_and_vectorized_forms_agree_bitwise_on_generated_contexts():
    checks.check_features(FeatureSet(EXPRS, SCHEMA), n=1500, seed=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contexts_strategy(SCHEMA), min_size=1, max_size=20))
def test_scalar_equals_vectorized_property(rows):
    fs = FeatureSet(EXPRS, SCHEMA)
    names = [f.name for f in SCHEMA.fields]
    columns = {k: [r.get(k) for r in rows] for k in names}
    X = fs.batch(SCHEMA.validate_batch(columns))
    for i, r in enumerate(rows):
        x = fs.one(SCHEMA.validate(r))
        for j, name in enumerate(fs.names):
            assert same_float(x[j], X[i, j]), (name, r, x[j], X[i, j])


def test_common_subexpressions_are_computed_once_in_the_scalar_form():
    fs = FeatureSet({"a": F.col("url").lower().length(), "b": F.col("url").lower().count(".")}, SCHEMA)
    assert fs.source.count(".lower()") == 1


@pytest.mark.parametrize(
    "pattern, hint",
    [
        (r"\s+", "vertical tab"),
        (r"(?i)login", "inline flags"),
        (r"(?=x)", "inline flags"),
        (r"(a)\1", "escapes"),
        (r"\p{L}", "escapes"),
        (r"[abc", "unterminated"),
    ],
)
def test_regexes_outside_the_portable_subset_are_refused(pattern, hint):
    with pytest.raises(SpecError, match=hint.split()[0]):
        F.col("url").matches(pattern)


def test_dollar_means_end_of_text_in_both_forms():
    fs = FeatureSet({"end": F.col("url").matches("com$")}, SCHEMA)
    rows = [{"url": "a.com", "domain": ""}, {"url": "a.com\n", "domain": ""}]
    X = fs.batch(SCHEMA.validate_batch({"url": ["a.com", "a.com\n"], "domain": ["", ""]}))
    assert X[:, 0].tolist() == [1.0, 0.0]
    assert [fs.one(SCHEMA.validate(r))[0] for r in rows] == [1.0, 0.0]


@pytest.mark.parametrize(
    "features, message",
    [
        ({"bad": F.col("url") + 1}, "must be a number"),
        ({"bad": F.col("age").length()}, "must be text"),
        ({"bad": F.col("url")}, "must be numeric"),
        ({"bad": F.col("nope")}, "declared context fields"),
        ({"bad": F.col("url").eq(1.0)}, "like with like"),
        ({}, "at least one feature"),
    ],
)
def test_bad_feature_declarations_are_refused(features, message):
    with pytest.raises(SpecError, match=message):
        FeatureSet(features, SCHEMA)


def test_expressions_have_no_truth_value():
    with pytest.raises(FeatureError, match="truth value"):
        bool(F.col("age") > 1)


def test_fingerprint_changes_with_any_definition():
    a = FeatureSet({"f": F.col("age") > 30}, SCHEMA).fingerprint
    assert a == FeatureSet({"f": F.col("age") > 30}, SCHEMA).fingerprint
    assert a != FeatureSet({"f": F.col("age") > 31}, SCHEMA).fingerprint
    assert a != FeatureSet({"g": F.col("age") > 30}, SCHEMA).fingerprint


def test_custom_features_are_checked_by_the_conformance_suite():
    good = F.custom(
        "double_age",
        scalar=lambda c: c.age * 2.0,
        vector=lambda cols: cols["age"] * 2.0,
        inputs=["age"],
    )
    checks.check_features(FeatureSet({"d": good}, SCHEMA), n=200)
    bad = F.custom(
        "off_by_a_bit",
        scalar=lambda c: c.age * 2.0,
        vector=lambda cols: np.nextafter(cols["age"] * 2.0, np.inf),
        inputs=["age"],
    )
    with pytest.raises(ConformanceError, match="off_by_a_bit|'d'"):
        checks.check_features(FeatureSet({"d": bad}, SCHEMA), n=50)


def test_the_phishing_system_features_conform(phishing):
    checks.check_features(phishing, n=3000, seed=11)

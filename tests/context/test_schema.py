"""Context validation: one context and columnar batches, with errors naming field, rule, value."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop import BatchContextError, Bool, ContextError, Float, Int, Schema, SpecError, Str


def schema(**kw) -> Schema:
    return Schema(
        [
            Str("user"),
            Float("domain_age_days", ge=0),
            Float("score", default=0.5, nonfinite="default"),
            Float("raw", default=0.0, nonfinite="keep"),
            Int("forms", ge=0, default=0),
            Bool("https", default=True),
            Str("browser", choices=("chrome", "firefox"), default="chrome"),
            Str("country", default="", max_length=2),
        ],
        **kw,
    )


def test_the_message_names_field_rule_and_value():
    with pytest.raises(ContextError) as err:
        schema().validate({"user": "u", "domain_age_days": -3})
    assert str(err.value) == "Context field 'domain_age_days' must be a number ≥ 0. Got -3 instead."
    assert (err.value.field, err.value.rule, err.value.value) == ("domain_age_days", "a number ≥ 0", -3)


@pytest.mark.parametrize(
    "context, field, rule",
    [
        ({"domain_age_days": 1}, "user", "present"),
        ({"user": 7, "domain_age_days": 1}, "user", "a string"),
        ({"user": "u", "domain_age_days": "old"}, "domain_age_days", "a number ≥ 0"),
        ({"user": "u", "domain_age_days": True}, "domain_age_days", "a number ≥ 0"),
        ({"user": "u", "domain_age_days": math.nan}, "domain_age_days", "a number ≥ 0"),
        ({"user": "u", "domain_age_days": math.inf}, "domain_age_days", "a number ≥ 0"),
        ({"user": "u", "domain_age_days": 1, "forms": 2.0}, "forms", "an integer ≥ 0"),
        ({"user": "u", "domain_age_days": 1, "forms": -1}, "forms", "an integer ≥ 0"),
        ({"user": "u", "domain_age_days": 1, "https": 1}, "https", "true or false"),
        ({"user": "u", "domain_age_days": 1, "browser": "netscape"}, "browser", "one of ['chrome', 'firefox']"),
        ({"user": "u", "domain_age_days": 1, "country": "USA"}, "country", "a string of at most 2 characters"),
    ],
)
def test_bad_contexts_are_refused_with_the_failed_rule(context, field, rule):
    with pytest.raises(ContextError) as err:
        schema().validate(context)
    assert err.value.field == field
    assert err.value.rule == rule
    assert f"'{field}'" in str(err.value)


def test_a_non_mapping_is_refused():
    with pytest.raises(ContextError, match="JSON object"):
        schema().validate(["not", "a", "dict"])


def test_defaults_and_declared_nonfinite_handling():
    s = schema()
    c = s.validate({"user": "u", "domain_age_days": 2, "score": math.nan, "raw": math.inf})
    assert c.score == 0.5  # nonfinite="default"
    assert c.raw == math.inf  # nonfinite="keep"
    assert c.forms == 0 and c.https is True and c.browser == "chrome"
    assert isinstance(c.domain_age_days, float)
    c = s.validate({"user": "u", "domain_age_days": 2, "forms": None})
    assert c.forms == 0  # null means "use the default"


def test_extra_fields_ignored_or_forbidden():
    assert schema().validate({"user": "u", "domain_age_days": 1, "zzz": 1}).user == "u"
    with pytest.raises(ContextError, match="'zzz'"):
        schema(extra="forbid").validate({"user": "u", "domain_age_days": 1, "zzz": 1})


def test_decode_json_validates_in_one_step():
    s = schema()
    assert s.decode_json(b'{"user": "u", "domain_age_days": 4}').domain_age_days == 4.0
    with pytest.raises(ContextError, match="domain_age_days"):
        s.decode_json(b'{"user": "u", "domain_age_days": -4}')


def test_bad_declarations():
    with pytest.raises(SpecError, match="ge ≤ le"):
        Float("x", ge=2, le=1)
    with pytest.raises(SpecError, match="nonfinite"):
        Float("x", nonfinite="ignore")
    with pytest.raises(SpecError, match="needs a default"):
        Float("x", nonfinite="default")
    with pytest.raises(SpecError, match="default of context field 'x'"):
        Int("x", ge=0, default=-1)
    with pytest.raises(SpecError, match="identifiers"):
        Str("not a name")
    with pytest.raises(SpecError, match="unique"):
        Schema([Str("a"), Str("a")])
    with pytest.raises(SpecError, match="choices"):
        Str("b", choices=())


def test_batch_names_every_bad_row():
    s = schema()
    with pytest.raises(BatchContextError) as err:
        s.validate_batch({"user": ["a", "b", "c"], "domain_age_days": [1.0, -3.0, 2.0], "forms": [0, 1, -5]})
    rows = sorted((e.row, e.field) for e in err.value.errors)
    assert rows == [(1, "domain_age_days"), (2, "forms")]
    assert "row 1" in str(err.value) and "1 more" in str(err.value)


def test_batch_skip_keeps_good_rows_and_reports_bad_ones():
    s = schema()
    cols = s.validate_batch(
        {"user": ["a", None, "c"], "domain_age_days": [1.0, 2.0, 3.0]}, errors="skip"
    )
    assert cols.n == 2
    assert cols.rows.tolist() == [0, 2]
    assert [(e.row, e.field) for e in cols.errors] == [(1, "user")]
    assert cols["user"].to_pylist() == ["a", "c"]


def test_batch_accepts_arrow_numpy_and_lists_with_defaults():
    s = schema()
    table = pa.table({"user": ["a", "b"], "domain_age_days": pa.array([1, None], type=pa.float64())})
    with pytest.raises(BatchContextError):
        s.validate_batch(table)  # a required field may not be null
    cols = s.validate_batch({"user": np.array(["a", "b"]), "domain_age_days": np.array([1, 2]), "score": [math.nan, 0.25]})
    assert cols["domain_age_days"].dtype == np.float64
    assert cols["score"].tolist() == [0.5, 0.25]
    assert cols["forms"].tolist() == [0, 0]
    assert cols["browser"].to_pylist() == ["chrome", "chrome"]


def test_batch_refuses_mixed_types_row_by_row():
    s = schema()
    with pytest.raises(BatchContextError) as err:
        s.validate_batch({"user": ["a", "b"], "domain_age_days": [1.0, True]})
    assert [(e.row, e.field) for e in err.value.errors] == [(1, "domain_age_days")]
    with pytest.raises(BatchContextError):
        s.validate_batch({"user": ["a"], "domain_age_days": [1.0], "https": np.array([1])})


def test_batch_columns_must_have_equal_length():
    with pytest.raises(ContextError, match="rows like the others"):
        schema().validate_batch({"user": ["a", "b"], "domain_age_days": [1.0]})


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["chrome", "firefox", "", "us", "usa", "x"]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["user", "domain_age_days", "score", "raw", "forms", "https", "browser", "country"]), _values))
def test_one_and_batch_accept_and_refuse_the_same_contexts(ctx):
    """Whatever one context validation accepts, batch validation accepts with the same values."""
    s = schema()
    try:
        one = s.validate(ctx)
        ok_one = True
    except ContextError:
        ok_one = False
    columns = {k: [v] for k, v in ctx.items()}
    if not columns:
        columns = {"user": [None]} if "user" not in ctx else columns
    cols = s.validate_batch(columns, errors="skip")
    ok_batch = cols.n == 1
    assert ok_one == ok_batch, (ctx, cols.errors)
    if ok_one:
        for f in s.fields:
            a, b = getattr(one, f.name), cols.pylist(f.name)[0]
            assert a == b or (a != a and b != b), (f.name, a, b)


def test_a_lone_surrogate_is_refused_by_name_and_rule_one_context_and_in_a_batch():
    # A Python str can carry a lone surrogate (JSON cannot); telemetry, Arrow and JSON cannot write
    # one, so it is refused at the edge — one bad row never sinks the batch it came in.
    s = schema()
    with pytest.raises(ContextError, match=r"'user' must be text UTF-8 can encode \(no lone surrogate\)"):
        s.validate({"user": "u\ud800", "domain_age_days": 1.0})
    assert s.validate({"user": "bänk ✓", "domain_age_days": 1.0}).user == "bänk ✓"  # other non-ASCII text is fine
    cols = s.validate_batch({"user": ["a", "b\udc00", "c"], "domain_age_days": [1.0, 2.0, 3.0]}, errors="skip")
    assert cols.rows.tolist() == [0, 2] and [(e.row, e.field) for e in cols.errors] == [(1, "user")]
    assert "no lone surrogate" in str(cols.errors[0])
    with pytest.raises(BatchContextError):
        s.validate_batch({"user": ["b\udc00"], "domain_age_days": [1.0]})


def test_a_ranking_candidate_with_a_lone_surrogate_is_refused_by_name():
    from examples.feed.system import feed, model

    from closedloop import Bundle, Runtime

    rt = Runtime(feed, Bundle.build(feed, model))
    good = {"item_id": "b", "category": "news", "item_ctr": 0.1, "age_hours": 1.0}
    bad = {**good, "item_id": "a\ud800"}
    with pytest.raises(ContextError, match=r"'candidates\[0\]\.item_id' must be text UTF-8 can encode"):
        rt.decide({"user_id": "u1", "country": "de", "hour": 3, "candidates": [bad, good]})
    assert rt.decide({"user_id": "u1", "country": "de", "hour": 3, "candidates": [good]}) is not None

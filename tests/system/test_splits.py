from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.errors import DatasetError, SpecError
from closedloop.system.splits import Split, split


def _table(n: int, n_units: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    units = [f"u{i}" for i in rng.integers(0, n_units, n)]
    ts = rng.integers(0, 10**12, n)
    return pa.table({"unit": units, "timestamp_ns": pa.array(ts, pa.int64())})


@settings(max_examples=200, deadline=None)
@given(
    units=st.lists(st.one_of(st.text(max_size=4), st.integers(-5, 5)), min_size=0, max_size=60),
    times=st.data(),
    by=st.sampled_from(["unit", "both"]),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
    cutoff=st.one_of(st.none(), st.integers(-10, 10)),
)
def test_no_unit_is_ever_on_both_sides(units, times, by, fraction, seed, cutoff):
    ts = times.draw(st.lists(st.integers(-10, 10), min_size=len(units), max_size=len(units)))
    units = [str(u) for u in units]
    data = {"unit": units, "timestamp_ns": np.array(ts, dtype=np.int64)}
    s = Split(by=by, test_fraction=fraction, seed=seed, time_cutoff_ns=cutoff if by == "both" else None)
    train, test = split(data, s)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert not set(train.tolist()) & set(test.tolist())
    assert not {units[i] for i in train} & {units[i] for i in test}
    if by == "unit":  # every row is placed
        assert len(train) + len(test) == len(units)


def test_unit_split_is_deterministic_and_stable_under_growth():
    t = _table(5000, 500)
    s = Split(by="unit", test_fraction=0.3, seed=7)
    a = split(t, s)
    b = split(t, s)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    units = t["unit"].to_pylist()
    side = {units[i]: "test" for i in a[1]} | {units[i]: "train" for i in a[0]}
    # More data (new units, more rows of old ones): old units keep their side.
    grown = pa.concat_tables([_table(3000, 800, seed=1), t])
    tr, te = split(grown, s)
    gu = grown["unit"].to_pylist()
    for i in te:
        assert side.get(gu[i], "test") == "test"
    for i in tr:
        assert side.get(gu[i], "train") == "train"
    # A different seed gives a different assignment.
    c = split(t, Split(by="unit", test_fraction=0.3, seed=8))
    assert not np.array_equal(a[1], c[1])


def test_unit_fraction_is_roughly_right():
    t = _table(20000, 4000)
    _, test = split(t, Split(by="unit", test_fraction=0.2))
    units = t["unit"].to_pylist()
    frac_units = len({units[i] for i in test}) / len(set(units))
    assert 0.17 < frac_units < 0.23


def test_time_split_trains_on_the_past():
    t = _table(1000, 50)
    train, test = split(t, Split(by="time", test_fraction=0.25))
    ts = t["timestamp_ns"].to_numpy()
    assert len(train) + len(test) == 1000
    assert ts[train].max() < ts[test].min()
    assert abs(len(test) - 250) <= 1
    train2, test2 = split(t, Split(by="time", time_cutoff_ns=int(np.median(ts))))
    assert abs(len(test2) - 500) <= 1


def test_both_split_rule():
    t = _table(5000, 300)
    s = Split(by="both", test_fraction=0.4, seed=3)
    train, test = split(t, s)
    ts = t["timestamp_ns"].to_numpy()
    _, unit_test = split(t, Split(by="unit", test_fraction=0.4, seed=3))
    _, time_test = split(t, Split(by="time", test_fraction=0.4))
    assert set(test.tolist()) == set(unit_test.tolist()) & set(time_test.tolist())
    assert ts[train].max() < ts[test].min()
    assert 0.1 < len(test) / 5000 < 0.22  # about 0.4 * 0.4


def test_columns_and_integer_units(phishing):
    from examples.phishing.data import generate

    cols, _ = generate(300, seed=1)
    batch = phishing.schema.validate_batch(cols)
    train, test = split(batch, Split(), unit="user_id")
    assert len(train) + len(test) == 300
    ints = {"unit": np.arange(100) % 7, "timestamp_ns": np.arange(100)}
    tr, te = split(ints, Split(by="unit", test_fraction=0.5, seed=2))
    assert not set((ints["unit"][tr]).tolist()) & set((ints["unit"][te]).tolist())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"by": "user"}, "'by'"),
        ({"test_fraction": 0.0}, "'test_fraction'"),
        ({"test_fraction": 1.0}, "'test_fraction'"),
        ({"test_fraction": True}, "'test_fraction'"),
        ({"seed": -1}, "'seed'"),
        ({"by": "time", "time_cutoff_ns": 1.5}, "'time_cutoff_ns'"),
        ({"by": "unit", "time_cutoff_ns": 5}, "'time_cutoff_ns'"),
    ],
)
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(SpecError, match=name):
        Split(**kwargs)


def test_bad_data_is_named():
    with pytest.raises(DatasetError, match="'user'"):
        split({"unit": ["a"]}, Split(), unit="user")
    with pytest.raises(DatasetError, match="'timestamp_ns'"):
        split({"unit": ["a"]}, Split(by="time"))
    with pytest.raises(DatasetError, match="nulls"):
        split(pa.table({"unit": ["a", None]}), Split())
    with pytest.raises(DatasetError, match="integers"):
        split({"unit": ["a"], "timestamp_ns": ["x"]}, Split(by="time"))
    with pytest.raises(SpecError, match="'split'"):
        split({"unit": ["a"]}, "unit")  # type: ignore[arg-type]

"""A numeric slice field is cut into quantile bins labelled as ranges, not one slice per distinct
value (real sensor data gave ~100 slices); text and booleans stay as they are."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from closedloop.errors import SpecError
from closedloop.evaluation import render_html
from closedloop.evaluation.report import NOT_RECORDED, SliceField, evaluate
from closedloop.training import train
from support.pages import import_pages


@pytest.fixture(scope="module")
def sliced(phishing, tmp_path_factory):
    from examples.phishing.data import generate

    root = tmp_path_factory.mktemp("numeric-slices")
    cols, labels = generate(3000, 4, phish_rate=0.3)
    ds = import_pages(phishing, cols, labels, root)
    system = copy.copy(phishing)
    system.slices = ("domain_age_days", "popularity_rank", "browser", "new_user")
    bundle = train(system, ds.path, model="logistic").bundle
    return system, ds, bundle, evaluate(system, [bundle], ds.path, bootstrap=0, golden=2)


def _lo(label):
    return float(label[1:].split(",")[0])


def test_a_float_field_is_five_quantile_bins_labelled_as_ranges(sliced):
    _, _, _, rep = sliced
    rows = rep["bundles"][0]["slices"]["domain_age_days"]
    n = rep["rows"]["n"]
    assert len(rows) == 5
    assert sum(r["n"] for r in rows) == n
    assert all(0.1 * n < r["n"] < 0.3 * n for r in rows)  # quantiles: about a fifth each
    labels = [r["value"] for r in rows]
    assert all(v.startswith("[") and v.endswith(")") for v in labels[:-1]) and labels[-1].endswith("]")
    assert [_lo(v) for v in labels] == sorted(_lo(v) for v in labels)  # in value order, not as text
    edges = rep["metadata"]["slice_bins"]["domain_age_days"]
    assert edges["bins"] == 5 and len(edges["edges"]) == 6
    assert labels[0].startswith(f"[{edges['edges'][0]:.3g}")


def test_ties_merge_bins_ints_stay_ints_text_and_booleans_unchanged(sliced):
    _, _, _, rep = sliced
    slices = rep["bundles"][0]["slices"]
    rank = [r["value"] for r in slices["popularity_rank"]]
    assert 2 <= len(rank) <= 5 and rank[0].startswith("[0, ")  # most pages are unranked (0): one bin
    assert all("." not in v and "e" not in v for v in rank)  # integers as integers
    assert {r["value"] for r in slices["browser"]} <= {"chrome", "edge", "firefox", "safari", "other"}
    assert {r["value"] for r in slices["new_user"]} == {"False", "True"}
    assert set(rep["metadata"]["slice_bins"]) == {"domain_age_days", "popularity_rank"}
    page = render_html(rep)
    assert "by domain_age_days" in page and slices["domain_age_days"][0]["value"] in page


def test_slice_bins_is_configurable_and_checked(sliced):
    system, ds, bundle, _ = sliced
    ten = evaluate(system, [bundle], ds.path, bootstrap=0, golden=0, slice_bins=10)
    assert len(ten["bundles"][0]["slices"]["domain_age_days"]) == 10
    every = evaluate(system, [bundle], ds.path, bootstrap=0, golden=0, slice_bins=None)
    assert len(every["bundles"][0]["slices"]["domain_age_days"]) > 100  # the old behaviour, on request
    assert every["metadata"]["slice_bins"] == {}
    with pytest.raises(SpecError, match="'slice_bins' parameter of evaluate must be an integer ≥ 2. Got 1"):
        evaluate(system, [bundle], ds.path, slice_bins=1)


def test_binned_keeps_nan_and_unrecorded_rows_apart_and_few_values_whole():
    x = np.r_[np.arange(100, dtype=np.float64), [np.nan, np.nan, 5.0]]
    missing = np.zeros(x.size, dtype=bool)
    missing[-1] = True
    f = SliceField.binned("x", x, missing=missing, bins=4)
    assert f.values == ("[0, 25)", "[25, 50)", "[50, 75)", "[75, 99]", "NaN", NOT_RECORDED)
    assert np.bincount(f.codes).tolist() == [25, 25, 25, 25, 2, 1]
    assert f.edges == (0.0, 25.0, 50.0, 75.0, 99.0)
    # precision: enough digits to tell the edges apart
    g = SliceField.binned("g", np.linspace(1.0001, 1.0009, 50), bins=2)
    assert g.values == ("[1.0001, 1.0005)", "[1.0005, 1.0009]")
    # at most `bins` distinct values: one slice each, as before
    few = SliceField.binned("k", np.array([1, 2, 2, 3, 3, 3]), bins=5)
    assert few.values == ("1", "2", "3") and few.edges is None

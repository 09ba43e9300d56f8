"""AffinityModel: a logistic model plus a learned offset per pair of text fields — scoring,
saving, refusing bad parameters, and fitting (closedloop.training.affinity)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop import Bundle, IntelligenceError, LogisticModel, SpecError, System, Thresholds, checks
from closedloop.base.numeric import sigmoid
from closedloop.context import features as F
from closedloop.context.fields import Float, Str
from closedloop.intelligence import AffinityModel
from closedloop.training.affinity import fit_affinity, newton_offsets, pair_codes

CATS = ["a", "b", "c", "d"]


def _system() -> System:
    return System("aff", context=[Str("user_id"), Str("category", choices=CATS), Float("q")], unit="user_id",
                  features={"q": F.col("q"), **{f"cat_{c}": F.col("category").eq(c) for c in CATS}},
                  actions=["none", "act"], experience=Thresholds("p", {"act": 0.5}, otherwise="none"))


def _model() -> AffinityModel:
    return AffinityModel({"q": 1.0, "cat_a": 0.3}, -1.0, keys=("user_id", "category"),
                         table={("u1", "a"): 2.0, ("u1", "b"): -1.0, ("u2", "c"): 0.5}, output="p")


def _rows(system, users, cats, q):
    return system.schema.validate_batch({"user_id": users, "category": cats, "q": q})


def test_a_pair_in_the_table_moves_the_logit_and_any_other_scores_as_the_logistic_model():
    system = _system()
    s = _model().bind(system.features)
    plain = LogisticModel({"q": 1.0, "cat_a": 0.3}, -1.0, output="p").bind(system.features)
    cols = _rows(system, ["u1", "u1", "u2", "u9", "u2"], ["a", "b", "c", "a", "a"], [0.5, 0.5, 0.1, 0.2, 0.0])
    X = system.features.batch(cols)
    got = s.batch(X, cols)[:, 0]
    base = plain.batch(X, cols)[:, 0]
    z = np.log(base / (1 - base))
    assert np.allclose(got, [sigmoid(z[0] + 2.0), sigmoid(z[1] - 1.0), sigmoid(z[2] + 0.5), base[3], base[4]], rtol=1e-12)
    assert got[3] == base[3] and got[4] == base[4]  # unknown user, unknown pair: exactly the logistic model
    for i in range(cols.n):  # the single-row form is bitwise the batch's
        c = system.schema.validate({"user_id": cols["user_id"][i].as_py(), "category": cols["category"][i].as_py(),
                                    "q": float(cols["q"][i])})
        assert s.one(system.features.one(c), c)[0] == got[i]


def test_the_conformance_suite_passes_and_a_bundle_round_trips_the_table(tmp_path):
    system = _system()
    checks.check_intelligence(system, _model(), n=300)
    path = Bundle.build(system, _model()).save(tmp_path / "b")
    back = Bundle.load(path, system).intelligence
    assert isinstance(back, AffinityModel) and back.table == _model().table and back.keys == ("user_id", "category")
    assert len(list(path.glob("**/affinity-*.arrow"))) == 1  # the table is a file of the bundle, not JSON


def test_a_tampered_table_file_is_refused(tmp_path):
    system = _system()
    path = Bundle.build(system, _model()).save(tmp_path / "b")
    f = next(path.glob("**/affinity-*.arrow"))
    f.write_bytes(f.read_bytes()[:-20] + b"\0" * 20)
    with pytest.raises(Exception, match="checksum|sha256|digest|Arrow"):
        Bundle.load(path, system)


@pytest.mark.parametrize("kw, message", [
    ({"keys": ("user_id",)}, "'keys' parameter of AffinityModel must be two different text field names"),
    ({"keys": ("user_id", "user_id")}, "'keys' parameter of AffinityModel must be two different"),
    ({"table": {("u1",): 1.0}}, "keys of AffinityModel's table must be pairs of strings"),
    ({"table": {("u1", "a"): float("nan")}}, r"'table\[\('u1', 'a'\)\]' parameter of AffinityModel must be a finite number"),
    ({"table": [("u1", "a", 1.0)]}, "'table' parameter of AffinityModel must be a mapping"),
])
def test_bad_parameters_are_refused_naming_them(kw, message):
    args = {"keys": ("user_id", "category"), "table": {}, **kw}
    with pytest.raises(IntelligenceError, match=message):
        AffinityModel({"q": 1.0}, 0.0, **args)


def test_keys_must_be_text_fields_of_the_system():
    system = _system()
    with pytest.raises(IntelligenceError, match="'keys' of AffinityModel must name text fields.*'q'"):
        AffinityModel({"q": 1.0}, 0.0, keys=("user_id", "q"), table={}).bind(system.features)


def _world(seed: int, n_users: int, rows: int):
    """Clicks whose logit is q + a per-(user, category) interest: what the offsets must recover."""
    rng = np.random.default_rng(seed)
    interest = rng.normal(0.0, 1.0, size=(n_users, len(CATS)))
    u = rng.integers(0, n_users, rows)
    c = rng.integers(0, len(CATS), rows)
    q = rng.normal(0.0, 1.0, rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(-1.5 + q + interest[u, c])))).astype(np.int64)
    return interest, [f"u{i}" for i in u], [CATS[i] for i in c], q, y


def test_fitting_recovers_each_pairs_interest_and_beats_the_logistic_model_on_new_rows():
    from closedloop.training.logistic import fit_logistic_features, log_loss

    system = _system()
    interest, users, cats, q, y = _world(1, 200, 60_000)
    cols = _rows(system, users, cats, q.tolist())
    model = fit_affinity(system, {"keys": ["user_id", "category"]}, cols, y, None, "p")
    learned = np.array([model.table.get((f"u{i}", c), 0.0) for i in range(200) for c in CATS])
    truth = interest.ravel() - interest.mean()
    assert np.corrcoef(learned, truth)[0, 1] > 0.9
    _, users2, cats2, q2, y2 = _world(1, 200, 20_000)  # the same users, fresh rows
    c2 = _rows(system, users2, cats2, q2.tolist())
    X2 = system.features.batch(c2)
    plain = fit_logistic_features(system, system.features.batch(cols), y, output="p")
    ll_aff = log_loss(y2, model.bind(system.features).batch(X2, c2)[:, 0])
    ll_plain = log_loss(y2, plain.bind(system.features).batch(X2, c2)[:, 0])
    assert ll_aff < ll_plain - 0.02


def test_the_prior_shrinks_a_pair_seen_little_and_newton_converges():
    z = np.zeros(6)
    y = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    code = np.array([0, 1, 1, 1, 1, 1])  # pair 0 seen once (a click), pair 1 five times (4 clicks)
    o = newton_offsets(z, y, np.ones(6), code, 2, 1.0, 8)
    o_more = newton_offsets(z, y, np.ones(6), code, 2, 1.0, 30)
    assert np.allclose(o, o_more, atol=1e-9)  # 8 steps are converged
    assert 0 < o[0] < o[1] < np.log(4)  # shrunk toward 0, less where seen less
    g = np.bincount(code, weights=1 / (1 + np.exp(-o[code])) - y, minlength=2) + o  # the penalized gradient is 0
    assert np.allclose(g, 0.0, atol=1e-9)


def test_pair_codes_name_each_pair_once_in_code_order():
    code, pairs = pair_codes(["x", "y", "x", "x"], ["a", "a", "b", "a"])
    assert [pairs[i] for i in code] == [("x", "a"), ("y", "a"), ("x", "b"), ("x", "a")]
    assert len(set(pairs)) == len(pairs) == 3


@pytest.mark.parametrize("params, message", [
    ({}, "'keys' param of the 'affinity' model must be two different text fields"),
    ({"keys": ["user_id", "nope"]}, "'keys' param"),
    ({"keys": ["user_id", "category"], "l2": 0}, "'l2' param of the 'affinity' model must be a number > 0. Got 0"),
    ({"keys": ["user_id", "category"], "rounds": 0}, "'rounds' param of the 'affinity' model must be an int in"),
    ({"keys": ["user_id", "category"], "depth": 3}, "takes params"),
])
def test_bad_fit_params_are_refused(params, message):
    system = _system()
    cols = _rows(system, ["u1", "u2"], ["a", "b"], [0.0, 1.0])
    with pytest.raises(SpecError, match=message):
        fit_affinity(system, params, cols, np.array([0, 1]), None, "p")

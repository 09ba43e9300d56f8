"""The vectorized ranking draw (experience/ranking_kernel.py): one request (rank_one, through rank)
and many (rank_rows, the batch path) give the rankings and propensities of the per-candidate
definition — slot by slot, the exploration primitives over the remaining candidates — bit for bit,
including NaN and ±inf scores, ties, k beyond the candidates and one candidate."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.base.numeric import compiled
from closedloop.experience import ranking_inputs
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB, choose, uniform, uniform_batch, uniform_salts
from closedloop.experience.ranking import rank, slot_probabilities
from closedloop.experience.ranking_kernel import rank_one, rank_one_numpy, rank_rows, rank_rows_numpy
from closedloop.experience.ranking_policy import _greedy_order, _plain, _slot_probs

ID = "0123456789abcdef0123456789abcdef"


def bits(xs) -> bytes:
    return np.asarray(xs, dtype=np.float64).tobytes()


def per_candidate(scores, k, explore, decision_id):
    """The definition, candidate by candidate: slot j's probabilities over the remaining candidates
    (softmax with its limits at ±inf, or ε-greedy in the band), drawn with choose()."""
    n = len(scores)
    order = _greedy_order(scores, n, _plain(scores))
    remaining = list(range(n))
    ranking, slots, explored, p = [], [], [], 1.0
    for j in range(min(k, n)):
        best = next(i for i in order if i in remaining)
        if explore is None or (isinstance(explore, EpsilonGreedy) and not explore.in_band(scores[best])):
            pos, q = remaining.index(best), 1.0
        else:
            probs = _slot_probs(explore, scores, remaining, best)
            pos = choose(probs, uniform(decision_id, j))
            q = probs[pos]
        pick = remaining.pop(pos)
        ranking.append(pick)
        slots.append(q)
        p = p * q
        if pick != best and explore is not None:
            explored.append(j)
    return ranking, slots, p, explored


finite = st.floats(-30, 30, allow_nan=False)
any_score = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0]))
policies = st.one_of(
    st.none(),
    st.builds(Softmax, st.floats(0.05, 20)),
    st.builds(EpsilonGreedy, st.floats(0.01, 1.0), st.sampled_from([-math.inf, -1.0, 0.0]), st.sampled_from([math.inf, 1.0, 5.0])),
    st.builds(SquareCB, st.floats(0.01, 1000.0)),
)
ids = st.one_of(st.text(min_size=1, max_size=10), st.integers(0, 2**128 - 1).map(lambda v: f"{v:032x}"))


@settings(max_examples=400, deadline=None)
@given(
    scores=st.one_of(st.lists(finite, max_size=40), st.lists(any_score, max_size=12), st.lists(st.sampled_from([0.5, 0.25]), max_size=9)),
    k=st.integers(1, 10),
    explore=policies,
    did=ids,
)
def test_rank_is_the_per_candidate_draw_bitwise(scores, k, explore, did):
    order, slots, p, explored = rank(scores, k, explore, did)
    ref = per_candidate(scores, k, explore, did)
    assert order == ref[0] and explored == ref[3]
    assert bits(slots) == bits(ref[1]) and bits([p]) == bits([ref[2]])
    assert bits(slot_probabilities(scores, order, explore)) == bits(slots)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.one_of(st.lists(finite, max_size=20), st.lists(any_score, max_size=8)), min_size=1, max_size=8),
    k=st.integers(1, 6),
    explore=policies,
)
def test_rank_rows_is_rank_on_each_row(rows, k, explore):
    """Many requests in one padded matrix (the batch path) draw what each request draws alone."""
    R, N = len(rows), max(len(r) for r in rows)
    S = np.full((R, N), 7.0)  # padding: a score that would win, were it not padding
    for i, r in enumerate(rows):
        S[i, : len(r)] = r
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    dids = [f"{i:032x}" for i in range(R)]
    m = min(k, N)
    U = np.column_stack([uniform_batch(dids, salt=j) for j in range(m)]) if m else np.zeros((R, 0))
    picks, slots, explored, props = rank_rows(S, counts, k, explore, U)
    for i, r in enumerate(rows):
        mi = min(k, len(r))
        order, sl, p, ex = rank(r, k, explore, dids[i])
        assert picks[i, :mi].tolist() == order
        assert bits(slots[i, :mi]) == bits(sl) and bits([props[i]]) == bits([p])
        assert np.flatnonzero(explored[i, :mi]).tolist() == (ex if explore is not None else [])


def test_uniform_salts_are_uniform():
    for did in (ID, "not-hex", "ffffffffffffffffffffffffffffffff"):
        assert uniform_salts(did, 6) == [uniform(did, j) for j in range(6)]


# -- edge cases, by hand --------------------------------------------------------------------------


def test_nan_scores_get_no_probability_while_a_number_remains():
    s = [math.nan, 0.2, math.nan, 0.1]
    order, slots, _, _ = rank(s, 4, Softmax(1.0), ID)
    assert sorted(order[:2]) == [1, 3] and order[2:] == [0, 2]  # the NaN ones last, in input order
    assert slots[2] == 0.5 and slots[3] == 1.0  # only NaN left: a uniform choice among them


def test_plus_inf_scores_share_the_slot_and_minus_inf_come_before_nan():
    s = [1.0, math.inf, math.nan, math.inf, -math.inf]
    order, slots, _, _ = rank(s, 5, Softmax(0.5), ID)
    assert sorted(order[:2]) == [1, 3] and slots[:2] == [0.5, 1.0]
    assert order[2] == 0 and slots[2] == 1.0  # exp(-inf) = 0 for the -inf one; NaN weighs 0
    assert order[3:] == [4, 2] and slots[3:] == [1.0, 1.0]  # -inf before NaN: each alone


def test_ties_go_to_the_lower_index_and_share_equally():
    order, slots, p, explored = rank([0.3, 0.3, 0.3], 3, None, ID)
    assert order == [0, 1, 2] and slots == [1.0, 1.0, 1.0] and p == 1.0 and explored == []
    order, slots, _, _ = rank([0.3, 0.3, 0.3], 3, Softmax(2.0), ID)
    assert slots[0] == 1 / 3 and slots[1] == 0.5 and slots[2] == 1.0


@pytest.mark.parametrize("explore", [None, Softmax(0.5), EpsilonGreedy(0.3)])
def test_k_beyond_the_candidates_and_one_candidate(explore):
    order, slots, p, _ = rank([0.2, 0.9], 5, explore, ID)
    assert sorted(order) == [0, 1] and len(slots) == 2 and slots[1] == 1.0
    assert rank([0.4], 3, explore, ID) == ([0], [1.0], 1.0, [])
    assert rank([], 3, explore, ID) == ([], [], 1.0, [])


def test_epsilon_greedy_probabilities():
    eps = EpsilonGreedy(0.4, low=0.0, high=0.5)
    s = [0.1, 0.45, 0.3, 0.9]
    found = set()
    for i in range(200):
        order, slots, p, explored = rank(s, 3, eps, f"{i:032x}")
        # slot 0: best is 0.9, outside the band: greedy with probability 1
        assert order[0] == 3 and slots[0] == 1.0
        # slot 1: best remaining 0.45 in the band, 3 remaining
        assert slots[1] == ((1 - 0.4) + 0.4 / 3 if order[1] == 1 else 0.4 / 3)
        assert explored == ([1] if order[1] != 1 else []) + ([2] if order[2] != _next_best(s, order[:2]) else [])
        assert p == slots[0] * slots[1] * slots[2]
        found.add(order[1])
    assert found == {0, 1, 2}


def _next_best(s, taken):
    return max((i for i in range(len(s)) if i not in taken), key=lambda i: (s[i], -i))


def test_softmax_draws_follow_plackett_luce():
    """Over many decision ids, the first two slots follow the softmax and its renormalization."""
    s = np.array([0.0, 0.5, 1.0, 1.5])
    t = 0.7
    n = 20_000
    dids = [f"{i:032x}" for i in range(n)]
    U = np.column_stack([uniform_batch(dids, salt=j) for j in range(2)])
    picks, slots, _, _ = rank_rows(np.tile(s, (n, 1)), np.full(n, 4), 2, Softmax(t), U)
    w = np.exp(s / t)
    p1 = w / w.sum()
    freq = np.bincount(picks[:, 0], minlength=4) / n
    assert np.allclose(freq, p1, atol=0.012)
    assert np.allclose(slots[:, 0], p1[picks[:, 0]])
    # slot 2 given slot 1 = the top item
    top = picks[:, 0] == 3
    p2 = w[:3] / w[:3].sum()
    assert np.allclose(np.bincount(picks[top, 1], minlength=4)[:3] / top.sum(), p2, atol=0.02)


# -- the compiled draw and the numpy draw ---------------------------------------------------------

needs_c = pytest.mark.skipif(compiled("rank_rows") is None, reason="the compiled extension is not built")


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    scores=st.one_of(
        st.lists(finite, max_size=90), st.lists(any_score, max_size=12), st.lists(st.sampled_from([0.5, 0.25, -0.0, 0.0]), max_size=9)
    ),
    k=st.integers(1, 12),
    explore=policies,
    did=ids,
)
def test_the_compiled_draw_is_the_numpy_draw_bitwise(scores, k, explore, did):
    s = np.array(scores, dtype=np.float64)
    u = uniform_salts(did, min(k, len(scores))) if explore is not None else []
    got, ref = rank_one(s, k, explore, u), rank_one_numpy(s, k, explore, u)
    assert got[0] == ref[0] and got[3] == ref[3]
    assert bits(got[1]) == bits(ref[1]) and bits([got[2]]) == bits([ref[2]])


@needs_c
@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.one_of(st.lists(finite, max_size=30), st.lists(any_score, max_size=8)), min_size=1, max_size=10),
    k=st.integers(1, 7),
    explore=policies,
)
def test_the_compiled_rows_are_the_numpy_rows_bitwise(rows, k, explore):
    """Every row, finite or not (those the compiled loop leaves to numpy), padded to the longest."""
    R, N = len(rows), max(len(r) for r in rows)
    S = np.full((R, N), 7.0)
    for i, r in enumerate(rows):
        S[i, : len(r)] = r
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    m = min(k, N)
    U = np.column_stack([uniform_batch([f"{i:032x}" for i in range(R)], salt=j) for j in range(m)]) if m else np.zeros((R, 0))
    got, ref = rank_rows(S, counts, k, explore, U), rank_rows_numpy(S, counts, k, explore, U)
    keep = np.arange(m)[None, :] < np.minimum(counts, k)[:, None]
    assert (got[0][keep] == ref[0][keep]).all() and (got[2][keep] == ref[2][keep]).all()
    assert bits(got[1][keep]) == bits(ref[1][keep]) and bits(got[3]) == bits(ref[3])


def test_uniform_batch_is_uniform_for_every_kind_of_id():
    """The compiled loop (32 lower-case hex digits) and the general path (anything else: BLAKE2b)
    give uniform(id, salt) — for a list, a tuple, an Arrow column and a slice of one."""
    rng = np.random.default_rng(3)
    hexes = [f"{int(v):032x}" for v in rng.integers(0, 2**63, size=50)] + ["f" * 32, "0" * 32]
    odd = ["ABCDEF" + "0" * 26, "not-hex", "", "é" * 32, "0123456789abcdef0123456789abcdeg", "0" * 31]
    for ids_ in (hexes, hexes + odd, odd):
        for salt in (0, 1, 4, 2**70, -3):
            want = np.array([uniform(d, salt) for d in ids_])
            assert bits(uniform_batch(ids_, salt=salt)) == bits(want)
            assert bits(uniform_batch(tuple(ids_), salt=salt)) == bits(want)
            assert bits(uniform_batch(pa.array(ids_), salt=salt)) == bits(want)
            assert bits(uniform_batch(pa.array(["x"] + ids_)[1:], salt=salt)) == bits(want)
    assert uniform_batch([], salt=2).shape == (0,)


@pytest.mark.parametrize("seed", range(20))
def test_the_compiled_repeat_check_is_the_vectorized_one(seed, monkeypatch):
    """Repeated candidate ids of a batch: the compiled hash-table pass and the vectorized keys find
    the same first repeat (text ids; unicode, empty ids, uneven requests, a sliced column)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, size=int(rng.integers(1, 60)))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pool = int(rng.integers(5, 3000))
    pieces = ["é", "a", "", "😀", "x" * 9]
    ids = [pieces[k % 5] + str(k) for k in rng.integers(0, pool, size=int(offsets[-1])).tolist()]
    col = pa.array(["pad"] + ids, type=pa.string()).slice(1)
    got = ranking_inputs._first_repeat(col, offsets)
    monkeypatch.setattr(ranking_inputs, "_C_REPEAT", None)
    assert got == ranking_inputs._first_repeat(col, offsets)


@pytest.mark.parametrize("int_ids", [False, True])
def test_the_validators_ids_are_the_same_without_the_compiled_gather(int_ids, monkeypatch):
    from closedloop import Int, Schema, Str

    schema = Schema([Int("item") if int_ids else Str("item"), Str("kind", default="a")])
    raw = [{"item": v} for v in ([5, -7, 2**40] if int_ids else ["x", "é", "", "😀"])]
    got = ranking_inputs._CandidateValidator(schema, "item").columns(raw)
    monkeypatch.setattr(ranking_inputs, "_C_GATHER_LIST", None)
    ref = ranking_inputs._CandidateValidator(schema, "item").columns(raw)
    assert got is not None and ref is not None and got[1] == ref[1] == [str(c["item"]) if int_ids else c["item"] for c in raw]

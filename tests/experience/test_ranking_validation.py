"""A ranking request's candidates: the compiled validator (msgspec, one pass) gives the columns the
column-wise path gives, and refuses (to that path, which names every error) whatever it refuses."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from closedloop import BatchContextError, Bundle, ContextError, F, Float, Int, LinearModel, Schema, Str, System
from closedloop.context.schema import Bool
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax
from closedloop.experience.ranking import RankingPlan
from closedloop.experience.ranking_inputs import _CandidateValidator, _first_repeat, _id_keys

ID = "0123456789abcdef0123456789abcdef"


FIELDS = [
    Str("kind", choices=("a", "b", "ç")),
    Float("q", ge=0, le=10),
    Float("w", default=2),  # an int default for a float field
    Float("z", default=0.0, nonfinite="default"),
    Float("keep", default=0.0, nonfinite="keep"),
    Int("n", ge=-3, default=1),
    Bool("flag", default=False),
]


def make_plan(int_ids: bool = False) -> RankingPlan:
    system = System(
        "v", context=[Str("user"), Int("hour", ge=0, le=23, default=0)],
        candidates=[Int("item") if int_ids else Str("item", max_length=8), *FIELDS], candidate_id="item", unit="user",
        features={"q": F.col("q"), "w": F.col("w") + F.col("n"), "k": F.col("kind").eq("ç") & F.col("flag")},
        experience=Ranking("score", k=3, explore=Softmax(1.0)),
    )
    return RankingPlan(system, Bundle.build(system, LinearModel({"q": 1.0, "w": 0.5, "k": 0.25})))


def candidates(rng: np.random.Generator, n: int, int_ids: bool = False) -> list[dict]:
    out = []
    for j in range(n):
        c: dict = {"item": j if int_ids else f"é{j}", "kind": ["a", "b", "ç"][j % 3], "q": float(rng.random() * 10)}
        if j % 2:
            c["q"] = int(rng.integers(0, 11))  # an int for a float field
        if j % 3 == 0:
            c["w"] = float(rng.normal())
        if j % 4 == 0:
            c["keep"] = [math.nan, math.inf, -0.0, 1.5][j % 16 // 4]
        if j % 5 == 0:
            c["n"] = int(rng.integers(-3, 2**40))
        if j % 7 == 0:
            c["flag"] = True
        if j % 11 == 0:
            c["ignored"] = {"any": "thing"}
        out.append(c)
    return out


def same_column(a, b) -> bool:
    if isinstance(a, pa.Array) or isinstance(b, pa.Array):
        return isinstance(a, pa.Array) and isinstance(b, pa.Array) and a.type == b.type and a.equals(b)
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a.view(np.uint8), b.view(np.uint8)))


@pytest.mark.parametrize("int_ids", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_validator_gives_the_columnwise_columns(seed: int, int_ids: bool) -> None:
    plan = make_plan(int_ids=int_ids)
    raw = candidates(np.random.default_rng(seed), 1 + seed * 13, int_ids)
    got = plan._cvalid.columns(raw)
    assert got is not None
    cols, ids = got
    ref, ref_ids = plan._candidates_columnwise(raw)
    assert ids == ref_ids and all(isinstance(i, str) for i in ids)
    for name in ref.names():
        assert same_column(cols[name], ref[name]), name


@pytest.mark.parametrize(
    "change",
    [
        {"q": 11.0}, {"q": -1}, {"q": True}, {"q": "1"}, {"q": math.nan}, {"q": None}, {"kind": "c"},
        {"item": "toolongtext"}, {"n": -4}, {"n": 2**63}, {"n": 1.0}, {"flag": 1}, {"z": math.inf},
        {"w": None}, {"keep": "x"},
    ],
)
def test_the_compiled_validator_leaves_refusals_and_null_defaults_to_the_columnwise_path(change: dict) -> None:
    plan = make_plan()
    raw = candidates(np.random.default_rng(1), 5)
    raw[3].update(change)
    assert plan._cvalid.columns(raw) is None
    ctx = {"user": "u", "candidates": raw}
    if "z" in change or change == {"w": None}:  # declared handling: the default, not an error
        d = plan.decide(ctx, ID, 1)
        assert d.candidates == [c["item"] for c in raw]
    else:
        with pytest.raises(BatchContextError) as e:
            plan.decide(ctx, ID, 1)
        assert e.value.errors[0].field == f"candidates[3].{next(iter(change))}"


def test_missing_fields_non_mappings_and_forbidden_keys_are_named_as_before() -> None:
    plan = make_plan()
    raw = candidates(np.random.default_rng(2), 4)
    del raw[2]["kind"]
    with pytest.raises(BatchContextError) as e:
        plan.decide({"user": "u", "candidates": raw}, ID, 1)
    assert (e.value.errors[0].field, e.value.errors[0].rule) == ("candidates[2].kind", "present")

    raw = candidates(np.random.default_rng(2), 4)
    raw[1] = ["not", "a", "mapping"]
    with pytest.raises(ContextError, match=r"candidates\[1\]"):
        plan.decide({"user": "u", "candidates": raw}, ID, 1)

    strict = _CandidateValidator(Schema([Str("item"), *FIELDS], extra="forbid"), "item")
    raw = [{k: v for k, v in c.items() if k != "ignored"} for c in candidates(np.random.default_rng(2), 4)]
    assert strict.columns(raw) is not None
    raw[2]["other"] = 1
    assert strict.columns(raw) is None


def test_decisions_are_the_same_through_either_path(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan()
    raw = candidates(np.random.default_rng(5), 40)
    d = plan.decide({"user": "u", "hour": 3, "candidates": raw}, ID, 1)
    monkeypatch.setattr(_CandidateValidator, "columns", lambda self, raw: None)
    d2 = plan.decide({"user": "u", "hour": 3, "candidates": raw}, ID, 1)
    assert d == d2
    assert [s.hex() for s in d.scores] == [s.hex() for s in d2.scores]


# -- repeated candidate ids in a batch ---------------------------------------------------------


def first_repeat_by_definition(ids: list, offsets: list[int]) -> int | None:
    for i in range(len(offsets) - 1):
        seen: set = set()
        for j in range(offsets[i], offsets[i + 1]):
            if ids[j] in seen:
                return j
            seen.add(ids[j])
    return None


@pytest.mark.parametrize("seed", range(40))
def test_the_vectorized_repeat_check_finds_the_first_repeat_by_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nreq = int(rng.integers(0, 30))
    uniform = seed % 2 == 0
    counts = np.full(nreq, int(rng.integers(0, 12))) if uniform else rng.integers(0, 12, size=nreq)
    offsets = np.zeros(nreq + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    pool = int(rng.integers(1, 400))  # small pools repeat often, large ones rarely
    if seed % 4 < 2:
        ids: list = [["é", "a", "", "A", "😀"][k % 5] + str(k) for k in rng.integers(0, pool, size=total).tolist()]
        col = pa.array(ids, type=pa.string())
    else:
        ids = (rng.integers(0, pool, size=total) - pool // 2).tolist()
        col = np.array(ids, dtype=np.int64)
    assert _first_repeat(col, offsets) == first_repeat_by_definition(ids, offsets.tolist())


def test_a_repeated_candidate_id_is_named_with_its_input_row() -> None:
    plan = make_plan()
    cands = {
        "item": ["x", "y", "x", "z", "y", "w"],
        "kind": ["a"] * 6, "q": [1.0] * 6,
        "request": [1, 0, 1, 0, 2, 1],  # request 1: x, x (rows 0 and 2) — request 0 (y, z) is fine
    }
    with pytest.raises(ContextError) as e:
        plan.decide_batch({"user": ["u0", "u1", "u2"]}, cands, [ID, ID[::-1], ID], 1)
    err = e.value
    assert (err.field, err.rule, err.value, err.row) == ("candidates.item", "unique among the candidates of request 1", "x", 2)
    cands["item"][2] = "v"
    batch = plan.decide_batch({"user": ["u0", "u1", "u2"]}, cands, [ID, ID[::-1], ID], 1)
    assert batch.candidate_ids == ["y", "z", "x", "v", "w", "y"]
    assert [d.candidates for d in batch] == [["y", "z"], ["x", "v", "w"], ["y"]]
    assert batch.to_arrow()["candidates"].to_pylist() == [["y", "z"], ["x", "v", "w"], ["y"]]

    ints = make_plan(int_ids=True)
    cands = {"item": [5, -7, 5], "kind": ["a"] * 3, "q": [1.0] * 3, "request": [0, 0, 0]}
    with pytest.raises(ContextError) as e:
        ints.decide_batch({"user": ["u0"]}, cands, [ID], 1)
    assert (e.value.value, e.value.row) == ("5", 2)
    with pytest.raises(ContextError, match=r"candidates\[2\]\.item"):
        ints.decide({"user": "u", "candidates": [{"item": 5, "kind": "a", "q": 1.0}, {"item": -7, "kind": "a", "q": 1.0},
                                                  {"item": 5, "kind": "b", "q": 2.0}]}, ID, 1)


def test_ids_that_share_a_key_are_checked_exactly() -> None:
    same_ends = ["abcdefgh-1-12345678", "abcdefgh-2-12345678", "abcdefgh-1-12345678"]  # same length, first and last 8 bytes
    keys = _id_keys(pa.array(same_ends))
    assert keys[0] == keys[1] == keys[2]
    ids = pa.array(same_ends[:2] + ["", "é", "😀", "e\u0301"])
    assert _first_repeat(ids, np.array([0, 2, 6])) is None  # equal keys, different ids
    assert _first_repeat(pa.array(same_ends), np.array([0, 3])) == 2
    sliced = pa.array(["pad", "x", "y", "x", "z"]).slice(1)  # an array with an offset into its buffers
    assert _first_repeat(sliced, np.array([0, 2, 4])) is None
    assert _first_repeat(sliced, np.array([0, 3, 4])) == 2
    assert len(set(_id_keys(pa.array(["", "a", "ab", "a\x00", "é", "e"])).tolist())) == 6

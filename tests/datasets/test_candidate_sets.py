"""Each decision's whole candidate set beside a per-slot reward dataset: written by
build_reward_dataset from telemetry, read back with what was shown where, its reward and its
propensity — and what cannot be read is left out and counted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_reward_dataset import T0, S, _feed, _run  # tests/datasets/test_reward_dataset.py: the same telemetry

from closedloop import Runtime
from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, read_candidate_sets
from closedloop.datasets.slots import build_reward_dataset
from closedloop.errors import DatasetError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sets")
    system = _feed()
    store, decided, expect = _run(tmp / "home", system, n=60)
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 10**5 * S, out=tmp / "ds")
    return system, decided, expect, m, tmp / "ds"


def test_every_candidate_of_every_decision_with_its_slot_reward_and_propensity(built):
    system, decided, expect, m, ds = built
    assert m.content["candidate_sets"] == {"file": CANDIDATE_SETS_FILE, "decisions": len(decided)}
    sets = read_candidate_sets(system, ds)
    assert sets.decision_ids == [d.decision_id for d in decided] and sets.excluded == {}
    for k, d in enumerate(decided):
        lo, hi = sets.offsets[k], sets.offsets[k + 1]
        assert sets.candidate_ids[lo:hi] == d.candidates  # every candidate, in input order
        for j in range(lo, hi):
            cid = sets.candidate_ids[j]
            if cid in d.ranking:
                slot = d.ranking.index(cid) + 1
                assert sets.slot[j] == slot
                assert (cid, sets.reward[j], sets.propensity[j]) == expect[(d.decision_id, slot)]
            else:
                assert sets.slot[j] == 0 and np.isnan(sets.reward[j]) and np.isnan(sets.propensity[j])


def test_the_sets_decide_again_through_the_runtime_as_logged(built):
    from examples.feed import system as feed_module

    from closedloop import Bundle

    system, decided, _, _, ds = built
    sets = read_candidate_sets(system, ds)
    again = Runtime(system, Bundle.build(system, feed_module.model)).decide_batch(
        sets.requests, candidates=sets.candidates, decision_ids=sets.decision_ids, timestamps_ns=sets.timestamps_ns.tolist())
    for k, d in enumerate(decided):
        assert again[k].ranking == d.ranking and again[k].slot_propensities == d.slot_propensities
    flat = sets.flat(system)
    assert flat.n == len(sets.candidate_ids) and flat.pylist("user_id")[:2] == [decided[0].unit] * 2


def test_what_cannot_be_read_is_left_out_and_counted(built, tmp_path):
    import shutil

    system, decided, _, _, ds = built
    shutil.copytree(ds, tmp_path / "ds")
    t = pq.read_table(tmp_path / "ds" / CANDIDATE_SETS_FILE)
    dec = t["decision_id"].to_pylist()
    cands = t["candidate"].to_pylist()
    first = {d: dec.index(d) for d in dict.fromkeys(dec)}
    ids = list(first)
    cands[first[ids[1]]]["category"] = "weather"  # not one of the schema's choices
    shown = set(decided[2].ranking)
    keep = [not (d == ids[2] and c["item_id"] in shown) and d != ids[3] for d, c in zip(dec, cands, strict=True)]
    keep[first[ids[4]] + 1] = True
    cands[first[ids[4]] + 1]["item_id"] = cands[first[ids[4]]]["item_id"]  # the set repeats an id
    t = t.set_column(t.column_names.index("candidate"), "candidate", pa.array(cands)).filter(pa.array(keep))
    pq.write_table(t, tmp_path / "ds" / CANDIDATE_SETS_FILE)
    sets = read_candidate_sets(system, tmp_path / "ds")
    assert sets.excluded == {"invalid_candidate": 1, "no_candidate_set": 1, "repeated_candidate": 1, "slate_not_in_set": 1}
    assert sets.decision_ids == [d.decision_id for i, d in enumerate(decided) if i not in (1, 2, 3, 4)]
    assert len(sets.candidate_ids) == sets.offsets[-1] == len(sets.candidates["request"])


def test_a_dataset_without_candidate_sets_is_refused_naming_the_file(built, tmp_path):
    import shutil

    system, _, _, _, ds = built
    shutil.copytree(ds, tmp_path / "ds")
    (tmp_path / "ds" / CANDIDATE_SETS_FILE).unlink()
    with pytest.raises(DatasetError, match=r"whole candidate set.*has rows 'slot' and no candidate_sets\.parquet"):
        read_candidate_sets(system, tmp_path / "ds")

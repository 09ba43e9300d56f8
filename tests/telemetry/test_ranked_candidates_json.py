"""A ranking record's candidates JSON is the same bytes whichever path writes it: the compiled
validator's structs encoded in one call, or the column-wise path (typed columns, a dict per
candidate) it falls back to — defaults filled, ints of a Float field written as floats, unicode."""

from __future__ import annotations

import random

from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.ranked import RankedEncoder


def _encoder():
    feed = feed_module.feed
    return RankedEncoder(feed, Sanitizer(feed.schema, "", None), "w", "full", None)


def test_the_compiled_path_writes_the_column_wise_bytes():
    enc = _encoder()
    rng = random.Random(3)
    for req in generate(200, n_candidates=[rng.randint(0, 12) for _ in range(200)], seed=5):
        for c in req["candidates"]:
            if rng.random() < 0.3:
                c.pop("is_new")  # absent: the default
            if rng.random() < 0.2:
                c["age_hours"] = rng.randint(0, 50)  # an int for a Float field
            if rng.random() < 0.1:
                c["item_id"] = "é✓ " + c["item_id"]
        fast = enc._single_json(req)
        slow = enc._candidates(enc._single_candidates(req["candidates"]))
        assert fast == slow


def test_candidates_changed_after_deciding_are_written_as_given():
    enc = _encoder()
    req = {"user_id": "u", "hour": 3, "candidates": [{"item_id": "a", "category": "nope", "item_ctr": 2.0, "age_hours": 1.0}]}
    cj, _ = enc._single_json(req)
    assert '"category":"nope"' in cj

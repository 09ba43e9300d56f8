"""The cycle's ingest step takes a ranking system's outcomes that name their slot, as
``closedloop outcomes ingest`` does: a ``candidate_id`` the decision showed or a ``slot`` of its
slate is logged with the candidate's id; a candidate it did not show and a slot past its slate are
rejected by line, field, rule and value — the good lines kept."""

from __future__ import annotations

import json
from types import SimpleNamespace

from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop import Bundle, Runtime
from closedloop.orchestration.steps.ingest import Ingest
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9


def test_outcomes_naming_a_slot_are_checked_against_the_logged_slate(tmp_path):
    feed = feed_module.feed
    home = tmp_path / "home"
    with Telemetry(SegmentLog(home), system=feed) as tel:
        rt = Runtime(feed, Bundle.build(feed, feed_module.model), telemetry=tel)
        d1, d2 = (rt.decide(c, timestamp_ns=T0) for c in generate(2, n_candidates=10, seed=1))
    not_shown = next(c for c in d1.candidates if c not in d1.ranking)
    lines = [
        {"decision_id": d1.decision_id, "kind": "clicked", "source": "app", "event_ns": T0 + 1, "candidate_id": d1.ranking[2]},
        {"decision_id": d2.decision_id, "kind": "clicked", "source": "app", "event_ns": T0 + 2, "slot": 2},
        {"decision_id": d1.decision_id, "kind": "clicked", "source": "app", "event_ns": T0 + 3, "candidate_id": not_shown},
        {"decision_id": d2.decision_id, "kind": "clicked", "source": "app", "event_ns": T0 + 4, "slot": 9},
    ]
    (home / "inbox").mkdir()
    (home / "inbox" / "clicks.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ctx = SimpleNamespace(home=home, system=feed, clock=ManualClock(T0 + 10**9))
    result = Ingest().run(ctx)  # type: ignore[arg-type]
    assert (result.ingested, result.durable) == (2, 2)
    assert [(r["line"], r["reason"].split(" must")[0]) for r in result.rejected] == [(3, "'candidate_id'"), (4, "'slot'")]
    assert repr(not_shown) in result.rejected[0]["reason"] and "9" in result.rejected[1]["reason"]
    out = TelemetryStore(home).read("outcomes")
    got = sorted(zip(out["decision_id"].to_pylist(), out["candidate_id"].to_pylist(), strict=True))
    assert got == sorted([(d1.decision_id, d1.ranking[2]), (d2.decision_id, d2.ranking[1])])

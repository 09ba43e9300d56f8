"""Monitoring reads only the telemetry files that can hold what it measures (Parquet footers'
statistics) and gets the same answers as reading the whole history."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from closedloop.orchestration import GoalTracker, SeriesStore, _data
from support.orchestration import (
    DAY,
    START,
    synth_days,
)


@pytest.fixture(scope="module")
def home6(tmp_path_factory: pytest.TempPathFactory):
    """Six simulated days, compacted after each (one file per day and compaction)."""
    home = tmp_path_factory.mktemp("incr")
    system, _, store = synth_days(home, 6, per_day=600, seed=5, compact_each=True)
    return home, system, store


def test_footer_ranges_pick_the_files_and_the_first_decision(home6, tmp_path: Path) -> None:
    home, system, store = home6
    dec = store.decision_files()
    assert len(dec) >= 6
    since = START + 3 * DAY + 5
    kept = _data.files_since(dec, "timestamp_ns", since)
    con = duckdb.connect()
    rows = con.execute(f"SELECT filename, max(timestamp_ns) FROM read_parquet({[str(f) for f in dec]}, filename=true) "
                       "GROUP BY filename").fetchall()
    assert {Path(f) for f, mx in rows if mx >= since} == set(kept) and len(kept) < len(dec)
    assert _data.files_since(dec, "timestamp_ns", None) == dec
    # the earliest decision: what the deduplicated view says, read from the footers and one file
    view = _data.connect(system.name, dec, (), START + 10 * DAY)
    assert _data.first_ns(system.name, dec, START + 10 * DAY) == view.execute(
        "SELECT min(timestamp_ns) FROM decisions").fetchone()[0]
    view.close()
    assert _data.first_ns(system.name, dec, START - 1) is None  # nothing ingested yet
    assert _data.first_ns("other", dec, START + 10 * DAY) is None
    # a file without statistics is always read
    bare = tmp_path / "bare.parquet"
    pq.write_table(pq.read_table(dec[0]), bare, write_statistics=False)
    assert _data.time_range(bare, "timestamp_ns") is None
    assert _data.files_since([bare], "timestamp_ns", START + 99 * DAY) == [bare]
    assert _data.first_ns(system.name, [*dec[1:], bare], START + 10 * DAY) == _data.first_ns(
        system.name, dec, START + 10 * DAY)


def test_goals_measured_from_the_recent_files_equal_those_from_all(home6, tmp_path: Path) -> None:
    """Cycle by cycle, as the cycle measures (the files its pending windows need, the first
    decision from the footers), the series equal those measured from every file each time."""
    home, system, store = home6
    dec, out = store.decision_files(), store.outcome_files()
    tracker = GoalTracker(system, rate_settle=timedelta(days=1))
    full, part = SeriesStore(tmp_path / "full.jsonl"), SeriesStore(tmp_path / "part.jsonl")
    read_less = 0
    for day in range(1, 8):
        now = START + day * DAY
        tracker.measure(full, decision_files=dec, outcome_files=out, now_ns=now, scratch=tmp_path)
        first = _data.first_ns(system.name, dec, now)
        pending = tracker.pending(part, first_ns=first, now_ns=now)
        read = _data.files_since(dec, "timestamp_ns", min(w.start_ns for _, _, w in pending)) if pending else []
        read_less += len(read) < len(dec)
        con = _data.connect(system.name, read, out, now)
        try:
            tracker.measure(part, decision_files=dec, outcome_files=out, now_ns=now, scratch=tmp_path, con=con,
                            first_ns=first)
        finally:
            con.close()

    def strip(points):
        return sorted(points, key=lambda p: (p["name"], p["window"]))

    assert read_less >= 3  # later cycles read only recent files
    assert strip(part.points()) == strip(full.points()) and len(full.points()) >= 16


def test_shared_rows_between_datasets_are_found_aligned_or_not() -> None:
    """The rows a dataset shares with the last one (same id, same text): found as one aligned
    run when the shared days come in the same order, else by looking every id up — the same set."""
    import numpy as np
    import pyarrow as pa

    from closedloop.orchestration.reading import shared_rows

    prev_ids = pa.array([f"d{i}" for i in range(100)])
    prev_raws = pa.array([f"ctx{i}" for i in range(100)])

    def brute(ids, raws):
        where = {v: i for i, v in enumerate(prev_ids.to_pylist())}
        rows = [(r, where[v]) for r, (v, t) in enumerate(zip(ids.to_pylist(), raws.to_pylist(), strict=True))
                if v in where and prev_raws[where[v]].as_py() == t]
        return [r for r, _ in rows], [o for _, o in rows]

    cases = []
    ids = [f"d{i}" for i in range(30, 100)] + [f"n{i}" for i in range(20)]  # aligned: the later days, then new
    raws = [f"ctx{i}" for i in range(30, 100)] + [f"new{i}" for i in range(20)]
    raws[5] = "changed"  # one context logged differently: not shared
    cases.append((ids, raws))
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ids))  # the same rows in another order: the lookup path
    cases.append(([ids[i] for i in perm], [raws[i] for i in perm]))
    cases.append(([f"n{i}" for i in range(10)], [f"x{i}" for i in range(10)]))  # nothing shared
    cases.append(([], []))
    for ids_l, raws_l in cases:
        ids_a, raws_a = pa.array(ids_l, pa.string()), pa.array(raws_l, pa.string())
        hit, old = shared_rows(ids_a, raws_a, prev_ids, prev_raws)
        want_hit, want_old = brute(ids_a, raws_a)
        assert hit.tolist() == want_hit and old.tolist() == want_old


def test_work_started_ahead_is_taken_by_the_step_that_asks_for_it():
    """``DatasetReader.ahead`` runs ``make()`` on a thread of its own; ``shared`` waits for it and
    returns its value (not computed again), raises what it raised (once), and ``end_cycle``
    waits for work no step asked for before forgetting it."""
    import threading

    from closedloop.errors import DatasetError
    from closedloop.orchestration.reading import DatasetReader

    reader = DatasetReader(None)  # type: ignore[arg-type]  # the system is not read by shared/ahead
    gate, threads = threading.Event(), []

    def slow() -> str:
        threads.append(threading.current_thread().name)
        gate.wait(5)
        return "value"

    reader.ahead("k", slow)
    reader.ahead("k", lambda: "again")  # already there: not started twice
    gate.set()
    assert reader.shared("k", lambda: "inline") == "value" and threads == ["closedloop-ahead"]
    assert reader.shared("k", lambda: "inline") == "value"

    def fails() -> str:
        raise DatasetError("the sets could not be read")

    reader.ahead("bad", fails)
    with pytest.raises(DatasetError, match="could not be read"):
        reader.shared("bad", lambda: "inline")
    assert reader.shared("bad", lambda: "inline") == "inline"  # asked again: computed in place
    done = threading.Event()
    reader.ahead("unused", lambda: (gate.wait(5), done.set()))
    reader.end_cycle()
    assert done.is_set() and reader.shared("unused", lambda: "new") == "new"

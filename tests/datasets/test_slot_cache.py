"""The per-file cache of build_reward_dataset (datasets/slot_cache.py): a build through the cache —
cold, then warm — writes the same dataset as one without (rows, candidate sets, manifest) on a
seeded multi-day feed-world log; also after a new day arrives and with units excluded (the
quarantine is applied after the cache); a corrupted, mismatched or stale entry is never served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from closedloop import ManualClock, Runtime
from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, decoded_from
from closedloop.datasets.slot_cache import SlotCache, _uniform, build_part
from closedloop.datasets.slots import build_reward_dataset
from closedloop.experience.exploration import SquareCB
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_driver import run_feed_day

DAY = 86_400 * 10**9
SMALL = {"world": {"sessions_per_day": 400}, "users": {"count": 300, "new_per_day": 10},
         "items": {"per_day": 200}, "farm": {"units": 2, "sessions_per_unit": 20, "items_per_day": 10}}


class Log:
    """A feed world logged day by day into a home (each day compacted: its own lake files)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.world = FeedWorld(FeedConfig.load(overrides=SMALL), seed=3)
        self.system = self.world.system(k=3, explore=SquareCB(50.0))
        self.start = self.world.day_start_ns(0)
        self.tel = Telemetry(SegmentLog(home), system=self.system, clock=ManualClock(self.start).now_ns, flush_interval_ms=1)
        self.rt = Runtime(self.system, self.world.heuristic_bundle(self.system), telemetry=self.tel)
        self.days = 0

    def day(self) -> None:
        self.tel.clock = ManualClock(self.start + (self.days + 1) * DAY).now_ns
        run_feed_day(self.world, self.rt, self.tel, self.days, seed=50 + self.days)
        self.tel.flush()
        TelemetryStore(self.home).compact()
        self.days += 1

    def build(self, out: Path, *, cache: Path | None, exclude: list[str] | None = None, days: int = 3,
              tables: dict[Any, Any] | None = None) -> Any:
        store = TelemetryStore(self.home)
        now = self.start + self.days * DAY
        return build_reward_dataset(self.system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                    since_ns=now - days * DAY, until_ns=now, cutoff_ns=now, out=out, cache=cache,
                                    exclude_units=exclude or (), tables=tables)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    lg = Log(tmp_path_factory.mktemp("feedlog"))
    for _ in range(3):
        lg.day()
    return lg


def same(a: Any, b: Any) -> None:
    """Two built datasets are the same: manifest, rows and candidate sets."""
    assert a.content == b.content
    for name in ("data.parquet", CANDIDATE_SETS_FILE):
        ta, tb = pq.read_table(a.path / name), pq.read_table(b.path / name)
        assert ta.schema.equals(tb.schema)
        assert ta.equals(tb), name


def entries(cache: Path) -> dict[str, float]:
    return {p.name: (p / "key.json").stat().st_mtime for p in cache.iterdir()} if cache.is_dir() else {}


def test_a_cached_build_is_the_build_without_cold_and_warm(log: Log, tmp_path: Path) -> None:
    plain = log.build(tmp_path / "plain", cache=None)
    assert plain.counts["decisions"] > 500 and plain.content["candidate_sets"]["decisions"] > 500
    cold = log.build(tmp_path / "cold", cache=tmp_path / "cache")
    same(plain, cold)
    made = entries(tmp_path / "cache")
    assert len(made) == len(TelemetryStore(log.home).decision_files())  # one entry per decision file of the window
    warm = log.build(tmp_path / "warm", cache=tmp_path / "cache")
    same(plain, warm)
    assert entries(tmp_path / "cache") == made  # served, not rebuilt
    files = TelemetryStore(log.home).decision_files()
    assert SlotCache(tmp_path / "cache", log.system).parts(files, list(range(len(files)))) is not None  # every file cached


def test_excluded_units_are_left_out_after_the_cache(log: Log, tmp_path: Path) -> None:
    rows = pq.read_table(log.build(tmp_path / "all", cache=tmp_path / "cache").path / "data.parquet", columns=["unit"])
    units = sorted(set(rows["unit"].to_pylist()))[:7]
    plain = log.build(tmp_path / "plain", cache=None, exclude=units)
    cached = log.build(tmp_path / "cached", cache=tmp_path / "cache", exclude=units)
    same(plain, cached)
    assert cached.content["counts"]["excluded"]["units"] == 7 and cached.content["counts"]["excluded"]["decisions"] > 0


def test_a_new_day_reuses_the_days_before_and_the_day_that_left_the_window_goes(tmp_path: Path) -> None:
    lg = Log(tmp_path / "home")
    for _ in range(2):
        lg.day()
    cache = tmp_path / "cache"
    same(lg.build(tmp_path / "p1", cache=None, days=2), lg.build(tmp_path / "c1", cache=cache, days=2))
    before = entries(cache)
    assert len(before) == 2
    (cache / ".0123-left-by-a-crash.tmp-1").mkdir()  # a write that did not finish
    lg.day()
    same(lg.build(tmp_path / "p2", cache=None, days=2), lg.build(tmp_path / "c2", cache=cache, days=2))
    after = entries(cache)
    kept = set(before) & set(after)
    assert len(kept) == 1 and before[next(iter(kept))] == after[next(iter(kept))]  # the day still in the window: served
    assert len(after) == 2  # the new day's file in, the first day's out
    assert sorted(p.name for p in cache.iterdir()) == sorted(after)  # and no temporary directory left


def test_a_corrupted_or_mismatched_entry_is_rebuilt_never_served(log: Log, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain = log.build(tmp_path / "plain", cache=None)
    log.build(tmp_path / "fill", cache=cache)
    first, second, third = sorted(cache.iterdir())[:3]
    slots = first / "slots.arrow"
    data = bytearray(slots.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the middle of the rows
    slots.write_bytes(bytes(data))
    meta = msgspec.json.decode((second / "key.json").read_bytes())
    meta["key"]["size"] += 1  # the entry of another file than the one asked
    (second / "key.json").write_bytes(msgspec.json.encode(meta))
    (third / "rows.arrow").write_bytes(b"not arrow")
    same(plain, log.build(tmp_path / "again", cache=cache))
    for entry in (first, second, third):  # rewritten whole
        meta = msgspec.json.decode((entry / "key.json").read_bytes())
        assert SlotCache(cache, log.system)._read(meta["key"]) is not None


def test_a_file_rewritten_gets_a_new_entry_and_the_old_one_goes(log: Log, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    log.build(tmp_path / "fill", cache=cache)
    before = set(entries(cache))
    f = sorted(TelemetryStore(log.home).decision_files())[0]
    st = f.stat()
    import os

    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as if rewritten (retention): another modification time
    try:
        same(log.build(tmp_path / "plain", cache=None), log.build(tmp_path / "again", cache=cache))
        after = set(entries(cache))
        assert len(after - before) == 1 and len(before - after) == 1
    finally:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_key_names_the_file_and_the_system_declaration(log: Log, tmp_path: Path) -> None:
    files = sorted(TelemetryStore(log.home).decision_files())
    mine = SlotCache(tmp_path / "cache", log.system)
    other = SlotCache(tmp_path / "cache", log.world.system(k=3, explore=SquareCB(50.0), name="other_feed"))
    assert mine.entry(mine.key(files[0])) != mine.entry(mine.key(files[1]))
    assert mine.entry(mine.key(files[0])) != other.entry(other.key(files[0]))
    assert SlotCache(tmp_path / "cache", log.world.system(k=2, explore=SquareCB(50.0))).key(files[0]) == mine.key(files[0])
    part = build_part(log.system, files[0])
    assert part is not None and part.slots.num_rows == int((part.slot_start >= 0).sum()) * 3  # every decision shows k = 3


@pytest.mark.parametrize(("raw", "uniform"), [
    ([[{"a": "x", "b": 1.5}], [{"a": "y", "b": 2.0}]], True),
    ([[{"a": "x", "b": 1.5}], [{"a": "y", "b": 2}]], False),  # an int in a float field: a subset of ints infers int64
    ([[{"a": "x", "b": 1.5}], [{"b": 2.0, "a": "y"}]], False),  # another field order
    ([[{"a": "x", "b": 1.5}], [{"a": "y"}]], False),  # a field missing
    ([[{"a": "x", "b": None}], [{"a": "y", "b": 2.0}]], False),  # a null
    ([[{"a": "x", "b": [1.0]}]], False),  # nested
    ([["x"], [{"a": "y"}]], False),  # not an object
    ([[], "not a list"], True),  # no candidates at all
])
def test_only_files_whose_candidates_infer_one_type_from_any_subset_are_cached(raw: list[Any], uniform: bool) -> None:
    assert _uniform(raw, decoded_from(raw)) is uniform


def test_the_lake_files_read_are_kept_and_read_again_when_they_change(tmp_path: Path) -> None:
    """build_reward_dataset(tables=…) keeps each lake file's columns read from one build to the next:
    the same dataset as a build without them; a file whose identity (size, mtime, inode) changed is
    read again — a new day's files, a file rewritten with other rows — and a file gone is dropped."""
    import os

    lg = Log(tmp_path / "home")
    for _ in range(2):
        lg.day()
    cache, tables = tmp_path / "cache", {}
    first = lg.build(tmp_path / "t1", cache=cache, days=2, tables=tables)
    same(lg.build(tmp_path / "p1", cache=cache, days=2), first)
    store = TelemetryStore(lg.home)
    assert len(tables["decisions"]) == len(store.decision_files()) and len(tables["outcomes"]) == len(store.outcome_files())
    kept = {kind: dict(got) for kind, got in tables.items()}
    same(first, lg.build(tmp_path / "t2", cache=cache, days=2, tables=tables))
    assert all(tables[kind][k] is t for kind, got in kept.items() for k, t in got.items())  # served, not read again
    lg.day()  # a new day: its files read, the days before served
    third = lg.build(tmp_path / "t3", cache=cache, days=2, tables=tables)
    same(lg.build(tmp_path / "p3", cache=cache, days=2), third)
    new = {kind: set(got) - set(kept[kind]) for kind, got in tables.items()}
    assert new["decisions"] and new["outcomes"] and all(set(kept[kind]) <= set(tables[kind]) for kind in kept)
    f = str(sorted(TelemetryStore(lg.home).outcome_files())[-1])  # rewritten with a row fewer
    rows = pq.read_table(f)
    pq.write_table(rows.slice(0, rows.num_rows - 1), f + ".tmp")
    os.replace(f + ".tmp", f)
    plain, memo = lg.build(tmp_path / "p4", cache=cache, days=2), lg.build(tmp_path / "t4", cache=cache, days=2, tables=tables)
    same(plain, memo)
    assert sum(plain.content["counts"]["outcomes"].values()) == sum(third.content["counts"]["outcomes"].values()) - 1
    assert sum(1 for k in tables["outcomes"] if k[0] == f) == 1  # the old table of that file dropped


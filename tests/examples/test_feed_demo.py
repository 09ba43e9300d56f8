"""The feed demo end to end on a tiny world: four arms measured, the JSON last line finite, and the
same seed gives the same figures (wall-clock seconds aside), its other arms in a second process or in this one."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("vowpalwabbit")

from examples.feed.demo import main  # noqa: E402
from examples.feed.demo_run import ARMS  # noqa: E402

TINY = ["--seed", "2", "--days", "5", "--sessions", "600", "--shared-days", "2", "--measure-from", "3",
        "--fault-day", "3"]


def _run(tmp_path, capsys, name: str, seeds: int, *extra: str) -> dict:
    assert main([*TINY, "--seeds", str(seeds), "--home", str(tmp_path / name), "--report", str(tmp_path / f"{name}.html"),
                 *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _numbers(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, float):
        yield path, x


def _without_time(summary: dict) -> dict:
    out = {k: v for k, v in summary.items() if k not in ("seconds", "vw_share_of_time")}
    out["targets"] = {k: v for k, v in summary["targets"].items() if k != "under_5_minutes"}
    return out


def test_the_feed_demo_runs_end_to_end_and_repeats_with_its_seed(tmp_path, capsys):
    first = _run(tmp_path, capsys, "a", seeds=2)
    s, s3 = first["seeds"]
    assert s3["seed"] == 3 and s3["arms"] != s["arms"]
    pooled = first["pooled"]
    assert pooled["arms"]["loop"]["sessions"] == s["arms"]["loop"]["sessions"] + s3["arms"]["loop"]["sessions"]
    assert set(pooled["targets"]) >= {"loop_15pct_over_frozen", "loop_not_below_vw", "dr_coverage_90pct", "every_seed"}
    assert set(s["arms"]) == set(ARMS)
    for arm in ARMS:
        a = s["arms"][arm]
        assert a["days"] == 2 and a["sessions"] > 800, (arm, a)
        assert 0 < a["clicks_per_session"] < 5 and a["ci"][0] <= a["clicks_per_session"] <= a["ci"][1]
    bad = [p for p, v in _numbers(s) if not math.isfinite(v) and "ci" not in p]
    assert not bad, bad
    assert s["fault"]["day"] == 3 and s["farm"]["farm_units"] == 5
    assert s["dr_coverage"]["n"] >= 1 and 0 <= s["dr_coverage"]["covered"] <= s["dr_coverage"]["n"]
    assert first["vw_settings"]["arguments"].startswith("--cb_explore_adf --cb_type dr")
    page = (tmp_path / "a.html").read_text()
    assert "<script src" not in page and "closedloop feed demo" in page and "Content-Security-Policy" in page
    # the arms differ (each world follows what its policy showed) but share the days before the fork
    loop, vw = s["arms"]["loop"]["clicks_per_session"], s["arms"]["vw"]["clicks_per_session"]
    assert loop != vw
    # the same seed again, its other arms in this process instead of a second one: the same figures
    again = _run(tmp_path, capsys, "b", 1, "--one-process")
    assert _without_time(again["seeds"][0]) == _without_time(s)


def test_an_arms_process_that_fails_is_reported_with_its_error(tmp_path):
    """The frozen bundle cannot load: the second process sends its traceback and the parent raises it."""
    import time

    from examples.feed.demo_run import FeedDemoSettings
    from examples.feed.demo_worker import ArmsWorker

    from closedloop import ClosedLoopError
    from closedloop.world.feed import FeedWorld

    s = FeedDemoSettings(seed=2, days=4, sessions=600, shared_days=2, measure_from=2, fault_day=None)
    world = FeedWorld(s.world_config(), seed=s.seed)
    worker = ArmsWorker(s, world, tmp_path / "no-such-bundle", 2)
    try:
        with pytest.raises(ClosedLoopError, match="arms process failed") as got:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                worker.poll()
                time.sleep(0.2)
        assert "no-such-bundle" in str(got.value)
    finally:
        worker.close()

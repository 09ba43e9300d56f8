"""examples.feed.fresh: the demo's run with two greedy measurements a day that change nothing."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vowpalwabbit")

from examples.feed import demo_run  # noqa: E402
from examples.feed.demo_run import FeedDemoSettings, run_feed_demo  # noqa: E402
from examples.feed.fresh import fresh_values, main  # noqa: E402

TINY = FeedDemoSettings(seed=2, days=5, sessions=600, shared_days=2, measure_from=3, fault_day=3)


def test_the_measurements_leave_the_demo_run_as_it_is(tmp_path):
    plain_day = demo_run._Loop.day
    rows = fresh_values(TINY, tmp_path / "fresh")
    assert demo_run._Loop.day is plain_day  # the hook is taken off again
    run = run_feed_demo(TINY, tmp_path / "plain", arms_process=False)
    loop = {r["day"]: r["true_value"] for r in run.arms["loop"]}
    frozen = {r["day"]: r["true_value"] for r in run.arms["frozen"]}
    assert [r["day"] for r in rows] == [3, 4]
    for r in rows:
        assert r["loop"] == loop[r["day"]] and r["frozen"] == frozen[r["day"]]
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("production_greedy", "newest_greedy"))


def test_the_command_prints_each_figure_against_the_frozen_model(tmp_path, capsys):
    assert main(["--seed", "2", "--days", "5", "--sessions", "600", "--shared-days", "2", "--measure-from", "3",
                 "--fault-day", "-1", "--home", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "newest_greedy" in out and "% vs the frozen model (2 days)" in out and (tmp_path / "h" / "fresh.json").is_file()

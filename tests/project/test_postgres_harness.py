"""The test harness's PostgreSQL clusters: one left behind by a killed test run (its owner
process gone) is stopped and removed by the next run; a live run's cluster is left alone."""

from __future__ import annotations

import os
import subprocess
import sys

from support.postgres import PostgresServer, reap_orphans


def test_a_dead_runs_cluster_is_reaped_a_live_one_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    orphan, live, foreign = (tmp_path / f"closedloop-pg-{n}" for n in ("orphan", "live", "foreign"))
    for d in (orphan, live, foreign):
        (d / "data").mkdir(parents=True)
    (orphan / "owner.pid").write_text(dead.stdout.strip())
    (live / "owner.pid").write_text(str(os.getpid()))
    assert reap_orphans(str(tmp_path)) == [orphan]
    assert not orphan.exists() and live.exists() and foreign.exists()


def test_a_killed_server_is_stopped_by_the_next_start(tmp_path):
    """A real cluster whose owner is gone: its postmaster is shut down and its directory removed."""
    server = PostgresServer().start()
    try:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        (server.root / "owner.pid").write_text(dead.stdout.strip())  # as if the test run had been killed
        removed = reap_orphans(str(server.root.parent))
        assert server.root in removed and not server.root.exists()
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive
    finally:
        server.stop()

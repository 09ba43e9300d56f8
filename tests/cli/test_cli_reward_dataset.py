"""``closedloop dataset build`` for a system that declares rewards writes its reward dataset: one
row per (decision, slot shown) of a ranking system, the reward of each slot by the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from examples.feed.data import generate
from typer.testing import CliRunner

from closedloop import Bundle, Runtime
from closedloop.cli.main import app
from closedloop.runtime.clock import ManualClock
from closedloop.system.loading import load_system
from closedloop.telemetry import SegmentLog, Telemetry

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9

SYSTEM_FILE = '''
from datetime import timedelta
from examples.feed import system as f
from closedloop import Reward, RewardPolicy, System
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax

feed = System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
              features=f.features, experience=Ranking("score", k=3, explore=Softmax(0.5)),
              rewards=RewardPolicy([Reward("clicked")], window=timedelta(minutes=30), per="slot"))
'''


def test_dataset_build_writes_a_ranking_systems_reward_dataset(tmp_path: Path):
    from examples.feed.system import model

    (tmp_path / "rewarded.py").write_text(SYSTEM_FILE)
    ref = f"{tmp_path / 'rewarded.py'}:feed"
    system = load_system(ref)
    home = tmp_path / "home"
    clock = ManualClock(T0)
    with Telemetry(SegmentLog(home), system=system, clock=clock.now_ns) as tel:
        rt = Runtime(system, Bundle.build(system, model), telemetry=tel, clock=clock)
        decided = [rt.decide(c, timestamp_ns=T0 + i * S) for i, c in enumerate(generate(40, 8, seed=3))]
        for d in decided[::4]:
            tel.log_outcome(d.decision_id, kind="clicked", event_ns=d.timestamp_ns + S, source="app", candidate=d.ranking[1])
    res = CliRunner().invoke(app, ["--home", str(home), "dataset", "build", "--system", ref, "--since", "2026-01-01",
                                   "--until", "2026-01-02", "--cutoff", "2026-01-03"],
                             env={"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": ""})
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.splitlines()[-1])
    rows = pq.read_table(Path(out["path"]) / "data.parquet").to_pylist()
    assert len(rows) == 40 * 3  # one row per slot shown
    paid = {(r["decision_id"], r["position"]) for r in rows if r["reward"] == 1.0}
    assert paid == {(d.decision_id, 2) for d in decided[::4]}
    assert {r["propensity"] for r in rows if r["decision_id"] == decided[0].decision_id} == set(decided[0].slot_propensities)

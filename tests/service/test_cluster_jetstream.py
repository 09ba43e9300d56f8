"""Several hosts with telemetry through NATS JetStream, for real: three ``closedloop serve`` processes
(each its own home) on one PostgreSQL registry and one Redis, publishing their decisions and outcomes
to one ``nats-server`` with JetStream (``--telemetry-url``), and two ``closedloop telemetry collect``
processes writing the stream into one lake (tests/support/cluster.py, ``telemetry="jetstream"``).

Under the load generator, one replica AND one collector are SIGKILLed mid-load and restarted: every
outcome that got a 202 is in the lake exactly once; every answered decision is there exactly once
but for those the killed replica answered after its last acknowledged outcome (the rule of
tests/service/test_cluster.py for the embedded sink); no record is in the lake twice.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from support.cluster import Cluster
from support.cluster_load import decisions_at_risk, load_through_a_kill
from support.waiting import eventually


@pytest.fixture(scope="module")
def cluster(postgres) -> Iterator[Cluster]:
    with Cluster(3, telemetry="jetstream", serve_args=("--guard-interval", "0"), postgres=postgres) as c:
        yield c


def test_an_unknown_telemetry_is_refused_by_name():
    with pytest.raises(ValueError, match="'telemetry' parameter of Cluster"):
        Cluster(3, telemetry="kafka")


def test_a_replica_and_a_collector_killed_mid_load_lose_nothing_acknowledged(cluster):
    with pytest.raises(ValueError, match="'i' parameter of Cluster.telemetry"):
        cluster.telemetry(0)  # one lake for every replica
    tag = f"js-{uuid.uuid4().hex[:6]}"
    res, t_kill = load_through_a_kill(cluster, tag, collector=0)

    # every acknowledged outcome: in the lake exactly once (the collectors drained first)
    lake = cluster.telemetry()
    outcomes = Counter(lake["outcomes"])
    missing = [(r, o) for r, o, _ in res.acked if outcomes[o] == 0]
    assert not missing, f"{len(missing)} acknowledged outcomes not in the lake, e.g. {missing[:5]}"
    assert not [o for o, n in outcomes.items() if n > 1]
    assert len(set(lake["outcomes"])) >= len(res.acked)
    # every answered decision once, but those inside the killed replica's last unacknowledged group commit
    at_risk = decisions_at_risk(res, 1, t_kill)
    decisions: Counter[str] = Counter()

    def unstored() -> list[str]:
        nonlocal decisions
        decisions = Counter(cluster.telemetry()["decisions"])
        return [d for _, d, _ in res.decisions if decisions[d] == 0 and d not in at_risk]

    eventually(lambda: not unstored(), timeout=20, step=0.2, what="every answered decision in the lake")
    assert not [d for d, n in decisions.items() if n > 1]
    lost = [d for d in at_risk if decisions[d] == 0]
    print(f"decisions the killed replica answered after its last acknowledged outcome: {len(at_risk)}, lost: {len(lost)}; "
          f"lake: {len(decisions)} decisions, {len(outcomes)} outcomes")

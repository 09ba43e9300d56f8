"""RedisCapStore on a real redis-server: the same answers as InMemoryCapStore on the same sequence,
exact across two clients ("replicas"), TTLs on every key, and the declared policy when Redis is down."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from closedloop.errors import SpecError
from closedloop.experience.cap_redis import RedisCapStore
from closedloop.experience.guardrails import InMemoryCapStore


def _sequence(seed: int):
    """Batches (cap, buckets, units, want, limit): one-bucket batches, batches across a window
    boundary, late batches for a closed window, limit 0, single rows."""
    rng = np.random.default_rng(seed)
    units = [f"u{i}" for i in range(7)] + ["a:b", "é"]
    bucket = 100
    for step in range(120):
        cap = int(rng.integers(0, 3))
        n = int(rng.integers(1, 40)) if step % 5 else 1
        r = rng.random()
        if r < 0.1:
            bucket += 1
        bs = np.full(n, bucket, dtype=np.int64)
        if r > 0.9:  # spans a boundary (or reaches back into a closed window)
            bs = bucket + rng.integers(-1, 2, size=n)
            bs.sort()
        us = [units[int(i)] for i in rng.integers(0, len(units), size=n)]
        want = rng.random(n) < 0.7
        limit = int(rng.integers(0, 6))
        yield cap, bs, us, want, limit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conformance_with_the_in_memory_store(redis_server, seed):
    mem, red = InMemoryCapStore(), RedisCapStore(redis_server.client(), prefix=f"t{seed}")
    for j in range(3):
        red.window(j, 60 * 10**9)
    for cap, bs, us, want, limit in _sequence(seed):
        a = mem.admit_batch(cap, bs, us, want, limit)
        b = red.admit_batch(cap, bs, us, want, limit)
        assert a.tolist() == b.tolist(), (cap, bs.tolist(), us, want.tolist(), limit)
        for u in set(us):
            for bucket in set(bs.tolist()):
                assert mem.count(cap, bucket, u) == red.count(cap, bucket, u)
    # the single-row forms agree too
    for cap, bs, us, want, limit in _sequence(seed + 10):
        for b_, u, w in zip(bs.tolist(), us, want.tolist(), strict=True):
            assert mem.admit(cap, b_, u, w, limit) == red.admit(cap, b_, u, w, limit)
        mem.add(cap, int(bs[-1]), us[-1], 2)
        red.add(cap, int(bs[-1]), us[-1], 2)
        assert mem.count(cap, int(bs[-1]), us[-1]) == red.count(cap, int(bs[-1]), us[-1])
    assert red.unavailable == 0


def test_every_key_expires_with_its_window(redis_server):
    client = redis_server.client()
    store = RedisCapStore(client, prefix="ttl")
    store.window(0, 60 * 10**9)  # a minute
    store.admit_batch(0, np.array([5, 5]), ["x", "y"], np.array([True, True]), 3)
    keys = sorted(k.decode() for k in client.keys("ttl:*"))
    assert keys == ["ttl:0:5:x", "ttl:0:5:y", "ttl:0:newest"]
    assert 0 < client.pttl("ttl:0:5:x") <= 60_000
    assert 60_000 < client.pttl("ttl:0:newest") <= 120_000
    other = RedisCapStore(client, prefix="ttl2", window_ms=5_000)  # a cap it was not told about
    other.admit(0, 1, "x", True, 1)
    assert 0 < client.pttl("ttl2:0:1:x") <= 5_000


def test_exact_across_two_replicas(redis_server):
    """Two store objects on two clients, threads hammering one unit: never more than the cap admitted."""
    stores = [RedisCapStore(redis_server.client(), prefix="race") for _ in range(2)]
    admitted = []
    lock = threading.Lock()

    def hammer(store: RedisCapStore, batch: int) -> None:
        mine = 0
        for _ in range(60):
            full = store.admit_batch(0, np.full(batch, 7), ["hot"] * batch, np.ones(batch, dtype=bool), 25)
            mine += int((~full).sum())
            mine += 0 if store.admit(0, 7, "hot", True, 25) else 1
        with lock:
            admitted.append(mine)

    threads = [threading.Thread(target=hammer, args=(stores[i % 2], 1 + i % 3)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 25
    assert stores[0].count(0, 7, "hot") == 25


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_unreachable_redis_applies_the_declared_policy(redis_server, policy):
    store = RedisCapStore(redis_server.client(socket_timeout=0.5, socket_connect_timeout=0.5), prefix="down",
                          on_unavailable=policy)
    assert store.admit_batch(0, np.array([1, 1]), ["u", "u"], np.array([True, True]), 1).tolist() == [False, True]
    redis_server.stop(remove=False)  # Redis goes away mid-test
    full = store.admit_batch(0, np.array([1, 1, 1]), ["u", "v", "w"], np.array([True, False, True]), 1)
    assert full.tolist() == [policy == "closed"] * 3
    assert store.admit(0, 1, "u", True, 1) is (policy == "closed")
    assert (store.count(0, 1, "u") >= 1) is (policy == "closed")
    store.add(0, 1, "u")
    assert store.unavailable == 4


def test_policy_is_checked():
    with pytest.raises(SpecError, match="on_unavailable"):
        RedisCapStore(object(), on_unavailable="maybe")

"""RedisTokenBuckets on a real redis-server: the in-process TokenBuckets' answers on a deterministic
sequence (explicit times), Redis's own clock otherwise, exact across two clients, atomic take_both,
keys that expire when full again, and the declared policy when Redis is down."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from closedloop.errors import SpecError
from closedloop.service.limits import TokenBuckets, take_both
from closedloop.service.limits_redis import CLOSED_WAIT, RedisTokenBuckets
from closedloop.service.settings import RateLimit


@pytest.mark.parametrize("limit", [RateLimit(2.0, 5.0), RateLimit(0.5, 1.0), RateLimit(0.0, 3.0), RateLimit(0.0, 0.0),
                                   RateLimit(3.0, 0.5), RateLimit(math.inf, 1.0)])
def test_same_answers_as_in_process_on_a_deterministic_sequence(redis_server, limit):
    mem = TokenBuckets(limit)
    red = RedisTokenBuckets(limit, client=redis_server.client(), prefix="seq")
    rng = np.random.default_rng(7)
    now = 1000.0
    for _ in range(400):
        now += float(rng.exponential(0.3))
        key = f"k{int(rng.integers(0, 4))}"
        if rng.random() < 0.2:
            a, b = mem.wait(key, now), red.wait(key, now)
        else:
            a, b = mem.take(key, now), red.take(key, now)
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (key, now)
    assert red.unavailable == 0


def test_take_both_is_atomic_and_matches(redis_server):
    client = redis_server.client()
    la, lb = RateLimit(1.0, 3.0), RateLimit(0.5, 2.0)
    mem = (TokenBuckets(la, clock=lambda: t), TokenBuckets(lb, clock=lambda: t))
    red = (RedisTokenBuckets(la, client=client, prefix="src", clock=lambda: t),
           RedisTokenBuckets(lb, client=client, prefix="unit", clock=lambda: t))
    t = 50.0
    for i in range(60):
        t += 0.4
        ka, kb = f"s{i % 2}", f"u{i % 3}"
        got, want = take_both(red[0], ka, red[1], kb), take_both(mem[0], ka, mem[1], kb)
        assert got[0] == want[0] and got[1] == pytest.approx(want[1], abs=1e-9)


def test_redis_clock_and_expiry(redis_server):
    client = redis_server.client()
    red = RedisTokenBuckets(RateLimit(10.0, 2.0), client=client, prefix="clock")
    assert red.take("x") == 0.0 and red.take("x") == 0.0
    w = red.take("x")
    assert 0.0 < w <= 0.1
    time.sleep(w + 0.02)  # Redis's TIME moves on: a token is back
    assert red.take("x") == 0.0
    assert 0 < client.pttl("clock:x") <= 1200  # full again after burst / rate = 0.2 s, plus a second
    assert len(red) == 1
    forever = RedisTokenBuckets(RateLimit(0.0, 1.0), client=client, prefix="never")
    assert forever.take("y") == 0.0 and forever.take("y") == math.inf
    assert client.pttl("never:y") == -1  # never refills: kept


def test_exact_across_two_replicas(redis_server):
    """Two limiters on two clients, threads taking from one key: exactly the burst is granted."""
    limit = RateLimit(0.001, 40.0)
    replicas = [RedisTokenBuckets(limit, client=redis_server.client(), prefix="race") for _ in range(2)]
    units = [RedisTokenBuckets(RateLimit(0.001, 1000.0), client=r.client, prefix="race_u") for r in replicas]
    granted = []
    lock = threading.Lock()

    def hammer(i: int) -> None:
        mine = 0
        for j in range(30):
            if j % 2:
                mine += replicas[i % 2].take("hot") == 0.0
            else:
                mine += take_both(replicas[i % 2], "hot", units[i % 2], f"u{i}")[0] == 0
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(granted) == 40


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_unreachable_redis_applies_the_declared_policy(redis_server, policy):
    client = redis_server.client(socket_timeout=0.5, socket_connect_timeout=0.5)
    a = RedisTokenBuckets(RateLimit(0.0, 1.0), client=client, prefix="a", on_unavailable=policy)
    b = RedisTokenBuckets(RateLimit(0.0, 1.0), client=client, prefix="b", on_unavailable=policy)
    assert a.take("k") == 0.0 and a.take("k") == math.inf
    redis_server.stop(remove=False)  # Redis goes away mid-test
    expect = 0.0 if policy == "open" else CLOSED_WAIT
    assert a.take("k") == expect and a.wait("k") == expect
    assert take_both(a, "k", b, "k") == ((0, 0.0) if policy == "open" else (1, CLOSED_WAIT))
    assert len(a) == 0
    assert a.unavailable == 4 and b.unavailable == 0


def test_policy_is_checked():
    with pytest.raises(SpecError, match="on_unavailable"):
        RedisTokenBuckets(RateLimit(1.0, 1.0), client=object(), on_unavailable="maybe")

"""Ranking throughput: ``python -m examples.feed.bench [requests] [candidates]``.

Prints decisions per second for the feed system (k=5, Softmax(0.5) exploration) through
``RankingPlan.decide`` (one request at a time) and ``RankingPlan.decide_batch`` (all requests in
one call) — the best of three runs of each — checks that the two agree, and gives the
batch/single ratio measured in the same run.
"""

from __future__ import annotations

import sys
import time

from closedloop import Bundle, DecisionIds
from closedloop.experience.ranking import RankingPlan

from .data import columnar, generate
from .system import feed, model


def main(n: int = 2000, n_candidates: int = 80, repeat: int = 3) -> dict[str, float]:
    plan = RankingPlan(feed, Bundle.build(feed, model))
    contexts = generate(n, n_candidates, seed=7)
    ids = DecisionIds(seed=1).next_ids(n, 1_767_225_600 * 10**9).to_pylist()
    requests, candidates = columnar(contexts)
    for i in range(min(n, 50)):  # warm up
        plan.decide(contexts[i], ids[i], 0)
    single = batched = 0.0
    for _ in range(repeat):  # best of ``repeat`` runs of each
        t = time.perf_counter()
        singles = [plan.decide(contexts[i], ids[i], 0) for i in range(n)]
        single = max(single, n / (time.perf_counter() - t))
        t = time.perf_counter()
        batch = plan.decide_batch(requests, candidates, ids, 0)
        batched = max(batched, n / (time.perf_counter() - t))
    if any(batch[i] != singles[i] for i in range(n)):
        raise SystemExit("decide and decide_batch disagree")
    print(f"{n} requests × {n_candidates} candidates, k={plan.k}, explore={plan.explore.describe()}")
    print(f"decide        {single:10,.0f} decisions/s  ({1e6 / single:7.1f} µs each)")
    print(f"decide_batch  {batched:10,.0f} decisions/s  ({1e6 / batched:7.1f} µs each, "
          f"{batched * n_candidates:,.0f} candidates/s)")
    print(f"batch / single: {batched / single:.1f}x")
    return {"single": single, "batch": batched}


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

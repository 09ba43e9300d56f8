"""A bounded load generator for a cluster of replicas: ``threads`` closed-loop clients (httpx, one
request at a time each), spreading single decisions and outcome reports round-robin across the
replicas' base URLs. Each thread decides on replica ``k``, then reports an outcome of that decision
(its own ``outcome_id``) to replica ``k + 1``. It records every decision id answered (200), every
outcome that got 202 (with the replica that answered and when it was sent), every failure, and the
latency of each request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from support.cluster_system import context

__all__ = ["Load", "LoadResult", "decisions_at_risk"]


@dataclass
class LoadResult:
    """What a load run saw. ``decisions``: (replica, decision id, monotonic time answered);
    ``acked``: (replica, outcome id, monotonic time sent) of every 202; ``failures``: counts by
    (kind, replica, status or error name)."""

    decisions: list[tuple[int, str, float]] = field(default_factory=list)
    acked: list[tuple[int, str, float]] = field(default_factory=list)
    failures: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    decide_ms: list[float] = field(default_factory=list)
    outcome_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.decisions += other.decisions
        self.acked += other.acked
        self.failures.update(other.failures)
        self.decide_ms += other.decide_ms
        self.outcome_ms += other.outcome_ms

    def per_replica(self, n: int) -> list[dict[str, int]]:
        dec = Counter(r for r, _, _ in self.decisions)
        ack = Counter(r for r, _, _ in self.acked)
        return [{"decisions": dec[i], "outcomes_acked": ack[i]} for i in range(n)]


def decisions_at_risk(res: LoadResult, replica: int, killed_at: float) -> set[str]:
    """The answered decisions a replica SIGKILLed at ``killed_at`` (monotonic) may have lost.
    Decisions are logged by group commit, not made durable before they are answered; an outcome
    is answered 202 only once its commit is durable, and that commit holds everything logged
    before it. So at risk are the decisions the replica answered after the last outcome it
    acknowledged before the kill was sent (all of its decisions if it acknowledged none)."""
    sent = [t for r, _, t in res.acked if r == replica and t < killed_at]
    cover = max(sent, default=float("-inf"))
    return {d for r, d, t in res.decisions if r == replica and cover < t < killed_at}


class Load:
    """``Load(bases, token).run(seconds)``, or ``start()`` … ``stop()`` around something else (a
    kill). ``tag`` makes the units, sources and outcome ids of one run distinct from another's."""

    def __init__(self, bases: list[str], token: str, *, threads: int = 4, tag: str = "load",
                 sources: int = 1000, timeout: float = 10.0) -> None:
        if not bases:
            raise ValueError("The 'bases' parameter of Load must name at least one replica. Got [] instead.")
        self.bases = list(bases)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.threads = threads
        self.tag = tag
        self.sources = sources
        self.timeout = timeout
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._results: list[LoadResult] = []
        self._t0 = 0.0

    def run(self, seconds: float) -> LoadResult:
        self.start()
        time.sleep(seconds)
        return self.stop()

    def start(self) -> Load:
        self._stop.clear()
        self._results = [LoadResult() for _ in range(self.threads)]
        self._workers = [threading.Thread(target=self._work, args=(t, self._results[t]), daemon=True)
                         for t in range(self.threads)]
        self._t0 = time.monotonic()
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=self.timeout + 5)
        out = LoadResult(seconds=time.monotonic() - self._t0)
        for r in self._results:
            out.merge(r)
        return out

    def _work(self, t: int, res: LoadResult) -> None:
        n = len(self.bases)
        k = 0
        with httpx.Client(timeout=self.timeout, headers=self.headers) as http:
            while not self._stop.is_set():
                r = (t + k) % n
                ident = f"{self.tag}-{t}-{k}"
                decision = self._decide(http, r, context(ident, k), res)
                if decision is not None:
                    body = {"decision_id": decision, "kind": "reported_false_warning", "source": f"{self.tag}-{k % self.sources}",
                            "outcome_id": ident, "event_time": time.time_ns()}
                    self._report(http, (r + 1) % n, body, res)
                k += 1

    def _decide(self, http: httpx.Client, r: int, ctx: dict[str, Any], res: LoadResult) -> str | None:
        t0 = time.perf_counter()
        try:
            resp = http.post(self.bases[r] + "/v1/decide", json=ctx)
        except httpx.TransportError as exc:
            res.failures[("decide", r, type(exc).__name__)] += 1
            time.sleep(0.01)  # a replica that is down: do not spin
            return None
        if resp.status_code != 200:
            res.failures[("decide", r, str(resp.status_code))] += 1
            return None
        res.decide_ms.append((time.perf_counter() - t0) * 1e3)
        decision_id = str(resp.json()["decision_id"])
        res.decisions.append((r, decision_id, time.monotonic()))
        return decision_id

    def _report(self, http: httpx.Client, r: int, body: dict[str, Any], res: LoadResult) -> None:
        sent = time.monotonic()
        t0 = time.perf_counter()
        try:
            resp = http.post(self.bases[r] + "/v1/outcomes", json=body)
        except httpx.TransportError as exc:
            res.failures[("outcome", r, type(exc).__name__)] += 1
            time.sleep(0.01)
            return
        if resp.status_code != 202:
            res.failures[("outcome", r, str(resp.status_code))] += 1
            return
        res.outcome_ms.append((time.perf_counter() - t0) * 1e3)
        res.acked.append((r, str(body["outcome_id"]), sent))


def load_through_a_kill(cluster: Any, tag: str, *, replica: int = 1, collector: int | None = None) -> tuple[LoadResult, float]:
    """Run the load over every replica; 2 s in, SIGKILL ``replica`` (and, when given, the
    ``collector``), restart them 0.5 s later, go on 1.5 s. Checks that the replica acknowledged
    outcomes both before the kill and after its restart and that only it failed requests; returns
    the load's result and when the kill happened (for :func:`decisions_at_risk`)."""
    load = Load(cluster.bases, cluster.tokens["app"], threads=4, tag=tag).start()
    try:
        time.sleep(2.0)
        cluster.kill(replica)
        if collector is not None:
            cluster.kill_collector(collector)  # it holds fetched, unacknowledged messages: delivered again after ack_wait
        t_kill = time.monotonic()
        time.sleep(0.5)
        if collector is not None:
            cluster.restart_collector(collector)
        ready_s = cluster.restart(replica)
        t_back = time.monotonic()
        time.sleep(1.5)
    finally:
        res = load.stop()
    print(f"load: {len(res.decisions)} decisions, {len(res.acked)} outcomes acknowledged in {res.seconds:.1f} s; "
          f"replica {replica} ready {ready_s:.1f} s after its restart; failures {dict(res.failures)}")
    before = [x for x in res.acked if x[0] == replica and x[2] < t_kill]
    after = [x for x in res.acked if x[0] == replica and x[2] > t_back]
    assert before and after, f"replica {replica} acknowledged outcomes both before the kill and after the restart"
    assert all(f[1] == replica for f in res.failures), res.failures  # only the killed replica failed requests
    return res, t_kill

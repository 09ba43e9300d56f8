"""Legitimate sites: a population by kind, with popularity, ages and slow drift.

Each site has ``pages_per_site`` pages in the catalog, a kind, and a popularity weight: a ranked
site's weight is ``rank^-popularity_zipf``; an unranked one gets the weight of a deep rank
(log-uniform in [10⁵, 10⁷]). A page load picks a kind by the day's kind shares (drifting
linearly from ``share_start`` to ``share_end`` over ``drift_days``), a site of that kind by
weight, and one of its pages uniformly.

Drift, every day: log popularity takes a random-walk step (``popularity_drift``); in each kind,
``churn_per_day`` of the sites close and as many new ones open — new domains, young, unranked —
and every domain ages by a day.
"""

from __future__ import annotations

import numpy as np

from closedloop.world._random import categorical, stream
from closedloop.world.config import LEGIT_KINDS, WorldConfig
from closedloop.world.pages import Catalog, legit_pages

__all__ = ["Sites"]


class Sites:
    def __init__(self, cfg: WorldConfig, seed: int, catalog: Catalog) -> None:
        self.kind = np.zeros(0, dtype=np.int64)
        self.weight = np.zeros(0)
        self.first_page = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        for j, k in enumerate(cfg.legit.kinds):
            self._open(cfg, catalog, j, k.sites, stream(seed, 5, 0, j), day=0, new=False)

    @property
    def n(self) -> int:
        return int(self.kind.shape[0])

    def _open(self, cfg: WorldConfig, catalog: Catalog, j: int, m: int, rng: np.random.Generator, day: int,
              new: bool) -> None:
        kind = cfg.legit.kinds[j].name
        cols, rank = legit_pages(cfg, kind, LEGIT_KINDS.index(kind), m, rng, day, first_site=self.n, new=new)
        rows = catalog.append(cols)
        deep = np.exp(rng.uniform(np.log(1e5), np.log(1e7), size=m))
        eff_rank = np.where(rank > 0, rank.astype(np.float64), deep)
        self.kind = np.concatenate([self.kind, np.full(m, j, dtype=np.int64)])
        self.weight = np.concatenate([self.weight, eff_rank ** -cfg.legit.popularity_zipf])
        self.first_page = np.concatenate([self.first_page, rows[:: cfg.legit.pages_per_site]])
        self.alive = np.concatenate([self.alive, np.ones(m, dtype=bool)])

    def shares(self, cfg: WorldConfig, day: int) -> np.ndarray:
        """The legitimate kind shares on ``day`` (config order, summing to 1)."""
        lg = cfg.legit
        f = min(1.0, max(0.0, day / lg.drift_days))
        s = np.array([k.share_start + (k.share_end - k.share_start) * f for k in lg.kinds])
        return s / s.sum()

    def evolve(self, cfg: WorldConfig, seed: int, day: int, catalog: Catalog) -> int:
        """Start of ``day`` (≥ 1): popularity drift and churn. Returns the sites opened."""
        rng = stream(seed, 6, day)
        self.weight *= np.exp(rng.normal(0.0, cfg.legit.popularity_drift, size=self.n))
        opened = 0
        u = rng.random(self.n)
        for j, k in enumerate(cfg.legit.kinds):
            mine = np.flatnonzero((self.kind == j) & self.alive)
            close = mine[u[mine] < k.churn_per_day]
            if close.size:
                self.alive[close] = False
                self._open(cfg, catalog, j, int(close.size), stream(seed, 5, day, j), day=day, new=True)
                opened += int(close.size)
        return opened

    def sample(self, cfg: WorldConfig, rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
        """Pages for ``counts[j]`` loads of kind ``j`` (concatenated in kind order)."""
        P = cfg.legit.pages_per_site
        out = []
        for j, cnt in enumerate(counts.tolist()):
            if cnt == 0:
                continue
            mine = np.flatnonzero((self.kind == j) & self.alive)
            w = self.weight[mine]
            site = mine[categorical(rng, w, cnt)]
            out.append(self.first_page[site] + rng.integers(0, P, size=cnt))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def state(self) -> dict[str, np.ndarray]:
        return {"site.kind": self.kind, "site.weight": self.weight, "site.first_page": self.first_page,
                "site.alive": self.alive}

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> Sites:
        s = cls.__new__(cls)
        s.kind = st["site.kind"].astype(np.int64)
        s.weight = st["site.weight"].astype(np.float64)
        s.first_page = st["site.first_page"].astype(np.int64)
        s.alive = st["site.alive"].astype(bool)
        return s

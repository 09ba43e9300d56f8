"""Phishing campaigns: who impersonates which brand, with which kit, and how kits adapt.

A campaign has a brand, a kit template, a start and an end day, a weight (its share of the day's
phishing page loads) and a **signature**: one probability vector per trait (:data:`TRAITS`:
hosting, https, credential form, brand shown, lure words, domain age, '@' trick, external
resources). A kit *generation* is a pool of pages whose traits are drawn from the signature.

Adaptation (docs/world.md, "Adaptation"): the campaign counts, per trait category, how many of
its page loads were caught (a block counts 1, a warning ``warn_weight``) — it sees this from the
decisions handed back to the world, as a real kit operator sees which of its URLs get flagged.
When a generation has had ``min_visits`` loads and its caught share reaches ``threshold``, the
operator retools: ``delay_days`` later a new generation goes live with new pages (new domains)
and a signature moved toward what paid: multiplicative weights,
``p ← p · exp(learning_rate · (payoff − the trait's mean payoff))`` with ``payoff = efficacy ×
(1 − caught share)`` per category (the caught share smoothed toward the generation's mean by
``prior_visits``; ``efficacy``: how well that category deceives victims), then floored at
``min_prob`` so that every option is still tried now and then. Evading is not free: a page
without the brand's logo or a login form gets past more filters and fools fewer people.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.world._random import stream
from closedloop.world.config import TRAITS, WorldConfig
from closedloop.world.pages import N_TRAITS, TRAIT_INDEX, Catalog, phish_pages

__all__ = ["K", "Campaigns", "efficacy_matrix"]

#: Categories of the widest trait (vectors are padded to this width with zeros).
K = max(len(c) for _, c in TRAITS)
_N_CATS = np.array([len(c) for _, c in TRAITS])
_VALID = np.arange(K)[None, :] < _N_CATS[:, None]  # (T, K) which slots are real categories
_HOST = dict(zip(TRAITS[0][1], range(len(TRAITS[0][1])), strict=True))
_OWN = np.array([_HOST["lookalike"], _HOST["throwaway"]])

def efficacy_matrix(cfg: WorldConfig) -> np.ndarray:
    """(T, K): how well a page of each trait category deceives (1 in padding slots)."""
    e = np.ones((N_TRAITS, K))
    for t, vec in enumerate(cfg.efficacy):
        e[t, : len(vec)] = vec
    return e


_INT_FIELDS = ("template", "brand", "start", "end", "generation", "first_page", "n_pages", "pending", "adaptations")


class Campaigns:
    """All campaigns ever started, as columns (index = campaign id)."""

    def __init__(self) -> None:
        self.n = 0
        self.template = np.zeros(0, dtype=np.int64)
        self.brand = np.zeros(0, dtype=np.int64)
        self.start = np.zeros(0, dtype=np.int64)
        self.end = np.zeros(0, dtype=np.int64)  # last day + 1
        self.generation = np.zeros(0, dtype=np.int64)
        self.first_page = np.zeros(0, dtype=np.int64)
        self.n_pages = np.zeros(0, dtype=np.int64)
        self.pending = np.zeros(0, dtype=np.int64)  # day the retooled kit goes live, -1: none
        self.adaptations = np.zeros(0, dtype=np.int64)
        self.weight = np.zeros(0)
        self.inherited = np.zeros(0, dtype=bool)
        self.probs = np.zeros((0, N_TRAITS, K))
        self.seen = np.zeros((0, N_TRAITS, K))  # loads of the current generation, per category
        self.caught = np.zeros((0, N_TRAITS, K))  # caught weight, per category
        self.gen_seen = np.zeros(0)
        self.gen_caught = np.zeros(0)
        self.events: list[dict[str, Any]] = []

    def active(self, day: int) -> np.ndarray:
        return np.flatnonzero((self.start <= day) & (day < self.end))

    # -- starting -----------------------------------------------------------------------------
    def start_many(self, cfg: WorldConfig, seed: int, day: int, count: int, rng: np.random.Generator,
                   catalog: Catalog, initial: bool = False) -> None:
        """Start ``count`` campaigns on ``day``. Every draw is made whatever the state, so two
        worlds with the same seed start the same campaigns (the signatures of inherited kits
        differ only if their adaptations did)."""
        ph = cfg.phish
        shares = np.array([t.share for t in ph.templates])
        pw = np.array([b.phish_weight for b in cfg.brands])
        tmpl = rng.choice(len(shares), size=count, p=shares / shares.sum())
        brand = rng.choice(len(pw), size=count, p=pw / pw.sum())
        weight = rng.lognormal(0.0, ph.weight_sigma, size=count)
        duration = np.maximum(2, np.ceil(rng.exponential(ph.mean_duration_days, size=count))).astype(np.int64)
        if initial:  # already running for a while: they end sooner
            duration = np.maximum(1, np.ceil(duration * rng.random(count))).astype(np.int64)
        u_inherit = rng.random(count)
        u_pick = rng.random(count)
        adapted = np.flatnonzero((self.generation > 0) & (self.start <= day) & (day < self.end))
        for j in range(count):
            probs = np.zeros((N_TRAITS, K))
            for t, vec in enumerate(ph.templates[int(tmpl[j])].traits):
                probs[t, : len(vec)] = vec
            inherited = False
            if adapted.size and u_inherit[j] < ph.inherit_share:
                probs = self.probs[adapted[int(u_pick[j] * adapted.size)]].copy()
                inherited = True
            c = self._append(int(tmpl[j]), int(brand[j]), day, day + int(duration[j]), float(weight[j]), probs, inherited)
            self.events.append({"day": day, "campaign": c, "event": "start", "generation": 0,
                                "template": ph.templates[int(tmpl[j])].name, "brand": cfg.brands[int(brand[j])].name,
                                "inherited": inherited})
            self.new_generation(cfg, seed, c, day, catalog)

    def _append(self, template: int, brand: int, start: int, end: int, weight: float, probs: np.ndarray,
                inherited: bool) -> int:
        c = self.n
        self.n += 1
        for name, v in (("template", template), ("brand", brand), ("start", start), ("end", end),
                        ("generation", 0), ("first_page", 0), ("n_pages", 0), ("pending", -1), ("adaptations", 0)):
            setattr(self, name, np.append(getattr(self, name), np.int64(v)))
        self.weight = np.append(self.weight, weight)
        self.inherited = np.append(self.inherited, inherited)
        self.probs = np.concatenate([self.probs, probs[None]])
        self.seen = np.concatenate([self.seen, np.zeros((1, N_TRAITS, K))])
        self.caught = np.concatenate([self.caught, np.zeros((1, N_TRAITS, K))])
        self.gen_seen = np.append(self.gen_seen, 0.0)
        self.gen_caught = np.append(self.gen_caught, 0.0)
        return c

    def new_generation(self, cfg: WorldConfig, seed: int, c: int, day: int, catalog: Catalog) -> None:
        """Draw a pool of pages for campaign ``c``'s current generation from its signature."""
        g = int(self.generation[c])
        rng = stream(seed, 7, c, g)
        m = cfg.phish.pages_per_generation
        traits = np.empty((m, N_TRAITS), dtype=np.int8)
        for t in range(N_TRAITS):
            p = self.probs[c, t, : _N_CATS[t]]
            traits[:, t] = rng.choice(_N_CATS[t], size=m, p=p / p.sum())
        cols = phish_pages(cfg, int(self.brand[c]), traits, rng, day, c, g)
        # traits that did not shape the page are not the page's (for the operator's statistics)
        eff = traits.copy()
        eff[~np.isin(traits[:, TRAIT_INDEX["hosting"]], _OWN), TRAIT_INDEX["domain_age"]] = -1
        eff[traits[:, TRAIT_INDEX["hosting"]] == _HOST["platform"], TRAIT_INDEX["https"]] = -1
        rows = catalog.append(cols, eff)
        self.first_page[c] = rows[0]
        self.n_pages[c] = m
        self.seen[c] = 0.0
        self.caught[c] = 0.0
        self.gen_seen[c] = 0.0
        self.gen_caught[c] = 0.0

    # -- watching and adapting -----------------------------------------------------------------
    def record(self, campaign: np.ndarray, traits: np.ndarray, caught: np.ndarray) -> None:
        """Count page loads of campaigns' pages: ``traits`` (n, T) of the pages, ``caught`` the
        weight of each decision (1 block, warn_weight warn, 0 allow)."""
        if campaign.size == 0:
            return
        np.add.at(self.gen_seen, campaign, 1.0)
        np.add.at(self.gen_caught, campaign, caught)
        for t in range(N_TRAITS):
            k = traits[:, t].astype(np.int64)
            ok = k >= 0
            np.add.at(self.seen[:, t, :], (campaign[ok], k[ok]), 1.0)
            np.add.at(self.caught[:, t, :], (campaign[ok], k[ok]), caught[ok])

    def review(self, cfg: WorldConfig, day: int) -> list[int]:
        """End of ``day``: campaigns caught often enough decide to retool (live on
        ``day + delay_days``). Returns the campaigns that decided."""
        a = cfg.adaptation
        act = self.active(day)
        share = np.divide(self.gen_caught[act], self.gen_seen[act], out=np.zeros(act.size), where=self.gen_seen[act] > 0)
        go = act[(self.pending[act] < 0) & (self.gen_seen[act] >= a.min_visits) & (share >= a.threshold)]
        for c in go.tolist():
            self.pending[c] = day + a.delay_days
            self.events.append({"day": day, "campaign": c, "event": "retool_decided", "generation": int(self.generation[c]),
                                "caught_share": round(float(self.gen_caught[c] / self.gen_seen[c]), 4)})
        return go.tolist()

    def adapt_due(self, cfg: WorldConfig, seed: int, day: int, catalog: Catalog) -> list[int]:
        """Start of ``day``: every campaign whose retooled kit is due goes live with it."""
        due = np.flatnonzero((self.pending == day) & (self.end > day))
        for c in due.tolist():
            before = self.probs[c].copy()
            self.probs[c] = self._moved(cfg, c)
            self.generation[c] += 1
            self.adaptations[c] += 1
            self.pending[c] = -1
            self.new_generation(cfg, seed, c, day, catalog)
            self.events.append({"day": day, "campaign": c, "event": "adapted", "generation": int(self.generation[c]),
                                "signature_change": round(float(np.abs(self.probs[c] - before).sum() / 2), 4)})
        self.pending[(self.pending >= 0) & (self.pending <= day)] = -1  # ended before it was due
        return due.tolist()

    def _moved(self, cfg: WorldConfig, c: int) -> np.ndarray:
        a = cfg.adaptation
        mean = self.gen_caught[c] / max(self.gen_seen[c], 1.0)
        rate = (self.caught[c] + a.prior_visits * mean) / (self.seen[c] + a.prior_visits)  # (T, K)
        payoff = efficacy_matrix(cfg) * (1.0 - rate)
        p = np.where(_VALID, self.probs[c], 0.0)
        pbar = (p * payoff).sum(axis=1, keepdims=True)
        q = np.where(_VALID, np.maximum(p, 1e-12) * np.exp(a.learning_rate * (payoff - pbar)), 0.0)
        q /= q.sum(axis=1, keepdims=True)
        # the floor: every category keeps min_prob (renormalized so the floor holds exactly)
        floor = a.min_prob
        q = np.where(_VALID, floor + (1.0 - floor * _N_CATS[:, None]) * q, 0.0)
        return q

    def signature(self, c: int) -> dict[str, dict[str, float]]:
        """Campaign ``c``'s current signature: trait → category → probability."""
        return {name: {cat: round(float(self.probs[c, t, k]), 6) for k, cat in enumerate(cats)}
                for t, (name, cats) in enumerate(TRAITS)}

    # -- persistence ---------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"camp.{k}": getattr(self, k) for k in _INT_FIELDS}
        for k in ("weight", "inherited", "probs", "seen", "caught", "gen_seen", "gen_caught"):
            out[f"camp.{k}"] = getattr(self, k)
        return out

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray], events: list[dict[str, Any]]) -> Campaigns:
        c = cls()
        for k in _INT_FIELDS:
            setattr(c, k, st[f"camp.{k}"].astype(np.int64))
        for k in ("weight", "inherited", "probs", "seen", "caught", "gen_seen", "gen_caught"):
            setattr(c, k, st[f"camp.{k}"])
        c.n = int(c.template.shape[0])
        c.events = list(events)
        return c

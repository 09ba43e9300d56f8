"""Who loads which page when: the draw of one simulated day's page loads.

:func:`draw_loads` runs in named stages, all from the day's one generator in this order: the
abusive reporters' loads on their targets (:func:`_abusive_loads`), how many regular loads are
phishing and which pages they load (:func:`_regular_pages`), which honest users load them
(:func:`_regular_users`: by activity, new users more exposed to phishing), the time of day of
every load (:func:`_times`), then the loads sorted by time and each load's referrer draw. The
same generator state gives the same loads.
"""

from __future__ import annotations

import numpy as np

from closedloop.world import _random as R
from closedloop.world.campaigns import Campaigns
from closedloop.world.config import WorldConfig
from closedloop.world.sites import Sites
from closedloop.world.users import HONEST, UNBLOCK, Users

__all__ = ["draw_loads"]

_HOUR_NS = 3_600_000_000_000


def draw_loads(cfg: WorldConfig, rng: np.random.Generator, d: int, start_ns: int, users: Users, sites: Sites,
               camps: Campaigns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Day ``d``'s ``visits_per_day`` page loads, in time order → (timestamps ns, users, pages,
    referrer draws)."""
    N = cfg.world.visits_per_day
    active = camps.active(d)
    ab_pages, ab_users = _abusive_loads(cfg, rng, users, sites, camps, active)
    n_reg = N - int(sum(p.size for p in ab_pages))
    lg_pages, ph_pages = _regular_pages(cfg, rng, d, n_reg, sites, camps, active)
    lg_users, ph_users = _regular_users(cfg, rng, d, users, lg_pages.size, ph_pages.size)
    page = np.concatenate([lg_pages, ph_pages, *ab_pages])
    user = np.concatenate([lg_users, ph_users, *ab_users])
    ts = _times(cfg, rng, start_ns, N)
    order = np.argsort(ts, kind="stable")
    page, user, ts = page[order], user[order], ts[order]
    u_ref = rng.random(N)
    return ts, user, page, u_ref


def _abusive_loads(cfg: WorldConfig, rng: np.random.Generator, users: Users, sites: Sites, camps: Campaigns,
                   active: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Abusive reporters go to their targets, ``abuse.visits_per_day`` loads each: an unblocker
    to the pages of one active campaign (none when no campaign is active), a smearer to login
    services and popular sites → (pages, users), one array of each per reporter."""
    ab_pages: list[np.ndarray] = []
    ab_users: list[np.ndarray] = []
    k = cfg.abuse.visits_per_day
    login_kind = _kind_index(cfg, "login_service")
    popular_kind = _kind_index(cfg, "popular")
    for u in np.flatnonzero(users.role != HONEST).tolist():
        if users.role[u] == UNBLOCK:
            if not active.size:
                continue
            w = camps.weight[active]
            c = active[R.categorical(rng, w, 1)[0]]
            pages = camps.first_page[c] + rng.integers(0, camps.n_pages[c], size=k)
        else:
            counts = np.zeros(len(cfg.legit.kinds), dtype=np.int64)
            if login_kind >= 0:
                counts[login_kind] += k // 2
            counts[popular_kind if popular_kind >= 0 else 0] += k - int(counts.sum())
            pages = sites.sample(cfg, rng, counts)
        ab_pages.append(pages)
        ab_users.append(np.full(pages.size, u, dtype=np.int64))
    return ab_pages, ab_users


def _regular_pages(cfg: WorldConfig, rng: np.random.Generator, d: int, n_reg: int, sites: Sites, camps: Campaigns,
                   active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pages of the ``n_reg`` regular loads: a binomial share ``phish.visit_share`` is
    phishing (when a campaign is active), spread over the active campaigns by weight; the rest
    over the legitimate kinds by the day's shares → (legitimate pages, phishing pages)."""
    n_ph = int(rng.binomial(n_reg, cfg.phish.visit_share)) if active.size else 0
    n_lg = n_reg - n_ph
    lg_pages = sites.sample(cfg, rng, rng.multinomial(n_lg, sites.shares(cfg, d)))
    if n_ph:
        w = camps.weight[active]
        camp = active[R.categorical(rng, w, n_ph)]
        ph_pages = camps.first_page[camp] + (rng.random(n_ph) * camps.n_pages[camp]).astype(np.int64)
    else:
        ph_pages = np.zeros(0, dtype=np.int64)
    return lg_pages, ph_pages


def _regular_users(cfg: WorldConfig, rng: np.random.Generator, d: int, users: Users, n_lg: int,
                   n_ph: int) -> tuple[np.ndarray, np.ndarray]:
    """Honest users load the regular pages in proportion to their activity; new users meet
    phishing ``new_user_phish_exposure`` times as often → (users of legitimate loads, of phishing loads)."""
    honest_w = users.activity * (users.role == HONEST)
    lg_users = R.categorical(rng, honest_w, n_lg)
    new = users.is_new(np.arange(users.n), d, cfg.users.new_user_days)
    ph_w = honest_w * np.where(new, cfg.users.new_user_phish_exposure, 1.0)
    ph_users = R.categorical(rng, ph_w, n_ph)
    return lg_users, ph_users


def _times(cfg: WorldConfig, rng: np.random.Generator, start_ns: int, n: int) -> np.ndarray:
    """``n`` times of day: an hour by the hourly profile, uniform within it."""
    hours = R.categorical(rng, np.asarray(cfg.world.hourly_profile), n)
    return start_ns + ((hours + rng.random(n)) * _HOUR_NS).astype(np.int64)


def _kind_index(cfg: WorldConfig, name: str) -> int:
    for j, k in enumerate(cfg.legit.kinds):
        if k.name == name:
            return j
    return -1

"""The feed world: a seeded, vectorized news feed whose click truth is known.

Users with drifting interests over categories open sessions at their own hours; news-like items
arrive all day, age and lose relevance, and categories surge for a few days; each session's
candidates (≤ 20) come from a retrieval step over the live catalogue; clicks are position-biased
(a declared examination curve × the item's attraction to the user at that time); a click farm's
units click the farm's own items whenever shown. The world knows every slate's expected clicks
and values any policy by its **genuine** clicks on the same sessions (docs/world.md, "The feed
world")::

    world = FeedWorld(seed=3)                                  # the committed feed.toml
    system = world.system(k=5, explore=Softmax(0.3))
    day = run_feed_day(world, Runtime(system, world.heuristic_bundle(system), telemetry=tel), tel, 0, seed=1)
    day.true_value                                             # expected genuine clicks per session

The parts: :mod:`.feed_config` (``FeedConfig`` from ``feed.toml``), :mod:`.feed_sessions` (a day's
``Sessions``, the retrieval step, slates), :mod:`.feed_driver` (``run_feed_day``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_sessions import Catalogue, Sessions, retrieve, slates, t_ms

__all__ = ["Clicks", "FeedWorld"]

_HOUR_NS = 3600 * 10**9
_DAY_NS = 24 * _HOUR_NS
_BLOCK = 16_384  # sessions per block of the candidate fields' computation


class Clicks:
    """The clicks of a day's slates, one row per click, in session order: ``session`` (row in the
    day's sessions), ``slot`` (1-based), ``item`` (index; ``item_ids()`` for the ids), ``event_ns``.
    ``farm`` (truth, measurement only) marks the farm's clicks."""

    def __init__(self, session: np.ndarray, slot: np.ndarray, item: np.ndarray, event_ns: np.ndarray, farm: np.ndarray,
                 sessions: Sessions) -> None:
        self.session, self.slot, self.item, self.event_ns, self.farm = session, slot, item, event_ns, farm
        self._sessions = sessions

    def __len__(self) -> int:
        return len(self.session)

    def item_ids(self) -> list[str]:
        return self._sessions.item_ids(self.item)


class FeedWorld:
    """A seeded feed world (module doc). ``config``: a :class:`FeedConfig` (default: the committed
    ``feed.toml``). Days are drawn in order, each once (:meth:`day`)."""

    def __init__(self, config: FeedConfig | None = None, *, seed: int = 0) -> None:
        if config is not None and not isinstance(config, FeedConfig):
            raise SpecError(f"The 'config' parameter of FeedWorld must be a FeedConfig or None. Got {type(config).__name__} instead.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SpecError(f"The 'seed' parameter of FeedWorld must be an int ≥ 0. Got {seed!r} instead.")
        self.config = cfg = config if config is not None else FeedConfig.load()
        self.seed = seed
        self.n_categories = len(cfg.categories)
        self.exam = np.asarray(cfg.examination)
        self.next_day = 0
        self.surge_until = np.full(self.n_categories, -1, dtype=np.int64)  # a category surges on days ≤ this
        #: day → the categories surging that day (truth, for measurement)
        self.surges: dict[int, tuple[str, ...]] = {}
        self._surging: dict[int, np.ndarray] = {}
        rng = self._rng(-1, 0)
        self._empty_users()
        self._add_users(cfg.users_count, -rng.integers(1, 366, size=cfg.users_count), rng)
        self.farm = np.zeros(cfg.users_count, dtype=bool)
        self.farm[rng.choice(cfg.users_count, size=cfg.farm_units, replace=False)] = True
        #: the two categories the farm publishes in; its units declare them, so topical retrieval finds its items
        self.farm_topics = rng.choice(self.n_categories, size=2, replace=False)
        self.declared[self.farm] = self.farm_topics
        self._empty_items()
        warm = int(round(cfg.items_per_day * cfg.max_age_hours / 24))  # the catalogue before day 0
        self._publish(cfg.start_ns - int(cfg.max_age_hours * _HOUR_NS), cfg.start_ns, warm, 0, rng)

    # -- populations ----------------------------------------------------------------------------------
    def _rng(self, day: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, day + 1, stream])

    def _empty_users(self) -> None:
        c = self.n_categories
        self.interest = np.empty((0, c))
        self.declared = np.empty((0, 2), dtype=np.int64)
        self.signup_day = np.empty(0, dtype=np.int64)
        self.activity = np.empty(0)
        self.fav_hour = np.empty(0, dtype=np.int64)

    def _add_users(self, n: int, signup_day: np.ndarray, rng: np.random.Generator) -> None:
        cfg = self.config
        interest = rng.normal(0.0, cfg.interest_sd, size=(n, self.n_categories))
        noisy = interest + rng.normal(0.0, cfg.declared_noise, size=interest.shape)
        declared = np.argsort(-noisy, axis=1, kind="stable")[:, :2]
        prof = np.asarray(cfg.hourly_profile) / sum(cfg.hourly_profile)
        self.interest = np.concatenate([self.interest, interest])
        self.declared = np.concatenate([self.declared, declared])
        self.signup_day = np.concatenate([self.signup_day, np.asarray(signup_day, dtype=np.int64)])
        self.activity = np.concatenate([self.activity, rng.lognormal(0.0, cfg.activity_sd, size=n)])
        self.fav_hour = np.concatenate([self.fav_hour, rng.choice(24, size=n, p=prof)])
        if hasattr(self, "farm"):
            self.farm = np.concatenate([self.farm, np.zeros(n, dtype=bool)])

    def _empty_items(self) -> None:
        self.pub_ns = np.empty(0, dtype=np.int64)
        self.item_category = np.empty(0, dtype=np.int64)
        self.quality = np.empty(0)
        self.farm_item = np.empty(0, dtype=bool)
        self.clicks = np.empty(0, dtype=np.int64)  # counted from the clicks drawn (what a platform's counter sees)
        self.impressions = np.empty(0, dtype=np.int64)

    def _publish(self, t0: int, t1: int, n: int, n_farm: int, rng: np.random.Generator) -> None:
        """``n`` genuine and ``n_farm`` farm items published at uniform times in [t0, t1)."""
        cfg, c = self.config, self.n_categories
        share = np.where(self.surge_until >= self.next_day, cfg.surge_share, 1.0)
        cats = np.concatenate([rng.choice(c, size=n, p=share / share.sum()), self.farm_topics[rng.integers(0, 2, size=n_farm)]])
        quality = rng.normal(0.0, cfg.quality_sd, size=n + n_farm)
        quality[n:] += cfg.farm_quality_shift
        farm = np.arange(n + n_farm) >= n
        pub = t0 + np.floor(rng.random(n + n_farm) * (t1 - t0)).astype(np.int64)
        order = np.argsort(pub, kind="stable")
        self.pub_ns = np.concatenate([self.pub_ns, pub[order]])
        self.item_category = np.concatenate([self.item_category, cats[order]])
        self.quality = np.concatenate([self.quality, quality[order]])
        self.farm_item = np.concatenate([self.farm_item, farm[order]])
        self.clicks = np.concatenate([self.clicks, np.zeros(n + n_farm, dtype=np.int64)])
        self.impressions = np.concatenate([self.impressions, np.zeros(n + n_farm, dtype=np.int64)])

    def _overnight(self, d: int, rng: np.random.Generator) -> None:
        """Before day ``d``: interests drift (from day 1), new users arrive, surges start and end,
        the day's items are drawn."""
        cfg = self.config
        if d > 0:
            self.interest += rng.normal(0.0, cfg.drift_sd, size=self.interest.shape)
        self._add_users(cfg.users_new_per_day, np.full(cfg.users_new_per_day, d), rng)
        idle = self.surge_until < d
        start = idle & (rng.random(self.n_categories) < cfg.surge_rate)
        self.surge_until[start] = d + cfg.surge_days - 1
        self._surging[d] = surging = self.surge_until >= d
        self.surges[d] = tuple(cfg.categories[i] for i in np.flatnonzero(surging))
        s = self.day_start_ns(d)
        self._publish(s, s + _DAY_NS, cfg.items_per_day, cfg.farm_items_per_day, rng)

    # -- a day ----------------------------------------------------------------------------------------
    def day_start_ns(self, day: int) -> int:
        return self.config.day_start_ns(day)

    def day(self, d: int | None = None) -> Sessions:
        """Draw day ``d``'s sessions (days go in order, each once; ``None``: the next)."""
        if d is None:
            d = self.next_day
        if isinstance(d, bool) or not isinstance(d, int) or d != self.next_day:
            raise SpecError(f"The 'd' parameter of FeedWorld.day must be the next day, {self.next_day} "
                            f"(days are drawn in order, each once). Got {d!r} instead.")
        self._overnight(d, self._rng(d, 0))
        self.next_day = d + 1
        rng = self._rng(d, 1)
        user, ts, hour = self._session_times(d, rng)
        return self._sessions(d, user, ts, hour, rng)

    def _session_times(self, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Who opens a session when: genuine users ∝ activity around their favourite hour, farm units uniformly."""
        cfg = self.config
        w = np.where(self.farm, 0.0, self.activity)
        cum = np.cumsum(w)
        user = np.searchsorted(cum, rng.random(cfg.sessions_per_day) * cum[-1], side="right")
        hour = (self.fav_hour[user] + np.rint(rng.normal(0.0, cfg.hour_sd, size=len(user))).astype(np.int64)) % 24
        farm_units = np.repeat(np.flatnonzero(self.farm), cfg.farm_sessions_per_unit)
        user = np.concatenate([user, farm_units])
        hour = np.concatenate([hour, rng.integers(0, 24, size=len(farm_units))])
        ts = self.day_start_ns(d) + hour * _HOUR_NS + np.floor(rng.random(len(user)) * _HOUR_NS).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        return user[order], ts[order], hour[order]

    def _sessions(self, d: int, user: np.ndarray, ts: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Sessions:
        cfg = self.config
        start = self.day_start_ns(d)
        live = self.pub_ns >= start - int(cfg.max_age_hours * _HOUR_NS)
        before = live & (self.pub_ns < start)
        cand_pool = np.flatnonzero(before)
        top = np.lexsort((-self.pub_ns[cand_pool], -self.clicks[cand_pool]))[: cfg.popular_pool]
        cat = Catalogue(t_ms(cfg, self.pub_ns), self.item_category, cand_pool[top])
        topics = self.declared[user]
        cand = retrieve(cfg, cat, t_ms(cfg, ts), topics, rng)
        age, ctr, is_new, attraction = self._candidate_fields(d, user, ts, cand)
        return Sessions(
            day=d, timestamps_ns=ts, hour=hour, user=user, user_age_days=d - self.signup_day[user], topics=topics,
            farm=self.farm[user], cand=cand, counts=(cand >= 0).sum(axis=1), age_hours=age, item_ctr=ctr, is_new=is_new,
            categories=cfg.categories, item_category=self.item_category, attraction=attraction,
        )

    def _candidate_fields(self, d: int, user: np.ndarray, ts: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each candidate's ``age_hours``, ``item_ctr``, ``is_new`` and (truth) attraction: the items' own
        terms once per item, then gathers, a block of sessions at a time (to stay in cache)."""
        cfg = self.config
        start = self.day_start_ns(d)
        hours = (ts - start) / _HOUR_NS  # the session's time and each item's publication, in hours since the day's start
        pub_hours = (self.pub_ns - start) / _HOUR_NS
        item_ctr = (self.clicks + cfg.ctr_prior_clicks) / (self.impressions + cfg.ctr_prior_impressions)
        item_new = self.impressions < cfg.new_impressions
        cat = self.item_category
        # attraction's logit = own[item] + interest[user, category] − hours / decay (age = hours − pub_hours)
        own = (cfg.base_logit + self.quality + cfg.surge_boost * self._surging[d][cat] + pub_hours / cfg.decay_hours).astype(np.float32)
        interest = self.interest.astype(np.float32).ravel()
        age, ctr = np.empty(cand.shape), np.empty(cand.shape)
        is_new, attr = np.empty(cand.shape, dtype=bool), np.empty(cand.shape, dtype=np.float32)
        for a in range(0, len(cand), _BLOCK):
            b = a + _BLOCK
            c = cand[a:b]  # index -1 reads the last item: masked below
            none = c < 0
            np.subtract(hours[a:b, None], pub_hours[c], out=age[a:b])
            np.take(item_ctr, c, out=ctr[a:b])
            np.take(item_new, c, out=is_new[a:b])
            z = own[c]
            z -= (hours[a:b] / cfg.decay_hours).astype(np.float32)[:, None]
            z += interest[(user[a:b] * self.n_categories)[:, None] + cat[c]]
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1.0
            np.reciprocal(z, out=z)
            for out, zero in ((age, 0.0), (ctr, 0.0), (is_new, False)):
                out[a:b][none] = zero
            z[none] = 0.0
            attr[a:b] = z
        return age, ctr, is_new, attr

    # -- the truth (measurement only) -------------------------------------------------------------------
    def attraction(self, sessions: Sessions) -> np.ndarray:
        """``(n, 20)``: each candidate's click probability in the first slot for a genuine user (0 for no
        item), as the day was drawn. Measurement only."""
        return sessions.attraction

    def expected_clicks(self, sessions: Sessions, rankings: Any) -> np.ndarray:
        """Each session's expected **genuine** clicks for what ``rankings`` showed (0 for a farm unit's
        session: its clicks are worthless)."""
        pos = slates(sessions, rankings)
        k = pos.shape[1]
        if k > len(self.exam):
            raise SpecError(f"The slates of a feed world day must have at most {len(self.exam)} slots (the examination "
                            f"curve's length). Got {k} instead.")
        p = np.take_along_axis(self.attraction(sessions), np.maximum(pos, 0), axis=1)
        val = np.where(pos >= 0, p * self.exam[:k], 0.0).sum(axis=1)
        return np.where(sessions.farm, 0.0, val)

    def true_value(self, sessions: Sessions, rankings: Any) -> float:
        """Expected genuine clicks per session of what ``rankings`` showed (exact, given the slates)."""
        return float(self.expected_clicks(sessions, rankings).mean()) if sessions.n else 0.0

    def policy_value(self, sessions: Sessions, runtime: Any, *, seed: int = 0) -> float:
        """The true value of a runtime's policy on ``sessions``: ``decide_batch`` (decision ids from
        ``seed``; pass a runtime without telemetry to log nothing), then :meth:`true_value` of its
        slates — exact for a greedy policy, one draw of its slates when it explores."""
        from closedloop.runtime.ids import DecisionIds

        ids = DecisionIds(seed).next_ids(sessions.n, self.day_start_ns(sessions.day))
        batch = runtime.decide_batch(sessions.requests(), candidates=sessions.candidates(), decision_ids=ids.to_pylist(),
                                     timestamps_ns=sessions.timestamps_ns)
        return self.true_value(sessions, batch)

    @property
    def farm_units(self) -> list[str]:
        """The farm's user ids (truth, measurement only)."""
        return [f"u{i}" for i in np.flatnonzero(self.farm)]

    # -- feedback ---------------------------------------------------------------------------------------
    def feedback(self, sessions: Sessions, rankings: Any, rng: np.random.Generator | int) -> Clicks:
        """Draw the clicks of what ``rankings`` showed on ``sessions`` (once per day): a genuine user
        clicks slot j with probability examination[j] × attraction; a farm unit clicks every farm item
        shown, nothing else. Counts impressions and clicks into each item's observed ``item_ctr``."""
        if sessions.fed:
            raise SpecError(f"The sessions of day {sessions.day} were given feedback already (feedback is drawn once per day).")
        pos = slates(sessions, rankings)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng([self.seed, int(rng), 7])
        n, k = pos.shape
        shown = pos >= 0
        item = np.where(shown, np.take_along_axis(sessions.cand, np.maximum(pos, 0), axis=1), 0)
        p = np.take_along_axis(self.attraction(sessions), np.maximum(pos, 0), axis=1) * self.exam[:k]
        genuine = shown & (rng.random((n, k)) < p) & ~sessions.farm[:, None]
        farm = shown & sessions.farm[:, None] & self.farm_item[item]
        clicked = genuine | farm
        s, j = np.nonzero(clicked)
        delay = self.config.click_delay_s * 1e9
        event = sessions.timestamps_ns[s] + ((j + 1) * delay + rng.exponential(delay, size=len(s))).astype(np.int64)
        self.impressions += np.bincount(item[shown], minlength=len(self.impressions))
        self.clicks += np.bincount(item[clicked], minlength=len(self.clicks))
        sessions.fed = True
        return Clicks(s, j + 1, item[s, j], event, farm[s, j], sessions)

    # -- the system -------------------------------------------------------------------------------------
    def system(self, *, k: int = 5, explore: Any = None, name: str = "feed_world", split: Any = None) -> Any:
        """The ranking system of this world: what it observes (docs/world.md, "The feed world").
        ``split``: how its datasets are split for training and evaluation (default: by unit; a
        learner that keeps state per user — ``train(model="affinity")`` — is judged by time, since
        a held-out user is one it knows nothing about)."""
        from closedloop.world.feed_system import feed_system

        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.exam):
            raise SpecError(f"The 'k' parameter of FeedWorld.system must be an int in [1, {len(self.exam)}]. Got {k!r} instead.")
        return feed_system(self.config.categories, k=k, explore=explore, name=name, window=timedelta(minutes=30), split=split)

    def heuristic_bundle(self, system: Any) -> Any:
        """The starting heuristic (:func:`closedloop.world.feed_system.heuristic`) as a bundle of ``system``."""
        from closedloop.runtime.bundle import Bundle
        from closedloop.world.feed_system import heuristic

        return Bundle.build(system, heuristic(), version="heuristic")

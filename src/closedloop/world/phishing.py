"""The phishing world: users loading legitimate and phishing pages, day after simulated day.

::

    world = PhishingWorld(WorldConfig.load(), seed=7)
    visits = world.visits(0)                    # day 0's page loads, in time order
    batch = runtime.decide_batch(visits.contexts, decision_ids=visits.decision_ids,
                                 timestamps_ns=visits.timestamps_ns)
    world.observe(visits, batch)                # the decisions, handed back
    outcomes = world.due(until_ns)              # outcomes delivered by then (an Arrow table)
    world.measure(0)                            # ground-truth counts, for measurement only
    world.truth(batch.decision_ids)             # is_phish, campaign_id … for measurement only

A day's visits may be decided and observed in slices (``visits.split(24)``: hour by hour), in any
number of calls, but every visit of a day must be observed before the next day's visits are
drawn: the world moves on only when it knows what happened (campaigns review what got caught,
users who met a false block may turn protection off).

What the world hands out — contexts (exactly the phishing system's context fields), decision
ids, timestamps and outcomes — carries no ground truth. Truth (is the page phishing, which
campaign, which generation, is the reporter abusive) stays inside, for :meth:`truth` and
:meth:`measure`. Everything is seeded (:mod:`._random`): the same seed and the same decisions give
the same visits and outcomes; two worlds with the same seed share every random draw that does
not depend on decisions (the same visit stream) — :meth:`fork` copies a world to compare
policies from a common past.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import SpecError
from closedloop.runtime.decision import DecisionBatch
from closedloop.world import _random as R
from closedloop.world._ids import format_ids, parse_counters
from closedloop.world.campaigns import Campaigns
from closedloop.world.config import ACTIONS, BROWSERS, LEGIT_KINDS, WorldConfig
from closedloop.world.outcomes import KINDS, OutcomeQueue, generate
from closedloop.world.pages import EMAIL_REFERRERS, LEGIT_REFERRERS, OTHER_PHISH_REFERRERS, Catalog
from closedloop.world.sites import Sites
from closedloop.world.users import HONEST, UNBLOCK, Users

__all__ = ["PhishingWorld", "Visits"]

_REFERRERS = pa.array(LEGIT_REFERRERS + EMAIL_REFERRERS + OTHER_PHISH_REFERRERS, type=pa.string())
_BROWSERS = pa.array(BROWSERS, type=pa.string())
_NOT_ASKED = -2  # a visit of an unprotected user: not decided
_WAITING = -1  # decided visit not yet observed
_STATE_VERSION = 1


class Visits:
    """A day's page loads (or a slice of them), in time order, ready for ``Runtime.decide_batch``:
    ``contexts`` (column → Arrow or numpy array, the system's context fields), ``timestamps_ns``,
    ``decision_ids`` (Arrow strings), and ``index`` (each visit's place in its day, for the world)."""

    __slots__ = ("contexts", "day", "day_end_ns", "day_start_ns", "decision_ids", "index", "timestamps_ns")

    def __init__(self, day: int, day_start_ns: int, day_end_ns: int, contexts: dict[str, Any],
                 timestamps_ns: np.ndarray, decision_ids: pa.Array, index: np.ndarray) -> None:
        self.day = day
        self.day_start_ns = day_start_ns
        self.day_end_ns = day_end_ns
        self.contexts = contexts
        self.timestamps_ns = timestamps_ns
        self.decision_ids = decision_ids
        self.index = index

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __repr__(self) -> str:
        return f"Visits(day={self.day}, n={len(self)})"

    def slice(self, start: int, stop: int) -> Visits:
        """Visits ``start:stop`` (in time order)."""
        return Visits(
            self.day, self.day_start_ns, self.day_end_ns,
            {k: v.slice(start, stop - start) if isinstance(v, pa.Array) else v[start:stop] for k, v in self.contexts.items()},
            self.timestamps_ns[start:stop], self.decision_ids.slice(start, stop - start), self.index[start:stop],
        )

    def split(self, parts: int) -> list[tuple[int, Visits]]:
        """The day cut into ``parts`` equal time windows: ``[(window end ns, its visits), …]``
        (a window may be empty)."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise SpecError(f"Visits.split 'parts' must be an integer ≥ 1. Got {parts!r} instead.")
        span = self.day_end_ns - self.day_start_ns
        ends = [self.day_start_ns + (span * (k + 1)) // parts for k in range(parts)]
        cut = np.searchsorted(self.timestamps_ns, np.array(ends[:-1], dtype=np.int64), side="left").tolist()
        bounds = [0, *cut, len(self)]
        return [(ends[k], self.slice(bounds[k], bounds[k + 1])) for k in range(parts)]

    def table(self) -> pa.Table:
        """The contexts as an Arrow table."""
        return pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in self.contexts.items()})


@dataclass
class _Day:
    """Ground truth of one day: every generated page load, decided or not (index = day index)."""

    day: int
    ts: np.ndarray
    user: np.ndarray
    page: np.ndarray
    phish: np.ndarray
    campaign: np.ndarray
    role: np.ndarray
    action: np.ndarray  # ACTIONS code, _WAITING, or _NOT_ASKED
    victim: np.ndarray
    continued: np.ndarray
    u_ref: np.ndarray  # the draw that picks each visit's referrer
    outcomes: np.ndarray = field(default_factory=lambda: np.zeros((len(KINDS), 2), dtype=np.int64))  # [kind, abusive]
    disables: int = 0
    adapted: list[int] = field(default_factory=list)
    retool_decided: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.ts.shape[0])


class PhishingWorld:
    """A seeded, vectorized simulation of the phishing example (module docstring; docs/world.md).

    Parameters
    ----------
    config:
        A :class:`WorldConfig` (default: ``WorldConfig.load()``, the committed configuration).
    seed:
        Every random draw derives from it.
    """

    def __init__(self, config: WorldConfig | None = None, *, seed: int = 0) -> None:
        if config is None:
            config = WorldConfig.load()
        if not isinstance(config, WorldConfig):
            raise SpecError(f"PhishingWorld 'config' must be a WorldConfig. Got {config!r} instead.")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise SpecError(f"PhishingWorld 'seed' must be an integer in [0, 2**63). Got {seed!r} instead.")
        n_abuse = config.abuse.sources * config.abuse.visits_per_day
        if n_abuse >= config.world.visits_per_day:
            raise SpecError(
                f"World config 'abuse.sources' × 'abuse.visits_per_day' must be below 'world.visits_per_day' "
                f"({config.world.visits_per_day}). Got {n_abuse} instead."
            )
        self.config = config
        self.seed = seed
        self.day = -1  # the last day whose visits were drawn
        self._id_base = int(R.stream(seed, 0).integers(1 << 40, 1 << 56))
        self.catalog = Catalog()
        self.sites = Sites(config, seed, self.catalog)
        self.users = Users(config, R.stream(seed, 2, 0))
        self.campaigns = Campaigns()
        self.campaigns.start_many(config, seed, 0, config.phish.initial_campaigns, R.stream(seed, 4, 0), self.catalog,
                                  initial=True)
        self.queue = OutcomeQueue()
        self._days: dict[int, _Day] = {}
        self._disable: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_adapted: list[int] = []
        self._faults: dict[int, str] = {}
        self._fault_hits: dict[int, int] = {}  # analyst labels corrupted, by delivery day
        self.timings: dict[str, float] = {"visits": 0.0, "observe": 0.0, "due": 0.0}

    # -- time ----------------------------------------------------------------------------------
    @property
    def next_day(self) -> int:
        """The day :meth:`visits` draws next."""
        return self.day + 1

    def day_start_ns(self, day: int) -> int:
        return self.config.day_start_ns(day)

    # -- visits ----------------------------------------------------------------------------------
    def visits(self, day: int | None = None) -> Visits:
        """Draw the page loads of ``day`` (default: the next day; days go in order, each once).

        Visits of users who turned protection off are not returned (the browser does not ask);
        the world still counts them (:meth:`measure`)."""
        t0 = time.perf_counter()
        d = self.next_day if day is None else day
        if isinstance(d, bool) or not isinstance(d, int) or d != self.next_day:
            raise SpecError(f"PhishingWorld.visits 'day' must be the next day, {self.next_day}. Got {d!r} instead.")
        if d > 0:
            self._close_day(d - 1)
            self._evolve(d)
        out = self._draw(d)
        self.day = d
        self.timings["visits"] += time.perf_counter() - t0
        return out

    def _close_day(self, d: int) -> None:
        D = self._days[d]
        waiting = int(np.count_nonzero(D.action == _WAITING))
        if waiting:
            raise SpecError(
                f"Day {d} must be fully observed before day {d + 1} is drawn: {waiting} of its visits "
                "have no decision handed back yet (PhishingWorld.observe)."
            )
        D.retool_decided = self.campaigns.review(self.config, d)

    def _evolve(self, d: int) -> None:
        cfg, seed = self.config, self.seed
        for users, until in self._disable:
            self.users.disable(users, until)
        self._disable = []
        self.users.evolve(cfg, d, R.stream(seed, 2, d))
        self.sites.evolve(cfg, seed, d, self.catalog)
        adapted = self.campaigns.adapt_due(cfg, seed, d, self.catalog)
        rng = R.stream(seed, 4, d)
        self.campaigns.start_many(cfg, seed, d, int(rng.poisson(cfg.phish.new_per_day)), rng, self.catalog)
        self._pending_adapted = list(adapted)

    def _draw(self, d: int) -> Visits:
        cfg, users, camps, cat = self.config, self.users, self.campaigns, self.catalog
        rng = R.stream(self.seed, 1, d)
        N = cfg.world.visits_per_day
        active = camps.active(d)
        # abusive reporters go to their targets
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
                pages = self.sites.sample(cfg, rng, counts)
            ab_pages.append(pages)
            ab_users.append(np.full(pages.size, u, dtype=np.int64))
        n_ab = int(sum(p.size for p in ab_pages))
        n_reg = N - n_ab
        n_ph = int(rng.binomial(n_reg, cfg.phish.visit_share)) if active.size else 0
        n_lg = n_reg - n_ph
        lg_pages = self.sites.sample(cfg, rng, rng.multinomial(n_lg, self.sites.shares(cfg, d)))
        if n_ph:
            w = camps.weight[active]
            camp = active[R.categorical(rng, w, n_ph)]
            ph_pages = camps.first_page[camp] + (rng.random(n_ph) * camps.n_pages[camp]).astype(np.int64)
        else:
            ph_pages = np.zeros(0, dtype=np.int64)
        honest_w = users.activity * (users.role == HONEST)
        lg_users = R.categorical(rng, honest_w, n_lg)
        new = users.is_new(np.arange(users.n), d, cfg.users.new_user_days)
        ph_w = honest_w * np.where(new, cfg.users.new_user_phish_exposure, 1.0)
        ph_users = R.categorical(rng, ph_w, n_ph)
        page = np.concatenate([lg_pages, ph_pages, *ab_pages])
        user = np.concatenate([lg_users, ph_users, *ab_users])
        prof = np.asarray(cfg.world.hourly_profile)
        hours = R.categorical(rng, prof, N)
        start = self.day_start_ns(d)
        ts = start + ((hours + rng.random(N)) * 3_600_000_000_000).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        page, user, ts = page[order], user[order], ts[order]
        u_ref = rng.random(N)

        campaign = cat.cols["campaign"][page]
        protected = users.protected[user]
        self._days[d] = _Day(
            day=d, ts=ts, user=user, page=page, phish=campaign >= 0, campaign=campaign,
            role=users.role[user].astype(np.int8), action=np.where(protected, _WAITING, _NOT_ASKED).astype(np.int8),
            victim=np.zeros(N, dtype=bool), continued=np.zeros(N, dtype=bool), u_ref=u_ref,
            adapted=self._pending_adapted,
        )
        self._pending_adapted = []
        return self._visits_for(self._days[d], np.flatnonzero(protected))

    def _visits_for(self, D: _Day, rows: np.ndarray) -> Visits:
        """The contexts of day ``D``'s visits ``rows`` (page attributes as of that day)."""
        cfg, users, cat, d = self.config, self.users, self.catalog, D.day
        pg, us = D.page[rows], D.user[rows]
        C = cat.cols
        age = C["age0"][pg] + np.where(C["age_fixed"][pg], 0.0, (d - C["born"][pg]).astype(np.float64))
        # referrers: search and social for legitimate pages, mostly webmail for phishing ones
        ur = D.u_ref[rows]
        nl, ne, no = len(LEGIT_REFERRERS), len(EMAIL_REFERRERS), len(OTHER_PHISH_REFERRERS)
        share = cfg.phish.referrer_email_share
        email = ur < share
        ph_ref = np.where(
            email, nl + (ur / max(share, 1e-12) * ne).astype(np.int64).clip(0, ne - 1),
            nl + ne + ((ur - share) / max(1.0 - share, 1e-12) * no).astype(np.int64).clip(0, no - 1),
        )
        ref = np.where(D.phish[rows], ph_ref, (ur * nl).astype(np.int64).clip(0, nl - 1))
        countries = pa.array([c for c, _ in cfg.users.countries], type=pa.string())
        take = pa.array(pg)
        contexts: dict[str, Any] = {
            "user_id": users.ids.take(pa.array(us)),
            "url": cat.arrow("url").take(take),
            "domain": cat.arrow("domain").take(take),
            "domain_age_days": age,
            "num_forms": C["num_forms"][pg],
            "has_password_field": C["has_password_field"][pg],
            "num_external_links": C["num_external_links"][pg],
            "num_links": C["num_links"][pg],
            "num_external_resources": C["num_external_resources"][pg],
            "num_resources": C["num_resources"][pg],
            "page_brand": cat.arrow("page_brand").take(take),
            "https": C["https"][pg],
            "popularity_rank": C["popularity_rank"][pg],
            "browser": _BROWSERS.take(pa.array(users.browser[us])),
            "country": countries.take(pa.array(users.country[us])),
            "referrer_domain": _REFERRERS.take(pa.array(ref)),
            "new_user": users.is_new(us, d, cfg.users.new_user_days),
        }
        ts = D.ts[rows]
        ids = format_ids(ts // 1_000_000, self._counter(d, rows))
        start = self.day_start_ns(d)
        return Visits(d, start, start + cfg.day_ns, contexts, ts, ids, rows)

    def remaining(self) -> Visits:
        """The current day's visits whose decisions were not handed back yet (e.g. after
        :meth:`load` of a world saved mid-day), in time order."""
        if self.day < 0:
            raise SpecError("PhishingWorld.remaining: no day has been drawn yet (call visits() first).")
        D = self._days[self.day]
        return self._visits_for(D, np.flatnonzero(D.action == _WAITING))

    def _counter(self, d: int, idx: np.ndarray) -> np.ndarray:
        return np.uint64(self._id_base) + (np.uint64(d) << np.uint64(32)) + idx.astype(np.uint64)

    # -- decisions handed back --------------------------------------------------------------------
    def observe(self, visits: Visits, decisions: Any) -> None:
        """Hand back the decisions for ``visits`` (a :class:`~closedloop.DecisionBatch` for
        exactly these visits, in order — or a sequence of action names). The world records them,
        draws their outcomes (queued until due) and lets campaigns see what got caught."""
        t0 = time.perf_counter()
        if not isinstance(visits, Visits):
            raise SpecError(f"PhishingWorld.observe 'visits' must be Visits. Got {visits!r} instead.")
        if visits.day != self.day:
            raise SpecError(
                f"PhishingWorld.observe 'visits' must be of the current day {self.day}. Got day {visits.day} instead."
            )
        codes = self._codes(visits, decisions)
        D = self._days[visits.day]
        idx = visits.index
        if np.any(D.action[idx] != _WAITING):
            raise SpecError(
                f"PhishingWorld.observe: {int(np.count_nonzero(D.action[idx] != _WAITING))} of these visits were "
                "already observed (each visit's decision is handed back once)."
            )
        D.action[idx] = codes
        cfg = self.config
        us = D.user[idx]
        gen = generate(
            cfg, R.key_of(self.seed, 3, visits.day), visits.day, idx=idx, ts=visits.timestamps_ns, action=codes.astype(np.int64),
            phish=D.phish[idx], role=D.role[idx].astype(np.int64), susceptibility=self.users.susceptibility_factor(us),
            report_mult=self.users.report_mult[us], efficacy=self.catalog.cols["efficacy"][D.page[idx]],
            decision_ids=visits.decision_ids, units=visits.contexts["user_id"],
        )
        self.queue.push(gen.table)
        D.victim[idx] = gen.victims
        D.continued[idx] = gen.continued
        np.add.at(D.outcomes, (gen.kinds, gen.abusive.astype(np.int64)), 1)
        if gen.disable.size:
            self._disable.append((us[gen.disable], visits.day + 1 + gen.disable_days.astype(np.int64)))
            D.disables += int(gen.disable.size)
        ph = np.flatnonzero(D.phish[idx])
        if ph.size:
            a = codes[ph]
            caught = np.where(a == 2, 1.0, np.where(a == 1, cfg.adaptation.warn_weight, 0.0))
            self.campaigns.record(D.campaign[idx[ph]], self.catalog.traits[D.page[idx[ph]]], caught)
        self.timings["observe"] += time.perf_counter() - t0

    def _codes(self, visits: Visits, decisions: Any) -> np.ndarray:
        n = len(visits)
        if isinstance(decisions, DecisionBatch):
            if len(decisions) != n or decisions.errors:
                raise SpecError(
                    f"PhishingWorld.observe 'decisions' must hold one decision per visit ({n}). "
                    f"Got {len(decisions)} decisions and {len(decisions.errors)} rejected rows instead."
                )
            if not decisions.decision_ids.equals(visits.decision_ids):
                raise SpecError(
                    "PhishingWorld.observe 'decisions' must be for these visits, in order: pass "
                    "decision_ids=visits.decision_ids to decide_batch. Got other decision ids instead."
                )
            names = decisions.actions
            lut = np.array([ACTIONS.index(a) if a in ACTIONS else -1 for a in names], dtype=np.int8)
            if (lut < 0).any():
                raise SpecError(f"PhishingWorld.observe: actions must be {list(ACTIONS)}. Got {list(names)} instead.")
            return lut[np.asarray(decisions.action_codes)]
        arr = np.asarray(decisions, dtype=object)
        if arr.shape != (n,):
            raise SpecError(f"PhishingWorld.observe 'decisions' must hold one action per visit ({n}). Got {arr.shape} instead.")
        codes = np.full(n, -1, dtype=np.int8)
        for j, a in enumerate(ACTIONS):
            codes[arr == a] = j
        if (codes < 0).any():
            bad = arr[codes < 0][0]
            raise SpecError(f"PhishingWorld.observe: each action must be one of {list(ACTIONS)}. Got {bad!r} instead.")
        return codes

    # -- outcomes -----------------------------------------------------------------------------------
    def due(self, until_ns: int) -> pa.Table:
        """Outcomes whose delivery time is ``<= until_ns``, removed from the queue, in delivery
        order: the ingest path's fields (``outcome_id, decision_id, system, unit, kind, value,
        event_ns, source``) and ``deliver_ns``."""
        t0 = time.perf_counter()
        if isinstance(until_ns, bool) or not isinstance(until_ns, int | np.integer):
            raise SpecError(f"PhishingWorld.due 'until_ns' must be an integer (ns). Got {until_ns!r} instead.")
        out = self.queue.due(int(until_ns))
        if self._faults and out.num_rows:
            out = self._apply_faults(out)
        self.timings["due"] += time.perf_counter() - t0
        return out

    # -- faults (scenarios: a broken label pipeline) ---------------------------------------------------
    #: what :meth:`inject_fault` can break, for the outcomes delivered during one day
    FAULTS = ("labels_flipped", "labels_legit")

    def inject_fault(self, day: int, kind: str = "labels_flipped") -> None:
        """Break the label pipeline for one day: every ``analyst_label`` delivered during ``day``
        is flipped (``labels_flipped``) or says legitimate (``labels_legit``). The loop sees only
        the corrupted labels; :attr:`events` and :meth:`measure` record the fault (truth)."""
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise SpecError(f"PhishingWorld.inject_fault 'day' must be an integer ≥ 0. Got {day!r} instead.")
        if kind not in self.FAULTS:
            raise SpecError(f"PhishingWorld.inject_fault 'kind' must be one of {list(self.FAULTS)}. Got {kind!r} instead.")
        self._faults[day] = kind
        self.campaigns.events.append({"day": day, "event": "fault", "fault": kind})

    def _apply_faults(self, out: pa.Table) -> pa.Table:
        deliver = out["deliver_ns"].to_numpy()
        day = (deliver - self.config.world.start_ns) // self.config.day_ns
        label = np.asarray(pc.equal(out["kind"], "analyst_label").to_numpy(zero_copy_only=False), dtype=bool)
        value = out["value"].to_numpy().copy()
        hit = np.zeros(out.num_rows, dtype=bool)
        for d, kind in self._faults.items():
            m = label & (day == d)
            value[m] = 1.0 - value[m] if kind == "labels_flipped" else 0.0
            hit |= m
            if m.any():
                self._fault_hits[d] = self._fault_hits.get(d, 0) + int(m.sum())
        if not hit.any():
            return out
        return out.set_column(out.schema.get_field_index("value"), "value", pa.array(value, type=pa.float64()))

    @property
    def pending_outcomes(self) -> int:
        """Outcomes generated and not yet delivered."""
        return len(self.queue)

    # -- ground truth (measurement only) -------------------------------------------------------------
    def truth(self, decision_ids: Any) -> pa.Table:
        """Ground truth of decisions by id: ``decision_id, known, is_phish, campaign_id,
        generation, template, brand, legit_kind, abusive_source, action``. For measurement only —
        never feed it to the loop. Ids the world did not issue have ``known`` False."""
        ids = decision_ids if isinstance(decision_ids, pa.Array) else pa.array(list(decision_ids), type=pa.string())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        counter, ok = parse_counters(ids)
        rel = counter.astype(np.int64) - np.int64(self._id_base)
        day = rel >> 32
        idx = rel & 0xFFFFFFFF
        n = len(ids)
        known = ok & (rel >= 0)
        out = {
            "is_phish": np.zeros(n, dtype=bool), "campaign_id": np.full(n, -1, dtype=np.int64),
            "generation": np.full(n, -1, dtype=np.int64), "template": np.full(n, "", dtype=object),
            "brand": np.full(n, "", dtype=object), "legit_kind": np.full(n, "", dtype=object),
            "abusive_source": np.zeros(n, dtype=bool), "action": np.full(n, None, dtype=object),
        }
        tmpl_names = np.array([t.name for t in self.config.phish.templates] + [""], dtype=object)
        brand_names = np.array([b.name for b in self.config.brands] + [""], dtype=object)
        kind_names = np.array(list(LEGIT_KINDS) + [""], dtype=object)
        action_names = np.array([*ACTIONS, None, None], dtype=object)  # -2, -1 → None
        for d in np.unique(day[known]).tolist():
            D = self._days.get(int(d))
            sel = np.flatnonzero(known & (day == d))
            if D is None:
                known[sel] = False
                continue
            i = idx[sel]
            good = (i < D.n)
            good[good] = D.action[i[good]] != _NOT_ASKED
            known[sel[~good]] = False
            sel, i = sel[good], i[good]
            pg = D.page[i]
            c = D.campaign[i]
            out["is_phish"][sel] = D.phish[i]
            out["campaign_id"][sel] = c
            out["generation"][sel] = np.where(c >= 0, self.catalog.cols["generation"][pg], -1)
            out["template"][sel] = tmpl_names[np.where(c >= 0, self.campaigns.template[np.maximum(c, 0)], -1)]
            out["brand"][sel] = brand_names[np.where(c >= 0, self.campaigns.brand[np.maximum(c, 0)], -1)]
            kinds = self.catalog.cols["kind"][pg].astype(np.int64)
            out["legit_kind"][sel] = kind_names[np.where(kinds >= 0, kinds, -1)]
            out["abusive_source"][sel] = D.role[i] != HONEST
            out["action"][sel] = action_names[D.action[i].astype(np.int64)]
        return pa.table({
            "decision_id": ids, "known": pa.array(known),
            **{k: pa.array(v.tolist() if v.dtype == object else v) for k, v in out.items()},
        })

    def measure(self, day: int) -> dict[str, Any]:
        """Ground-truth counts of ``day`` (measurement only): page loads decided or not, what
        the decisions did to phishing and legitimate loads, rates per 1,000, victims, outcomes
        emitted (honest and abusive), campaigns and adaptations, users' protection.

        Rates are over honest users' loads (abusive reporters are not users to protect)."""
        D = self._days.get(day)
        if D is None:
            raise SpecError(f"PhishingWorld.measure 'day' must be a day already drawn (0…{self.day}). Got {day!r} instead.")
        honest = D.role == HONEST
        asked = D.action != _NOT_ASKED
        done = D.action >= 0
        h = honest & done
        ph, lg = D.phish, ~D.phish

        def cnt(mask: np.ndarray) -> int:
            return int(np.count_nonzero(mask))

        decided_h = cnt(h)
        phish_allowed = cnt(h & ph & (D.action == 0))
        legit_h = cnt(h & lg)
        legit_blocked = cnt(h & lg & (D.action == 2))
        warned_ph = cnt(h & ph & (D.action == 1))
        warned_lg = cnt(h & lg & (D.action == 1))
        out: dict[str, Any] = {
            "day": day,
            "visits": D.n,
            "decided": cnt(done),
            "waiting": cnt(D.action == _WAITING),
            "unprotected_visits": cnt(~asked),
            "unprotected_phish_visits": cnt(~asked & ph),
            "abusive_visits": cnt(~honest),
            "phish_visits": cnt(h & ph),
            "legit_visits": legit_h,
            "phish_allowed": phish_allowed,
            "phish_warned": warned_ph,
            "phish_blocked": cnt(h & ph & (D.action == 2)),
            "legit_allowed": cnt(h & lg & (D.action == 0)),
            "legit_warned": warned_lg,
            "legit_blocked": legit_blocked,
            "phish_allowed_per_1k": 1000.0 * phish_allowed / decided_h if decided_h else 0.0,
            "false_blocks_per_1k_legit": 1000.0 * legit_blocked / legit_h if legit_h else 0.0,
            "victims": cnt(D.victim),
            "warn_click_through_phish": cnt(h & ph & D.continued) / warned_ph if warned_ph else None,
            "warn_click_through_legit": cnt(h & lg & D.continued) / warned_lg if warned_lg else None,
            "outcomes": {k: int(D.outcomes[i].sum()) for i, k in enumerate(KINDS)},
            "honest_reports": int(D.outcomes[2:5, 0].sum()),
            "abusive_reports": int(D.outcomes[:, 1].sum()),
            "protection_disabled": D.disables,
            "faulted_labels": self._fault_hits.get(day, 0),
            "protected_share": float(self.users.protected.mean()) if day == self.day else None,
            "active_campaigns": int(self.campaigns.active(day).size),
            "campaigns_adapted": list(D.adapted),
            "campaigns_retooling": list(D.retool_decided),
        }
        return out

    # -- campaigns -------------------------------------------------------------------------------------
    def campaign_table(self) -> pa.Table:
        """Every campaign so far (truth): id, template, brand, start, end, generation, adaptations,
        weight, inherited."""
        c = self.campaigns
        return pa.table({
            "campaign_id": np.arange(c.n), "template": [self.config.phish.templates[t].name for t in c.template.tolist()],
            "brand": [self.config.brands[b].name for b in c.brand.tolist()], "start_day": c.start, "end_day": c.end,
            "generation": c.generation, "adaptations": c.adaptations, "weight": c.weight, "inherited": c.inherited,
        })

    def signature(self, campaign: int) -> dict[str, dict[str, float]]:
        """Campaign ``campaign``'s current signature (trait → category → probability)."""
        if isinstance(campaign, bool) or not isinstance(campaign, int) or not 0 <= campaign < self.campaigns.n:
            raise SpecError(f"PhishingWorld.signature 'campaign' must be a campaign id in [0, {self.campaigns.n}). "
                            f"Got {campaign!r} instead.")
        return self.campaigns.signature(campaign)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Campaign events so far: start, retool_decided, adapted (with the signature change)."""
        return list(self.campaigns.events)

    # -- copies and checkpoints ----------------------------------------------------------------------------
    def fork(self) -> PhishingWorld:
        """An independent copy: run it under another policy from this common past."""
        return copy.deepcopy(self)

    def save(self, path: Path | str) -> Path:
        """Write the world's state to the directory ``path`` (``state.npz`` without pickles and
        ``state.json``), atomically; :meth:`load` restores it. Outcomes not yet delivered are kept."""
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=False)
        arrays: dict[str, np.ndarray] = {}
        arrays.update(self.catalog.state())
        arrays.update(self.sites.state())
        arrays.update(self.users.state())
        arrays.update(self.campaigns.state())
        for d, D in self._days.items():
            for k in ("ts", "user", "page", "phish", "campaign", "role", "action", "victim", "continued", "u_ref", "outcomes"):
                arrays[f"day{d}.{k}"] = getattr(D, k)
        q = self.queue.peek()
        for name in q.column_names:
            col = q[name].to_numpy(zero_copy_only=False)
            arrays[f"queue.{name}"] = col.astype(str) if col.dtype == object else col
        for j, (users, until) in enumerate(self._disable):
            arrays[f"disable{j}.users"], arrays[f"disable{j}.until"] = users, until
        with open(tmp / "state.npz", "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)  # no object arrays: load refuses pickles too
        meta = {
            "version": _STATE_VERSION, "config_digest": self.config.digest, "seed": self.seed, "day": self.day,
            "id_base": self._id_base, "days": {str(d): {"disables": D.disables, "adapted": D.adapted,
                                                        "retool_decided": D.retool_decided} for d, D in self._days.items()},
            "disable_parts": len(self._disable), "events": self.campaigns.events,
            "pending_adapted": self._pending_adapted,
            "faults": {str(d): k for d, k in self._faults.items()},
            "fault_hits": {str(d): k for d, k in self._fault_hits.items()},
        }
        (tmp / "state.json").write_text(json.dumps(meta))
        if path.exists():
            raise SpecError(f"PhishingWorld.save 'path' must not exist yet. Got {str(path)!r}, which does.")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path | str, config: WorldConfig | None = None) -> PhishingWorld:
        """Restore a world written by :meth:`save` (with the same configuration)."""
        path = Path(path)
        config = config if config is not None else WorldConfig.load()
        meta = json.loads((path / "state.json").read_text())
        if meta.get("version") != _STATE_VERSION:
            raise SpecError(f"World state version must be {_STATE_VERSION}. Got {meta.get('version')!r} instead.")
        if meta["config_digest"] != config.digest:
            raise SpecError(
                f"World state {str(path)!r} must be loaded with the configuration it was saved with "
                f"(digest {meta['config_digest'][:12]}…). Got digest {config.digest[:12]}… instead."
            )
        with np.load(path / "state.npz", allow_pickle=False) as z:
            st = {k: z[k] for k in z.files}
        w = cls.__new__(cls)
        w.config, w.seed, w.day, w._id_base = config, int(meta["seed"]), int(meta["day"]), int(meta["id_base"])
        w.catalog = Catalog.from_state(st)
        w.sites = Sites.from_state(st)
        w.users = Users.from_state(st)
        w.campaigns = Campaigns.from_state(st, meta["events"])
        w._days = {}
        for d_s, info in meta["days"].items():
            d = int(d_s)
            D = _Day(d, *(st[f"day{d}.{k}"] for k in ("ts", "user", "page", "phish", "campaign", "role", "action",
                                                        "victim", "continued", "u_ref")))
            D.outcomes = st[f"day{d}.outcomes"]
            D.disables, D.adapted, D.retool_decided = info["disables"], info["adapted"], info["retool_decided"]
            w._days[d] = D
        w.queue = OutcomeQueue()
        from closedloop.world.outcomes import OUTCOME_COLUMNS

        w.queue.push(pa.table({f.name: pa.array(st[f"queue.{f.name}"].tolist(), type=f.type) for f in OUTCOME_COLUMNS},
                              schema=OUTCOME_COLUMNS))
        w._disable = [(st[f"disable{j}.users"], st[f"disable{j}.until"]) for j in range(meta["disable_parts"])]
        w._pending_adapted = list(meta["pending_adapted"])
        w._faults = {int(d): k for d, k in meta["faults"].items()}
        w._fault_hits = {int(d): int(k) for d, k in meta["fault_hits"].items()}
        w.timings = {"visits": 0.0, "observe": 0.0, "due": 0.0}
        return w


def _kind_index(cfg: WorldConfig, name: str) -> int:
    for j, k in enumerate(cfg.legit.kinds):
        if k.name == name:
            return j
    return -1


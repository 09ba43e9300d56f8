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

:class:`PhishingWorld` sequences the days; its parts have their own modules: :mod:`.visits`
(what is handed out, the day's record, the contexts), :mod:`.traffic` (the draw of a day's page
loads), :mod:`.outcomes` (what comes of a decision), :mod:`.truth` (:meth:`truth` and
:meth:`measure`) and :mod:`.checkpoint` (:meth:`save` and :meth:`load`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import SpecError
from closedloop.runtime.decision import DecisionBatch
from closedloop.world import _random as R
from closedloop.world._ids import format_ids
from closedloop.world.campaigns import Campaigns
from closedloop.world.checkpoint import load_world, save_world
from closedloop.world.config import ACTIONS, WorldConfig
from closedloop.world.outcomes import OutcomeQueue, generate
from closedloop.world.pages import Catalog
from closedloop.world.sites import Sites
from closedloop.world.traffic import draw_loads
from closedloop.world.truth import measure_day, truth_table
from closedloop.world.users import Users
from closedloop.world.visits import NOT_ASKED, WAITING, DayRecord, Visits, visit_contexts

__all__ = ["PhishingWorld", "Visits"]


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
        self._days: dict[int, DayRecord] = {}
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
        waiting = int(np.count_nonzero(D.action == WAITING))
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
        """Draw day ``d``'s page loads (:func:`~.traffic.draw_loads`), record them, and hand out
        the protected users' ones."""
        cfg, users = self.config, self.users
        ts, user, page, u_ref = draw_loads(cfg, R.stream(self.seed, 1, d), d, self.day_start_ns(d), users, self.sites,
                                           self.campaigns)
        N = cfg.world.visits_per_day
        campaign = self.catalog.cols["campaign"][page]
        protected = users.protected[user]
        self._days[d] = DayRecord(
            day=d, ts=ts, user=user, page=page, phish=campaign >= 0, campaign=campaign,
            role=users.role[user].astype(np.int8), action=np.where(protected, WAITING, NOT_ASKED).astype(np.int8),
            victim=np.zeros(N, dtype=bool), continued=np.zeros(N, dtype=bool), u_ref=u_ref,
            adapted=self._pending_adapted,
        )
        self._pending_adapted = []
        return self._visits_for(self._days[d], np.flatnonzero(protected))

    def _visits_for(self, D: DayRecord, rows: np.ndarray) -> Visits:
        """The visits ``rows`` of day ``D``: contexts (:func:`~.visits.visit_contexts`), times, ids."""
        d = D.day
        contexts = visit_contexts(self.config, self.users, self.catalog, D, rows)
        ts = D.ts[rows]
        ids = format_ids(ts // 1_000_000, self._counter(d, rows))
        start = self.day_start_ns(d)
        return Visits(d, start, start + self.config.day_ns, contexts, ts, ids, rows)

    def remaining(self) -> Visits:
        """The current day's visits whose decisions were not handed back yet (e.g. after
        :meth:`load` of a world saved mid-day), in time order."""
        if self.day < 0:
            raise SpecError("PhishingWorld.remaining: no day has been drawn yet (call visits() first).")
        D = self._days[self.day]
        return self._visits_for(D, np.flatnonzero(D.action == WAITING))

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
        if np.any(D.action[idx] != WAITING):
            raise SpecError(
                f"PhishingWorld.observe: {int(np.count_nonzero(D.action[idx] != WAITING))} of these visits were "
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
        return truth_table(self, decision_ids)

    def measure(self, day: int) -> dict[str, Any]:
        """Ground-truth counts of ``day`` (measurement only): page loads decided or not, what
        the decisions did to phishing and legitimate loads, rates per 1,000, victims, outcomes
        emitted (honest and abusive), campaigns and adaptations, users' protection.

        Rates are over honest users' loads (abusive reporters are not users to protect)."""
        return measure_day(self, day)

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
        return save_world(self, path)

    @classmethod
    def load(cls, path: Path | str, config: WorldConfig | None = None) -> PhishingWorld:
        """Restore a world written by :meth:`save` (with the same configuration)."""
        return load_world(cls, path, config)

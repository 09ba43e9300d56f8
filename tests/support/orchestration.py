"""A small synthetic loop for the orchestration tests: a two-feature system, a seeded stream of
page loads decided by the real Runtime into real telemetry, and outcomes with delays and
selective labels (blocked pages yield no user outcome), analysts' labels on a random sample,
and one abusive source. Ground truth stays here (returned for measurement, never logged)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from closedloop import (
    Bundle,
    EpsilonGreedy,
    F,
    Float,
    Goal,
    LabelPolicy,
    LogisticModel,
    ManualClock,
    OutcomeRule,
    Runtime,
    Str,
    System,
    Thresholds,
)
from closedloop.runtime.ids import DecisionIds
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

DAY = 86_400 * 10**9
HOUR = 3_600 * 10**9
START = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z, a Monday

GOALS = [
    Goal("fpr_block", "model", "false_positive_rate@block", 0.05, "at_most", "daily"),
    Goal("recall_warn", "model", "recall@warn", 0.6, "at_least", "daily"),
    Goal("reports", "user", "reported_phish_per_1k", 5.0, "at_most", "daily"),
    Goal("click_through", "leading", "rate:chose:continue@warn", 0.5, "at_most", "weekly"),
    Goal("blocked_share", "organizational", "share:block", 0.2, "at_most", "monthly"),
]


def make_system(*, explore: float | None = 0.1, goals=GOALS, action_defaults=None, window_days=2) -> System:
    return System(
        "synth",
        context=[Str("user_id"), Str("domain"), Float("x", default=0.0), Float("z", default=0.0)],
        unit="user_id",
        features={"x": F.col("x"), "z": F.col("z")},
        actions=["allow", "warn", "block"],
        experience=Thresholds(
            "phish", {"block": 0.9, "warn": 0.6}, otherwise="allow",
            explore=None if explore is None else EpsilonGreedy(explore, 0.9, 1.0),
        ),
        labels=("legit", "phish"),
        costs={"allow": {"phish": 100.0}, "warn": {"legit": 2.0, "phish": 10.0}, "block": {"legit": 25.0}},
        mistake_outcomes=["reported_false_block"],
        label_policy=LabelPolicy(
            timedelta(days=window_days),
            [
                OutcomeRule("analyst_label", label=None, aggregate="latest"),
                OutcomeRule("reported_phish", label="phish"),
                OutcomeRule("reported_false_block", label="legit"),
            ],
            default="legit",
            action_defaults={"block": None} if action_defaults is None else action_defaults,
        ),
        goals=goals,
    )


def first_bundle(system: System) -> Bundle:
    """A model that knows x (the day-0 signature of phishing pages) and ignores z."""
    return Bundle.build(system, LogisticModel({"x": 2.0, "z": 0.0}, -3.0, output="phish"))


@dataclass
class Synth:
    """The synthetic page stream: phishing pages have x ~ N(2, 1) until ``shift_day``, then
    their signature moves to z (x ~ N(0, 1), z ~ N(2, 1)): a campaign shift."""

    home: Path
    system: System
    seed: int = 0
    per_day: int = 2000
    phish_share: float = 0.1
    shift_day: int | None = None
    analyst_rate: float = 0.05
    abusive_source: str | None = "user:mallory"
    day: int = 0
    pending: list = field(default_factory=list)
    truth: dict = field(default_factory=dict)
    counts: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.ids = DecisionIds(self.seed)

    def run_day(self, runtime: Runtime) -> dict:
        """Decide one day's page loads through ``runtime`` and log decisions and the outcomes
        that are due by the end of the day; returns that day's truth counts."""
        rng, n, d = self.rng, self.per_day, self.day
        t0 = START + d * DAY
        phish = rng.random(n) < self.phish_share
        shifted = self.shift_day is not None and d >= self.shift_day
        x = rng.normal(0.0, 1.0, n)
        z = rng.normal(0.0, 1.0, n)
        if shifted:
            z[phish] = rng.normal(2.0, 1.0, int(phish.sum()))
        else:
            x[phish] = rng.normal(2.0, 1.0, int(phish.sum()))
        ts = np.sort(t0 + rng.integers(0, DAY, n))
        users = [f"u{u}" for u in rng.integers(0, 500, n)]
        ids = self.ids.next_ids(n, int(t0)).to_pylist()
        end = t0 + DAY
        tel = runtime.telemetry
        tel.clock = ManualClock(end).now_ns  # the day's records are ingested at the day's end
        batch = runtime.decide_batch(
            {"user_id": users, "domain": [f"d{i % 97}.example" for i in range(n)], "x": x.tolist(), "z": z.tolist()},
            decision_ids=ids, timestamps_ns=ts,
        )
        actions = np.asarray(batch.action, dtype=object)
        for i in range(n):
            self.truth[ids[i]] = bool(phish[i])
            a = actions[i]
            if a == "allow" and phish[i] and rng.random() < 0.3:
                self.pending.append((int(ts[i] + rng.integers(HOUR, 12 * HOUR)), ids[i], "reported_phish", 1.0, "user"))
            if a == "block" and not phish[i] and rng.random() < 0.3:
                self.pending.append((int(ts[i] + rng.integers(60 * 10**9, HOUR)), ids[i], "reported_false_block", 1.0, "user"))
            if a == "warn":
                cont = rng.random() < (0.2 if phish[i] else 0.6)
                self.pending.append((int(ts[i] + 10**10), ids[i], "chose:continue" if cont else "chose:go_back", 1.0, "user"))
                if cont and phish[i] and rng.random() < 0.3:
                    self.pending.append((int(ts[i] + rng.integers(HOUR, 12 * HOUR)), ids[i], "reported_phish", 1.0, "user"))
            if rng.random() < self.analyst_rate:
                self.pending.append((int(ts[i] + rng.integers(HOUR, 20 * HOUR)), ids[i], "analyst_label",
                                     1.0 if phish[i] else 0.0, f"analyst:{i % 3}"))
            if self.abusive_source and phish[i] and a == "block" and rng.random() < 0.5:
                # the campaign's own account calls its blocked pages false blocks
                self.pending.append((int(ts[i] + rng.integers(60 * 10**9, HOUR)), ids[i], "reported_false_block", 1.0,
                                     self.abusive_source))
                if rng.random() < 0.5:  # analysts triage half of the false-block reports
                    self.pending.append((int(ts[i] + rng.integers(HOUR, 20 * HOUR)), ids[i], "analyst_label", 1.0,
                                         "analyst:triage"))
        due = [o for o in self.pending if o[0] <= end]
        self.pending = [o for o in self.pending if o[0] > end]
        for ev, did, kind, value, source in due:
            tel.log_outcome(did, kind=kind, value=value, event_ns=ev, source=source)
        tel.flush()
        c = {
            "day": d, "decisions": n, "phish": int(phish.sum()),
            "phish_allowed": int((phish & (actions == "allow")).sum()),
            "false_blocks": int((~phish & (actions == "block")).sum()),
            "outcomes": len(due),
        }
        self.counts.append(c)
        self.day += 1
        return c


def open_runtime(home: Path, system: System, bundle: Bundle) -> Runtime:
    tel = Telemetry(SegmentLog(home), system=system, clock=ManualClock(START).now_ns, flush_interval_ms=1)
    return Runtime(system, bundle, telemetry=tel)


def compacted(home: Path) -> TelemetryStore:
    store = TelemetryStore(home)
    store.compact()
    return store


def synth_days(home: Path, days: int, *, per_day: int, seed: int, compact_each: bool = False,
               ) -> tuple[System, Synth, TelemetryStore]:
    """``days`` simulated days of the synthetic system in ``home``, decided by its first bundle
    (compacted after each day with ``compact_each``, and once at the end)."""
    system = make_system()
    rt = open_runtime(home, system, first_bundle(system))
    synth = Synth(home, system, per_day=per_day, seed=seed)
    for _ in range(days):
        synth.run_day(rt)
        if compact_each:
            compacted(home)
    rt.telemetry.close()
    return system, synth, compacted(home)

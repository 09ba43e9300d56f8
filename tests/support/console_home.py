"""A real project home of the size the console must stay fast at, for its tests and its benchmark
(``bench/console_home.py`` builds the big one; ``bench/console.py`` times the pages over it).

:func:`seed_console_home` builds, deterministically for a seed, through the project's own APIs:

* a registry (SQLite, ``<home>/registry.sqlite``) and bundle store (``<home>/bundles``) holding the
  phishing example's system: its hand-written heuristic, then candidate bundles (the heuristic
  with other thresholds, each the child of the production it was built against), signed by a
  key the registry trusts;
* ``history_events`` registry history rows — every one made by a :class:`~closedloop.registry.Registry`
  method (``deploy`` as production, shadow or flight, ``promote``, ``stop``, ``rollback``,
  ``killswitch``, ``guard_stop``), with the sanity checks and gates those run for real: applied
  changes, refused attempts (a failed gate, a flight that does not exist, nothing left to roll
  back) and lost races (a stale ``expected_revision``), by several actors with their reasons, on a
  simulated clock spread over the last ``goal_days`` days;
* ``reports`` evaluation reports (:func:`closedloop.evaluation.report.evaluate` of the candidate
  against the production of the time, on a generated dataset in ``<home>/datasets/pages``),
  written to ``<home>/reports/`` as ``closedloop evaluate`` does and registered with ``Registry.add_report``;
* ``decisions`` page loads of the last two hours (after the last registry change) served by the
  final deployment (production, its flight and shadow: ``Registry.refresh`` of a
  :class:`~closedloop.Runtime`) and logged to the home's telemetry
  (:class:`~closedloop.telemetry.Telemetry` on the embedded ``SegmentLog``), with the false blocks
  and warnings users reported as outcomes — decisions to look up and replay;
* ``goal_days`` days of goal series for each of the system's goals (hourly, daily, weekly,
  monthly) in ``<home>/goals/series.jsonl`` (:class:`~closedloop.orchestration.series.SeriesStore`,
  where the loop's monitor writes them), values drawn around each target with streaks of misses;
* one cycle record a day (``<home>/orchestration/cycles``, :class:`~closedloop.orchestration.records.CycleRecords`,
  the steps' typed results) naming the registry changes the loop made that day, and the alerts
  each cycle raised (``goal_missed`` by the monitor's own rule; feature and score drift, mistake
  spikes, abuse and label anomalies drawn now and then) delivered to ``<home>/orchestration/alerts.jsonl``
  (:class:`~closedloop.orchestration.alerts.JsonLinesAlertSink`);
* two console credentials in ``<home>/credentials.json`` (:class:`~closedloop.service.auth.Credentials`,
  as ``closedloop token add`` makes them): ``vera`` with the ``viewer`` role and ``ada`` with
  ``admin``; their tokens are :attr:`HomeInfo.tokens` (``{"viewer": …, "admin": …}``), and
  :func:`add_console_tokens` adds the same two to a home built before (one copied from elsewhere).

Deterministic: the same seed gives the same events, states, times, bundles, reports, decisions
(ids, actions, times), goal points, cycles and alerts — except the credentials' tokens (random, as
every token is), the measured latency figures in
the sanity checks' texts and the wall-clock ``registered_ns`` of a report, which nothing else
uses. The goal values are drawn, not measured from the telemetry (which covers only the last two
hours): the console reads the series file, not how it was made. Building through the real
registry costs: the big home (10,000 events) takes ~5 minutes, most of it the sanity checks every
deploy and promote runs (``bench/console_home.py`` prints the breakdown).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The simulated "now" of every seeded home: the last event, goal window and cycle end here.
END_NS = int(_dt.datetime(2026, 12, 1, tzinfo=_dt.UTC).timestamp()) * 10**9
DAY_NS = 86_400 * 10**9
#: The last two hours are the telemetry's: decisions served by the final deployment, no registry change.
SERVED_NS = 2 * 3600 * 10**9
HUMANS = ("alice", "bob", "carol", "dmitri")
SYSTEM = "phishing"
#: The console credentials every seeded home holds: role -> name.
CONSOLE_USERS = {"viewer": "vera", "admin": "ada"}


@dataclass
class HomeInfo:
    """What :func:`seed_console_home` built (JSON-ready with :meth:`to_dict`)."""

    home: Path
    seed: int
    system: str
    registry_url: str
    start_ns: int
    end_ns: int
    history_events: int = 0
    operations: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    bundles: list[str] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)
    goal_points: int = 0
    cycles: int = 0
    alerts: int = 0
    decisions: int = 0
    outcomes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: int = 0
    #: The console tokens: role (``viewer``, ``admin``) -> token (see :data:`CONSOLE_USERS` for the names).
    tokens: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["home"] = str(self.home)
        d["bundles"], d["reports"] = len(self.bundles), len(self.reports)
        return d


def seed_console_home(path: Path | str, *, seed: int, history_events: int = 10_000, goal_days: int = 90,
                      reports: int = 50, decisions: int = 20_000, dataset_rows: int = 1500) -> HomeInfo:
    """Build the home at ``path`` (created; it must not hold a registry yet) and return what it holds."""
    from examples.phishing.system import phishing

    from closedloop.settings import Settings

    if history_events < 1 or goal_days < 1 or reports < 1:
        raise ValueError("history_events, goal_days and reports must each be at least 1")
    home = Path(path)
    settings = Settings(home=home)
    if (home / "registry.sqlite").exists():
        raise FileExistsError(f"{home} holds a registry already: seed a new folder")
    home.mkdir(parents=True, exist_ok=True)
    info = HomeInfo(home, seed, SYSTEM, settings.registry, END_NS - goal_days * DAY_NS, END_NS)
    clock0 = time.perf_counter()

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        info.seconds[name] = round(now - t0, 3)
        return now

    t = clock0
    world = _Registry(phishing, settings, seed, info, dataset_rows)
    t = lap("setup", t)
    world.run(history_events, reports)
    t = lap("registry", t)
    info.decisions, info.outcomes = _telemetry(phishing, settings, world.reg, seed, decisions)
    world.reg.close()
    t = lap("telemetry", t)
    points = _goal_series(phishing, settings, seed, info.start_ns, END_NS)
    info.goal_points = len(points)
    t = lap("goals", t)
    _cycles(phishing, settings, seed, points, world.loop_changes, info)
    lap("cycles", t)
    info.tokens = add_console_tokens(home)
    info.seconds["total"] = round(time.perf_counter() - clock0, 3)
    info.bytes = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    return info


def add_console_tokens(home: Path | str) -> dict[str, str]:
    """Add the console credentials of :data:`CONSOLE_USERS` to ``<home>/credentials.json`` (made if
    missing; a credential of the same name is replaced) and return their tokens, role -> token."""
    from closedloop.service.auth import Credentials

    creds = Credentials.load(Path(home) / "credentials.json")
    tokens = {}
    for role, name in CONSOLE_USERS.items():
        if name in creds.names():
            creds.remove(name)
        tokens[role] = creds.add(name, [role])
    return tokens


# -- the registry ---------------------------------------------------------------------------------------------------
def _key(seed: int) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from closedloop.runtime.signing import SigningKey

    return SigningKey(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"console-home:{seed}".encode()).digest()))


class _Registry:
    """The registry's history, simulated one Registry call at a time on a manual clock."""

    def __init__(self, system: Any, settings: Any, seed: int, info: HomeInfo, dataset_rows: int) -> None:
        from examples.phishing.data import generate
        from examples.phishing.heuristic import heuristic_intelligence

        from closedloop.registry import Registry
        from closedloop.runtime.clock import ManualClock
        from support.pages import import_pages

        self.system, self.settings, self.info = system, settings, info
        self.rng = np.random.default_rng(seed)
        self.clock = ManualClock(info.start_ns)
        self.reg = Registry.from_settings(settings, clock=self.clock).open()
        self.key = _key(seed)
        self.reg.trust_key(self.key.public_key, name=f"seed-{seed}", actor="alice")
        cols, labels = generate(dataset_rows, seed, phish_rate=0.3)
        self.dataset = import_pages(system, cols, labels, settings.datasets / "src", out=settings.datasets / "pages").path
        self.heuristic = heuristic_intelligence
        self.flown: list[str] = []  # candidates with a report, in the order they first flew
        self.gates: dict[tuple[str | None, str], bool] = {}
        self.loop_changes: list[tuple[int, dict[str, Any]]] = []  # (at_ns, what) of the loop's changes
        self.n_flights = 0

    # -- bundles and reports ----------------------------------------------------------------------------------------
    def _bundle(self, thresholds: dict[str, float] | None, parent: str | None) -> Any:
        from closedloop import Bundle

        created = _dt.datetime.fromtimestamp(self.clock.now_ns() / 1e9, _dt.UTC)
        b = Bundle.build(self.system, self.heuristic(), thresholds=thresholds, parent=parent, created_at=created)
        return b.signed(self.key)

    def _report(self, bundles: list[Any], actor: str) -> None:
        """Evaluate ``bundles`` (baseline first), write the report where ``closedloop evaluate``
        does and register it; the gate's verdict for the candidate is kept."""
        from closedloop.base.times import iso
        from closedloop.evaluation.report import evaluate, write_report

        for b in bundles:
            self.reg.add_bundle(b, actor=actor)
        rep = evaluate(self.system, bundles, self.dataset, bootstrap=10, golden=20)
        now = self.clock.now_ns()
        rep["metadata"]["created"] = iso(now)  # the simulated time it was made (evaluate stamps the wall clock)
        stamp = _dt.datetime.fromtimestamp(now / 1e9, _dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = write_report(rep, self.settings.reports / f"{rep['metadata']['dataset_id']}-{stamp}.json")
        self.info.reports.append(int(self.reg.add_report(path, actor=actor)["id"]))
        if len(bundles) > 1:
            self.gates[(bundles[0].version, bundles[-1].version)] = bool(rep["gate"]["passed"])

    def _candidate(self, production: str, actor: str) -> str:
        """A new candidate built against ``production``, evaluated against it and registered."""
        blk = float(np.round(self.rng.uniform(0.66, 0.97), 3))
        warn = float(np.round(self.rng.uniform(0.35, blk - 0.05), 3))
        b = self._bundle({"block": blk, "warn": warn}, production)
        self._report([self.reg.load_bundle(production, self.system), b], actor)
        self.flown.append(b.version)
        return str(b.version)

    # -- one history row per call -------------------------------------------------------------------------------------
    def run(self, n: int, n_reports: int) -> None:
        """``n`` history rows — each Registry call below records exactly one (applied, refused or
        lost) — the last few leaving a state worth looking at; then reports up to ``n_reports``."""
        ends = np.sort(self.rng.uniform(self.info.start_ns, END_NS - SERVED_NS, size=n)).astype(np.int64)
        report_at = np.linspace(self.info.start_ns, END_NS - DAY_NS, n_reports)  # when each next report is due
        self.rows, self.limit = 0, n
        for at in ends:
            self.clock.set_ns(max(int(at), self.clock.now_ns()))
            if self.rows >= n:
                break
            due = int(np.searchsorted(report_at, at, side="right"))
            fresh = len(self.info.reports) < min(due, n_reports)
            if not self._closing(n - self.rows, fresh):
                self._one(fresh=fresh)
        while len(self.info.reports) < n_reports:  # evaluated, never flown: reports the history does not mention
            prod = self.reg.state(SYSTEM).production
            self._candidate(str(prod), "loop")
        hist = self.reg.history(SYSTEM)
        self.info.history_events = len(hist)
        for e in hist:
            self.info.operations[e["operation"]] = self.info.operations.get(e["operation"], 0) + 1
            self.info.statuses[e["status"]] = self.info.statuses.get(e["status"], 0) + 1
            if e["actor"] == "loop" and e["status"] == "applied":
                self.loop_changes.append((int(e["at_ns"]), {"event_id": e["id"], "operation": e["operation"],
                                                            "revision": e["revision_after"]}))
        self.info.bundles = [b["version"] for b in self.reg.bundles(SYSTEM)]

    def _closing(self, left: int, fresh: bool) -> bool:
        """The last three rows: the kill switch off, a flight and a shadow running (what the
        overview then shows), else the flight ramps up — True when this row was one of those."""
        from closedloop.errors import ClosedLoopError

        st = self.reg.state(SYSTEM)
        if left > 3 or st.production is None:
            return False
        try:
            if st.killswitch:
                self._call(lambda: self.reg.killswitch(self.system, False, actor="alice", reason=_why(self.rng, "killswitch_off")))
            elif not st.flights:
                self._new_flight("loop", str(st.production), fresh, closing=True)
            elif not st.shadows and any(v != st.production for v in self.flown):
                v = next(v for v in reversed(self.flown) if v != st.production)
                self._call(lambda: self.reg.deploy(self.system, v, actor="bob", reason=_why(self.rng, "shadow"), shadow=True))
            else:  # all in place: the flight ramps up
                f = st.flights[0]
                force = None if self.gates.get((str(st.production), f.bundle)) else "ramp-up agreed by the owners"
                self._call(lambda: self.reg.deploy(self.system, f.bundle, actor="loop", reason=_why(self.rng, "share"),
                                                   flight=f.name, share=min(1.0, f.share * 2), force=force))
        except ClosedLoopError:
            pass
        return True

    def _call(self, fn: Callable[[], Any]) -> Any:
        """One Registry call: one history row."""
        self.rows += 1
        return fn()

    def _one(self, *, fresh: bool) -> None:
        from closedloop.errors import ClosedLoopError

        st = self.reg.state(SYSTEM)
        if st.production is None:
            base = self._bundle(None, None)
            self._report([base], "alice")
            self._call(lambda: self.reg.deploy(self.system, base, actor="alice",
                                               reason="first production: the hand-written heuristic"))
            return
        ops = self._choices(st, fresh)
        names = list(ops)
        weights = np.array([ops[k][0] for k in names], dtype=float)
        pick = names[int(self.rng.choice(len(names), p=weights / weights.sum()))]
        actor = "loop" if pick in ("new_flight", "share", "promote") and self.rng.random() < 0.5 else \
            str(self.rng.choice(HUMANS))
        try:
            if pick == "new_flight":
                ops[pick][1](actor)  # counts its own rows (a refusal may be overridden at once)
            else:
                self._call(lambda: ops[pick][1](actor))
        except ClosedLoopError:
            pass  # refused or lost: the registry recorded the attempt, which is the point

    def _choices(self, st: Any, fresh: bool) -> dict[str, tuple[float, Callable[[str], Any]]]:
        """The operations that make sense now, with their weights."""
        reg, system, rng = self.reg, self.system, self.rng
        prod = str(st.production)
        ops: dict[str, tuple[float, Callable[[str], Any]]] = {
            "killswitch": (0.5 if st.killswitch else 0.04, lambda a: reg.killswitch(
                system, not st.killswitch, actor=a, reason=_why(rng, "killswitch_off" if st.killswitch else "killswitch_on"))),
            "rollback": (0.05, lambda a: reg.rollback(system, actor=a, reason=_why(rng, "rollback"))),
            "stop_unknown": (0.01, lambda a: reg.stop(system, f"exp-{int(rng.integers(1, 999))}", actor=a,
                                                      reason=_why(rng, "stop"))),
        }
        if len(st.flights) < 2:
            ops["new_flight"] = (0.06, lambda a: self._new_flight(a, prod, fresh))
        if st.flights:
            f = st.flights[int(rng.integers(len(st.flights)))]
            share = float(rng.choice([0.01, 0.05, 0.1, 0.2, 0.5]))
            force = None if self.gates.get((prod, f.bundle)) else "the loop's rollout: gate overridden before"
            ops["share"] = (0.05, lambda a: reg.deploy(system, f.bundle, actor=a, reason=_why(rng, "share"),
                                                       flight=f.name, share=share, force=force))
            ops["stale"] = (0.025, lambda a: reg.deploy(system, f.bundle, actor=a, reason=_why(rng, "share"), flight=f.name,
                                                        share=share, force=force, expected_revision=st.revision - 1))
            ops["stop"] = (0.08, lambda a: reg.stop(system, f.name, actor=a, reason=_why(rng, "stop")))
            ops["promote"] = (0.06, lambda a: self._promote(a, f.name, prod, f.bundle))
            ops["guard_stop"] = (0.04, lambda a: self._guard_stop(f))
        if len(st.shadows) < 2 and self.flown:
            v = self.flown[int(rng.integers(len(self.flown)))]
            if v != prod and v not in st.shadows:
                ops["shadow"] = (0.04, lambda a: reg.deploy(system, v, actor=a, reason=_why(rng, "shadow"), shadow=True))
        if st.shadows:
            ops["stop_shadow"] = (0.04, lambda a: reg.stop(system, st.shadows[0], actor=a, reason=_why(rng, "stop")))
        return ops

    def _new_flight(self, actor: str, prod: str, fresh: bool, *, closing: bool = False) -> Any:
        """A flight of a new candidate (evaluated now) or of one flown before: a failed gate is
        refused, and half the time a human overrides it at once (``force``, recorded)."""
        from closedloop.errors import SanityCheckError

        others = [v for v in self.flown if v != prod]
        if fresh or not others:
            version = self._candidate(prod, actor)
        else:
            version = others[int(self.rng.integers(len(others)))]
        self.n_flights += 1
        name, share = f"exp-{self.n_flights}", float(self.rng.choice([0.01, 0.05, 0.1]))
        reason = _why(self.rng, "new_flight")
        if closing:  # the home ends with a flight running, whatever the gate said
            force = None if self.gates.get((prod, version)) else "the flight the owners want to watch"
        elif (prod, version) in self.gates or self.rng.random() < 0.3:  # a report compares it with this production
            force = None
        else:
            force = "re-flown: no report against this production"
        try:
            return self._call(lambda: self.reg.deploy(self.system, version, actor=actor, reason=reason, flight=name,
                                                      share=share, force=force))
        except SanityCheckError:
            if self.rows >= self.limit or self.rng.random() < 0.5:
                raise  # refused and left so; otherwise a human overrides the gate at once
        later = self.clock.now_ns() + int(self.rng.uniform(60, 3600)) * 10**9
        self.clock.set_ns(max(self.clock.now_ns(), min(later, END_NS - SERVED_NS - 10**9)))  # never into the served hours
        return self._call(lambda: self.reg.deploy(self.system, version, actor=str(self.rng.choice(HUMANS)), reason=reason,
                                                  flight=name, share=share,
                                                  force="an experiment: the offline gate is not the last word"))

    def _promote(self, actor: str, name: str, prod: str, version: str) -> Any:
        force = None if self.gates.get((prod, version)) or self.rng.random() < 0.6 else "the flight's live numbers beat production"
        return self.reg.promote(self.system, name, actor=actor, reason=_why(self.rng, "promote"), force=force)

    def _guard_stop(self, f: Any) -> Any:
        from closedloop.registry.guard import GuardPolicy

        rng, now = self.rng, self.clock.now_ns()
        prod_rate = float(np.round(rng.uniform(0.001, 0.004), 5))
        m = {"metric": "mistake_rate", "flight": round(prod_rate + float(rng.uniform(0.003, 0.02)), 5),
             "production": prod_rate, "n_flight": int(rng.integers(400, 5000)), "n_production": int(rng.integers(20_000, 90_000)),
             "p_value": float(np.round(rng.uniform(1e-6, 0.009), 8)), "tolerance": 0.002, "test": "one-sided two-proportion z-test",
             "breach": True}
        reason = (f"guard: mistake_rate {m['flight']:.6g} in flight {f.name!r} vs {m['production']:.6g} in production over "
                  f"{m['n_flight']} vs {m['n_production']} (p={m['p_value']:.3g} < alpha 0.01, tolerance 0.002; {m['test']})")
        return self.reg.guard_stop(self.system, f.name, actor="loop", reason=reason, detail={
            "metrics": [m], "all_metrics": [m], "window": {"since_ns": now - DAY_NS, "until_ns": now},
            "policy": asdict(GuardPolicy())})


_REASONS = {
    "killswitch_on": ["complaints about blocked bank pages", "incident INC-{n}: false blocks spiking", "a bad feature feed upstream",
                      "drill: kill switch exercise"],
    "killswitch_off": ["feed fixed, intelligence back", "incident INC-{n} resolved", "drill over"],
    "rollback": ["support tickets up after the last change", "undo: wrong bundle", "revert INC-{n}", "the change did not help"],
    "stop": ["enough data", "the flight looks worse on reported false blocks", "make room for exp-{n}", "ended by the owner"],
    "share": ["ramp up: no harm so far", "ramp down while we look at INC-{n}", "the loop's rollout stage", "more traffic for power"],
    "new_flight": ["try the retrained thresholds", "the loop's new candidate", "A/B for ticket {n}", "lower block threshold test"],
    "promote": ["the flight wins on every guard metric", "the loop's rollout completed", "owner sign-off ({n})"],
    "shadow": ["score it beside production first", "shadow before any flight", "compare on live traffic"],
}


def _why(rng: np.random.Generator, kind: str) -> str:
    options = _REASONS[kind]
    return options[int(rng.integers(len(options)))].format(n=int(rng.integers(100, 9999)))


# -- telemetry ---------------------------------------------------------------------------------------------------------
def _telemetry(system: Any, settings: Any, reg: Any, seed: int, decisions: int) -> tuple[int, int]:
    """``decisions`` page loads over the last two hours (24 batches, 5 minutes apart) through a
    runtime serving the registry's final deployment, logged with the users' reports; returns
    (decisions, outcomes)."""
    from closedloop import DecisionIds, Runtime
    from closedloop.runtime.clock import ManualClock
    from closedloop.telemetry import SegmentLog, Telemetry
    from support.registry_world import page_traffic

    if decisions <= 0:
        return 0, 0
    clock = ManualClock(END_NS - SERVED_NS)
    done = 0
    with Telemetry(SegmentLog(settings.home), system=system, clock=clock.now_ns) as tel:
        rt = Runtime(system, reg.load_bundle(str(reg.state(SYSTEM).production), system), clock=clock,
                     ids=DecisionIds(seed), telemetry=tel)
        reg.refresh(rt)
        for i in range(24):
            n = decisions // 24 + (1 if i < decisions % 24 else 0)
            if n:
                clock.set_ns(END_NS - SERVED_NS + i * SERVED_NS // 24)
                page_traffic(rt, tel, n, seed=seed * 1000 + i)
                done += n
        tel.flush()
    from closedloop.telemetry import TelemetryStore

    return done, int(TelemetryStore(settings.home).stats()["outcomes"])


# -- goal series -----------------------------------------------------------------------------------------------------
def _goal_series(system: Any, settings: Any, seed: int, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """One point per (goal, window) of the goals' cadences between ``start_ns`` and ``end_ns``:
    an AR(1) walk around 70 % of the way to the target (a rate to reach: half-way from it to 1, at
    most 1) with streaks that cross it, written
    through the loop's :class:`SeriesStore`."""
    from closedloop.orchestration.goals import Measure, SeriesStore
    from closedloop.orchestration.windows import windows_between

    rng = np.random.default_rng([seed, 7])
    points = []
    for g in system.goals:
        m = Measure.of(g)
        scale = abs(g.target) or 1.0
        share = g.direction == "at_least" and 0 < g.target < 1  # a rate such as recall: at most 1, as measured
        level, x = (g.target + 0.5 * (1 - g.target) if share else (0.7 if g.direction == "at_most" else 1.3) * g.target), 0.0
        for w in windows_between(g.cadence, start_ns, end_ns):
            if w.end_ns > end_ns:
                break
            x = 0.85 * x + float(rng.normal(0, 0.12 * scale))
            if rng.random() < 0.01:
                x += (1 if g.direction == "at_most" else -1) * 0.6 * scale  # a bad spell
            n = int(rng.integers(200, 3000)) * (24 if g.cadence != "hourly" else 1)
            value = None if rng.random() < 0.01 else float(min(max(0.0, level + x), 1.0 if share else np.inf))
            points.append({
                "name": m.name, "metric": m.metric, "level": m.level, "cadence": m.cadence, "window": w.key,
                "start_ns": w.start_ns, "end_ns": w.end_ns, "value": value, "n": 0 if value is None else n,
                "target": m.target, "direction": m.direction, "met": m.met(value),
                "measured_ns": w.end_ns + 3600 * 10**9,
            })
    SeriesStore(settings.home / "goals" / "series.jsonl").append(points)
    return points


# -- cycles and alerts ------------------------------------------------------------------------------------------------
_OTHER_ALERTS = (
    ("feature_drift", "domain_age_days", 0.21, 0.1, "retrain", "feature domain_age_days drifted: PSI {v:.3g} > {t:g}"),
    ("score_drift", "phish", 0.16, 0.1, "retrain", "score phish drifted: PSI {v:.3g} > {t:g}"),
    ("mistake_spike", "reported_false_block_per_1k", 0.9, 0.4, "tighten", "reported false blocks spiked to {v:.3g} per 1,000"),
    ("abuse", "reporter-{n}", 0.31, 0.2, "quarantine", "source reporter-{n} sent {v:.0%} of reports: quarantined"),
    ("label_anomaly", "reported_false_block", 0.42, 0.1, "none", "labels of kind reported_false_block jumped to {v:.0%}"),
)


def _cycles(system: Any, settings: Any, seed: int, points: list[dict[str, Any]],
            loop_changes: list[tuple[int, dict[str, Any]]], info: HomeInfo) -> None:
    """One cycle a day at 02:00 UTC: its record (the steps' typed results) and its alerts."""
    from closedloop.orchestration.alerts import Alert, JsonLinesAlertSink
    from closedloop.orchestration.goals import SeriesStore, goal_status
    from closedloop.orchestration.records import CycleRecords

    rng = np.random.default_rng([seed, 11])
    records = CycleRecords(settings.home / "orchestration" / "cycles")
    sink = JsonLinesAlertSink(settings.home / "orchestration" / "alerts.jsonl")
    status = goal_status(system, SeriesStore(settings.home / "goals" / "series.jsonl"))
    by_end = sorted(points, key=lambda p: p["measured_ns"])
    last, j, k = None, 0, 0
    for now in range(info.start_ns + 2 * 3600 * 10**9, info.end_ns, DAY_NS):
        new = []
        while j < len(by_end) and by_end[j]["measured_ns"] <= now:
            new.append(by_end[j])
            j += 1
        changes = []
        while k < len(loop_changes) and loop_changes[k][0] <= now:
            changes.append(loop_changes[k][1])
            k += 1
        alerts = _goal_alerts(new, now) + [
            Alert(kind, subject.format(n=int(rng.integers(1, 99))), round(v * float(rng.uniform(1.0, 1.6)), 4), t,
                  msg.format(v=v, t=t, n=int(rng.integers(1, 99))), action, _dt.datetime.fromtimestamp(now / 1e9, _dt.UTC)
                  .strftime("%Y-%m-%d"), now)
            for kind, subject, v, t, action, msg in _OTHER_ALERTS if rng.random() < 0.06]
        sink.send(alerts)
        rec = records.new(SYSTEM, now, last)
        rec.update(_steps(rng, now, new, alerts, changes))
        rec["alerts"] = [a.to_dict() for a in alerts]
        rec["changes"] = changes
        rec["finished"], rec["goals"] = True, status
        records.save(rec)
        last = rec
        info.cycles += 1
        info.alerts += len(alerts)


def _goal_alerts(new: list[dict[str, Any]], now: int) -> list[Any]:
    """The monitor's rule: per goal, its latest newly measured window, if missed."""
    from closedloop.orchestration.alerts import Alert

    latest: dict[str, dict[str, Any]] = {}
    for p in new:
        if p["met"] is not None and p["start_ns"] >= latest.get(p["name"], {}).get("start_ns", -1):
            latest[p["name"]] = p
    return [Alert("goal_missed", p["name"], p["value"], p["target"],
                  f"goal {p['name']} ({p['metric']}) was {p['value']:.4g} in {p['window']}, "
                  f"target {p['direction'].replace('_', ' ')} {p['target']:g}", "none", p["window"], now)
            for p in latest.values() if p["met"] is False]


def _steps(rng: np.random.Generator, now: int, new: list[dict[str, Any]], alerts: list[Any],
           changes: list[dict[str, Any]]) -> dict[str, Any]:
    """A cycle's steps as the loop records them (its typed results), its outcome and reason."""
    from closedloop.orchestration.steps.base import to_record
    from closedloop.orchestration.steps.gate import GateResult
    from closedloop.orchestration.steps.ingest import IngestResult
    from closedloop.orchestration.steps.monitor import MonitorResult
    from closedloop.orchestration.steps.route import RouteResult

    day = _dt.datetime.fromtimestamp(now / 1e9, _dt.UTC).strftime("%Y%m%d")
    files = [f"telemetry/decisions/{day}-{i:03d}.seg" for i in range(int(rng.integers(2, 6)))]
    rows = int(rng.integers(20_000, 90_000))
    steps = {
        "ingest": IngestResult(files=files, ingested=rows, durable=rows, rejected=[]),
        "monitor": MonitorResult(goal_points=len(new), alerts=[a.to_dict() for a in alerts], delivery_failures=[],
                                 quarantined=[], source_weights={}, pending=[]),
    }
    roll = rng.random()
    if roll < 0.35:
        steps["route"] = RouteResult(branch="advance", why="a flight is running: advance its rollout")
        outcome, reason = "advanced", "the flight's guard metrics hold: rollout continues"
    elif roll < 0.6:
        steps["route"] = RouteResult(branch="train", why="new labels since the last training")
        passed = bool(rng.random() < 0.5)
        steps["gate"] = GateResult(passed=passed, baseline="production", candidate=f"candidate-{day}")
        outcome, reason = ("shadow", "the candidate passed the gate: deployed as a shadow") if passed else \
            ("gate_failed", "the candidate's expected cost per 1,000 decisions is higher than production's")
    else:
        steps["route"] = RouteResult(branch="wait", why="not enough new labels")
        outcome, reason = "not_enough_labels", "fewer labeled decisions than the plan's minimum since the last training"
    if changes:
        reason += f"; {len(changes)} registry change(s) by the loop"
    return {"steps": {k: {"status": "done", "result": to_record(v)} for k, v in steps.items()},
            "outcome": outcome, "reason": reason}


def home_summary(path: Path | str) -> dict[str, Any]:
    """What the seeded home at ``path`` holds, read back through the readers the console uses:
    the registry's history, state, bundles and reports, the goal series, cycles and alerts."""
    from closedloop.orchestration.alerts import JsonLinesAlertSink
    from closedloop.orchestration.records import CycleRecords
    from closedloop.orchestration.series import SeriesStore
    from closedloop.registry import Registry
    from closedloop.settings import Settings

    settings = Settings(home=Path(path))
    with Registry.from_settings(settings).open(upgrade=False) as reg:
        hist = reg.history(SYSTEM)
        bundles = [b["version"] for b in reg.bundles(SYSTEM)]
        digests = {hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()
                   for v in bundles for r in reg.reports(v)}
        state = reg.state(SYSTEM).to_dict()
    return {
        "history_events": len(hist), "applied": sum(e["status"] == "applied" for e in hist), "state": state,
        "bundles": len(bundles), "reports": len(digests),
        "goal_points": len(SeriesStore(settings.home / "goals" / "series.jsonl").points()),
        "cycles": len(CycleRecords(settings.home / "orchestration" / "cycles").all()),
        "alerts": len(JsonLinesAlertSink(settings.home / "orchestration" / "alerts.jsonl").read()),
    }


def best_ms(fn: Any, n: int = 5) -> float:
    """The best of ``n`` calls of ``fn``, in milliseconds (the benchmarks' timing of a data source)."""
    import time

    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)

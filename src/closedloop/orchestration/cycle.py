"""The cycle: one turn of the loop, every step recorded, resumable and idempotent.

::

    ingest ─► monitor ─► ┬─ bootstrap          nothing deployed: the heuristic becomes production
                         ├─ advance            a rollout is under way: move it one stage
                         └─ plan ─► dataset ─► train ─► evaluate ─► gate ─► register ─► sanity ─► shadow

``ingest``
    Outcome files dropped in ``<home>/inbox/`` (JSON lines or Parquet, validated line by line)
    are logged to telemetry — one commit per file — and moved to ``inbox/done/`` only once that
    commit is durable; then the store is compacted. A failed commit (a full disk) leaves the file
    in the inbox and stops the cycle (``ingest_failed``, the file and the error in the step's result).
``monitor``
    Abusive sources (:class:`~.abuse.AbusePolicy`), the goals (:class:`~.goals.GoalTracker`,
    ``<home>/goals/series.jsonl``), drift (:class:`~.drift.DriftMonitor`) and mistake spikes
    (:class:`~.drift.MistakeSpikes`). New alerts go to the plan's sinks and the home's log.
``advance``
    shadow (for ``Rollout.shadow_for``) → flight (``Rollout.flight_share`` of units, for
    ``Rollout.flight_for``, the registry's guard checking it every cycle) → promote; a guard
    breach stops the flight (the automatic rollback) and the next cycle retires the shadow.
``plan``
    Whether to train: the last candidate is ``LoopPlan.retrain_every`` old, or an alert says
    ``retrain`` / ``tighten``.
``dataset`` → ``train`` → ``evaluate``
    The label-policy join over ``LoopPlan.train_window`` (quarantined sources excluded,
    down-weighted ones weighted), a candidate (thresholds tightened on a ``tighten`` alert),
    and the evaluation report against production and the heuristic with the plan's gate.
``gate`` → ``register`` → ``sanity`` → ``shadow``
    A failed gate or sanity check stops the cycle (recorded, with the reasons); else the
    candidate and its report are registered and it starts as a shadow.

**One cycle at a time per home**: :meth:`Cycle.run_once` holds the cycle lock
(:mod:`~.lock`, ``<home>/.cycle.lock``). **One deployment change per cycle, at most**: the bootstrap, one rollout stage, or the new
shadow. **Recorded**: ``<home>/orchestration/cycles/<NNNNNN>.json`` holds the cycle's time and
each step's result, rewritten atomically after every step. **Resumable**: a cycle that did not
finish (a crash, SIGKILL) is resumed by the next run, at its own recorded time, from its first
unfinished step. **Idempotent**: each step's effects are keyed so that redoing a step whose
effect happened but was not recorded changes nothing — files by the cycle's paths (the dataset,
the candidate bundle and the report live in ``<home>/orchestration/cycles/<NNNNNN>/``), series by
(goal, window), alerts by id, registry changes by checking the deployment first.

Time comes from a clock (``Clock.now_ns()``): the system clock, or a simulated one — a driver may
call :meth:`Cycle.run_once` once per simulated day.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from closedloop.base.files import atomic_write, fsync_dir, make_private_dirs
from closedloop.base.times import iso_seconds, iso_short
from closedloop.errors import ClosedLoopError, SanityCheckError, SpecError
from closedloop.orchestration.alerts import Alert, JsonLinesAlertSink, deliver
from closedloop.orchestration.goals import GoalTracker, SeriesStore, goal_status
from closedloop.orchestration.lock import CycleLock, FileCycleLock
from closedloop.orchestration.plan import LoopPlan
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.clock import Clock, SystemClock
from closedloop.telemetry import TelemetryStore

__all__ = ["Cycle", "STEPS"]

#: the dataset columns the cycle reads (train, cost thresholds, evaluate): not the logged features,
#: scores, per-feature and outcome columns — the cycle featurizes the contexts with the current code
_READ = ("decision_id", "unit", "timestamp_ns", "context_json", "label_value", "weight")

STEPS = ("ingest", "monitor", "route", "bootstrap", "advance", "plan", "dataset", "train", "evaluate", "gate",
         "register", "sanity", "shadow")


class _Stop(Exception):
    """Ends a cycle early, on purpose (recorded as the cycle's outcome)."""

    def __init__(self, outcome: str, reason: str, detail: dict[str, Any] | None = None) -> None:
        self.outcome, self.reason, self.detail = outcome, reason, detail or {}
        super().__init__(reason)


def _enc_hook(obj: Any) -> Any:
    """What msgspec cannot encode by itself: numpy floats as numbers, anything else as its str."""
    return float(obj) if isinstance(obj, float) else str(obj)


def _atomic_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys, written atomically. msgspec, not ``json``: a
    cycle record is rewritten after every step and the monitor's results (every outcome source's
    abuse verdict) make it large (docs/performance.md, "Orchestration")."""
    import msgspec

    make_private_dirs(path.parent)
    data = msgspec.json.encode(obj, order="sorted", enc_hook=_enc_hook)
    atomic_write(path, msgspec.json.format(data, indent=1))


def _span(ns: int) -> str:
    s = ns / 1e9
    return (f"{s / 86400:.1f} days" if s >= 86400 else f"{s / 3600:.1f} hours" if s >= 3600
            else f"{s / 60:.1f} minutes" if s >= 60 else f"{s:.3g} seconds")


def _clock_went_back(cycles: Path, last: dict[str, Any], records: list[dict[str, Any]], now: int) -> SpecError:
    """The refusal of a cycle whose time is before the last cycle's: in dates, the cycles ahead of
    it named, and the two ways on (run at or after the last one's time, or move the records of the
    cycles ahead aside)."""
    ahead = [r for r in records if isinstance(r.get("id"), int) and int(r.get("now_ns") or 0) > now] or [last]
    ids = [int(r["id"]) for r in ahead]
    later = (f"cycle #{ids[0]} ran" if len(ids) == 1 else f"cycles {', '.join(f'#{i}' for i in ids)} ran")
    resume = -(-int(last["now_ns"]) // 1_000_000_000) * 1_000_000_000  # --now to the second, not before it
    aside = cycles.parent / "cycles-ahead"
    files = " ".join(f"{cycles}/{i:06d}.json" + (f" {cycles}/{i:06d}" if (cycles / f"{i:06d}").exists() else "")
                     for i in ids)
    return SpecError(
        f"The cycle clock went back: this cycle's time, {iso_short(now)}, is before the time of the last cycle "
        f"(cycle #{last['id']}), {iso_short(int(last['now_ns']))} — {_span(int(last['now_ns']) - now)} later. Cycles "
        f"run in time order; {later} later than this one (e.g. 'closedloop loop run --now' with a time ahead of the "
        f"clock). To go on, run at or after {iso_short(int(last['now_ns']))}: wait until then, or pass "
        f"'--now {iso_short(resume)}' (with '--allow-future' while that is ahead of the wall clock; a Cycle's clock "
        f"in Python). Or, to go back to this time, move the records of the cycles ahead aside: "
        f"'mkdir -p {aside} && mv {files} {aside}/'. The registry changes those cycles made stay applied "
        "('closedloop history' lists them, 'closedloop rollback' undoes them one at a time), and so do their goal "
        "points and alerts."
    )


class Cycle:
    """Runs cycles of ``plan`` for the project home ``home`` against ``registry`` (an open
    ``closedloop.registry.Registry``). ``actor`` is the name registry changes are recorded
    under; ``clock`` gives the cycle's time; ``on_event(step, phase)`` is called with phase
    ``"start"`` and ``"done"`` around every step (progress display). ``lock`` is held while a
    cycle runs — one cycle at a time per home (default: a :class:`~.lock.FileCycleLock` on
    ``<home>/.cycle.lock``)."""

    def __init__(
        self,
        plan: LoopPlan,
        home: Path | str,
        registry: Any,
        *,
        actor: str = "loop",
        clock: Clock | None = None,
        on_event: Callable[[str, str], None] | None = None,
        lock: CycleLock | None = None,
    ) -> None:
        if not isinstance(plan, LoopPlan):
            raise SpecError(f"The 'plan' parameter of Cycle must be a LoopPlan. Got {plan!r} instead.")
        if not isinstance(actor, str) or not actor:
            raise SpecError(f"The 'actor' parameter of Cycle must be a non-empty name. Got {actor!r} instead.")
        if lock is not None and not isinstance(lock, CycleLock):
            raise SpecError(f"The 'lock' parameter of Cycle must be a closedloop.orchestration.CycleLock. "
                            f"Got {lock!r} instead.")
        self.plan = plan
        self.system = plan.system
        self.home = Path(home)
        self.lock = lock if lock is not None else FileCycleLock(self.home / ".cycle.lock")
        self.registry = registry
        self.actor = actor
        self.clock = clock if clock is not None else SystemClock()
        self.on_event = on_event
        self.root = self.home / "orchestration"
        self.cycles = self.root / "cycles"
        self.alert_log = JsonLinesAlertSink(self.root / "alerts.jsonl")
        self.goals = SeriesStore(self.home / "goals" / "series.jsonl")
        self.mistakes = SeriesStore(self.home / "goals" / "mistake_rates.jsonl")
        self.tracker = GoalTracker(plan.system, metrics=plan.metrics, rate_settle=plan.rate_settle)
        self._loaded: tuple[str, Any] | None = None  # the dataset read in this cycle (train, thresholds, evaluate)
        self._contexts: tuple[Any, Any, Any] | None = None  # the last dataset's ids, context text, decoded columns

    def _signer(self) -> Any:
        """The home's signing key (trusted by the registry when it is created): what the loop
        trains and deploys is signed by it (closedloop.runtime.signing)."""
        return self.registry.signing_key(self.home)

    def _load(self, path: str) -> Any:
        """``load_dataset(path)``, read once per cycle and process (a dataset never changes)."""
        if self._loaded is None or self._loaded[0] != str(path):
            self._loaded = (str(path), self._read_dataset(path))
        return self._loaded[1]

    def _read_dataset(self, path: str) -> Any:
        """What ``load_dataset(path, system)`` returns — the same rows, and of the columns those
        the cycle reads (``_READ``: not the logged features and scores, nor the per-feature and
        outcome columns) —
        with the contexts of rows the last dataset read in this process also held (same decision
        id, same context text: consecutive training windows overlap by most of their days) taken
        from it instead of decoded again. Decoding ~350,000 contexts was most of a demo cycle's
        training."""
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from closedloop.context.schema import concat_columns
        from closedloop.datasets.dataset import DATA_FILE, decode_contexts
        from closedloop.errors import ContextError

        prev, self._contexts = self._contexts, None
        p = Path(path)
        data = p / DATA_FILE if p.is_dir() else p
        # only the columns the cycle reads (the features and scores as logged are not)
        keep = [c for c in pq.read_schema(data).names if c in _READ]
        table = pq.read_table(data, columns=keep)
        if table["context_json"].null_count:  # a filter copies every column: only when some row has no context
            table = table.filter(pc.is_valid(table["context_json"]))
        ids, raws = table["decision_id"].combine_chunks(), table["context_json"].combine_chunks()
        if prev is None:
            cols = decode_contexts(table["context_json"], self.system)
        else:
            hit, old_hit = self._shared_rows(ids, raws, prev[0], prev[1])
            new = np.flatnonzero(~np.isin(np.arange(len(ids)), hit))
            try:
                fresh = decode_contexts(raws.take(new), self.system)
            except ContextError:  # named by its row in the whole dataset
                cols = decode_contexts(table["context_json"], self.system)
            else:
                both = concat_columns([prev[2].take(old_hit), fresh])  # rows: hit, then new
                order = np.empty(len(ids), dtype=np.int64)
                order[np.concatenate([hit, new])] = np.arange(len(ids))
                cols = both.take(order)
                cols.rows = np.arange(cols.n, dtype=np.int64)  # as validated in one batch
        if table.num_rows:
            self._contexts = (ids, raws, cols)
        return table, cols

    @staticmethod
    def _shared_rows(ids: Any, raws: Any, prev_ids: Any, prev_raws: Any) -> tuple[Any, Any]:
        """The rows of a dataset (``ids``, ``raws``: decision ids, context texts) that the last
        one held with the same id and text, and their rows there: ``(rows, rows in the last)``.
        Consecutive training windows list the days they share in the same order, so the shared
        rows are first looked for as one aligned run (compared in place); when that finds less
        than nine in ten of the rows it could, every id is looked up. A row not found is decoded
        again — the same values (decoding depends on the text only), just slower."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(ids)
        if n and len(prev_ids):
            k = pc.index(prev_ids, ids[0]).as_py()
            if k >= 0:
                m = min(n, len(prev_ids) - k)
                same = pc.and_(pc.equal(ids.slice(0, m), prev_ids.slice(k, m)),
                               pc.equal(raws.slice(0, m), prev_raws.slice(k, m)))
                hit = np.flatnonzero(np.asarray(pc.fill_null(same, False), dtype=bool))
                if hit.size >= 0.9 * m:
                    return hit, hit + k
        pos = pc.index_in(ids, value_set=prev_ids)
        found = np.asarray(pos.is_valid(), dtype=bool)
        old = np.asarray(pos.filter(pa.array(found)), dtype=np.int64)
        same = np.asarray(pc.fill_null(pc.equal(raws.filter(pa.array(found)), prev_raws.take(pa.array(old))), False),
                          dtype=bool)
        return np.flatnonzero(found)[same], old[same]

    # -- records -----------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every cycle record, oldest first (a record that cannot be read is skipped)."""
        out = []
        if self.cycles.is_dir():
            for p in sorted(self.cycles.glob("[0-9]*.json")):
                try:
                    out.append(json.loads(p.read_text()))
                except (OSError, ValueError):
                    continue
        return out

    def _last(self) -> dict[str, Any] | None:
        """The newest cycle record that can be read (what :meth:`records` would end with)."""
        if self.cycles.is_dir():
            for p in sorted(self.cycles.glob("[0-9]*.json"), reverse=True):
                try:
                    return json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
        return None

    def _save(self, rec: dict[str, Any]) -> None:
        _atomic_json(self.cycles / f"{rec['id']:06d}.json", rec)

    def _dir(self, rec: dict[str, Any]) -> Path:
        return self.cycles / f"{rec['id']:06d}"

    # -- running -------------------------------------------------------------------------------------
    def run_once(self, *, wait: float = 0.0) -> dict[str, Any]:
        """Run one cycle — or finish the last one, if it did not finish — and return its record.

        The cycle lock is held meanwhile: if another process runs a cycle of this home, this
        waits up to ``wait`` seconds for it to finish, then raises
        :class:`~.lock.LockHeldError` naming it (pid, host, since)."""
        with self.lock.acquire(wait=wait):
            return self._run_once()

    def _run_once(self) -> dict[str, Any]:
        last = self._last()
        if last is not None and not last.get("finished"):
            rec = last
            rec["resumed"] = rec.get("resumed", 0) + 1
        else:
            now = int(self.clock.now_ns())
            if last is not None and now < last["now_ns"]:
                raise _clock_went_back(self.cycles, last, self.records(), now)
            rec = {"id": (last["id"] + 1) if last else 1, "system": self.system.name, "now_ns": now,
                   "steps": {}, "finished": False, "outcome": None, "reason": None, "resumed": 0,
                   "alerts": [], "changes": [],
                   "rollout": (last or {}).get("rollout"), "pending": (last or {}).get("pending", []),
                   "last_trained_ns": (last or {}).get("last_trained_ns"),
                   "label_quarantine": (last or {}).get("label_quarantine", [])}
        self._save(rec)
        try:
            self._step(rec, "ingest", self._ingest)
            self._step(rec, "monitor", self._monitor)
            branch = self._step(rec, "route", self._route)["branch"]
            if branch == "bootstrap":
                r = self._step(rec, "bootstrap", self._bootstrap)
                raise _Stop("bootstrapped", r["message"])
            if branch == "advance":
                r = self._step(rec, "advance", self._advance)
                raise _Stop(r["outcome"], r["message"])
            self._step(rec, "plan", self._plan)
            if not rec["steps"]["plan"]["result"]["train"]:
                raise _Stop("nothing_to_do", rec["steps"]["plan"]["result"]["why"])
            for name, fn in (("dataset", self._dataset), ("train", self._train), ("evaluate", self._evaluate),
                             ("gate", self._gate), ("register", self._register), ("sanity", self._sanity),
                             ("shadow", self._shadow)):
                self._step(rec, name, fn)
            raise _Stop("shadow", rec["steps"]["shadow"]["result"]["message"])
        except _Stop as stop:
            rec["outcome"], rec["reason"] = stop.outcome, stop.reason
        self._loaded = None
        rec["finished"] = True
        rec["goals"] = goal_status(self.system, self.goals)
        self._save(rec)
        return rec

    def _step(self, rec: dict[str, Any], name: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        done = rec["steps"].get(name)
        if done is not None and done.get("status") in ("done", "stopped"):
            if done["status"] == "stopped":
                raise _Stop(done["result"]["outcome"], done["result"]["reason"])
            return done["result"]
        if done is None:  # the intent is durable before any effect: a resumed cycle redoes this step
            rec["steps"][name] = {"status": "started"}
            self._save(rec)
        if self.on_event:
            self.on_event(name, "start")
        try:
            result = fn(rec)
        except _Stop as stop:
            rec["steps"][name] = {"status": "stopped",
                                  "result": {**stop.detail, "outcome": stop.outcome, "reason": stop.reason}}
            self._save(rec)
            if self.on_event:
                self.on_event(name, "done")
            raise
        rec["steps"][name] = {"status": "done", "result": result}
        self._save(rec)
        if self.on_event:
            self.on_event(name, "done")
        return result

    @staticmethod
    def _in_progress(rec: dict[str, Any]) -> dict[str, Any] | None:
        r = rec.get("rollout")
        return r if r is not None and r.get("stage") in ("shadow", "flight", "retire_shadow") else None

    # -- steps -------------------------------------------------------------------------------------------
    def _route(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Which way this cycle goes, decided once (a resumed cycle follows it)."""
        state = self.registry.state(self.system.name)
        if self._in_progress(rec) is not None:
            return {"branch": "advance", "why": f"the rollout of {rec['rollout']['candidate']} is at stage "
                                                f"{rec['rollout']['stage']}"}
        if state.production is None:
            return {"branch": "bootstrap", "why": "nothing is deployed"}
        return {"branch": "train", "why": f"{state.production} is production; no rollout under way"}

    def _ingest(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Each inbox file in name order, one telemetry commit per file; a file moves to
        ``inbox/done/`` only once that commit is durable (written and fsynced). The first file
        whose commit fails stops the step — it and the files after it stay in the inbox for the
        next run — and the cycle (``ingest_failed``: no training on outcomes known to be missing)."""
        from closedloop.datasets import read_outcomes
        from closedloop.telemetry import SegmentLog, Telemetry

        inbox = self.home / "inbox"
        files = sorted(p for p in inbox.glob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".parquet")) \
            if inbox.is_dir() else []
        ingested, durable, rejected = 0, 0, []
        moved: list[str] = []
        failed: list[dict[str, Any]] = []
        if files:
            done = inbox / "done"
            make_private_dirs(done)
            # no timed group commit: a file's outcomes go in one commit (one frame, one fsync), made
            # at the flush — all of them durable, or none
            with Telemetry(SegmentLog(self.home), system=self.system, clock=self.clock.now_ns,
                           flush_interval_ms=3_600_000, flush_events=1 << 62, buffer_limit=1 << 62) as tel:
                for f in files:
                    table, errors = read_outcomes(f)
                    before = tel.counters.get("outcomes", 0)
                    logged = refused = 0
                    for r in table.to_pylist():
                        if r.get("system") not in (None, self.system.name):
                            continue
                        seq = tel.log_outcome(r["decision_id"], r["unit"], kind=r["kind"], value=r["value"],
                                              event_ns=r["event_ns"], source=r["source"], outcome_id=r["outcome_id"])
                        if seq is None:
                            refused += 1
                        else:
                            logged += 1
                    rejected += [{"file": f.name, "line": line, "reason": why} for line, why in errors[:20]]
                    tel.flush()
                    made = tel.counters.get("outcomes", 0) - before
                    if refused or made < logged:
                        error = tel.counters.get("last_error") or "the telemetry commit did not finish"
                        failed.append({"file": f.name, "records": logged + refused, "durable": made, "error": error})
                        break
                    os.replace(f, done / f.name)
                    fsync_dir(inbox)
                    fsync_dir(done)
                    moved.append(f.name)
                    ingested += logged
                    durable += made
        result: dict[str, Any] = {"files": moved, "ingested": ingested, "durable": durable, "rejected": rejected}
        if failed:
            result["failed"] = failed
            result["waiting"] = [f.name for f in files[len(moved) + 1:]]
        try:
            result["compacted"] = TelemetryStore(self.home).compact()
        except OSError as exc:  # e.g. the disk is full: the segments stay, the next run compacts them
            result["compaction_error"] = _os_error(exc)
        if failed:
            x = failed[0]
            more = f" (and {len(result['waiting'])} later file(s) wait behind it)" if result["waiting"] else ""
            raise _Stop("ingest_failed", f"the outcomes of inbox file {x['file']!r} ({x['records']} records) could not "
                        f"be made durable: {x['error']}. It stays in the inbox{more}; the next run retries it.",
                        detail=result)
        if "compaction_error" in result:
            raise _Stop("ingest_failed", f"telemetry could not be compacted: {result['compaction_error']}. The "
                        "outcomes are durable in the telemetry log; the next run compacts them.", detail=result)
        return result

    def _files(self) -> tuple[list[Path], list[Path]]:
        store = TelemetryStore(self.home)
        return store.decision_files(), store.outcome_files()

    def _monitor(self, rec: dict[str, Any]) -> dict[str, Any]:
        plan, now = self.plan, rec["now_ns"]
        dec, out = self._files()
        scratch = self.root / "tmp"
        make_private_dirs(scratch)
        result: dict[str, Any] = {}
        alerts: list[Alert] = []
        excluded: list[str] = []
        weights: dict[str, float] = {}
        if plan.abuse is not None:
            report = plan.abuse.check(self.system, outcome_files=out, now_ns=now)
            result["abuse"] = report.to_dict()
            excluded, weights = report.quarantined, report.weights
            for s in report.sources:
                if s["verdict"] != "trusted":
                    alerts.append(Alert("abuse", s["source"], s["share"], plan.abuse.quarantine_above
                                        if s["verdict"] == "quarantined" else plan.abuse.downweight_above,
                                        f"source {s['source']!r} {s['verdict']}: {s['reason']}",
                                        "quarantine", s["verdict"], now))
        from closedloop.orchestration import _data

        # one reading for goals, drift and spikes, of the decision files that can hold what they
        # look at: the goals' and spikes' windows still to measure and drift's two windows
        first = _data.first_ns(self.system.name, dec, now)
        since = [w.start_ns for _, _, w in self.tracker.pending(self.goals, first_ns=first, now_ns=now)]
        if plan.spikes is not None:
            since += [w.start_ns for _, _, w in self.tracker.pending(
                self.mistakes, first_ns=first, now_ns=now, measures=plan.spikes.measures(self.system))]
        if plan.drift is not None:
            since.append(now - int((plan.drift.current + plan.drift.reference).total_seconds() * 1e9))
        read = _data.files_since(dec, "timestamp_ns", min(since)) if since else []
        con = _data.connect(self.system.name, read, out, now, excluded)
        try:
            return self._monitor_with(rec, con, dec, out, scratch, result, alerts, excluded, weights, first)
        finally:
            con.close()

    def _monitor_with(self, rec: dict[str, Any], con: Any, dec: list[Path], out: list[Path], scratch: Path,
                      result: dict[str, Any], alerts: list[Alert], excluded: list[str],
                      weights: dict[str, float], first: int | None) -> dict[str, Any]:
        plan, now = self.plan, rec["now_ns"]
        new_points = self.tracker.measure(self.goals, decision_files=dec, outcome_files=out, now_ns=now,
                                          exclude_sources=excluded, scratch=scratch, con=con, first_ns=first)
        result["goal_points"] = len(new_points)
        latest: dict[str, dict[str, Any]] = {}
        for p in new_points:  # one alert per goal and cycle: its latest newly measured window
            if p["met"] is not None and p["start_ns"] >= latest.get(p["name"], {}).get("start_ns", -1):
                latest[p["name"]] = p
        for p in latest.values():
            if p["met"] is False:
                alerts.append(Alert("goal_missed", p["name"], p["value"], p["target"],
                                    f"goal {p['name']} ({p['metric']}) was {p['value']:.4g} in {p['window']}, "
                                    f"target {p['direction'].replace('_', ' ')} {p['target']:g}",
                                    "none", p["window"], now))
        if plan.drift is not None:
            a, report = plan.drift.check(self.system, decision_files=dec, now_ns=now, con=con)
            alerts += a
            result["drift"] = report
        if plan.spikes is not None:
            a, report = plan.spikes.check(self.system, self.tracker, self.mistakes, decision_files=dec,
                                          outcome_files=out, now_ns=now, exclude_sources=excluded, scratch=scratch,
                                          con=con, first_ns=first)
            alerts += a
            result["spikes"] = report
        seen = {a.get("id") for a in self.alert_log.read()}
        new = [a for a in alerts if a.id not in seen]
        failures = deliver(new, plan.sinks)  # at least once: the sinks first, then the log
        self.alert_log.send(new)
        result["alerts"] = [a.to_dict() for a in new]
        result["delivery_failures"] = failures
        result["quarantined"] = excluded
        result["source_weights"] = weights
        rec["alerts"] = result["alerts"]
        # what alerts ask the cycle to do waits for the next training (a rollout may be under way)
        asked = {p["id"] for p in rec.get("pending", [])}
        rec["pending"] = rec.get("pending", []) + [
            {"id": a.id, "action": a.action, "message": a.message} for a in new
            if a.action in ("retrain", "tighten") and a.id not in asked
        ]
        result["pending"] = rec["pending"]
        return result

    def _bootstrap(self, rec: dict[str, Any]) -> dict[str, Any]:
        h = self.plan.heuristic_bundle()
        if h is None:
            raise _Stop("nothing_deployed", f"nothing is deployed for '{self.system.name}' and the plan has no heuristic "
                        "to start with: deploy a production bundle first")
        state = self.registry.state(self.system.name)
        if state.production is None:
            ch = self.registry.deploy(
                self.system, h.signed(self._signer()), actor=self.actor,
                reason="bootstrap: the heuristic is the first production",
                force="the declared heuristic starts the loop: there is no data to evaluate it on yet",
            )
            rec["changes"].append(ch.to_dict())
            msg = ch.message
        else:
            msg = f"{state.production} is production already"
        return {"bundle": h.version, "message": msg}

    # rollout ---------------------------------------------------------------------------------------
    def _advance(self, rec: dict[str, Any]) -> dict[str, Any]:
        ro = dict(rec["rollout"])
        cand, stage, now = ro["candidate"], ro["stage"], rec["now_ns"]
        r = self.plan.rollout
        state = self.registry.state(self.system.name)
        name = self.system.name
        flight = r.flight_name

        def done(outcome: str, message: str, **extra: Any) -> dict[str, Any]:
            rec["rollout"] = ro
            return {"outcome": outcome, "message": message, "rollout": ro, **extra}

        if stage == "shadow":
            if state.flight(flight) is not None and state.flight(flight).bundle == cand:
                ro.update(stage="flight", since_ns=now)
                return done("flight", f"{cand} is in flight {flight!r} already")
            if cand not in state.shadows:
                ro.update(stage="ended", ended="the shadow was removed outside the loop", since_ns=now)
                return done("rollout_ended", f"{cand} is no longer a shadow: the rollout ends")
            waited = now - ro["since_ns"]
            need = int((r.shadow_for.total_seconds() if r.shadow_for else 0) * 1e9)
            if waited < need:
                return done("waiting", f"{cand} stays a shadow ({waited / 3.6e12:.1f} h of {need / 3.6e12:.1f} h)")
            try:
                ch = self.registry.deploy(self.system, cand, actor=self.actor, flight=flight, share=r.flight_share,
                                          reason=f"loop: {cand} was a shadow for {waited / 3.6e12:.1f} h")
            except SanityCheckError as exc:  # the registry's own checks refused it: stays a shadow, retried
                return done("waiting", f"{cand} stays a shadow: the registry refused the flight: {exc}")
            rec["changes"].append(ch.to_dict())
            ro.update(stage="flight", since_ns=now)
            return done("flight", ch.message)
        if stage == "flight":
            from closedloop.registry import GuardPolicy, guard_check

            f = state.flight(flight)
            if state.production == cand:
                ro.update(stage="promoted", since_ns=now)
                return done("promoted", f"{cand} is production already")
            if f is None or f.bundle != cand:
                # the guard (this loop's or the service's) stopped it, or someone else did
                ro.update(stage="retire_shadow" if cand in state.shadows else "rolled_back", since_ns=now,
                          ended="the flight was stopped")
                return done("rolled_back", f"flight {flight!r} of {cand} is no longer running: rolled back")
            started = self.registry.flight_started(name, flight) or ro["since_ns"]
            # reports of the sources this cycle's monitoring quarantined do not count against the flight
            quarantined = ((rec["steps"].get("monitor") or {}).get("result") or {}).get("quarantined") or []
            report = guard_check(self.registry, self.system, self._guard_tables(min(started, ro["since_ns"]), now),
                                 policy=r.guard or GuardPolicy(), now_ns=now, actor=self.actor,
                                 exclude_sources=quarantined)
            mine = [e for e in report["flights"] if e["name"] == flight]
            entry = mine[0] if mine else {}
            if entry.get("breach"):
                if "change" in entry:
                    rec["changes"].append(entry["change"])
                ro.update(stage="retire_shadow" if cand in state.shadows else "rolled_back", since_ns=now,
                          ended="guard breach")
                reason = next((b["reason"] for b in report["breaches"] if b["flight"] == flight), "guard breach")
                alert = Alert("rollback", cand, None, None, f"the guard stopped flight {flight!r} of {cand}: {reason}",
                              "none", iso_seconds(now), now)
                self._alert([alert], rec)
                return done("rolled_back", reason, guard=_brief_guard(entry))
            waited = now - ro["since_ns"]
            need = int(r.flight_for.total_seconds() * 1e9)
            if waited < need:
                return done("waiting", f"flight {flight!r} of {cand} runs on ({waited / 3.6e12:.1f} h of "
                            f"{need / 3.6e12:.1f} h); guard: no breach", guard=_brief_guard(entry))
            dec = entry.get("decisions", {}).get("flight", 0)
            min_dec = (r.guard or GuardPolicy()).min_decisions
            if dec < min_dec:
                return done("waiting", f"flight {flight!r} has {dec} decisions, fewer than the guard's {min_dec}",
                            guard=_brief_guard(entry))
            try:
                ch = self.registry.promote(self.system, flight, actor=self.actor,
                                           reason=f"loop: flight {flight!r} ran {waited / 3.6e12:.1f} h with no guard breach")
            except SanityCheckError as exc:  # the flight runs on; the next cycle tries again
                return done("waiting", f"flight {flight!r} of {cand} runs on: the registry refused the promotion: {exc}",
                            guard=_brief_guard(entry))
            rec["changes"].append(ch.to_dict())
            ro.update(stage="promoted", since_ns=now)
            return done("promoted", ch.message, guard=_brief_guard(entry))
        if stage == "retire_shadow":
            if cand in state.shadows:
                ch = self.registry.stop(self.system, cand, actor=self.actor,
                                        reason=f"loop: {cand} was rolled back; its shadow retires")
                rec["changes"].append(ch.to_dict())
                msg = ch.message
            else:
                msg = f"{cand} is no longer a shadow"
            ro.update(stage="rolled_back", since_ns=now)
            return done("shadow_retired", msg)
        raise SpecError(f"Unknown rollout stage {stage!r} in cycle {rec['id']} of system {name!r}.")

    def _guard_tables(self, since: int, now: int) -> tuple[Any, Any]:
        """The columns the guard reads, of records ingested by ``now`` (decisions since ``since``)."""
        from closedloop.orchestration import _data

        dec, out = self._files()
        # the files that can hold decisions / outcomes since the flight began (the same records)
        con = _data.connect(self.system.name, _data.files_since(dec, "timestamp_ns", since),
                            _data.files_since(out, "event_ns", since), now)
        try:
            d = _data.arrow(con, "SELECT writer, seq, decision_id, system, unit, timestamp_ns, bundle_version, flight, "
                                 "action, shadows_json, killswitch FROM decisions WHERE timestamp_ns >= $s", {"s": since})
            o = _data.arrow(con, "SELECT outcome_id, decision_id, system, kind, value, event_ns, source FROM outcomes "
                                 "WHERE event_ns >= $s", {"s": since})
        finally:
            con.close()
        return d, o

    def _alert(self, alerts: list[Alert], rec: dict[str, Any]) -> None:
        seen = {a.get("id") for a in self.alert_log.read()}
        new = [a for a in alerts if a.id not in seen]
        deliver(new, self.plan.sinks)
        self.alert_log.send(new)
        rec["alerts"] = rec.get("alerts", []) + [a.to_dict() for a in new]

    # the training path ----------------------------------------------------------------------------------
    def _plan(self, rec: dict[str, Any]) -> dict[str, Any]:
        now, last = rec["now_ns"], rec.get("last_trained_ns")
        pending = rec.get("pending", [])
        actions = sorted({p["action"] for p in pending})
        if actions:
            return {"train": True, "tighten": "tighten" in actions, "alerts": [p["id"] for p in pending],
                    "why": f"alert(s) say {', '.join(actions)}: " + "; ".join(p["message"] for p in pending)}
        every = int(self.plan.retrain_every.total_seconds() * 1e9)
        if last is None or now - last >= every:
            return {"train": True, "tighten": False,
                    "why": "no candidate was trained yet" if last is None else "the retraining schedule is due"}
        return {"train": False, "tighten": False,
                "why": f"the last candidate was trained {(now - last) / 3.6e12:.1f} h ago; retraining every "
                       f"{every / 3.6e12:.1f} h, and no alert asks for it"}

    def _dataset(self, rec: dict[str, Any]) -> dict[str, Any]:
        from closedloop.datasets.dataset import DatasetManifest, build_dataset

        out = self._dir(rec) / "dataset"
        mon = rec["steps"]["monitor"]["result"]
        if (out / "manifest.json").is_file():
            m = DatasetManifest.read(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
            dec, outc = self._files()
            now = rec["now_ns"]
            m = build_dataset(
                self.system, decision_files=dec, outcome_files=outc,
                since_ns=now - int(self.plan.train_window.total_seconds() * 1e9), until_ns=now, cutoff_ns=now,
                out=out, exclude_sources=mon.get("quarantined", []), source_weights=mon.get("source_weights") or None,
                exclude_ingested=[(q["kind"], q["start_ns"], q["end_ns"]) for q in rec.get("label_quarantine", [])],
                early_labels=self.plan.early_labels,
            )
        labeled = m.counts["decisions"]["labeled"]
        result = {"id": m.id, "path": str(out), "counts": m.counts}
        if labeled < self.plan.min_labeled:
            raise _Stop("not_enough_labels", f"the dataset has {labeled} labeled rows; the plan needs {self.plan.min_labeled}")
        return result

    def _production(self) -> Bundle | None:
        state = self.registry.state(self.system.name)
        return None if state.production is None else self.registry.load_bundle(state.production, self.system)

    def _train(self, rec: dict[str, Any]) -> dict[str, Any]:
        from closedloop.training.train import train

        path = self._dir(rec) / "candidate"
        tighten = rec["steps"]["plan"]["result"]["tighten"]
        if (path / "manifest.json").is_file():
            b = Bundle.load(path, self.system)
        else:
            prod = self._production()
            try:
                ds = rec["steps"]["dataset"]["result"]["path"]
                run = train(self.system, ds, model=self.plan.model,
                            params=dict(self.plan.params), calibrate=self.plan.calibrate,
                            parent=None if prod is None else prod.version, weights=self.plan.train_weights,
                            loaded=self._load(ds), thresholds=self.plan.thresholds)
            except ClosedLoopError as exc:
                raise _Stop("training_failed", str(exc)) from None
            b = run.bundle  # built with the plan's thresholds: the system's, or the cost-minimizing ones
            if tighten:
                levels = b.experience(self.system).levels
                tightened = tuple(self.plan.tighten.apply(levels).items())
                if tightened != levels:
                    b = Bundle.build(self.system, run.model, thresholds=dict(tightened), parent=b.parent,
                                     metrics=run.metrics)
            shutil.rmtree(path, ignore_errors=True)
            b = Bundle.load(b.save(path, key=self._signer()), self.system)
        rec["last_trained_ns"] = rec["now_ns"]
        rec["pending"] = []  # the alerts that asked for it are answered
        return {"version": b.version, "path": str(path), "tightened": tighten, "thresholds": b.thresholds,
                "heldout": (b.metrics or {}).get("heldout")}

    def _evaluate(self, rec: dict[str, Any]) -> dict[str, Any]:
        from closedloop.evaluation.report import evaluate

        path = self._dir(rec) / "report.json"
        cand = Bundle.load(rec["steps"]["train"]["result"]["path"], self.system)
        if path.is_file():
            report = json.loads(path.read_text())
        else:
            bundles = []
            prod = self._production()
            if prod is not None:
                bundles.append(prod)
            h = self.plan.heuristic_bundle()
            if h is not None and all(h.version != b.version for b in bundles) and h.version != cand.version:
                bundles.append(h)
            bundles.append(cand)
            if len(bundles) < 2:
                raise _Stop("no_baseline", "there is neither a production bundle nor a heuristic to compare the candidate with")
            try:
                ds = rec["steps"]["dataset"]["result"]["path"]
                report = evaluate(self.system, bundles, ds, gate=self.plan.gate,
                                  bootstrap=self.plan.evaluate_bootstrap, seed=rec["id"], loaded=self._load(ds),
                                  weights=self.plan.evaluate_weights)
            except ClosedLoopError as exc:
                raise _Stop("evaluation_failed", str(exc)) from None
            _atomic_json(path, report)
        return {"path": str(path), "gate": report["gate"],
                "bundles": [{"version": b["version"], "kind": b["kind"], "auc": b["quality"]["auc"],
                             "cost_per_1000": b["mistakes"]["cost_per_1000"]} for b in report["bundles"]],
                "heuristic_note": report.get("heuristic_note")}

    def _gate(self, rec: dict[str, Any]) -> dict[str, Any]:
        gate = rec["steps"]["evaluate"]["result"]["gate"]
        labels = self._label_check(rec)
        if labels:
            have = {(q["kind"], q["start_ns"]) for q in rec.get("label_quarantine", [])}
            rec["label_quarantine"] = rec.get("label_quarantine", []) + [
                {k: a[k] for k in ("kind", "start_ns", "end_ns", "reason")} for a in labels
                if (a["kind"], a["start_ns"]) not in have]
            cand = rec["steps"]["train"]["result"]["version"]
            self._alert([Alert("label_anomaly", f"{a['kind']}@{iso_seconds(a['start_ns'])}", a["share"], a["others_share"],
                               a["reason"], "none", iso_seconds(a["start_ns"]), rec["now_ns"]) for a in labels], rec)
            raise _Stop("gate_failed", f"the candidate {cand} was trained on corrupted labels: "
                        + "; ".join(a["reason"] for a in labels)
                        + ". Later datasets leave those labels out.")
        if gate is None or not gate["passed"]:
            reasons = "; ".join(gate["reasons"]) if gate else "no gate verdict"
            raise _Stop("gate_failed", f"the candidate failed the gate: {reasons}")
        return {"passed": True, "baseline": gate["baseline"], "candidate": gate["candidate"]}

    def _label_check(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """Anomalous label days among the labels the candidate's dataset could hold."""
        chk = self.plan.label_check
        if chk is None:
            return []
        now = rec["now_ns"]
        since = now - int(self.plan.train_window.total_seconds() * 1e9)
        _, out = self._files()
        q = [(x["kind"], x["start_ns"], x["end_ns"]) for x in rec.get("label_quarantine", [])]
        report = chk.check(self.system, outcome_files=out, since_ns=since, until_ns=now, cutoff_ns=now,
                           day0_ns=now, exclude=q)
        return list(report["anomalies"])

    def _register(self, rec: dict[str, Any]) -> dict[str, Any]:
        path = rec["steps"]["train"]["result"]["path"]
        b = self.registry.add_bundle(path, actor=self.actor)
        r = self.registry.add_report(rec["steps"]["evaluate"]["result"]["path"], actor=self.actor)
        return {"version": b["version"], "report": r["id"]}

    def _sanity(self, rec: dict[str, Any]) -> dict[str, Any]:
        from closedloop.registry.sanity import run_checks

        v = rec["steps"]["register"]["result"]["version"]
        state = self.registry.state(self.system.name)
        _, checks = run_checks(self.system, lambda: self.registry.load_bundle(v, self.system), self.registry.reports(v),
                               production=state.production, need_gate=True)
        out = [c.to_dict() for c in checks]
        failed = [c for c in out if not c["passed"]]
        if failed:
            raise _Stop("sanity_failed", "failed sanity check(s) " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))
        return {"checks": out}

    def _shadow(self, rec: dict[str, Any]) -> dict[str, Any]:
        v = rec["steps"]["register"]["result"]["version"]
        state = self.registry.state(self.system.name)
        now = rec["now_ns"]
        r = self.plan.rollout
        if r.shadow_for is None:
            f = state.flight(r.flight_name)
            if f is not None and f.bundle == v:
                msg = f"{v} is in flight {r.flight_name!r} already"
            else:
                try:
                    ch = self.registry.deploy(self.system, v, actor=self.actor, flight=r.flight_name,
                                              share=r.flight_share, reason=f"loop: a new candidate, cycle {rec['id']}")
                except SanityCheckError as exc:
                    raise _Stop("sanity_failed", f"the registry refused {v}: {exc}") from None
                rec["changes"].append(ch.to_dict())
                msg = ch.message
            rec["rollout"] = {"candidate": v, "stage": "flight", "since_ns": now, "cycle": rec["id"]}
            return {"message": msg}
        if v in state.shadows:
            msg = f"{v} is a shadow already"
        else:
            try:
                ch = self.registry.deploy(self.system, v, actor=self.actor, shadow=True,
                                          reason=f"loop: a new candidate, cycle {rec['id']}")
            except SanityCheckError as exc:  # e.g. latency measured on a busy machine
                raise _Stop("sanity_failed", f"the registry refused {v}: {exc}") from None
            rec["changes"].append(ch.to_dict())
            msg = ch.message
        rec["rollout"] = {"candidate": v, "stage": "shadow", "since_ns": now, "cycle": rec["id"]}
        return {"message": msg}

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The last cycle, each goal against its target, open alerts, quarantined sources and
        the deployment (JSON-ready)."""
        recs = self.records()
        last = recs[-1] if recs else None
        alerts = self.alert_log.read()
        latest_monitor = next((r["steps"]["monitor"]["result"] for r in reversed(recs)
                               if r.get("steps", {}).get("monitor", {}).get("status") == "done"), None)
        current = {a["id"] for a in (latest_monitor or {}).get("alerts", [])}
        open_alerts = [a for a in alerts if a["id"] in current or (last is not None and a.get("at_ns") == last["now_ns"])]
        abuse = (latest_monitor or {}).get("abuse") or {"sources": [], "quarantined": [], "weights": {}}
        state = self.registry.state(self.system.name)
        return {
            "system": self.system.name,
            "last_cycle": None if last is None else {
                k: last.get(k) for k in ("id", "now_ns", "finished", "outcome", "reason", "resumed", "changes")
            } | {"steps": {k: v["status"] for k, v in last.get("steps", {}).items()}},
            "cycles": len(recs),
            "rollout": None if last is None else last.get("rollout"),
            "deployment": state.to_dict(),
            "goals": goal_status(self.system, self.goals),
            "open_alerts": open_alerts,
            "alerts_total": len(alerts),
            "quarantined": [s for s in abuse["sources"] if s["verdict"] == "quarantined"],
            "downweighted": [s for s in abuse["sources"] if s["verdict"] == "downweighted"],
        }


def _os_error(exc: OSError) -> str:
    """An OSError as the telemetry writer records one: ``OSError [ENOSPC]: [Errno 28] …``."""
    import errno

    name = f" [{errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno is not None else ""
    return f"{type(exc).__name__}{name}: {exc}"



def _brief_guard(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("decisions", "units", "breach", "action")} | {
        "metrics": [{k: m.get(k) for k in ("metric", "flight", "production", "p_value", "breach", "note")}
                    for m in entry.get("metrics", [])]}



"""Goals measured from telemetry, per cadence window, kept as time series.

A system declares :class:`~closedloop.Goal` objects (name, level, metric, target, direction,
cadence). :class:`GoalTracker` measures each goal over every window of its cadence (on the
runtime's clock, :mod:`.windows`) once the window has *settled*, and appends one point per
(goal, window) to a :class:`SeriesStore` — append-only and idempotent. :func:`parse_metric`
reads the metric grammar (classification at an operating point ``@A``, outcome rates, action
shares, the exploration share, user functions); the grammar and the settling rules are in docs/orchestration.md, "Goals".
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.experience.experiences import EXPLORED_SLOTS_WHY, EXPLORED_WHY, Thresholds
from closedloop.orchestration import _data
from closedloop.orchestration.metric_grammar import Measure, Metric, MetricInput, parse_metric
from closedloop.orchestration.series import SeriesStore
from closedloop.orchestration.windows import Window, windows_between
from closedloop.system.spec import System

__all__ = [
    "GoalTracker",
    "Measure",
    "MetricInput",
    "SeriesStore",
    "goal_status",
    "parse_metric",
]

#: the dataset columns label-based metrics read (the labels-only dataset :meth:`GoalTracker._labeled` builds)
_LABELED = ["decision_id", "timestamp_ns", "action", "label_value", "weight"]


# -- measuring ---------------------------------------------------------------------------------------
def _flagged(system: System, action: str) -> list[str]:
    """The actions at the operating point ``action``: it and every more forceful action."""
    exp = system.experience
    if isinstance(exp, Thresholds):
        order = list(exp.actions)  # most forceful first, otherwise last
        if action in order:
            return order[: order.index(action) + 1]
    return [action]


#: Per decision, in SQL over the decisions view: how many items it showed (a ranking: its slate's
#: slots; a choice: 1) and how many of them exploration chose (the decision's ``why``: a choice's
#: begins with EXPLORED_WHY, a ranking's names the slots that differ from the greedy order).
_SHOWN_SQL = "CASE WHEN slate IS NULL THEN 1 ELSE len(slate) END"
_SLOTS_RE = re.escape(EXPLORED_SLOTS_WHY).replace(re.escape("{}"), r"\[([0-9, ]+)\]") + "$"  # group 1: the slots
_EXPLORED_SQL = (
    f"CASE WHEN slate IS NULL THEN CAST(starts_with(why, '{EXPLORED_WHY}') AS BIGINT) "
    f"ELSE coalesce(len(string_split(nullif(regexp_extract(why, '{_SLOTS_RE}', 1), ''), ',')), 0) END"
)


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return None if den <= 0 else scale * num / den


class GoalTracker:
    """Measures goals (and other series) from telemetry; see docs/orchestration.md, "Goals".

    Parameters
    ----------
    system:
        The system whose goals (``system.goals``) are measured.
    metrics:
        User metric functions, by name (a goal's metric may name one).
    rate_settle:
        How long after a window ends its outcome rates are measured (default: the label window,
        or one day without a label policy).
    """

    def __init__(
        self,
        system: System,
        *,
        metrics: Mapping[str, Callable[[MetricInput], Any]] | None = None,
        rate_settle: timedelta | None = None,
    ) -> None:
        if not isinstance(system, System):
            raise SpecError(f"The 'system' parameter of GoalTracker must be a closedloop.System. Got {system!r} instead.")
        metrics = dict(metrics or {})
        for k, f in metrics.items():
            if not isinstance(k, str) or not callable(f):
                raise SpecError(f"GoalTracker 'metrics' must map a name to a function. Got {k!r}: {f!r} instead.")
        if rate_settle is not None and (not isinstance(rate_settle, timedelta) or rate_settle < timedelta(0)):
            raise SpecError(f"The 'rate_settle' parameter of GoalTracker must be a timedelta ≥ 0. Got {rate_settle!r} instead.")
        self.system = system
        self.metrics = metrics
        policy = system.label_policy
        default = policy.window if policy is not None else timedelta(days=1)
        self.rate_settle = rate_settle if rate_settle is not None else default
        for g in system.goals:  # refuse a goal that cannot be measured, at declaration
            parse_metric(g.metric, system, metrics)

    def settle_ns(self, metric: Metric) -> int:
        if metric.kind in ("share", "exploration"):
            return 0
        if metric.kind == "rate":
            return int(self.rate_settle.total_seconds() * 1e9)
        policy = self.system.label_policy
        window = policy.window if policy is not None else self.rate_settle
        return int(window.total_seconds() * 1e9)

    def pending(
        self, store: SeriesStore, *, first_ns: int | None, now_ns: int, measures: Sequence[Measure] | None = None,
    ) -> list[tuple[Measure, Metric, Window]]:
        """The (measure, metric, window) triples :meth:`measure` would measure now: settled
        windows from the one holding ``first_ns`` (the earliest decision) not yet in ``store``."""
        measures = [Measure.of(g) for g in self.system.goals] if measures is None else list(measures)
        if not measures or first_ns is None:
            return []
        have = store.keys()
        todo: list[tuple[Measure, Metric, Window]] = []
        for m in measures:
            metric = parse_metric(m.metric, self.system, self.metrics)
            settle = self.settle_ns(metric)
            for w in windows_between(m.cadence, first_ns, now_ns):
                if w.end_ns + settle > now_ns:
                    break
                if (m.name, w.key) not in have:
                    todo.append((m, metric, w))
        return todo

    def measure(
        self,
        store: SeriesStore,
        *,
        decision_files: Sequence[Path | str],
        outcome_files: Sequence[Path | str],
        now_ns: int,
        measures: Sequence[Measure] | None = None,
        exclude_sources: Sequence[str] = (),
        scratch: Path | str | None = None,
        con: Any = None,
        first_ns: int | None = None,
    ) -> list[dict[str, Any]]:
        """Measure every settled, not yet recorded window of each measure (default: the
        system's goals) and append the points to ``store``. Returns the points appended.

        ``exclude_sources``: outcome sources left out (quarantined for abuse). ``scratch``: a
        directory for the labeled-decisions dataset this builds (deleted afterwards). ``con``:
        an open ``_data.connect`` connection over the same files, cut-off and exclusions, to
        reuse (it is left open); its decision files may be only those that can hold decisions
        of the windows to measure (``_data.files_since``). ``first_ns``: the earliest decision's
        time when the caller knows it (``_data.first_ns``); else it is queried.

        Only what the windows need is read: the labeled decisions are built from the files that
        can hold decisions and outcomes of the windows (``_data.files_since``: the same rows)."""
        measures = [Measure.of(g) for g in self.system.goals] if measures is None else list(measures)
        if not measures:
            return []
        own = con is None
        if own:
            con = _data.connect(self.system.name, decision_files, outcome_files, now_ns, exclude_sources)
        try:
            if first_ns is None:
                row = con.execute("SELECT min(timestamp_ns) FROM decisions").fetchall()[0]
                first_ns = None if row is None or row[0] is None else int(row[0])
            todo = self.pending(store, first_ns=first_ns, now_ns=now_ns, measures=measures)
            if not todo:
                return []
            dec, out = _read_windows(con, todo)
        finally:
            if own:
                con.close()
        labeled = self._labeled_for(todo, decision_files, outcome_files, now_ns, exclude_sources, scratch)
        return store.append(self._points(todo, _Frame(dec, out, labeled, self.system), now_ns))

    def _labeled_for(
        self, todo: list[tuple[Measure, Metric, Window]], decision_files: Sequence[Path | str],
        outcome_files: Sequence[Path | str], now_ns: int, exclude_sources: Sequence[str], scratch: Path | str | None,
    ) -> pa.Table | None:
        """The labeled decisions of the windows whose metrics need labels (None when none does),
        built from the files that can hold them."""
        if not any(metric.needs_labels for _, metric, _ in todo):
            return None
        lab_todo = [w for _, metric, w in todo if metric.needs_labels]
        lab_since = min(w.start_ns for w in lab_todo)
        return self._labeled(
            _data.files_since(decision_files, "timestamp_ns", lab_since),
            _data.files_since(outcome_files, "event_ns", lab_since), now_ns, lab_since,
            max(w.end_ns for w in lab_todo), exclude_sources, scratch,
        )

    def _points(self, todo: list[tuple[Measure, Metric, Window]], frame: _Frame, now_ns: int) -> list[dict[str, Any]]:
        """One point per (measure, window): the value (None when it cannot be measured or is not
        finite), how many it counted, and whether the target is met."""
        points = []
        for m, metric, w in todo:
            value, n = self._value(metric, w, frame)
            if value is not None and not math.isfinite(value):
                value = None
            points.append({
                "name": m.name, "metric": m.metric, "level": m.level, "cadence": m.cadence,
                "window": w.key, "start_ns": w.start_ns, "end_ns": w.end_ns, "value": value, "n": n,
                "target": m.target, "direction": m.direction, "met": m.met(value), "measured_ns": int(now_ns),
            })
        return points

    def _labeled(
        self, decision_files: Sequence[Path | str], outcome_files: Sequence[Path | str], now_ns: int,
        since: int, until: int, exclude_sources: Sequence[str], scratch: Path | str | None,
    ) -> pa.Table:
        import pyarrow.parquet as pq

        from closedloop.datasets.dataset import build_dataset

        tmp = Path(tempfile.mkdtemp(prefix=".goals-", dir=scratch))
        try:
            manifest = build_dataset(
                self.system, decision_files=decision_files, outcome_files=outcome_files,
                since_ns=since, until_ns=until, cutoff_ns=now_ns, out=tmp / "labeled",
                exclude_sources=exclude_sources, columns=_LABELED,
            )
            t = pq.read_table(manifest.data_path, columns=_LABELED)
            t = t.filter(t["label_value"].is_valid())
            return t.sort_by("timestamp_ns")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _value(self, metric: Metric, w: Window, f: _Frame) -> tuple[float | None, int]:
        system = self.system
        if metric.kind == "custom":
            r = self.metrics[metric.name](f.input(w))
            if isinstance(r, tuple):
                return (None if r[0] is None else float(r[0])), int(r[1])
            return (None if r is None else float(r)), 0
        if metric.kind == "share":
            sl = f.dec_slice(w)
            act, wt = f.d_action[sl], f.d_w[sl]
            return _ratio(float(wt[act == metric.action].sum()), float(wt.sum())), int(wt.size)
        if metric.kind == "exploration":  # of the items shown, the share exploration chose
            sl = f.dec_slice(w)
            shown, wt = f.d_shown[sl], f.d_w[sl]
            return _ratio(float((wt * f.d_explored[sl]).sum()), float((wt * shown).sum())), int(shown.sum())
        if metric.kind == "rate":
            if metric.action is None:
                sl = f.dec_slice(w)
                o = (f.o_kind == metric.name) & (f.o_event >= w.start_ns) & (f.o_event < w.end_ns)
                return _ratio(float(o.sum()), float(f.d_w[sl].sum()), metric.scale), int(f.d_w[sl].size)
            sl = f.dec_slice(w)
            mask = f.d_action[sl] == metric.action
            den = float(f.d_w[sl][mask].sum())
            o = (
                (f.o_kind == metric.name) & (f.o_daction == metric.action)
                & (f.o_dts >= w.start_ns) & (f.o_dts < w.end_ns)
            )
            ids, first = np.unique(f.o_did[o], return_index=True)
            num = float(f.o_dw[o][first].sum()) if ids.size else 0.0
            return _ratio(num, den, metric.scale), int(mask.sum())
        # label-based
        sl = f.lab_slice(w)
        y, wt, act = f.l_y[sl], f.l_w[sl], f.l_action[sl]
        if metric.kind == "cost":
            cost = np.zeros(y.size)
            for a, row in system.costs.items():
                for j, lab in enumerate(system.labels):
                    c = row.get(lab, 0.0)
                    if c:
                        cost[(act == a) & (y == j)] = c
            return _ratio(float((wt * cost).sum()), float(wt.sum()), 1000.0), int(y.size)
        if metric.kind == "labeled":
            j = system.labels.index(metric.name)
            hit = y == j
            if metric.action is not None:
                hit &= act == metric.action
            return _ratio(float(wt[hit].sum()), float(wt.sum()), 1000.0), int(y.size)
        flag = np.isin(act, _flagged(system, metric.action or ""))
        pos, neg = y == 1, y == 0
        if metric.name == "false_positive_rate":
            return _ratio(float(wt[neg & flag].sum()), float(wt[neg].sum())), int(neg.sum())
        if metric.name == "false_negative_rate":
            return _ratio(float(wt[pos & ~flag].sum()), float(wt[pos].sum())), int(pos.sum())
        if metric.name == "recall":
            return _ratio(float(wt[pos & flag].sum()), float(wt[pos].sum())), int(pos.sum())
        return _ratio(float(wt[pos & flag].sum()), float(wt[flag].sum())), int(flag.sum())


def _read_windows(con: Any, todo: list[tuple[Measure, Metric, Window]]) -> tuple[pa.Table, pa.Table]:
    """The decisions in the windows to measure, in time order, and the outcomes that happened in
    them or belong to their decisions."""
    since = min(w.start_ns for _, _, w in todo)
    until = max(w.end_ns for _, _, w in todo)
    explore = f", {_SHOWN_SQL} AS shown, {_EXPLORED_SQL} AS explored" if any(
        metric.kind == "exploration" for _, metric, _ in todo) else ""
    dec = _data.arrow(
        con,
        f"SELECT decision_id, unit, timestamp_ns, action, propensity, sample_prob, bundle_version, flight{explore} "
        "FROM decisions WHERE timestamp_ns >= $s AND timestamp_ns < $u ORDER BY timestamp_ns",
        {"s": since, "u": until},
    )
    # an outcome's decision fields count only when the decision is in a window measured
    # (rate@A): decisions outside [since, until) may be absent from the view
    out = _data.arrow(
        con,
        "SELECT o.outcome_id, o.decision_id, o.unit, o.kind, o.value, o.event_ns, o.source, "
        "CASE WHEN d.timestamp_ns >= $s AND d.timestamp_ns < $u THEN d.timestamp_ns END AS d_ts, "
        "CASE WHEN d.timestamp_ns >= $s AND d.timestamp_ns < $u THEN d.action END AS d_action, "
        "CASE WHEN d.timestamp_ns >= $s AND d.timestamp_ns < $u THEN d.sample_prob END AS d_sample_prob "
        "FROM outcomes o LEFT JOIN decisions d ON o.decision_id = d.decision_id "
        "WHERE (o.event_ns >= $s AND o.event_ns < $u) OR (d.timestamp_ns >= $s AND d.timestamp_ns < $u)",
        {"s": since, "u": until},
    )
    return dec, out


class _Frame:
    """The columns of one measurement as numpy arrays, with window slicing."""

    def __init__(self, dec: pa.Table, out: pa.Table, labeled: pa.Table | None, system: System) -> None:
        self.dec, self.out, self.system = dec, out, system
        self.d_ts = dec["timestamp_ns"].to_numpy()
        self.d_action = np.asarray(dec["action"].to_pylist(), dtype=object)
        self.d_w = 1.0 / dec["sample_prob"].to_numpy()
        if "shown" in dec.column_names:  # an exploration share is measured
            self.d_shown = dec["shown"].to_numpy().astype(np.float64)
            self.d_explored = dec["explored"].to_numpy().astype(np.float64)
        self.o_kind = np.asarray(out["kind"].to_pylist(), dtype=object)
        self.o_event = out["event_ns"].to_numpy()
        self.o_did = np.asarray(out["decision_id"].to_pylist(), dtype=object)
        self.o_daction = np.asarray(out["d_action"].to_pylist(), dtype=object)
        self.o_dts = np.nan_to_num(out["d_ts"].to_numpy(zero_copy_only=False).astype(np.float64), nan=-1.0)
        sp = out["d_sample_prob"].to_numpy(zero_copy_only=False).astype(np.float64)
        self.o_dw = np.where(np.isnan(sp), 0.0, 1.0 / np.where(np.isnan(sp), 1.0, sp))
        self.labeled = labeled
        if labeled is not None:
            self.l_ts = labeled["timestamp_ns"].to_numpy()
            self.l_y = labeled["label_value"].to_numpy(zero_copy_only=False).astype(np.int64)
            self.l_w = labeled["weight"].to_numpy(zero_copy_only=False).astype(np.float64)
            self.l_action = np.asarray(labeled["action"].to_pylist(), dtype=object)

    def dec_slice(self, w: Window) -> slice:
        return slice(int(np.searchsorted(self.d_ts, w.start_ns)), int(np.searchsorted(self.d_ts, w.end_ns)))

    def lab_slice(self, w: Window) -> slice:
        return slice(int(np.searchsorted(self.l_ts, w.start_ns)), int(np.searchsorted(self.l_ts, w.end_ns)))

    def input(self, w: Window) -> MetricInput:
        sl = self.dec_slice(w)
        o = (self.o_event >= w.start_ns) & (self.o_event < w.end_ns)
        outs = self.out.filter(pa.array(o)).select(
            ["outcome_id", "decision_id", "unit", "kind", "value", "event_ns", "source"]
        )
        lab = self.labeled.slice(self.lab_slice(w).start, self.lab_slice(w).stop - self.lab_slice(w).start) \
            if self.labeled is not None else pa.table({})
        return MetricInput(w, self.dec.slice(sl.start, sl.stop - sl.start), outs, lab, self.system)


def goal_status(system: System, store: SeriesStore, *, history: int = 8) -> list[dict[str, Any]]:
    """Where each of the system's goals stands: its latest measured value against its target
    (``met``: True / False, None when never measured or no value), and the last ``history``
    values."""
    pts = store.points()
    out = []
    for g in system.goals:
        s = sorted((p for p in pts if p["name"] == g.name), key=lambda p: p["start_ns"])
        valued = [p for p in s if p.get("value") is not None]
        last = valued[-1] if valued else None
        out.append({
            "name": g.name, "level": g.level, "metric": g.metric, "cadence": g.cadence,
            "target": g.target, "direction": g.direction,
            "value": None if last is None else last["value"],
            "window": None if last is None else last["window"],
            "met": None if last is None else Measure.of(g).met(last["value"]),
            "windows_measured": len(s),
            "recent": [p.get("value") for p in s[-history:]],
        })
    return out

"""What comes of a decision: the outcomes a visit produces, with the delays and selective labels
of the real thing, and the queue that delivers them when they are due.

Per decided page load (docs/world.md, "Outcomes"), from counter-based draws so that the same
visit gets the same random numbers whatever was decided:

- **warn** — the user chooses within seconds: ``chose:continue`` (phishing: ``click_through_phish``
  × susceptibility; legitimate: ``click_through_legit``) or ``chose:go_back``;
- **allow**, or warned and continued, on a **phishing** page — the user may fall victim
  (``victim_rate`` × susceptibility × the page's efficacy); victims report it (``reported_phish``, ``victim_report_rate``),
  others who recognize it now and then (``aware_report_rate``), hours to days later;
- **block** on a phishing page — nothing: the loop never hears of it (the selective label);
- **block** on a legitimate page — ``reported_false_block`` (``false_block_report_rate``) within
  minutes, and sometimes the user turns protection off;
- **warn → go back** on a legitimate page — ``reported_false_warning`` now and then;
- **allow** on a legitimate page — a rare mistaken ``reported_phish`` (``false_report_rate``);
- **analysts** label a random sample of the day's decisions by action (``analyst_label``, 1 =
  phishing, 0 = legitimate, wrong with ``error_rate``) a day or two later, and review a share of
  the user reports (triage);
- **abusive reporters** lie: *unblockers* report their campaign's blocked or warned pages as
  ``reported_false_block``; *smearers* report legitimate pages as ``reported_phish``. Their
  reports look exactly like honest ones (``source = "user:<id>"``); only the world knows.

Every user report multiplies its rate by the reporter's propensity. Each outcome carries its
event time and a delivery time (``transport_delay_seconds`` later); :class:`OutcomeQueue`
hands them out once due, in delivery order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.world import _random as R
from closedloop.world.config import WorldConfig
from closedloop.world.users import HONEST, SMEAR, UNBLOCK

__all__ = ["KINDS", "OUTCOME_COLUMNS", "Generated", "OutcomeQueue", "generate"]

#: Outcome kinds the world emits (the system's names).
KINDS = ("chose:go_back", "chose:continue", "reported_phish", "reported_false_block",
         "reported_false_warning", "analyst_label")
_K = {k: i for i, k in enumerate(KINDS)}
_KINDS_ARROW = pa.array(KINDS, type=pa.string())

#: Columns of what :meth:`OutcomeQueue.due` returns: the ingest path's outcome fields
#: (``closedloop.datasets.ingest.OUTCOME_LINE_SCHEMA``) and the delivery time.
OUTCOME_COLUMNS = pa.schema([
    pa.field("outcome_id", pa.string(), nullable=False),
    pa.field("decision_id", pa.string(), nullable=False),
    pa.field("system", pa.string(), nullable=False),
    pa.field("unit", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("event_ns", pa.int64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("deliver_ns", pa.int64(), nullable=False),
])

# purposes of the counter-based draws (distinct per question asked of a visit)
(P_CHOICE, P_CHOICE_DELAY, P_VICTIM, P_REPORT, P_REPORT_DELAY, P_FB, P_FB_DELAY, P_FW, P_FALSE,
 P_FALSE_DELAY, P_DISABLE, P_DISABLE_DAYS, P_AN, P_AN_DELAY, P_AN_ERR, P_AN_WHO, P_TRIAGE, P_TRIAGE_DELAY,
 P_ABUSE, P_ABUSE_DELAY) = range(1, 21)
P_TRANSPORT = 40  # + slot
_SLOTS = ("c", "r", "a", "t")  # choice, user report, analyst sample, analyst triage

_S = 1_000_000_000
_H = 3600 * _S


@dataclass
class Generated:
    """Outcomes of a set of visits, and what the world keeps for itself."""

    table: pa.Table
    kinds: np.ndarray  # per outcome: index into KINDS
    abusive: np.ndarray  # per outcome: reported by an abusive source (truth, never emitted)
    victims: np.ndarray  # per visit: the user fell victim
    continued: np.ndarray  # per visit: warned and continued
    disable: np.ndarray  # visits whose user turns protection off
    disable_days: np.ndarray  # … for this many days


def _exp(u: np.ndarray, mean: float) -> np.ndarray:
    return -np.log1p(-u) * mean


def generate(
    cfg: WorldConfig, key: int, day: int, *, idx: np.ndarray, ts: np.ndarray, action: np.ndarray,
    phish: np.ndarray, role: np.ndarray, susceptibility: np.ndarray, report_mult: np.ndarray,
    efficacy: np.ndarray, decision_ids: pa.Array, units: pa.Array,
) -> Generated:
    """Outcomes of visits ``idx`` (their day indices) given the decisions ``action`` (0 allow,
    1 warn, 2 block). Every other argument is per visit.

    Stages: what the users do (:func:`_behaviour`), then the outcomes it gives — the warned
    users' choices (:func:`_choices`), user reports (:func:`_reports`), analyst labels
    (:func:`_analyst_labels`) — and the table of them all (:func:`_outcome_table`)."""
    b = _behaviour(cfg, key, idx, action, phish, role, susceptibility, report_mult, efficacy)
    parts = _Parts()
    _choices(cfg, key, idx, ts, b, parts)
    r, report_at = _reports(cfg, key, idx, ts, b, parts)
    _analyst_labels(cfg, key, idx, ts, action, phish, r, report_at, parts)
    disable = np.flatnonzero(b.disable)
    if not parts.items:
        empty = OUTCOME_COLUMNS.empty_table()
        return Generated(empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), b.victim, b.cont, disable,
                         b.disable_days[b.disable])
    table, pos, kind, src = _outcome_table(cfg, key, day, idx, parts, decision_ids, units)
    abusive = (src == 1) & ~b.honest[pos]
    return Generated(table, kind, abusive, b.victim, b.cont, disable, b.disable_days[b.disable])


@dataclass
class _Behaviour:
    """What the users of a set of visits do, per visit: who is honest, which decision they met,
    who continued past a warning, fell victim, reports what (honest and abusive reports, in the
    order they take precedence), and who turns protection off (for how many days)."""

    honest: np.ndarray
    warn: np.ndarray
    cont: np.ndarray
    victim: np.ndarray
    rep_phish: np.ndarray
    rep_fb: np.ndarray
    rep_fw: np.ndarray
    rep_false: np.ndarray
    ab_fb: np.ndarray
    ab_ph: np.ndarray
    disable: np.ndarray
    disable_days: np.ndarray


def _behaviour(cfg: WorldConfig, key: int, idx: np.ndarray, action: np.ndarray, phish: np.ndarray, role: np.ndarray,
               susceptibility: np.ndarray, report_mult: np.ndarray, efficacy: np.ndarray) -> _Behaviour:
    """Each visit's user's behaviour (counter-based draws: the same visit gets the same numbers
    whatever was decided)."""
    o = cfg.outcomes
    honest = role == HONEST
    allow, warn, block = action == 0, action == 1, action == 2

    # warnings: the user's choice
    ct = np.where(phish, np.clip(o.click_through_phish * susceptibility, 0.0, 1.0), o.click_through_legit)
    ct = np.where(honest, ct, 1.0)  # abusive reporters always continue to their target
    cont = warn & (R.uniform(key, P_CHOICE, idx) < ct)
    # phishing pages the user saw
    exposed = phish & (allow | cont)
    p_victim = np.clip(o.victim_rate * susceptibility * efficacy, 0.0, 1.0)
    victim = exposed & honest & (R.uniform(key, P_VICTIM, idx) < p_victim)
    u_rep = R.uniform(key, P_REPORT, idx)
    rep_phish = honest & (
        (victim & (u_rep < np.clip(o.victim_report_rate * report_mult, 0, 1)))
        | (exposed & ~victim & (u_rep < np.clip(o.aware_report_rate * report_mult, 0, 1)))
    )
    legit = ~phish
    u_fb = R.uniform(key, P_FB, idx)
    rep_fb = honest & legit & block & (u_fb < np.clip(o.false_block_report_rate * report_mult, 0, 1))
    rep_fw = honest & legit & warn & ~cont & (R.uniform(key, P_FW, idx) < np.clip(o.false_warning_report_rate * report_mult, 0, 1))
    rep_false = honest & legit & allow & (R.uniform(key, P_FALSE, idx) < np.clip(o.false_report_rate * report_mult, 0, 1))
    # abusive reporters
    u_ab = R.uniform(key, P_ABUSE, idx) < cfg.abuse.report_prob
    ab_fb = (role == UNBLOCK) & phish & (block | warn) & u_ab
    ab_ph = (role == SMEAR) & legit & u_ab
    disable = honest & legit & block & (R.uniform(key, P_DISABLE, idx) < cfg.users.disable_protection_per_false_block)
    disable_days = np.maximum(1, np.ceil(_exp(R.uniform(key, P_DISABLE_DAYS, idx), cfg.users.reenable_mean_days)))
    return _Behaviour(honest, warn, cont, victim, rep_phish, rep_fb, rep_fw, rep_false, ab_fb, ab_ph, disable, disable_days)


class _Parts:
    """The outcomes gathered so far, as parts: (visit positions, slot, kind codes, values,
    event ns, source: 0 client, 1 user, 2 analyst)."""

    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, int]] = []

    def add(self, pos: np.ndarray, slot: int, kind: Any, value: Any, event: np.ndarray, source: int) -> None:
        if pos.size:
            self.items.append((pos, slot, np.broadcast_to(np.asarray(kind, dtype=np.int64), pos.shape),
                               np.broadcast_to(np.asarray(value, dtype=np.float64), pos.shape), event, source))


def _choices(cfg: WorldConfig, key: int, idx: np.ndarray, ts: np.ndarray, b: _Behaviour, parts: _Parts) -> None:
    """The warned users' choices (client telemetry, seconds later)."""
    w = np.flatnonzero(b.warn)
    if w.size:
        delay = _exp(R.uniform(key, P_CHOICE_DELAY, idx[w]), cfg.outcomes.choice_delay_seconds * _S).astype(np.int64)
        parts.add(w, 0, np.where(b.cont[w], _K["chose:continue"], _K["chose:go_back"]), 1.0, ts[w] + 1 + delay, 0)


def _reports(cfg: WorldConfig, key: int, idx: np.ndarray, ts: np.ndarray, b: _Behaviour,
             parts: _Parts) -> tuple[np.ndarray, np.ndarray]:
    """User reports, one at most per visit (the first kind that applies, in :class:`_Behaviour`'s
    order), each with its delay → (positions of the reported visits, every visit's report time)."""
    o = cfg.outcomes
    n = idx.size
    report_kind = np.full(n, -1, dtype=np.int64)
    report_at = np.zeros(n, dtype=np.int64)
    z = R.normal(key, P_REPORT_DELAY, idx)
    for mask, kind_name, median_ns, sigma in (
        (b.rep_phish, "reported_phish", o.report_delay_median_hours * _H, o.report_delay_sigma),
        (b.rep_fb, "reported_false_block", o.false_block_delay_median_minutes * 60 * _S, 1.0),
        (b.rep_fw, "reported_false_warning", o.false_block_delay_median_minutes * 60 * _S, 1.0),
        (b.rep_false, "reported_phish", o.false_report_delay_median_hours * _H, 1.0),
        (b.ab_fb, "reported_false_block", cfg.abuse.delay_median_minutes * 60 * _S, 1.0),
        (b.ab_ph, "reported_phish", cfg.abuse.delay_median_minutes * 60 * _S, 1.0),
    ):
        pos = np.flatnonzero(mask & (report_kind < 0))
        report_kind[pos] = _K[kind_name]
        report_at[pos] = ts[pos] + 1 + (median_ns * np.exp(sigma * z[pos])).astype(np.int64)
    r = np.flatnonzero(report_kind >= 0)
    parts.add(r, 1, report_kind[r], 1.0, report_at[r], 1)
    return r, report_at


def _analyst_labels(cfg: WorldConfig, key: int, idx: np.ndarray, ts: np.ndarray, action: np.ndarray, phish: np.ndarray,
                    r: np.ndarray, report_at: np.ndarray, parts: _Parts) -> None:
    """Analysts label a random sample of the decisions by action, and a share of the reports
    ``r`` (triage) after their report time; a label is wrong with ``error_rate``."""
    an = cfg.analysts
    rate = np.asarray(an.sample_rate)[action]
    a = np.flatnonzero(R.uniform(key, P_AN, idx) < rate)
    label = phish ^ (R.uniform(key, P_AN_ERR, idx) < an.error_rate)
    if a.size:
        delay = R.lognormal(key, P_AN_DELAY, idx[a], an.delay_median_hours * _H, an.delay_sigma).astype(np.int64)
        parts.add(a, 2, _K["analyst_label"], label[a].astype(np.float64), ts[a] + 1 + delay, 2)
    t = r[R.uniform(key, P_TRIAGE, idx[r]) < an.triage_share] if r.size else r
    if t.size:
        delay = R.lognormal(key, P_TRIAGE_DELAY, idx[t], an.delay_median_hours * _H, an.delay_sigma).astype(np.int64)
        parts.add(t, 3, _K["analyst_label"], label[t].astype(np.float64), report_at[t] + delay, 2)


def _outcome_table(cfg: WorldConfig, key: int, day: int, idx: np.ndarray, parts: _Parts, decision_ids: pa.Array,
                   units: pa.Array) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """Every part as one table (:data:`OUTCOME_COLUMNS`), with each outcome's delivery time
    (``transport_delay_seconds`` later) and source (the client, the reporting user, or analyst
    k) → (table, visit positions, kind codes, source codes)."""
    items, o, an = parts.items, cfg.outcomes, cfg.analysts
    pos = np.concatenate([p[0] for p in items])
    slot = np.concatenate([np.full(p[0].size, p[1], dtype=np.int64) for p in items])
    kind = np.concatenate([p[2] for p in items])
    value = np.concatenate([p[3] for p in items])
    event = np.concatenate([p[4] for p in items])
    src = np.concatenate([np.full(p[0].size, p[5], dtype=np.int64) for p in items])
    deliver = event + _exp(R.uniform(key, P_TRANSPORT, idx[pos] * 4 + slot), o.transport_delay_seconds * _S).astype(np.int64)
    take = pa.array(pos)
    dec = decision_ids.take(take)
    unit = units.take(take)
    # sources: the client, the reporting user, or analyst k
    who = np.floor(R.uniform(key, P_AN_WHO, idx[pos] * 4 + slot) * an.count).astype(np.int64)
    names = pa.array(["client", *[f"analyst:{k}" for k in range(an.count)]], type=pa.string())
    fixed = names.take(pa.array(np.where(src == 2, 1 + who, 0)))
    user_src = pc.binary_join_element_wise("user:", unit, "")
    source = pc.if_else(pa.array(src == 1), user_src, fixed)
    oid = [f"{day:05d}-{i:09d}-{_SLOTS[s]}" for i, s in zip(idx[pos].tolist(), slot.tolist(), strict=True)]
    table = pa.table({
        "outcome_id": pa.array(oid, type=pa.string()),
        "decision_id": dec,
        "system": pa.array(np.full(pos.size, cfg.world.system, dtype=object), type=pa.string()),
        "unit": unit,
        "kind": _KINDS_ARROW.take(pa.array(kind)),
        "value": pa.array(value, type=pa.float64()),
        "event_ns": pa.array(event, type=pa.int64()),
        "source": source,
        "deliver_ns": pa.array(deliver, type=pa.int64()),
    }, schema=OUTCOME_COLUMNS)
    return table, pos, kind, src


class OutcomeQueue:
    """Outcomes waiting for their delivery time."""

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._sorted: pa.Table = OUTCOME_COLUMNS.empty_table()

    def push(self, table: pa.Table) -> None:
        if table.num_rows:
            self._parts.append(table)

    def _table(self) -> pa.Table:
        if self._parts:
            self._sorted = pa.concat_tables([self._sorted, *self._parts]).sort_by(
                [("deliver_ns", "ascending"), ("outcome_id", "ascending")]
            )
            self._parts = []
        return self._sorted

    def __len__(self) -> int:
        return self._table().num_rows

    def due(self, until_ns: int) -> pa.Table:
        """Pop every outcome with ``deliver_ns <= until_ns`` (in delivery order)."""
        t = self._table()
        d = t["deliver_ns"].to_numpy()
        k = int(np.searchsorted(d, until_ns, side="right"))
        out, self._sorted = t.slice(0, k), t.slice(k)
        return out.combine_chunks() if out.num_rows else OUTCOME_COLUMNS.empty_table()

    def peek(self) -> pa.Table:
        """Everything still pending (not removed)."""
        return self._table()

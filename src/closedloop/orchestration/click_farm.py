"""Click farms: a few units (users) whose clicks go to items clicked mostly by those same few units.

A system that learns from rewards has no analysts' labels to judge its outcome sources against
(:class:`~closedloop.orchestration.abuse.AbusePolicy` needs a label policy), and its abusers do not
come as a separate source: a click farm clicks through the same app as everyone, from a few units
of its own, on the items it promotes. Its clicks would teach the next reward model that those items
are what users want. :class:`ClickFarmPolicy` judges every **unit** over a trailing ``window`` of
decisions (up to the cycle's time). **shown**: the slots the unit's decisions showed (the slate's
length, summed); **clicks**: the shown slots with a positive outcome of a reward kind (``kinds``;
default: the system's reward policy's), linked by decision id and candidate id, each (decision,
candidate) once. Units with fewer than ``min_shown`` shown slots or ``min_clicks`` clicks are
trusted (too little to judge). A judged unit is quarantined on either of two paths:

**A ring** (whatever its click-through). An item is a *ring item* when it has ``ring_min_clicks``
clicks or more in the window and its top ``ring_units`` clicking units hold at least
``concentration`` of them; its *top clickers* are the judged units of those (ties at the cut
included). Two units are *partners* when they are top clickers together of ``ring_min_shared``
ring items or more. A unit's **ring share** is the share of its clicks on ring items it is a top
clicker of together with one of its partners. The ring's members are the units whose ring share
is at least ``concentration`` and one of whose partners is a member too (a ring has two members at
least; the units without one are left out until none is). The farm's signature: its units click
its items, which are clicked mostly by its units, and again and again by the same few of them. An
honest user's clicked items are clicked mostly by many others — a heavy user's too, a popular
item's top few clickers hold little of its clicks; a fan of niche items nobody else clicks has no
partner; two strangers who happen to be the only clickers of an obscure item or two are not
partners (fewer than ``ring_min_shared``, 5: on the feed world at 20,000 sessions a day under the
heuristic the honest units' ring shares reach 25% with 3 and 39% with 2; under the feed demo's
closed loop, whose affinity model shows each user their own categories again and again, 2 to 21
honest heavy users a day crossed a bar of 50% with 3 — none with 5 and a ``concentration`` of 55%,
the farm's five units caught on every day measured, their ring shares 72–95%).
Why a ring share with *any* partner and not only with the members: recounting each unit's share
with the members only, after the units below the bar are left out, cascades — a farm unit whose
share dips (its items made popular, clicked by everyone) takes the items it shared with the others
out of their shares, and a whole farm can fall under the bar on one day (measured on the feed
world at 20,000 sessions a day: four of five units at 57–63% fell to none).

**Far above the population and concentrated** — a lone bot on a few items, which no ring shows:
the unit's click-through is at least ``ctr_ratio`` times the population's rate, *and* an exact
one-sided binomial test of "clicks out of shown at the population's rate" gives a p-value below
``alpha`` / m, m the units with at least ``min_shown`` shown slots (Bonferroni: ``alpha`` bounds the
chance that any honest unit of the window is flagged by the test, not each), *and* its
``top_items`` most clicked items hold at least ``concentration`` of its clicks. The population's
rate is that of the units under the bar: the units at or over ``ctr_ratio`` × everyone's rate are
set aside once and the rate is taken from the rest — a large farm (and the heavy users) must not
raise the rate they are all compared with. Once, not until nothing moves: repeated, setting aside
the units over the bar lowers the rate, which puts more units over it, and with a low bar the rate
can fall towards that of the units that barely click. Click-through alone flags the honest heavy
user (two or three times the average, across many items); concentration alone flags the honest
fan who comes back to one item at an ordinary rate: this path needs both. It is not enough
alone: a farm whose units are shown many other things clicks *below* the population's rate (the
feed world's farm at 10,000 sessions a day: its items are a small share of its units' slates).

Not caught: a farm whose items honest users click more than it does (they are not ring items —
then its clicks are a minority of the feedback on them), a ring larger than ``ring_units`` whose
members all click each item, units under ``min_shown`` / ``min_clicks`` each (many units, few
clicks: fewer clicks to matter), and clicks linked by unit and time only (``link="unit_time"``
outcomes without a decision id are not read). Read as a ring: two or more honest users who are the
only clickers of the same niche items, again and again, for most of their clicks.

Verdicts: one declared in ``trusted`` is trusted; a unit on either path is **quarantined** — its
decisions are left out of the reward datasets (``build_reward_dataset(exclude_units=...)``). Each
verdict carries its reason in words. The report lists the units whose click-through crossed
``ctr_ratio`` and the ring's members (the others are trusted and not listed, so that a million
users do not fill the cycle record), and the **items** the quarantined units clicked: each with
its clicks in the window, those from quarantined units and the distinct units that clicked it — an
item most of whose clicks came from the farm is named there for an operator to look at, but its
rows stay in the dataset: the honest users' clicks and non-clicks on it are real feedback, and
with the farm's units left out, the farm's clicks are gone already.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.orchestration import _data
from closedloop.system.spec import System

__all__ = ["ClickFarmPolicy", "ClickFarmReport"]


@dataclass(frozen=True)
class ClickFarmReport:
    """``population``: the window's units, the units judged (≥ ``min_shown``), shown slots, clicks,
    click-through and the ring's members; ``units``: per unit whose click-through crossed
    ``ctr_ratio`` × the others' or that is a ring member — ``{"unit", "decisions", "shown", "clicks",
    "ctr", "population_ctr", "ratio", "p_value", "top_items", "top_share", "ring_share",
    "ring_partners", "verdict", "reason"}``; ``items``: the items the quarantined units clicked
    (``{"item", "clicks", "farm_clicks", "farm_share", "units"}``)."""

    population: dict[str, Any] = field(default_factory=dict)
    units: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def quarantined(self) -> list[str]:
        return sorted(u["unit"] for u in self.units if u["verdict"] == "quarantined")

    def verdict(self, unit: str) -> str:
        """The verdict of ``unit`` (a unit not listed is trusted)."""
        return next((u["verdict"] for u in self.units if u["unit"] == unit), "trusted")

    def to_dict(self) -> dict[str, Any]:
        return {"population": self.population, "units": self.units, "items": self.items, "quarantined": self.quarantined}


def _number(name: str, v: Any, lo: float, hi: float | None, *, open_lo: bool = True) -> float:
    ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
    ok = ok and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
    if not ok:
        span = f"{'(' if open_lo else '['}{lo}, {'∞)' if hi is None else f'{hi}]'}"
        raise SpecError(f"The '{name}' parameter of ClickFarmPolicy must be a number in {span}. Got {v!r} instead.")
    return float(v)


def _count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SpecError(f"The '{name}' parameter of ClickFarmPolicy must be an integer ≥ 1. Got {v!r} instead.")
    return v


class ClickFarmPolicy:
    """Judges the units of a system that learns from rewards by their clicks (module docstring)."""

    def __init__(
        self,
        *,
        window: timedelta = timedelta(days=7),
        kinds: Sequence[str] | None = None,
        ctr_ratio: float = 1.5,
        alpha: float = 0.001,
        top_items: int = 3,
        concentration: float = 0.55,
        min_shown: int = 100,
        min_clicks: int = 20,
        ring_units: int = 5,
        ring_min_clicks: int = 2,
        ring_min_shared: int = 5,
        trusted: Sequence[str] = (),
    ) -> None:
        if not isinstance(window, timedelta) or window <= timedelta(0):
            raise SpecError(f"The 'window' parameter of ClickFarmPolicy must be a positive timedelta. Got {window!r} instead.")
        self.window = window
        if kinds is not None and (isinstance(kinds, str) or not kinds or not all(isinstance(k, str) and k for k in kinds)):
            raise SpecError(f"The 'kinds' parameter of ClickFarmPolicy must be a list of outcome kinds or None. Got {kinds!r} instead.")
        self.kinds = None if kinds is None else list(kinds)
        self.ctr_ratio = _number("ctr_ratio", ctr_ratio, 1.0, None)
        self.alpha = _number("alpha", alpha, 0.0, 1.0)
        self.top_items = _count("top_items", top_items)
        self.concentration = _number("concentration", concentration, 0.0, 1.0)
        self.min_shown = _count("min_shown", min_shown)
        self.min_clicks = _count("min_clicks", min_clicks)
        self.ring_units = _count("ring_units", ring_units)
        self.ring_min_clicks = _count("ring_min_clicks", ring_min_clicks)
        self.ring_min_shared = _count("ring_min_shared", ring_min_shared)
        if isinstance(trusted, str) or not all(isinstance(u, str) for u in trusted):
            raise SpecError(f"The 'trusted' parameter of ClickFarmPolicy must be a list of units. Got {trusted!r} instead.")
        self.trusted = sorted(set(trusted))

    def describe(self) -> dict[str, Any]:
        return {
            "window_seconds": self.window.total_seconds(), "kinds": self.kinds, "ctr_ratio": self.ctr_ratio,
            "alpha": self.alpha, "top_items": self.top_items, "concentration": self.concentration,
            "min_shown": self.min_shown, "min_clicks": self.min_clicks, "ring_units": self.ring_units,
            "ring_min_clicks": self.ring_min_clicks, "ring_min_shared": self.ring_min_shared, "trusted": self.trusted,
        }

    def check(self, system: System, decision_files: Sequence[Path | str], outcome_files: Sequence[Path | str],
              now_ns: int) -> ClickFarmReport:
        """Judge every unit from the decisions of ``[now_ns − window, now_ns)`` and their outcomes,
        as ingested by ``now_ns``."""
        kinds = self.kinds if self.kinds is not None else list(system.rewards.kinds) if system.rewards is not None else None
        if not kinds:
            raise SpecError(f"ClickFarmPolicy needs the outcome kinds that count as clicks: system '{system.name}' declares "
                            "no rewards; pass ClickFarmPolicy(kinds=[...]).")
        since = int(now_ns) - int(self.window.total_seconds() * 1e9)
        con = _data.connect(system.name, _data.files_since(decision_files, "timestamp_ns", since), outcome_files, now_ns)
        try:
            population, rows, ring = _read_units(con, kinds, since, int(now_ns), self)
            units = [self._judge(r, population, ring.get(r[0])) for r in rows]
            farm = sorted(u["unit"] for u in units if u["verdict"] == "quarantined")
            items = _farm_items(con, farm) if farm else []
        finally:
            con.close()
        return ClickFarmReport(population, units, items)

    def _judge(self, row: tuple[Any, ...], population: dict[str, Any], ring: dict[str, Any] | None) -> dict[str, Any]:
        """One unit's verdict: ``row`` is (unit, decisions, shown, clicks, top items, the base's shown
        and clicks); ``ring`` its ring clicks and partners when it is a ring member."""
        from scipy.stats import binomtest

        unit, decisions, shown, clicks, top, others_shown, others_clicks = row
        rate = others_clicks / others_shown if others_shown else 0.0
        ctr = clicks / shown
        # the population never clicked: any click is beyond it; it clicked everything: none can be
        p = float(binomtest(int(clicks), int(shown), rate, alternative="greater").pvalue) if 0.0 < rate < 1.0 else float(rate >= 1.0)
        top_n = sum(int(t["n"]) for t in top)
        share = top_n / clicks if clicks else 0.0
        ring_share = ring["ring_clicks"] / clicks if ring else 0.0
        level = self.alpha / max(int(population["judged"]), 1)
        ratio = ctr / rate if rate else None  # None, not infinity: the record is JSON
        times = f"{ratio:.1f}×" if ratio is not None else "infinitely above"
        far = f"clicks {clicks} of {shown} shown slots ({ctr:.1%}, {times} the population's {rate:.1%}; binomial p = {p:.2g}"
        top_words = f"its top {self.top_items} items hold {share:.0%} of its clicks"
        if unit in self.trusted:
            verdict, reason = "trusted", "declared trusted"
        elif clicks >= self.ctr_ratio * rate * shown and p < level and share >= self.concentration:
            verdict, reason = "quarantined", f"{far} < {level:.2g}) and {top_words} (≥ {self.concentration:.0%}): a click farm"
        elif ring is not None:
            verdict, reason = "quarantined", f"{far}) and {_ring_words(ring, clicks, self)}: a click ring"
        elif p >= level:
            verdict, reason = "trusted", f"{far} ≥ {level:.2g}, not significant)"
        else:
            verdict, reason = "trusted", (f"{far} < {level:.2g}) but {top_words} (< {self.concentration:.0%}) and it is in no ring: "
                                          "a heavy user")
        return {"unit": unit, "decisions": int(decisions), "shown": int(shown), "clicks": int(clicks), "ctr": ctr,
                "population_ctr": rate, "ratio": ratio, "p_value": p,
                "top_items": [{"item": t["item"], "clicks": int(t["n"])} for t in top], "top_share": share,
                "ring_share": ring_share, "ring_partners": ring["partners"] if ring else [], "verdict": verdict, "reason": reason}


def _ring_words(ring: dict[str, Any], clicks: int, policy: ClickFarmPolicy) -> str:
    """Why a ring member is one, in words."""
    partners = ring["partners"]
    names = ", ".join(repr(u) for u in partners[:5]) + (f" and {len(partners) - 5} more" if len(partners) > 5 else "")
    return (f"{ring['ring_clicks']} of its {clicks} clicks ({ring['ring_clicks'] / clicks:.0%}, ≥ {policy.concentration:.0%}) "
            f"are on items whose clicks come mostly (≥ {policy.concentration:.0%}) from their top {policy.ring_units} clickers, "
            f"it among them with a partner (a unit that is a top clicker with it of ≥ {policy.ring_min_shared} such items); "
            f"its partners in the ring: {names}")


def _read_units(con: Any, kinds: list[str], since: int, now: int,
                policy: ClickFarmPolicy) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """The population's figures; the units over the click-through bar and the ring's members: (unit,
    decisions, shown, clicks, top items, the base's shown slots and clicks — the units under the
    bar); and the ring (:func:`_ring`)."""
    con.execute(f"""CREATE TEMP TABLE d AS SELECT decision_id, unit, slate FROM decisions
        WHERE timestamp_ns >= {since} AND timestamp_ns < {now} AND unit IS NOT NULL AND slate IS NOT NULL""")
    # each shown slot clicked once, whatever the number of its positive outcomes
    con.execute(f"""CREATE TEMP TABLE c AS SELECT DISTINCT d.unit, d.decision_id, o.candidate_id AS item
        FROM outcomes o JOIN d ON d.decision_id = o.decision_id
        WHERE o.kind IN {_data.sql_list(kinds)} AND o.value <> 0 AND o.candidate_id IS NOT NULL
          AND list_contains(d.slate, o.candidate_id)""")
    con.execute("""CREATE TEMP TABLE u AS
        WITH s AS (SELECT unit, count(*) AS decisions, sum(len(slate)) AS shown FROM d GROUP BY unit),
        per_item AS (SELECT unit, item, count(*) AS n FROM c GROUP BY unit, item)
        SELECT s.unit, s.decisions, s.shown, coalesce(k.clicks, 0) AS clicks, k.top
        FROM s LEFT JOIN (
          SELECT unit, sum(n) AS clicks, list(struct_pack(item := item, n := n) ORDER BY n DESC, item) AS top
          FROM per_item GROUP BY unit
        ) k ON k.unit = s.unit""")
    got = con.execute("SELECT count(*), count(*) FILTER (WHERE shown >= $m), coalesce(sum(shown), 0), coalesce(sum(clicks), 0) "
                      "FROM u", {"m": policy.min_shown}).fetchone()
    n_units, judged, shown, clicks = (int(v) for v in got) if got is not None else (0, 0, 0, 0)
    enough = f"shown >= {policy.min_shown} AND clicks >= {policy.min_clicks}"
    over = f"{enough} AND clicks >= {policy.ctr_ratio} * $rate * shown"
    rate = clicks / shown if shown else 0.0
    # once: the units over the bar at everyone's rate set aside, the rate of the rest
    got = con.execute(f"SELECT coalesce(sum(shown), 0), coalesce(sum(clicks), 0) FROM u WHERE {over}", {"rate": rate}).fetchone()
    base = (shown - int(got[0]), clicks - int(got[1])) if got is not None else (shown, clicks)
    rate = base[1] / base[0] if base[0] else 0.0
    population = {"since_ns": since, "until_ns": now, "units": n_units, "judged": judged, "shown": shown, "clicks": clicks,
                  "ctr": clicks / shown if shown else None, "base_shown": base[0], "base_clicks": base[1],
                  "base_ctr": rate if base[0] else None}
    ring = _ring(con, policy, enough)  # leaves its members in the table `members`
    population["ring_members"] = len(ring)
    rows = con.execute(f"""SELECT u.unit, decisions, shown, clicks, top[1:{policy.top_items}], {base[0]}, {base[1]}
        FROM u WHERE ({over} AND {base[0]} > 0) OR unit IN (SELECT unit FROM members) ORDER BY u.unit""", {"rate": rate}).fetchall()
    return population, rows, ring


def _ring(con: Any, policy: ClickFarmPolicy, judged: str) -> dict[str, dict[str, Any]]:
    """The ring (module doc): its members → their ring clicks and their partners among the members;
    the members are left in the table ``members``."""
    r, conc = policy.ring_units, policy.concentration
    # each judged unit's clicks on a ring item where it is one of the item's top clickers (ties at the cut included)
    con.execute(f"""CREATE TEMP TABLE tops AS
        WITH iu AS (SELECT item, unit, count(*) AS n, rank() OVER (PARTITION BY item ORDER BY count(*) DESC) AS rk,
                           row_number() OVER (PARTITION BY item ORDER BY count(*) DESC, unit) AS nth,
                           sum(count(*)) OVER (PARTITION BY item) AS item_clicks
                    FROM c GROUP BY item, unit),
             ring AS (SELECT item FROM iu GROUP BY item
                      HAVING max(item_clicks) >= {policy.ring_min_clicks}
                         AND sum(n) FILTER (WHERE nth <= {r}) >= {conc} * max(item_clicks))
        SELECT iu.item, iu.unit, iu.n FROM iu JOIN ring ON ring.item = iu.item
        WHERE iu.rk <= {r} AND iu.unit IN (SELECT unit FROM u WHERE {judged})""")
    # partners: two units among the top clickers of at least ring_min_shared ring items together
    con.execute(f"""CREATE TEMP TABLE pairs AS SELECT a.unit AS ua, b.unit AS ub, count(*) AS shared
        FROM tops a JOIN tops b ON a.item = b.item AND a.unit <> b.unit GROUP BY 1, 2 HAVING count(*) >= {policy.ring_min_shared}""")
    # a unit's ring clicks: on ring items where one of its partners is a top clicker with it
    rows = con.execute("""
        WITH ri AS (SELECT a.unit, a.item, any_value(a.n) AS n, list(DISTINCT b.unit) AS partners
                    FROM tops a JOIN tops b ON a.item = b.item JOIN pairs p ON p.ua = a.unit AND p.ub = b.unit GROUP BY a.unit, a.item)
        SELECT ri.unit, sum(ri.n), flatten(list(ri.partners)), any_value(u.clicks) FROM ri JOIN u ON u.unit = ri.unit
        GROUP BY ri.unit""").fetchall()
    clicks_of = {str(unit): int(n) for unit, n, _, clicks in rows if n >= conc * clicks}
    partners_of = {str(unit): {str(p) for p in partners} for unit, _, partners, _ in rows if unit in clicks_of}
    # a ring has two members at least: a unit none of whose partners is a member is not one (until none is left out)
    while True:
        kept = {unit: ps & partners_of.keys() for unit, ps in partners_of.items() if ps & partners_of.keys()}
        stable, partners_of = len(kept) == len(partners_of), kept
        if stable:
            break
    con.execute("CREATE TEMP TABLE members (unit VARCHAR)")
    if partners_of:
        con.execute(f"INSERT INTO members SELECT unit FROM u WHERE unit IN {_data.sql_list(sorted(partners_of))}")
    return {unit: {"ring_clicks": clicks_of[unit], "partners": sorted(ps)} for unit, ps in partners_of.items()}


def _farm_items(con: Any, farm: list[str]) -> list[dict[str, Any]]:
    """The items the quarantined units clicked in the window: all their clicks, the farm's, its
    share and the distinct units that clicked each — the farm's share first."""
    rows = con.execute(f"""
        SELECT item, count(*) AS clicks, count(*) FILTER (WHERE unit IN {_data.sql_list(farm)}) AS farm_clicks,
               count(DISTINCT unit) AS units
        FROM c WHERE item IN (SELECT item FROM c WHERE unit IN {_data.sql_list(farm)})
        GROUP BY item ORDER BY farm_clicks * 1.0 / clicks DESC, farm_clicks DESC, item LIMIT 20""").fetchall()
    return [{"item": i, "clicks": int(n), "farm_clicks": int(f), "farm_share": f / n, "units": int(u)} for i, n, f, u in rows]

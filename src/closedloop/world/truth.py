"""Ground truth, for measurement only: what the world knows and never hands to the loop.

:func:`truth_table` answers, per decision id, what the page really was (phishing or not, which
campaign, kit generation, template and brand, which legitimate kind) and who loaded it (an
abusive source or not); :func:`measure_day` counts a day's loads and what the decisions did to
them (:meth:`~.phishing.PhishingWorld.truth` and :meth:`~.phishing.PhishingWorld.measure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.world._ids import parse_counters
from closedloop.world.config import ACTIONS, LEGIT_KINDS
from closedloop.world.outcomes import KINDS
from closedloop.world.users import HONEST
from closedloop.world.visits import NOT_ASKED, WAITING, DayRecord

if TYPE_CHECKING:
    from closedloop.world.phishing import PhishingWorld

__all__ = ["measure_day", "truth_table"]


def truth_table(world: PhishingWorld, decision_ids: Any) -> pa.Table:
    """Ground truth of decisions by id: ``decision_id, known, is_phish, campaign_id,
    generation, template, brand, legit_kind, abusive_source, action``. Ids the world did not
    issue have ``known`` False."""
    ids = decision_ids if isinstance(decision_ids, pa.Array) else pa.array(list(decision_ids), type=pa.string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    counter, ok = parse_counters(ids)
    rel = counter.astype(np.int64) - np.int64(world._id_base)
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
    for d in np.unique(day[known]).tolist():
        D = world._days.get(int(d))
        sel = np.flatnonzero(known & (day == d))
        if D is None:
            known[sel] = False
            continue
        i = idx[sel]
        good = (i < D.n)
        good[good] = D.action[i[good]] != NOT_ASKED
        known[sel[~good]] = False
        _fill_truth(world, D, sel[good], i[good], out)
    return pa.table({
        "decision_id": ids, "known": pa.array(known),
        **{k: pa.array(v.tolist() if v.dtype == object else v) for k, v in out.items()},
    })


def _fill_truth(world: PhishingWorld, D: DayRecord, sel: np.ndarray, i: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Rows ``sel`` of ``out``: the truth of day ``D``'s loads ``i``."""
    cfg, cat, camps = world.config, world.catalog, world.campaigns
    tmpl_names = np.array([t.name for t in cfg.phish.templates] + [""], dtype=object)
    brand_names = np.array([b.name for b in cfg.brands] + [""], dtype=object)
    kind_names = np.array(list(LEGIT_KINDS) + [""], dtype=object)
    action_names = np.array([*ACTIONS, None, None], dtype=object)  # -2, -1 → None
    pg = D.page[i]
    c = D.campaign[i]
    out["is_phish"][sel] = D.phish[i]
    out["campaign_id"][sel] = c
    out["generation"][sel] = np.where(c >= 0, cat.cols["generation"][pg], -1)
    out["template"][sel] = tmpl_names[np.where(c >= 0, camps.template[np.maximum(c, 0)], -1)]
    out["brand"][sel] = brand_names[np.where(c >= 0, camps.brand[np.maximum(c, 0)], -1)]
    kinds = cat.cols["kind"][pg].astype(np.int64)
    out["legit_kind"][sel] = kind_names[np.where(kinds >= 0, kinds, -1)]
    out["abusive_source"][sel] = D.role[i] != HONEST
    out["action"][sel] = action_names[D.action[i].astype(np.int64)]


def measure_day(world: PhishingWorld, day: int) -> dict[str, Any]:
    """Ground-truth counts of ``day``: page loads decided or not, what the decisions did to
    phishing and legitimate loads, rates per 1,000, victims, outcomes emitted (honest and
    abusive), campaigns and adaptations, users' protection.

    Rates are over honest users' loads (abusive reporters are not users to protect)."""
    D = world._days.get(day)
    if D is None:
        raise SpecError(f"PhishingWorld.measure 'day' must be a day already drawn (0…{world.day}). Got {day!r} instead.")
    honest = D.role == HONEST
    asked = D.action != NOT_ASKED
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
        "waiting": cnt(D.action == WAITING),
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
        "faulted_labels": world._fault_hits.get(day, 0),
        "protected_share": float(world.users.protected.mean()) if day == world.day else None,
        "active_campaigns": int(world.campaigns.active(day).size),
        "campaigns_adapted": list(D.adapted),
        "campaigns_retooling": list(D.retool_decided),
    }
    return out

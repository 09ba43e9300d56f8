"""A day's page loads: what the world hands out (:class:`Visits`: contexts, decision ids,
timestamps — no ground truth) and what it keeps (:class:`DayRecord`: every load's page, user,
campaign and what was decided).

:func:`visit_contexts` builds the contexts of some of a day's loads from the record, the catalog
(page attributes as of that day) and the users; the referrer is picked by the load's own draw
(``DayRecord.u_ref``), search and social for legitimate pages, mostly webmail for phishing ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.world.config import BROWSERS, WorldConfig
from closedloop.world.outcomes import KINDS
from closedloop.world.pages import EMAIL_REFERRERS, LEGIT_REFERRERS, OTHER_PHISH_REFERRERS, Catalog
from closedloop.world.users import Users

__all__ = ["NOT_ASKED", "WAITING", "DayRecord", "Visits", "visit_contexts"]

_REFERRERS = pa.array(LEGIT_REFERRERS + EMAIL_REFERRERS + OTHER_PHISH_REFERRERS, type=pa.string())
_BROWSERS = pa.array(BROWSERS, type=pa.string())
NOT_ASKED = -2  # a visit of an unprotected user: not decided
WAITING = -1  # decided visit not yet observed


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
class DayRecord:
    """Ground truth of one day: every generated page load, decided or not (index = day index)."""

    day: int
    ts: np.ndarray
    user: np.ndarray
    page: np.ndarray
    phish: np.ndarray
    campaign: np.ndarray
    role: np.ndarray
    action: np.ndarray  # ACTIONS code, WAITING, or NOT_ASKED
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


def visit_contexts(cfg: WorldConfig, users: Users, cat: Catalog, D: DayRecord, rows: np.ndarray) -> dict[str, Any]:
    """The contexts of day ``D``'s visits ``rows`` (page attributes as of that day): exactly the
    phishing system's context fields, as Arrow or numpy columns."""
    d = D.day
    pg, us = D.page[rows], D.user[rows]
    C = cat.cols
    age = C["age0"][pg] + np.where(C["age_fixed"][pg], 0.0, (d - C["born"][pg]).astype(np.float64))
    ref = _referrers(cfg, D.u_ref[rows], D.phish[rows])
    countries = pa.array([c for c, _ in cfg.users.countries], type=pa.string())
    take = pa.array(pg)
    return {
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


def _referrers(cfg: WorldConfig, ur: np.ndarray, phish: np.ndarray) -> np.ndarray:
    """Each visit's referrer (an index into the referrers) from its draw ``ur``: search and
    social for legitimate pages; webmail (``referrer_email_share``) or else a chat or social
    site for phishing ones."""
    nl, ne, no = len(LEGIT_REFERRERS), len(EMAIL_REFERRERS), len(OTHER_PHISH_REFERRERS)
    share = cfg.phish.referrer_email_share
    email = ur < share
    ph_ref = np.where(
        email, nl + (ur / max(share, 1e-12) * ne).astype(np.int64).clip(0, ne - 1),
        nl + ne + ((ur - share) / max(1.0 - share, 1e-12) * no).astype(np.int64).clip(0, no - 1),
    )
    return np.where(phish, ph_ref, (ur * nl).astype(np.int64).clip(0, nl - 1))

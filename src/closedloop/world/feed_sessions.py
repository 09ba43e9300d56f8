"""A day of the feed world: its sessions, their retrieved candidates, and the slates shown.

:class:`Sessions` is the day's ground-truth record (which user, which items, how attractive each
is — world-internal) and the contexts the system sees (:meth:`Sessions.requests`,
:meth:`Sessions.candidates`: exactly the feed system's fields, columnar, for
``Runtime.decide_batch``). :func:`retrieve` is the retrieval step; :func:`slates` turns what a
policy showed (a ``RankedDecisionBatch`` or an array of positions) into one row of candidate
positions per session. See docs/world.md, "The feed world".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import SpecError
from closedloop.world.feed_config import MAX_CANDIDATES, FeedConfig

__all__ = ["Sessions", "retrieve", "slates"]

_NONE = np.iinfo(np.int32).max  # an empty candidate cell while sorting
_MS = 1_000_000


@dataclass
class Sessions:
    """One day's sessions, in time order. Public: ``day``, ``n``, ``timestamps_ns``, ``counts``
    (candidates per session) and the contexts; the rest is the world's truth (measurement only)."""

    day: int
    timestamps_ns: np.ndarray  # int64, sorted
    hour: np.ndarray  # int64
    user: np.ndarray  # user index
    user_age_days: np.ndarray
    topics: np.ndarray  # (n, 2) declared category indices
    farm: np.ndarray  # bool: a farm unit's session (truth)
    cand: np.ndarray  # (n, MAX_CANDIDATES) item index, -1 past counts[i]
    counts: np.ndarray
    age_hours: np.ndarray  # (n, MAX_CANDIDATES)
    item_ctr: np.ndarray
    is_new: np.ndarray
    categories: tuple[str, ...]
    item_category: np.ndarray = field(repr=False)  # the catalogue's categories (all items)
    attraction: np.ndarray = field(repr=False)  # (n, MAX_CANDIDATES) click probability in slot 1 (truth)
    fed: bool = False

    @property
    def n(self) -> int:
        return len(self.timestamps_ns)

    def __len__(self) -> int:
        return self.n

    def user_ids(self) -> pa.Array:
        return _ids("u", self.user)

    def requests(self) -> pa.Table:
        """The requests (one row per session): ``user_id, hour, user_age_days, topic_1, topic_2``."""
        names = pa.array(self.categories)
        return pa.table({
            "user_id": self.user_ids(), "hour": pa.array(self.hour), "user_age_days": pa.array(self.user_age_days),
            "topic_1": names.take(pa.array(self.topics[:, 0])), "topic_2": names.take(pa.array(self.topics[:, 1])),
        })

    def candidates(self) -> pa.Table:
        """The candidates, flat, session by session: ``item_id, category, age_hours, item_ctr, is_new,
        request`` (``request``: the session's row in :meth:`requests`)."""
        valid = self.cand >= 0
        items = pa.array(self.cand[valid])
        return pa.table({
            "item_id": _ids("i", np.arange(len(self.item_category))).take(items),
            "category": pa.array(self.categories).take(pa.array(self.item_category).take(items)),
            "age_hours": pa.array(self.age_hours[valid]), "item_ctr": pa.array(self.item_ctr[valid]),
            "is_new": pa.array(self.is_new[valid]), "request": pa.array(np.repeat(np.arange(self.n), self.counts)),
        })

    def item_ids(self, items: np.ndarray) -> list[str]:
        out: list[str] = _ids("i", np.asarray(items)).to_pylist()
        return out


def _ids(prefix: str, idx: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(np.asarray(idx, dtype=np.int64)), pa.string()), "")


@dataclass(frozen=True)
class Catalogue:
    """The live part of the catalogue a day's retrieval reads (times in ms since the world's start)."""

    pub_ms: np.ndarray  # every item's publication, sorted
    category: np.ndarray
    popular: np.ndarray  # the day's popular pool (item indices)


def retrieve(cfg: FeedConfig, cat: Catalogue, t_ms: np.ndarray, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each session's candidates (module doc): ``(n, MAX_CANDIDATES)`` item indices in catalogue
    order, without repeats, -1 after the last. Recent and topical picks are items published before
    the session and younger than ``max_age_hours``; the k-th newest is picked with weight ∝
    ``exp(−k / scale)``; popular picks are uniform over the day's pool."""
    n = len(t_ms)
    hi = np.searchsorted(cat.pub_ms, t_ms, side="left")  # the items published before the session …
    lo = np.searchsorted(cat.pub_ms, t_ms - int(cfg.max_age_hours * 3600 * 1000), side="left")  # … and not too old
    parts = [_newest(hi, lo, cfg.recent, cfg.recent_scale, rng)]
    if cfg.topical:
        # the items of each category in publication order; prefix[c, i]: items of category c among the first i
        order = np.argsort(cat.category, kind="stable").astype(np.int32)
        n_cat = len(cfg.categories)
        width = len(cat.category) + 1
        prefix = np.zeros((n_cat, width), dtype=np.int64)
        for c in range(n_cat):
            np.cumsum(cat.category == c, out=prefix[c, 1:])
        first_of = np.concatenate([[0], np.cumsum(prefix[:, -1])[:-1]])
        flat = prefix.ravel()
        first = cfg.topical - cfg.topical // 2
        for col, m in ((0, first), (1, cfg.topical // 2)):
            if m:
                topic = topics[:, col].astype(np.int64)
                start, row = first_of[topic], topic * width
                pos = _newest(start + flat[row + hi], start + flat[row + lo], m, cfg.topical_scale, rng)
                parts.append(np.where(pos >= 0, order[pos], np.int32(-1)))
    if cfg.popular and len(cat.popular):
        parts.append(cat.popular.astype(np.int32)[rng.integers(0, len(cat.popular), size=(n, cfg.popular))])
    return _dedupe(np.concatenate(parts, axis=1))


def _newest(hi: np.ndarray, lo: np.ndarray, m: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """``m`` positions per session in [lo, hi), the k-th from ``hi − 1`` with weight ∝ exp(−k / scale);
    -1 where none is left."""
    back = (rng.standard_exponential(size=(len(hi), m), dtype=np.float32) * np.float32(scale)).astype(np.int32)
    pos = (hi - 1).astype(np.int32)[:, None] - back
    return np.where(pos >= lo.astype(np.int32)[:, None], pos, np.int32(-1))


def _dedupe(c: np.ndarray) -> np.ndarray:
    out = np.where(c >= 0, c, np.int32(_NONE))
    out.sort(axis=1)
    out[:, 1:][out[:, 1:] == out[:, :-1]] = _NONE
    out.sort(axis=1)
    out[out == _NONE] = -1
    if out.shape[1] < MAX_CANDIDATES:
        out = np.pad(out, ((0, 0), (0, MAX_CANDIDATES - out.shape[1])), constant_values=-1)
    return out


def slates(sessions: Sessions, rankings: Any) -> np.ndarray:
    """What was shown, as ``(n, k)`` positions among each session's candidates (-1: no item).

    ``rankings`` is a ``RankedDecisionBatch`` decided for exactly these sessions (their requests
    and candidates in order), or an integer array of positions shaped ``(n, k)``."""
    if hasattr(rankings, "rank_offsets"):
        if len(rankings) != sessions.n:
            raise SpecError(f"The 'rankings' of a feed world day must decide its {sessions.n} sessions. "
                            f"Got {len(rankings)} decisions instead.")
        offsets: np.ndarray = np.asarray(rankings.rank_offsets, dtype=np.int64)
        lengths: np.ndarray = offsets[1:] - offsets[:-1]
        k = int(lengths.max()) if len(lengths) else 0
        out = np.full((sessions.n, k), -1, dtype=np.int64)
        rows = np.repeat(np.arange(sessions.n), lengths)
        cols = np.arange(int(lengths.sum())) - np.repeat(offsets[:-1], lengths)
        out[rows, cols] = np.asarray(rankings.ranked, dtype=np.int64)
    else:
        out = np.asarray(rankings)
        if out.ndim != 2 or out.shape[0] != sessions.n or not np.issubdtype(out.dtype, np.integer):
            raise SpecError(f"The 'rankings' of a feed world day must be a RankedDecisionBatch or an int array shaped "
                            f"({sessions.n}, k). Got {type(rankings).__name__} {getattr(out, 'shape', '')} instead.")
    if out.shape[1] and ((out >= sessions.counts[:, None]) | (out < -1)).any():
        raise SpecError("The 'rankings' of a feed world day must name positions among each session's candidates "
                        "(0 … count − 1, or -1 for none). Got a position out of range instead.")
    ordered = np.sort(out, axis=1)
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
        raise SpecError("The 'rankings' of a feed world day must show each candidate at most once per session. "
                        "Got a position twice in one session instead.")
    return out


def t_ms(cfg: FeedConfig, ns: np.ndarray) -> np.ndarray:
    """Milliseconds since the world's start."""
    return (np.asarray(ns, dtype=np.int64) - cfg.start_ns) // _MS

"""The slates of recent ranking decisions, which ``Telemetry.log_outcome`` checks a slot's outcome against.

The decision path only appends a reference (a decision or a whole batch) to a bounded deque; the
outcome path indexes what was appended since (decision id → the candidate ids shown, slot by
slot) when it looks a decision up, keeping at most ``limit`` decisions, the most recent.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

__all__ = ["Slates", "learn_logged_slates", "slot_refusal"]


class Slates:
    """Decision id → slate of the ``limit`` most recent ranking decisions logged (see the module doc)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._new: deque[Any] = deque(maxlen=limit)  # appended by the decision path, indexed lazily
        self._index: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def add(self, decision: Any) -> None:
        self._new.append(decision)

    def add_batch(self, batch: Any) -> None:
        self._new.append(batch)

    def get(self, decision_id: str) -> list[str] | None:
        """The slate of ``decision_id`` (candidate ids, slot order), or None when not known."""
        with self._lock:
            while self._new:
                self._index_one(self._new.popleft())
            return self._index.get(decision_id)

    def _index_one(self, item: Any) -> None:
        index = self._index
        if hasattr(item, "ranking"):  # one RankedDecision
            index[item.decision_id] = item.ranking
        else:  # a RankedDecisionBatch
            off, roff, ranked, ids = item.offsets.tolist(), item.rank_offsets.tolist(), item.ranked.tolist(), item.candidate_ids
            for i, did in enumerate(item.decision_ids):
                a = off[i]
                index[did] = [ids[a + r] for r in ranked[roff[i]:roff[i + 1]]]
        over = len(index) - self.limit
        if over > 0:
            for key in list(index)[:over]:  # the oldest first: dicts keep insertion order
                del index[key]


def learn_logged_slates(slates: Slates, store: Any, decision_ids: set[str]) -> int:
    """Teach ``slates`` the slates of the logged ranking decisions ``decision_ids`` names, read
    from ``store`` (a :class:`~closedloop.telemetry.store.TelemetryStore`; two columns only), so that
    an outcome ingested later (a file, the loop's inbox) is checked against what its decision
    showed. Returns how many were found."""
    from types import SimpleNamespace

    if not decision_ids:
        return 0
    t = store.read("decisions", columns=["decision_id", "slate"])
    found = 0
    for did, slate in zip(t.column("decision_id").to_pylist(), t.column("slate").to_pylist(), strict=True):
        if slate is not None and did in decision_ids:
            slates.add(SimpleNamespace(decision_id=did, ranking=slate))
            found += 1
    return found


def slot_refusal(e: Any) -> str:
    """``Telemetry.log_outcome``'s refusal of a slot (an :class:`~closedloop.errors.OutcomeError`)
    as an outcome line's rejection reason, named by the line's fields (the writer's ``candidate``
    is the line's ``candidate_id``)."""
    field = "candidate_id" if e.field == "candidate" else e.field
    return f"'{field}' must be {e.rule}. Got {e.value!r} instead."

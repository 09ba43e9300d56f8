"""How outcomes become rewards: :class:`Reward` and :class:`RewardPolicy`.

A system that chooses among actions or ranks candidates (a :class:`~closedloop.experience.experiences.BestAction`
or :class:`~closedloop.experience.experiences.Ranking` experience) learns from a *number* per slot or
per decision — a click, a purchase's value, dwell seconds — not from one of two classes. It
declares that number with ``System(..., rewards=RewardPolicy(...))``::

    RewardPolicy(
        [Reward("purchase", "sum"), Reward("click", "any")],   # a purchase's value, else 1 for a click
        window=timedelta(hours=1), per="slot", default=0.0, link="decision",
    )

Validated here on its own; that it fits its system (a BestAction or Ranking experience; ``per="slot"``
needs a Ranking) is checked by :func:`closedloop.system.validate.check_rewards`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from closedloop.errors import SpecError
from closedloop.system.labels import kind_name

__all__ = ["AGGREGATES", "LINKS", "PER", "Reward", "RewardPolicy"]

#: How several counted outcomes of one kind combine: any (1 when one is non-zero), first (the
#: earliest's value), sum, max.
AGGREGATES = ("any", "first", "sum", "max")
#: What a reward is paid for: each shown slot, or the decision as a whole.
PER = ("slot", "decision")
#: What an outcome must carry to be linked: ``decision`` — the decision id (and, per slot, the
#: candidate id); ``unit_time`` — the unit and its event time (and, per slot, the candidate id).
LINKS = ("decision", "unit_time")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Reward:
    """One outcome kind that pays: outcomes of ``kind`` counted in the window combine by
    ``aggregate`` (any / first / sum / max) and the result is multiplied by ``scale``.

    ``Reward("click")`` pays 1 for a click; ``Reward("purchase", "sum")`` the purchases' values;
    ``Reward("dwell", "max")`` the longest dwell in seconds.
    """

    def __init__(self, kind: str, aggregate: str = "any", *, scale: float = 1.0) -> None:
        self.kind = kind_name(kind, "A reward's 'kind'")
        if aggregate not in AGGREGATES:
            raise SpecError(f"A reward's 'aggregate' must be one of {list(AGGREGATES)}. Got {aggregate!r} instead.")
        if not _finite(scale) or scale == 0:
            raise SpecError(f"The 'scale' of reward '{kind}' must be a finite non-zero number. Got {scale!r} instead.")
        self.aggregate = aggregate
        self.scale = float(scale)

    def combine(self, values: Sequence[float]) -> float:
        """The reward of one slot's (or decision's) counted outcomes of this kind, ``values`` in
        event order (not empty)."""
        if self.aggregate == "any":
            got = 1.0 if any(v != 0 for v in values) else 0.0
        elif self.aggregate == "first":
            got = float(values[0])
        elif self.aggregate == "sum":
            got = float(sum(values))
        else:
            got = float(max(values))
        return self.scale * got

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "aggregate": self.aggregate, "scale": self.scale}

    def __repr__(self) -> str:
        return f"Reward({self.kind!r}, {self.aggregate!r}, scale={self.scale!r})"


class RewardPolicy:
    """How outcomes within a window after a decision become the reward of each slot (or decision).

    Declared as ``System(..., rewards=RewardPolicy(...))`` rather than inside the
    :class:`~closedloop.system.labels.LabelPolicy`: a label policy maps outcomes to one of the
    system's two classes, per decision, while a reward is a number per slot; a ranking system has
    no classes to name, and a label policy's description (and the ids of the datasets built under
    it) stays what it was.

    Parameters
    ----------
    rewards:
        One :class:`Reward` per outcome kind that pays; the first in order with a counted outcome
        decides (list a purchase before a click to pay the purchase's value, not 1).
    window:
        How long after the decision outcomes count (by event time, both edges inclusive).
    per:
        ``"slot"`` (each shown slot has its own reward; needs a Ranking) or ``"decision"``.
    default:
        The reward when nothing counted came back once the window closed (no click is 0.0), or
        ``None`` to leave it without a reward.
    link:
        What an outcome must carry to be linked: ``"decision"`` — the decision id (per slot, with
        the candidate id); ``"unit_time"`` — the unit and event time (per slot, with the candidate id):
        an outcome without a decision id pays the latest decision of its unit at or before its
        event (per slot, the latest whose slate showed its candidate), the window checked after;
        one with a decision id links by it under either (:mod:`closedloop.datasets.slots`). The
        flight guard links rewards by decision id only (:mod:`closedloop.registry.guard_rewards`).
    """

    def __init__(
        self,
        rewards: Sequence[Reward],
        *,
        window: timedelta,
        per: str = "slot",
        default: float | None = 0.0,
        link: str = "decision",
    ) -> None:
        rewards = list(rewards) if isinstance(rewards, Sequence) and not isinstance(rewards, str) else rewards
        if not isinstance(rewards, list) or not rewards or not all(isinstance(r, Reward) for r in rewards):
            raise SpecError(f"The reward policy 'rewards' must be a non-empty list of Reward. Got {rewards!r} instead.")
        kinds = [r.kind for r in rewards]
        if len(set(kinds)) != len(kinds):
            raise SpecError(f"The reward policy may have one Reward per outcome kind. Got {kinds} instead.")
        if not isinstance(window, timedelta) or window <= timedelta(0):
            raise SpecError(f"The reward policy 'window' must be a positive timedelta. Got {window!r} instead.")
        if per not in PER:
            raise SpecError(f"The reward policy 'per' must be one of {list(PER)}. Got {per!r} instead.")
        if default is not None and not _finite(default):
            raise SpecError(f"The reward policy 'default' must be a finite number or None. Got {default!r} instead.")
        if link not in LINKS:
            raise SpecError(f"The reward policy 'link' must be one of {list(LINKS)}. Got {link!r} instead.")
        self.rewards = tuple(rewards)
        self.window = window
        self.per = per
        self.default = None if default is None else float(default)
        self.link = link

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(r.kind for r in self.rewards)

    def requires(self) -> tuple[str, ...]:
        """The fields an outcome must carry to be linked to its slot (or decision)."""
        base = ("decision_id",) if self.link == "decision" else ("unit", "event_time")
        return (*base, "candidate_id") if self.per == "slot" else base

    def reward(self, outcomes: Iterable[tuple[str, float, int]], decision_ns: int) -> float | None:
        """The reward of one slot (or decision) taken at ``decision_ns`` from its linked outcomes
        ``(kind, value, event_ns)``: those in ``[decision_ns, decision_ns + window]`` of a declared
        kind count; the first Reward in order with a counted outcome decides (its outcomes in event
        order, ties in the order given); none → ``default``."""
        end = decision_ns + self.window // timedelta(microseconds=1) * 1000
        by_kind: dict[str, list[tuple[int, int, float]]] = {}
        for i, (kind, value, event_ns) in enumerate(outcomes):
            if decision_ns <= event_ns <= end:
                by_kind.setdefault(kind, []).append((event_ns, i, float(value)))
        for r in self.rewards:
            got = by_kind.get(r.kind)
            if got:
                return r.combine([v for _, _, v in sorted(got)])
        return self.default

    def describe(self) -> dict[str, Any]:
        return {
            "rewards": [r.describe() for r in self.rewards],
            "window_seconds": self.window.total_seconds(),
            "per": self.per,
            "default": self.default,
            "link": self.link,
            "requires": list(self.requires()),
        }

    def __repr__(self) -> str:
        return f"RewardPolicy({list(self.rewards)!r}, per={self.per!r}, default={self.default!r}, link={self.link!r})"

"""A ranking system's decisions as the service answers them: :class:`Ranked`, one request's ranking.

A ranking request is the JSON the in-process ``Runtime.decide`` takes: the request fields plus
``"candidates"``, an array of candidate objects. The service decodes it with msgspec once (into
plain Python values), checks only the number of candidates against ``max_candidates`` and hands
it to ``Runtime.decide``, which validates the request and every candidate. The answer is the
runtime's :class:`~closedloop.experience.ranked.RankedDecision` in the form the client, the CLI
(``closedloop decide``) and the OpenAPI document share (:class:`Ranked`).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Ranked", "candidates_problem", "ranked"]


class Ranked(msgspec.Struct, frozen=True, gc=False):
    """One ranking decision: the candidates shown (``slate``, slot by slot) and with what probability.

    ``slot_propensities[j]`` is the probability that slot j + 1 got ``slate[j]`` given the earlier
    slots, ``propensity`` their product; ``scores`` maps every candidate's id to its score, in the
    request's order (empty under the kill switch, which skips the intelligence and shows the first
    ``k`` candidates); ``why`` says how the slate was chosen; ``flight`` names the flight whose
    bundle decided (``None``: production). An outcome names its slot by ``candidate_id`` or
    ``slot`` (1-based) with the ``decision_id``.
    """

    decision_id: str
    system: str
    unit: str
    timestamp_ns: int
    bundle_version: str
    slate: list[str]
    slot_propensities: list[float]
    propensity: float
    scores: dict[str, float]
    why: str
    killswitch: bool = False
    flight: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def ranked(d: Any) -> Ranked:
    """The runtime's ranking decision as the service answers it (its ``flight`` when it has one)."""
    return Ranked(
        d.decision_id, d.system, d.unit, d.timestamp_ns, d.bundle_version, d.ranking, d.slot_propensities,
        d.propensity, dict(zip(d.candidates, d.scores, strict=False)), d.why, d.killswitch, getattr(d, "flight", None),
    )


def candidates_problem(request: Any, max_candidates: int) -> tuple[int, str] | None:
    """``(count, rule)`` when a decoded ranking request has more than ``max_candidates`` candidates
    (anything else about them is the runtime's to judge), else None."""
    if not isinstance(request, dict):
        return None
    c = request.get("candidates")
    if isinstance(c, list) and len(c) > max_candidates:
        return len(c), f"at most {max_candidates} candidates (the service's max_candidates)"
    return None

"""Ranking decisions made in clients, reported back (``POST /v1/decisions`` on a ranking system):
each item judged at the edge, then made a :class:`~closedloop.experience.ranked.RankedDecision`
that telemetry logs as it logs the service's own rankings (:mod:`closedloop.telemetry.ranked`:
``candidate_ids``, ``candidate_scores``, ``slate``, ``slot_propensities``, ``candidates_json`` and
its digest), so reward datasets (``datasets/slots.py``), the guard and flights read them alike.

An item is a JSON object (:class:`RankedClientDecision`), what the client runtime's ``rank`` gives::

    {"decision_id": "…", "bundle_id": "…", "system": "feed", "unit": "u1",
     "context": {"user_id": "u1", "hour": 9, "candidates": [{…}, …]},
     "slate": ["i7", "i2", …], "slot_propensities": [0.41, 0.66, …], "candidate_scores": [0.1, …],
     "timestamp": 1760000000000000000, "flight": null, "why": "…", "killswitch": false, "sample_prob": 1.0}

Required: ``decision_id``, ``bundle_id``, ``system``, ``unit``, ``context`` (the request with its
``candidates``, valid for the System's request and candidate schemas, ids unique; its unit field
must be ``unit``), ``slate`` (``min(k, N)`` distinct ids of its candidates), ``slot_propensities``
(one number in (0, 1] per slot) and ``timestamp``. Optional: ``candidate_scores`` (one finite number
per candidate, input order; absent or empty: none), ``flight``, ``why``, ``killswitch``,
``sample_prob`` — with the rules of :mod:`closedloop.service.client_reports`. The decision's
propensity is the product of its slot propensities, left to right, as the runtime's.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from closedloop.errors import ContextError
from closedloop.experience.ranked import RankedDecision
from closedloop.runtime.deployment import Deployment
from closedloop.service.client_reports import ClientItem, Judged, _kind_of, _ns, flight_of, head_fields, judge_all, tail_fields
from closedloop.service.problems import context_problem, invalid

__all__ = ["RankedClientDecision", "judge_ranked_items"]


class RankedClientDecision(ClientItem, kw_only=True):
    """One ranking a client made, as it reports it."""

    slate: Any = None
    slot_propensities: Any = None
    candidate_scores: Any = None


_one = msgspec.json.Decoder(RankedClientDecision)


def judge_ranked_items(items: list[msgspec.Raw], plan: Any, deployment: Deployment,
                       now_ns: int) -> tuple[list[Judged], list[dict[str, Any]]]:
    """Each raw item → the accepted rankings (``Judged``: the decision, the request mapping it
    ranked, no features) and the problems of the refused items (each with its ``index`` and
    ``field``). ``plan``: the production :class:`~closedloop.experience.ranking.RankingPlan`, which
    validates the request and candidates as the runtime does. Run it in a worker thread."""
    return judge_all(items, _one, lambda item, i: _judge(item, plan, deployment, now_ns, i))


def _context(o: RankedClientDecision, plan: Any, i: int) -> tuple[Any, Any] | dict[str, Any]:
    """(the request mapping, the kill switch's ranking of it: its validated candidate ids), or the problem."""
    if not len(o.context) or bytes(memoryview(o.context)[:1]) != b"{":
        shown = _kind_of(o.context) if len(o.context) else None
        return invalid("decision", "context", "a JSON object: the request with its candidates", shown, index=i)
    try:
        ctx = msgspec.json.decode(o.context)
        checked = plan.decide(ctx, str(o.decision_id), 0, killswitch=True)  # validates; scores nothing
    except ContextError as e:
        p = context_problem(e, index=i, what="decision")
        p["field"] = f"context.{e.field}"
        return p
    except (msgspec.DecodeError, RecursionError):
        return invalid("decision", "context", "a JSON object nested at most as deep as the decoder reads", "<too deep>", index=i)
    return ctx, checked


def _judge(o: RankedClientDecision, plan: Any, dep: Deployment, now: int, i: int) -> Judged | dict[str, Any]:
    bad = _fields(o, plan.system, now)
    if bad is not None:
        return invalid("decision", bad[0], bad[1], bad[2], index=i)
    got = _context(o, plan, i)
    if isinstance(got, dict):
        return got
    ctx, checked = got
    unit = str(o.unit)
    if checked.unit != unit:
        return invalid("decision", "unit", f"the context's unit field '{plan.system.unit}' ({checked.unit!r})", o.unit, index=i)
    ids: list[str] = checked.candidates
    m = len(checked.ranking)
    bad = _slate(o, ids, m)
    if bad is not None:
        return invalid("decision", bad[0], bad[1], bad[2], index=i)
    flight = flight_of(o.flight, o.bundle_id, dep, unit)
    slots = [float(p) for p in o.slot_propensities]
    prop = 1.0
    for p in slots:
        prop = prop * p
    scores = [float(s) for s in o.candidate_scores] if o.candidate_scores else []
    d = RankedDecision(
        o.decision_id, plan.system.name, unit, _ns(o.timestamp), o.bundle_id, ids, scores, list(o.slate), slots, prop,
        o.why if o.why is not None else "client", "organize", bool(o.killswitch), [], flight,
    )
    return Judged(i, d, ctx, None, float(o.sample_prob))  # type: ignore[arg-type]


def _fields(o: RankedClientDecision, system: Any, now: int) -> tuple[str, str, Any] | None:
    """The first of an item's fields (but its context and slate) that breaks its rule, as ``(field, rule, value)``."""
    return head_fields(o, system) or tail_fields(o, now, why_most=400)


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _slate(o: RankedClientDecision, ids: list[str], m: int) -> tuple[str, str, Any] | None:
    """The slate, its slot propensities and the candidate scores against the request's candidates."""
    s = o.slate
    known = set(ids)
    if not isinstance(s, list) or len(s) != m or len(set(s) if all(isinstance(x, str) for x in s) else ()) != m \
            or not all(x in known for x in s):
        return "slate", f"a list of {m} distinct ids of the context's candidates (min(k, N) slots)", s
    p = o.slot_propensities
    if not isinstance(p, list) or len(p) != m or not all(_number(x) and 0.0 < x <= 1.0 for x in p):
        return "slot_propensities", f"a list of {m} numbers in (0, 1], one per slot", p
    c = o.candidate_scores
    if c is not None and c != [] and (not isinstance(c, list) or len(c) != len(ids) or not all(_number(x) for x in c)):
        return "candidate_scores", f"a list of {len(ids)} finite numbers (one per candidate, input order), or absent", c
    return None

"""Decisions made in clients, reported back (``POST /v1/decisions``): each item decoded and
judged at the edge, then made a :class:`~closedloop.Decision` that telemetry logs as it logs
the service's own.

An item is a JSON object (:class:`ClientDecision`)::

    {"decision_id": "…", "bundle_id": "…", "system": "phishing", "unit": "user-1",
     "context": {…}, "action": "warn", "propensity": 0.9, "score": 0.71,
     "timestamp": "2026-12-07T01:02:03.456Z", "flight": null, "why": "…", "guardrail": null,
     "killswitch": false, "sample_prob": 0.5}

Required: ``decision_id``, ``bundle_id``, ``system`` (this service's), ``unit``, ``context``
(valid for the System's schema; its unit field must be ``unit``), ``action`` (one of the
System's), ``propensity`` (in (0, 1]) and ``timestamp`` (nanoseconds since the epoch or ISO-8601,
at most a day ahead of the service's clock). Optional: ``score`` (one number) or ``scores``
(name → number), ``flight`` (the flight whose bundle decided; absent, the service names the
flight of the current deployment that claims the unit with that bundle), ``why``,
``guardrail``, ``killswitch`` and ``sample_prob`` (the probability the client kept this record
with, in (0, 1]; counts are re-weighted by its inverse).

The record carries every column a decision of the service carries: the features are computed
here from the validated context by the System's feature set (a decision's features are a
function of its context), ``score`` is named by the bundle's output when the service knows the
bundle. So datasets, goals, the guard and flights read client decisions as the service's own.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, NamedTuple

import msgspec

from closedloop.base.times import parse_time
from closedloop.errors import ContextError
from closedloop.runtime.decision import Decision
from closedloop.runtime.deployment import Deployment, assign_flight
from closedloop.service.problems import context_problem, invalid
from closedloop.telemetry.records import MAX_ID, MAX_UNIT

__all__ = ["ClientDecision", "ClientItem", "Judged", "flight_of", "head_fields", "judge_all", "judge_items", "tail_fields"]

_ID_RULE = f"a non-empty string of at most {MAX_ID} characters"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FLIGHT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_DAY_NS = 86_400 * 10**9
_MAX_SCORES = 64


class ClientItem(msgspec.Struct, kw_only=True):
    """The fields every decision a client reports carries (every field judged by the rules, not by
    the decoder's types)."""

    decision_id: Any = None
    bundle_id: Any = None
    system: Any = None
    unit: Any = None
    context: msgspec.Raw = msgspec.Raw(b"")  # empty: absent
    timestamp: Any = None
    flight: Any = None
    why: Any = None
    killswitch: Any = False
    sample_prob: Any = 1.0


class ClientDecision(ClientItem, kw_only=True):
    """One decision a client made, as it reports it."""

    action: Any = None
    propensity: Any = None
    score: Any = None
    scores: Any = None
    guardrail: Any = None


class Judged(NamedTuple):
    """An accepted item: its position in the batch, the decision, its validated context, its features, its sampling probability."""

    at: int
    decision: Decision
    context: Any
    features: Any
    sample_prob: float


_one = msgspec.json.Decoder(ClientDecision)


def judge_items(items: list[msgspec.Raw], system: Any, deployment: Deployment,
                now_ns: int | None = None) -> tuple[list[Judged], list[dict[str, Any]]]:
    """Each raw item → the accepted decisions and the problems of the refused items (each with its
    ``index`` and the ``field`` it failed). Pure but for the clock: run it in a worker thread."""
    now = time.time_ns() if now_ns is None else now_ns
    outputs = _outputs(deployment)
    return judge_all(items, _one, lambda item, i: _judge(item, system, deployment, outputs, now, i))


def judge_all(items: list[msgspec.Raw], decoder: msgspec.json.Decoder[Any], judge: Any) -> tuple[list[Judged], list[dict[str, Any]]]:
    """Decode each raw item with ``decoder`` and ``judge(item, index)`` it (→ :class:`Judged` or a
    problem): the accepted decisions, each decision id once (a repeat within the batch is the same
    decision: logged once), and the problems of the refused items."""
    good: list[Judged] = []
    bad: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        try:
            item = decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            bad.append(invalid("decision", "<decision>", "a JSON object", _kind_of(raw), index=i))
            continue
        got = judge(item, i)
        if isinstance(got, dict):
            bad.append(got)
        elif got.decision.decision_id not in seen:
            seen.add(got.decision.decision_id)
            good.append(got)
    return good, bad


def _kind_of(raw: msgspec.Raw) -> str:
    head = bytes(memoryview(raw)[:1])
    return {b"[": "<an array>", b'"': "<a string>", b"{": "<an object>", b"n": "null"}.get(head, "<a scalar>")


def _outputs(dep: Deployment) -> dict[str, tuple[str, ...]]:
    """The score names of each bundle the deployment holds, by version."""
    out = {}
    for b in (dep.production, *dep.shadows, *(f.bundle for f in dep.flights)):
        try:
            out[b.version] = tuple(b.intelligence.outputs)
        except (AttributeError, TypeError):  # pragma: no cover - every intelligence names its outputs
            continue
    return out


def _judge(o: ClientDecision, system: Any, dep: Deployment, outputs: dict[str, tuple[str, ...]], now: int,
           i: int) -> Judged | dict[str, Any]:
    """One item against the rules (the module doc) → :class:`Judged`, or the problem of its first bad field."""
    bad = _fields(o, system, now)
    if bad is not None:
        return invalid("decision", bad[0], bad[1], bad[2], index=i)
    if not len(o.context) or bytes(memoryview(o.context)[:1]) != b"{":
        shown = _kind_of(o.context) if len(o.context) else None
        return invalid("decision", "context", "a JSON object valid for the System's context schema", shown, index=i)
    try:
        ctx = system.schema.decode_json(o.context)
    except ContextError as e:
        p = context_problem(e, index=i, what="decision")
        p["field"] = f"context.{e.field}"
        return p
    except (msgspec.DecodeError, RecursionError):
        return invalid("decision", "context", "a JSON object nested at most as deep as the decoder reads", "<too deep>", index=i)
    unit = str(o.unit)
    in_ctx = getattr(ctx, system.unit)
    if str(in_ctx) != unit:
        return invalid("decision", "unit", f"the context's unit field '{system.unit}' ({in_ctx!r})", o.unit, index=i)
    scores = _scores(o, outputs.get(o.bundle_id))
    if isinstance(scores, tuple):
        return invalid("decision", scores[0], scores[1], scores[2], index=i)
    flight = flight_of(o.flight, o.bundle_id, dep, unit)
    killswitch = bool(o.killswitch)
    d = Decision(
        o.decision_id, system.name, unit, _ns(o.timestamp), o.bundle_id, scores, o.action, float(o.propensity),
        o.why if o.why is not None else "client", system.action_specs[o.action].presentation, o.guardrail, (),
        killswitch, flight,
    )
    return Judged(i, d, ctx, None if killswitch else system.features.one(ctx), float(o.sample_prob))


def _fields(o: ClientDecision, system: Any, now: int) -> tuple[str, str, Any] | None:
    """The first of an item's fields (but its context and scores) that breaks its rule, as ``(field, rule, value)``."""
    bad = head_fields(o, system)
    if bad is not None:
        return bad
    if o.action not in system.actions:
        return "action", f"one of the System's actions {list(system.actions)}", o.action
    p = o.propensity
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p <= 1.0:
        return "propensity", "a number in (0, 1] (the probability the action was chosen with)", p
    bad = tail_fields(o, now, why_most=200)
    if bad is not None:
        return bad
    if o.guardrail is not None and not _text(o.guardrail, MAX_ID):
        return "guardrail", f"{_ID_RULE} (the guardrail that changed the action), or absent", o.guardrail
    return None


def head_fields(o: Any, system: Any) -> tuple[str, str, Any] | None:
    """The first bad of the fields every client decision starts with (``decision_id``,
    ``bundle_id``, ``system``, ``unit``; an integer unit becomes its string), or None."""
    if not _text(o.decision_id, MAX_ID):
        return "decision_id", _ID_RULE, o.decision_id
    if not _text(o.bundle_id, MAX_ID) or "/" in o.bundle_id:
        return "bundle_id", f"{_ID_RULE} without '/' (a bundle version)", o.bundle_id
    if o.system != system.name:
        return "system", f"this service's system '{system.name}'", o.system
    if isinstance(o.unit, int) and not isinstance(o.unit, bool):
        o.unit = str(o.unit)
    if not _text(o.unit, MAX_UNIT):
        return "unit", f"a non-empty string (or an integer) of at most {MAX_UNIT} characters without control characters", o.unit
    return None


def tail_fields(o: Any, now: int, *, why_most: int) -> tuple[str, str, Any] | None:
    """The first bad of the fields every client decision ends with (``timestamp``, ``flight``,
    ``why`` of at most ``why_most`` characters, ``killswitch``, ``sample_prob``), or None."""
    t = _ns(o.timestamp)
    if t is None or not 0 <= t <= now + _DAY_NS:
        return ("timestamp", "nanoseconds since the epoch (an integer) or an ISO-8601 time, at most a day ahead of the "
                "service's clock", o.timestamp)
    if o.flight is not None and (not isinstance(o.flight, str) or not _FLIGHT.match(o.flight)):
        return "flight", "a flight name (1-64 characters of a-z, 0-9, '_', '.', '-'), or absent", o.flight
    if o.why is not None and not _text(o.why, why_most):
        return "why", f"a non-empty string of at most {why_most} characters without control characters, or absent", o.why
    if not isinstance(o.killswitch, bool):
        return "killswitch", "true or false", o.killswitch
    sp = o.sample_prob
    if isinstance(sp, bool) or not isinstance(sp, int | float) or not 0.0 < sp <= 1.0:
        return "sample_prob", "a number in (0, 1] (the probability the client kept this record)", sp
    return None


def flight_of(flight: Any, bundle_id: str, dep: Deployment, unit: str) -> Any:
    """The flight a client decision names, else the current deployment's flight that claims
    ``unit`` with that bundle, else None (production)."""
    if flight is None and dep.flights:
        k = assign_flight(dep.flights, unit)
        if k >= 0 and dep.flights[k].bundle.version == bundle_id:
            return dep.flights[k].name
    return flight


def _text(v: Any, most: int) -> bool:
    return isinstance(v, str) and 0 < len(v) <= most and not _CONTROL.search(v)


def _ns(v: Any) -> Any:
    """A timestamp as nanoseconds since the epoch, or None when it is none."""
    if v is None or isinstance(v, bool) or isinstance(v, float):
        return None
    try:
        t = parse_time(v)
    except (ValueError, OverflowError, TypeError):
        return None
    return t if 0 <= t < 1 << 63 else None


def _scores(o: ClientDecision, names: tuple[str, ...] | None) -> dict[str, float] | tuple[str, str, Any]:
    """The decision's scores: ``scores`` as given, or ``score`` named by the bundle's single output
    (``"score"`` for a bundle the service does not hold); a ``(field, rule, value)`` problem otherwise."""
    if o.scores is not None:
        s = o.scores
        rule = f"an object of at most {_MAX_SCORES} score names → finite numbers, or absent"
        if not isinstance(s, dict) or len(s) > _MAX_SCORES or not all(
                _text(k, MAX_ID) and _finite(v) for k, v in s.items()):
            return "scores", rule, s
        return {k: float(v) for k, v in s.items()}
    if o.score is None:
        return {}
    if not _finite(o.score):
        return "score", "a finite number, or null (an action chosen without a score)", o.score
    name = names[0] if names is not None and len(names) == 1 else "score"
    return {name: float(o.score)}


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)

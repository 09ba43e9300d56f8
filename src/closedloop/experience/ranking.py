"""Ranking: the execution of multi-action systems (feeds, recommendations, search results).

A ranking system declares a request context (``System(context=…)``), candidate fields
(``candidates=…``, ``candidate_id=…``), features over both, and a
:class:`~closedloop.experience.experiences.Ranking` experience. One decision takes a request with N candidate
items, scores every candidate, and shows ``min(k, N)`` of them in slot order::

    plan = RankingPlan(feed, bundle)
    d = plan.decide({"user_id": "u1", "hour": 9, "candidates": [{...}, {...}, ...]},
                    decision_id="…", timestamp_ns=…)
    d.ranking             # candidate ids shown, slot order
    d.slot_propensities   # P(slot j gets its item | items in slots < j)
    d.propensity          # their product: the Plackett–Luce probability of the whole ranking

How a ranking is chosen (:func:`rank`, the one function both decision paths call):

* **greedy** (``explore=None``): the top ``k`` by score; ties go to the lower input index, NaN
  scores come last; every slot propensity is 1;
* :class:`~closedloop.experience.exploration.Softmax`: Plackett–Luce without replacement — slot j draws from
  the softmax over the remaining candidates' scores with ``uniform(decision_id, salt=j)`` through
  :func:`~closedloop.experience.exploration.choose`, and records that probability. NaN scores get
  probability 0 while any candidate with a number remains; +inf scores share the slot equally
  (the softmax's limit); if only −inf and NaN remain, the −inf ones share it;
* :class:`~closedloop.experience.exploration.EpsilonGreedy`: per slot, when the best remaining score is in
  the band, with probability ε a uniform choice among the r remaining candidates, else the best
  remaining one: propensity (1 − ε) + ε/r for the best, ε/r for another; outside the band the
  best, with propensity 1.

Every draw is a function of the decision id, so a logged decision replays exactly, and
:func:`slot_probabilities` recomputes any policy's slot probabilities for a logged ranking
(off-policy evaluation). Slot propensities are in (0, 1]; at each slot the probabilities over the
remaining candidates sum to 1.

**Kill switch**: the intelligence is skipped (no features, no scores); the first ``k``
candidates in input order are shown with propensity 1.

``decide`` (one request, candidates as a list of mappings) and ``decide_batch`` (columnar: a
requests batch and a candidates batch whose ``request`` column names each candidate's request
row) give bitwise-equal scores and identical rankings and propensities: features and scorers are
row-independent, so scoring the N candidates of one request alone or inside one flattened batch
of all requests' candidates gives the same numbers, and both paths then call :func:`rank` on
each request's scores.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from functools import reduce
from itertools import accumulate, repeat
from math import exp as mexp
from operator import add, truediv
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from closedloop.context.schema import MISSING, Bool, Columns, Int, Schema, Str, _one_array
from closedloop.errors import BatchContextError, ContextError, SpecError
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import EpsilonGreedy, Softmax, choose, uniform, uniform_batch

__all__ = [
    "RankedDecision",
    "RankedDecisionBatch",
    "RankingPlan",
    "rank",
    "ranking_plan",
    "slot_probabilities",
]

_INF = math.inf


# ---------------------------------------------------------------------------------------------
# records


class RankedDecision(msgspec.Struct, frozen=True, gc=False):
    """One ranking decision: which candidates were shown, in which slots, with what probability.

    ``candidates`` and ``scores`` are in input order (one score per candidate; empty under the
    kill switch); ``ranking`` lists the ids shown, slot by slot (``min(k, N)`` of them);
    ``slot_propensities[j]`` is the probability that slot j got ``ranking[j]`` given the earlier
    slots, and ``propensity`` their product (left to right).
    """

    decision_id: str
    system: str
    unit: str
    timestamp_ns: int
    bundle_version: str
    candidates: list[str]
    scores: list[float]
    ranking: list[str]
    slot_propensities: list[float]
    propensity: float
    why: str
    mode: str = "organize"
    killswitch: bool = False

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class RankedDecisionBatch:
    """Ranking decisions for many requests, kept in flat arrays.

    Request ``i``'s candidates are ``candidate_ids[offsets[i]:offsets[i + 1]]`` (with their
    ``scores`` at the same positions, when scored); its ranking is
    ``ranked[rank_offsets[i]:rank_offsets[i + 1]]`` — positions within the request's candidates —
    with ``slot_propensities`` at the same positions. ``batch[i]`` is the
    :class:`RankedDecision` that :meth:`RankingPlan.decide` returns for that request.
    """

    def __init__(
        self,
        *,
        system: str,
        bundle_version: str,
        decision_ids: list[str],
        units: list[str],
        timestamps_ns: np.ndarray,
        candidate_ids: list[str],
        offsets: np.ndarray,
        scores: np.ndarray,
        ranked: np.ndarray,
        rank_offsets: np.ndarray,
        slot_propensities: np.ndarray,
        propensities: np.ndarray,
        why: list[str],
        killswitch: bool,
    ) -> None:
        self.system = system
        self.bundle_version = bundle_version
        self.decision_ids = decision_ids
        self.units = units
        self.timestamps_ns = timestamps_ns
        self.candidate_ids = candidate_ids
        self.offsets = offsets
        self.scores = scores
        self.ranked = ranked
        self.rank_offsets = rank_offsets
        self.slot_propensities = slot_propensities
        self.propensities = propensities
        self.why = why
        self.killswitch = killswitch

    def __len__(self) -> int:
        return len(self.decision_ids)

    def __getitem__(self, i: int) -> RankedDecision:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"decision {i} out of range for a batch of {n}")
        if i < 0:
            i += n
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        ra, rb = int(self.rank_offsets[i]), int(self.rank_offsets[i + 1])
        ids = self.candidate_ids[a:b]
        return RankedDecision(
            self.decision_ids[i],
            self.system,
            self.units[i],
            int(self.timestamps_ns[i]),
            self.bundle_version,
            ids,
            [] if self.killswitch else self.scores[a:b].tolist(),
            [ids[j] for j in self.ranked[ra:rb].tolist()],
            self.slot_propensities[ra:rb].tolist(),
            float(self.propensities[i]),
            self.why[i],
            "organize",
            self.killswitch,
        )

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def to_pylist(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self]

    def to_arrow(self) -> pa.Table:
        """One row per decision; candidates, scores, ranking and slot propensities as lists."""
        off = pa.array(self.offsets.astype(np.int32))
        roff = pa.array(self.rank_offsets.astype(np.int32))
        ids = pa.array(self.candidate_ids, type=pa.string())
        ranked_flat = (np.repeat(self.offsets[:-1], np.diff(self.rank_offsets)) + self.ranked).astype(np.int64)
        n = len(self)
        scores = (
            pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], type=pa.float64()))
            if self.killswitch
            else pa.ListArray.from_arrays(off, pa.array(self.scores, type=pa.float64()))
        )
        return pa.table(
            {
                "decision_id": pa.array(self.decision_ids, type=pa.string()),
                "system": pa.array([self.system] * n, type=pa.string()),
                "unit": pa.array(self.units, type=pa.string()),
                "timestamp_ns": pa.array(self.timestamps_ns, type=pa.int64()),
                "bundle_version": pa.array([self.bundle_version] * n, type=pa.string()),
                "candidates": pa.ListArray.from_arrays(off, ids),
                "scores": scores,
                "ranking": pa.ListArray.from_arrays(roff, ids.take(pa.array(ranked_flat))),
                "slot_propensities": pa.ListArray.from_arrays(roff, pa.array(self.slot_propensities, type=pa.float64())),
                "propensity": pa.array(self.propensities, type=pa.float64()),
                "why": pa.array(self.why, type=pa.string()),
                "mode": pa.array(["organize"] * n, type=pa.string()),
                "killswitch": pa.array([self.killswitch] * n, type=pa.bool_()),
            }
        )


# ---------------------------------------------------------------------------------------------
# the ranking itself: one function for both paths


def _greedy_order(scores: Sequence[float], m: int, plain: bool) -> list[int]:
    """The ``m`` best indices by score, highest first; ties keep input order; NaN last.
    ``plain``: the scores hold no NaN (a plain stable descending sort is then right)."""
    n = len(scores)
    if plain:  # reverse=True keeps equal scores in input order (the sort stays stable)
        return sorted(range(n), key=scores.__getitem__, reverse=True)[:m]
    keys = [(1, 0.0) if s != s else (0, -s) for s in scores]
    return sorted(range(n), key=keys.__getitem__)[:m]


def _plain(scores: Sequence[float]) -> bool:
    """True when no score is NaN (their sum is a number; NaN, or inf − inf, says look closer)."""
    total = sum(scores)
    return total == total


def _pick(probs: list[float], u: float) -> int:
    """:func:`~closedloop.experience.exploration.choose` (the same index), with the cumulative sum in C:
    adding a zero leaves a sum unchanged, so the first cumulative sum above ``u`` is choose's."""
    cum = list(accumulate(probs))
    i = bisect_right(cum, u)
    return i if i < len(cum) else choose(probs, u)


def _softmax(policy: Softmax, scores: list[float]) -> list[float]:
    """``policy.probs`` over the remaining scores, with the softmax's limits at ±inf."""
    if _INF in scores:  # +inf dominates every number: the +inf candidates share the slot
        c = scores.count(_INF)
        return [1.0 / c if s == _INF else 0.0 for s in scores]
    if -_INF in scores and not any(s == s and s != -_INF for s in scores):
        c = scores.count(-_INF)  # only -inf and NaN remain: the -inf ones share the slot
        return [1.0 / c if s == -_INF else 0.0 for s in scores]
    return policy.probs(scores)


def _slot_probs(
    policy: Softmax | EpsilonGreedy, scores: Sequence[float], remaining: list[int], best: int
) -> list[float]:
    """The probability of each remaining candidate (in ``remaining`` order) for the next slot."""
    if isinstance(policy, Softmax):
        return _softmax(policy, [scores[i] for i in remaining])
    return policy.probs(remaining.index(best), len(remaining), scores[best])


def rank(
    scores: Sequence[float],
    k: int,
    explore: Softmax | EpsilonGreedy | None,
    decision_id: str,
    draws: Sequence[float] | None = None,
) -> tuple[list[int], list[float], float, list[int]]:
    """Choose ``min(k, N)`` of the ``N`` candidates: (input indices in slot order, slot
    propensities, their product, the slots whose item is not the best remaining one).

    Slot j draws with ``uniform(decision_id, salt=j)``; ``draws`` may hold those numbers
    already (``draws[j]``, e.g. a row of :func:`~closedloop.experience.exploration.uniform_batch` columns,
    which equal them bitwise). Both decision paths call this function on a request's scores
    (see the module doc); :func:`slot_probabilities` recomputes the same propensities from a
    ranking, the plain way."""
    n = len(scores)
    m = k if k < n else n
    plain = _plain(scores)
    # Slot j's best remaining candidate is among the first j + 1 of the greedy order.
    order = _greedy_order(scores, m, plain)
    if explore is None or m == 0:
        return order[:m], [1.0] * m, 1.0, []
    remaining = list(range(n))
    taken = [False] * n
    g = 0
    ranking: list[int] = []
    slots: list[float] = []
    explored: list[int] = []
    p = 1.0
    if isinstance(explore, Softmax):
        # policy.probs over the remaining scores, without recomputing what did not change: the
        # max of the remaining scores is the best remaining one's, and while it stays the same
        # value every remaining exp((s - max) / t) stays the same float.
        t = explore.temperature
        top = math.nan  # the max the cached weights were computed with
        w: list[float] = []  # weights of the remaining candidates, in ``remaining`` order
        for j in range(m):
            while taken[order[g]]:
                g += 1
            best = order[g]
            sb = scores[best]
            if sb != sb or sb == _INF or sb == -_INF:  # only NaN left, or a limit: the plain way
                probs = _softmax(explore, [scores[i] for i in remaining])
                top = math.nan
            else:
                if sb != top:
                    top = sb
                    # (s - max) / t ≤ 0 for every remaining s: math.exp cannot overflow here
                    w = (
                        [mexp((scores[i] - sb) / t) for i in remaining]
                        if plain
                        else [mexp((scores[i] - sb) / t) if scores[i] == scores[i] else 0.0 for i in remaining]
                    )
                total = reduce(add, w, 0.0)  # left to right, as policy.probs adds
                probs = list(map(truediv, w, repeat(total, len(w))))
            pos = _pick(probs, uniform(decision_id, j) if draws is None else draws[j])
            q = probs[pos]
            pick = remaining.pop(pos)
            if top == top:
                w.pop(pos)
            taken[pick] = True
            ranking.append(pick)
            slots.append(q)
            p = p * q
            if pick != best:
                explored.append(j)
        return ranking, slots, p, explored
    for j in range(m):
        while taken[order[g]]:
            g += 1
        best = order[g]
        bpos = remaining.index(best)
        if not explore.in_band(scores[best]):
            pos, q = bpos, 1.0  # what choose() returns from the one-hot vector policy.probs gives
        else:
            probs = explore.probs(bpos, len(remaining), scores[best])
            pos = choose(probs, uniform(decision_id, j) if draws is None else draws[j])
            q = probs[pos]
        pick = remaining.pop(pos)
        taken[pick] = True
        ranking.append(pick)
        slots.append(q)
        p = p * q
        if pick != best:
            explored.append(j)
    return ranking, slots, p, explored


def slot_probabilities(
    scores: Sequence[float], ranking: Sequence[int], explore: Softmax | EpsilonGreedy | None
) -> list[float]:
    """The probability, under ``explore``, that each slot gets the candidate ``ranking`` put
    there (input indices), given the earlier slots — for replaying a logged decision or
    evaluating another policy on it. Greedy (``None``): 1 for the greedy choice, else 0."""
    n = len(scores)
    order = _greedy_order(scores, min(len(ranking), n), _plain(scores))
    remaining = list(range(n))
    taken = [False] * n
    g = 0
    out: list[float] = []
    for pick in ranking:
        if not 0 <= pick < n or taken[pick]:
            raise SpecError(f"A ranking must list distinct candidate indices in [0, {n}). Got {list(ranking)!r} instead.")
        while taken[order[g]]:
            g += 1
        best = order[g]
        if explore is None:
            out.append(1.0 if pick == best else 0.0)
        elif not isinstance(explore, Softmax) and not explore.in_band(scores[best]):
            out.append(1.0 if pick == best else 0.0)
        else:
            probs = _slot_probs(explore, scores, remaining, best)
            out.append(probs[remaining.index(pick)])
        remaining.remove(pick)
        taken[pick] = True
    return out


# ---------------------------------------------------------------------------------------------
# the plan


def _broadcast(kind: str, value: Any, n: int) -> Any:
    if kind == "str":
        return pa.array([value] * n, type=pa.string())
    if kind == "bool":
        return np.full(n, value, dtype=bool)
    if kind == "int":
        return np.full(n, value, dtype=np.int64)
    return np.full(n, value, dtype=np.float64)


def _kind(f: Any) -> str:
    return "str" if isinstance(f, Str) else "bool" if isinstance(f, Bool) else "int" if isinstance(f, Int) else "float"


_NUMPY = {
    "float": ((frozenset({float}), frozenset({int}), frozenset({int, float})), np.float64),
    "int": ((frozenset({int}),), np.int64),
    "bool": ((frozenset({bool}),), np.bool_),
}


def _typed(values: list[Any], kind: str) -> Any:
    """A column of candidate values for validation: a numpy array of the field's type when every
    value already has an exact Python type the field accepts (validation then checks bounds on
    numbers that are the same floats ``float(v)`` gives); otherwise, for numbers and booleans,
    an object array, so that validation checks each value on its own and names exactly the bad
    ones (Arrow would infer one type for the whole list); text stays a list."""
    spec = _NUMPY.get(kind)
    if spec is None:
        return values
    if frozenset(map(type, values)) in spec[0]:
        try:
            return np.array(values, dtype=spec[1])
        except OverflowError:  # an integer beyond 64 bits: checked one by one below
            pass
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _renamed(exc: ContextError, field: str, row: int | None) -> ContextError:
    return ContextError(field, exc.rule, exc.value, row)


def ranking_plan(system: Any, bundle: Any) -> RankingPlan | None:
    """A :class:`RankingPlan` when ``system``'s experience is a :class:`Ranking`, else ``None``."""
    return RankingPlan(system, bundle) if isinstance(system.experience, Ranking) else None


class RankingPlan:
    """What a ranking decision reads, bound once per bundle; executes one request or a batch.

    Binds ``bundle.intelligence`` to ``system.features`` (declared over the request and the
    candidate fields together), checks the bundle against the system, and checks that the
    intelligence produces the score the :class:`Ranking` reads.
    """

    __slots__ = (
        "bundle", "explore", "k", "score", "system", "version", "_cand_fields", "_cid", "_cid_int",
        "_col", "_cschema", "_features", "_forbid", "_n_outputs", "_req_fields", "_schema",
        "_score_batch", "_unit", "_unit_int", "_why_base",
    )

    def __init__(self, system: Any, bundle: Any) -> None:
        experience = system.experience
        if not isinstance(experience, Ranking):
            raise SpecError(f"RankingPlan needs a system with a Ranking experience. Got {experience!r} instead.")
        cschema: Schema | None = system.candidate_schema
        if cschema is None or system.candidate_id is None:  # pragma: no cover - System refuses this
            raise SpecError(f"A Ranking experience needs candidates: System '{system.name}' declares none.")
        if "candidates" in system.schema.by_name:
            raise SpecError(
                f"The request field name 'candidates' is reserved for the candidate list. System '{system.name}' declares it."
            )
        if "request" in cschema.by_name:
            raise SpecError(
                f"The candidate field name 'request' is reserved for the batch path's request index. "
                f"System '{system.name}' declares it."
            )
        rails = [*getattr(system, "guardrails", ()), *getattr(bundle, "guardrails", ())]
        if rails:  # guardrails map actions; a ranking's actions are its candidates (not yet supported)
            raise SpecError(
                f"Guardrails do not apply to ranking systems yet; System '{system.name}' (or its bundle) "
                f"declares {[g.name for g in rails]}."
            )
        bundle.check_compatible(system)
        scorer = bundle.intelligence.bind(system.features)
        outputs = tuple(scorer.outputs)
        experience.validate(system.actions, outputs)
        self.system = system
        self.bundle = bundle
        self.version: str = bundle.version
        self.score: str = experience.score
        self.k: int = experience.k
        self.explore = experience.explore
        self._col = outputs.index(experience.score)
        self._n_outputs = len(outputs)
        self._score_batch = scorer.batch
        self._features = system.features
        self._schema: Schema = system.schema
        self._cschema: Schema = cschema
        self._forbid = system.schema.extra == "forbid"
        self._req_fields = tuple((f.name, _kind(f)) for f in system.schema.fields)
        self._cand_fields = tuple((f.name, MISSING if f.required else None, _kind(f)) for f in cschema.fields)
        self._unit = system.unit
        self._unit_int = isinstance(system.schema.by_name[system.unit], Int)
        self._cid = system.candidate_id
        self._cid_int = isinstance(cschema.by_name[system.candidate_id], Int)
        e = self.explore
        if e is None:
            self._why_base = f"top {{m}} of {{n}} candidates by {self.score}"
        elif isinstance(e, Softmax):
            self._why_base = (
                f"Plackett–Luce draw of {{m}} of {{n}} candidates, softmax over {self.score} "
                f"(temperature {e.temperature!r})"
            )
        else:
            lo, hi = e.low, e.high
            self._why_base = (
                f"ε-greedy per slot, {{m}} of {{n}} candidates by {self.score} "
                f"(ε={e.epsilon!r} when the best remaining {self.score} is in [{lo!r}, {hi!r}])"
            )

    # -- shared steps -------------------------------------------------------------------------
    def _why(self, m: int, n: int, explored: list[int]) -> str:
        why = self._why_base.format(m=m, n=n)
        if explored:
            why += f"; slots {explored} differ from the greedy order"
        return why

    def _killswitch_why(self, m: int, n: int) -> str:
        return f"kill switch: intelligence skipped, first {m} of {n} candidates in input order"

    def _scores(self, cols: Columns) -> np.ndarray:
        X = self._features.batch(cols)
        S = np.asarray(self._score_batch(X, cols), dtype=np.float64)
        if S.shape != (cols.n, self._n_outputs):
            raise SpecError(
                f"The intelligence returned scores of shape {S.shape}; expected {(cols.n, self._n_outputs)}."
            )
        return S[:, self._col]

    def _ids(self, col: Any) -> list[str]:
        ids = col.to_pylist() if isinstance(col, pa.Array) else col.tolist()
        return [str(v) for v in ids] if self._cid_int else ids

    # -- one request --------------------------------------------------------------------------
    def decide(
        self, context: Mapping[str, Any], decision_id: str, timestamp_ns: int, killswitch: bool = False
    ) -> RankedDecision:
        """Rank the candidates of one request: ``context`` holds the request fields and
        ``"candidates"``, a list of candidate mappings."""
        if not isinstance(context, Mapping):
            raise ContextError("<context>", "a JSON object (a mapping of field names)", context)
        raw = context.get("candidates", MISSING)
        if raw is MISSING:
            raise ContextError("candidates", "present", MISSING)
        if not isinstance(raw, list | tuple):
            raise ContextError("candidates", "a list of candidate objects", raw)
        req = self._schema.validate(
            context if not self._forbid else {k: v for k, v in context.items() if k != "candidates"}
        )
        n = len(raw)
        for i, c in enumerate(raw):
            if not isinstance(c, Mapping):
                raise ContextError(f"candidates[{i}]", "a JSON object (a mapping of field names)", c)
        if self._cschema.extra == "forbid":
            by_name = self._cschema.by_name
            for i, c in enumerate(raw):
                for key in c:
                    if key not in by_name:
                        raise ContextError(f"candidates[{i}].{key}", "a declared field (this schema forbids others)", c[key])
        unit = getattr(req, self._unit)
        unit = str(unit) if self._unit_int else unit
        if n == 0:
            return RankedDecision(
                decision_id, self.system.name, unit, timestamp_ns, self.version, [], [], [], [], 1.0,
                self._killswitch_why(0, 0) if killswitch else self._why(0, 0, []), "organize", killswitch,
            )
        raw_cols = {name: _typed([c.get(name, absent) for c in raw], kind) for name, absent, kind in self._cand_fields}
        try:
            ccols = self._cschema.validate_batch(raw_cols, errors="raise")
        except BatchContextError as exc:
            raise BatchContextError(
                [_renamed(e, f"candidates[{e.row}].{e.field}", None) for e in exc.errors]
            ) from None
        ids = self._ids(ccols[self._cid])
        dup = _duplicate(ids)
        if dup is not None:
            raise ContextError(f"candidates[{dup}].{self._cid}", "unique among the request's candidates", ids[dup])
        m = self.k if self.k < n else n
        if killswitch:
            return RankedDecision(
                decision_id, self.system.name, unit, timestamp_ns, self.version, ids, [], ids[:m],
                [1.0] * m, 1.0, self._killswitch_why(m, n), "organize", True,
            )
        data = {name: _broadcast(kind, getattr(req, name), n) for name, kind in self._req_fields}
        for name, _, _ in self._cand_fields:
            data[name] = ccols[name]
        scores = self._scores(Columns(data, n, np.arange(n, dtype=np.int64), [])).tolist()
        order, slots, p, explored = rank(scores, self.k, self.explore, decision_id)
        return RankedDecision(
            decision_id, self.system.name, unit, timestamp_ns, self.version, ids, scores,
            [ids[i] for i in order], slots, p, self._why(m, n, explored), "organize", False,
        )

    # -- a batch ------------------------------------------------------------------------------
    def decide_batch(
        self,
        requests: Any,
        candidates: Any,
        decision_ids: Any,
        timestamps_ns: Any,
        killswitch: bool = False,
    ) -> RankedDecisionBatch:
        """Rank the candidates of many requests.

        ``requests``: a columnar batch of request fields (Arrow table / record batch, or a
        mapping of column → array or list). ``candidates``: a columnar batch of candidate fields
        plus an integer column ``request`` — the row in ``requests`` each candidate belongs to
        (a request's candidates keep their order in the batch; requests may be interleaved, and
        a request may have none). ``decision_ids``: one non-empty string per request (a list or
        an Arrow string array), or an id source (``next_id``/``next_ids``, as
        :class:`~closedloop.runtime.ids.DecisionIds`) to draw them from. ``timestamps_ns``: one per
        request, or one integer for all. Invalid rows are refused, every one named.
        """
        rcols = self._schema.validate_batch(requests, errors="raise")
        nreq = rcols.n
        cand_map, req_idx = _split_request_column(candidates, nreq)
        if not cand_map:  # only the request column (e.g. no candidates at all)
            cand_map = {name: [absent] * req_idx.shape[0] for name, absent, _ in self._cand_fields}
        try:
            ccols = self._cschema.validate_batch(cand_map, errors="raise")
        except BatchContextError as exc:
            raise BatchContextError([_renamed(e, f"candidates.{e.field}", e.row) for e in exc.errors]) from None
        except ContextError as exc:
            raise _renamed(exc, f"candidates.{exc.field}", exc.row) from None
        total = ccols.n
        if total and bool(np.any(req_idx[1:] < req_idx[:-1])):
            perm = np.argsort(req_idx, kind="stable")
            ccols = ccols.take(perm)
            req_idx = req_idx[perm]
            input_rows = perm
        else:
            input_rows = np.arange(total, dtype=np.int64)
        counts = np.bincount(req_idx, minlength=nreq)
        offsets = np.zeros(nreq + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        ts = _timestamps(timestamps_ns, nreq)
        ids_out = _decision_ids(decision_ids, ts)
        units = rcols.pylist(self._unit)
        if self._unit_int:
            units = [str(u) for u in units]
        cand_ids = self._ids(ccols[self._cid])
        off = offsets.tolist()
        for i in range(nreq):
            a, b = off[i], off[i + 1]
            dup = _duplicate(cand_ids[a:b]) if b - a > 1 else None
            if dup is not None:
                raise ContextError(
                    f"candidates.{self._cid}", f"unique among the candidates of request {i}",
                    cand_ids[a + dup], int(input_rows[a + dup]),
                )

        k = self.k
        ms = np.minimum(counts, k)
        rank_offsets = np.zeros(nreq + 1, dtype=np.int64)
        np.cumsum(ms, out=rank_offsets[1:])
        nslots = int(rank_offsets[-1])
        if killswitch:
            ranked = np.concatenate([np.arange(m, dtype=np.int64) for m in ms.tolist()]) if nreq else np.zeros(0, np.int64)
            return RankedDecisionBatch(
                system=self.system.name, bundle_version=self.version, decision_ids=ids_out, units=units,
                timestamps_ns=ts, candidate_ids=cand_ids, offsets=offsets,
                scores=np.zeros(0, dtype=np.float64), ranked=ranked, rank_offsets=rank_offsets,
                slot_propensities=np.ones(nslots, dtype=np.float64), propensities=np.ones(nreq, dtype=np.float64),
                why=[self._killswitch_why(m, c) for m, c in zip(ms.tolist(), counts.tolist(), strict=True)],
                killswitch=True,
            )

        if total:
            take = pa.array(req_idx)
            data: dict[str, Any] = {}
            for name, _ in self._req_fields:
                col = rcols[name]
                data[name] = col.take(take) if isinstance(col, pa.Array) else col[req_idx]
            for name, _, _ in self._cand_fields:
                data[name] = ccols[name]
            flat = np.ascontiguousarray(self._scores(Columns(data, total, np.arange(total, dtype=np.int64), [])))
        else:
            flat = np.zeros(0, dtype=np.float64)
        flat_list = flat.tolist()
        ranked = np.empty(nslots, dtype=np.int64)
        slot_p = np.empty(nslots, dtype=np.float64)
        props = np.empty(nreq, dtype=np.float64)
        whys: list[str] = []
        explore = self.explore
        roff = rank_offsets.tolist()
        kmax = int(ms.max()) if nreq else 0
        # uniform_batch(ids, salt=j) equals uniform(id, j) bitwise: slot j's draw for every request
        draws: list[Any] = (
            np.column_stack([uniform_batch(ids_out, salt=j) for j in range(kmax)]).tolist()
            if explore is not None and kmax
            else [None] * nreq
        )
        for i in range(nreq):
            a, b = off[i], off[i + 1]
            order, slots, p, explored = rank(flat_list[a:b], k, explore, ids_out[i], draws[i])
            ra, rb = roff[i], roff[i + 1]
            ranked[ra:rb] = order
            slot_p[ra:rb] = slots
            props[i] = p
            whys.append(self._why(rb - ra, b - a, explored))
        return RankedDecisionBatch(
            system=self.system.name, bundle_version=self.version, decision_ids=ids_out, units=units,
            timestamps_ns=ts, candidate_ids=cand_ids, offsets=offsets, scores=flat, ranked=ranked,
            rank_offsets=rank_offsets, slot_propensities=slot_p, propensities=props, why=whys,
            killswitch=False,
        )


# ---------------------------------------------------------------------------------------------
# batch input helpers


def _duplicate(ids: list[str]) -> int | None:
    """The position of the first id that repeats an earlier one, or None."""
    if len(set(ids)) == len(ids):
        return None
    seen: set[str] = set()
    for j, v in enumerate(ids):
        if v in seen:
            return j
        seen.add(v)
    return None  # pragma: no cover - the set said there is one


def _split_request_column(candidates: Any, nreq: int) -> tuple[dict[str, Any], np.ndarray]:
    """(the candidate columns without ``request``, the request index of each row)."""
    if isinstance(candidates, pa.Table | pa.RecordBatch):
        cols = dict(zip(candidates.column_names, candidates.columns, strict=True))
    elif isinstance(candidates, Mapping):
        cols = dict(candidates)
    else:
        raise ContextError(
            "<candidates>", "an Arrow table or a mapping of column names to arrays", type(candidates).__name__
        )
    raw = cols.pop("request", MISSING)
    if raw is MISSING:
        raise ContextError("candidates.request", "present", MISSING)
    raw = _one_array(raw)
    rule = f"an integer in [0, {nreq - 1}] (a row of the requests batch)" if nreq else "absent (there are no requests)"
    if isinstance(raw, pa.Array):
        if raw.null_count:
            row = int(np.flatnonzero(raw.is_null().to_numpy(zero_copy_only=False))[0])
            raise ContextError("candidates.request", rule, None, row)
        arr = raw.to_numpy(zero_copy_only=False)
    else:
        arr = np.asarray(raw)
    if arr.dtype.kind == "O":
        for row, v in enumerate(arr.tolist()):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ContextError("candidates.request", rule, v, row)
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or (arr.shape[0] and arr.dtype.kind not in "iu"):
        bad = arr.tolist()[0] if arr.ndim == 1 and arr.shape[0] else arr
        raise ContextError("candidates.request", rule, bad, 0 if arr.ndim == 1 else None)
    if arr.dtype.kind == "u" and arr.shape[0] and int(arr.max()) >= 2**63:
        row = int(np.argmax(arr))
        raise ContextError("candidates.request", rule, int(arr[row]), row)
    idx = arr.astype(np.int64, copy=False)
    out = (idx < 0) | (idx >= nreq)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise ContextError("candidates.request", rule, int(idx[row]), row)
    return cols, idx


def _timestamps(ts: Any, n: int) -> np.ndarray:
    if isinstance(ts, int | np.integer) and not isinstance(ts, bool):
        return np.full(n, int(ts), dtype=np.int64)
    arr = np.asarray(ts)
    if arr.shape != (n,) or (n and arr.dtype.kind not in "iu"):
        raise ContextError("timestamps_ns", f"one integer timestamp per request ({n}), or one for all", f"{arr.shape} of {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _decision_ids(ids: Any, ts: np.ndarray) -> list[str]:
    n = int(ts.shape[0])
    if hasattr(ids, "next_ids") and hasattr(ids, "next_id"):  # an IdSource
        if n == 0:
            return []
        got = ids.next_ids(n, int(ts[0])) if bool((ts == ts[0]).all()) else [ids.next_id(int(t)) for t in ts.tolist()]
        return got.to_pylist() if isinstance(got, pa.Array) else list(got)
    out = ids.to_pylist() if isinstance(ids, pa.Array | pa.ChunkedArray) else (
        None if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | np.ndarray) else list(ids)
    )
    if out is None or len(out) != n or not all(isinstance(d, str) and d for d in out):
        got = f"{len(out)} values" if out is not None else repr(ids)
        raise ContextError("decision_ids", f"one non-empty string per request ({n})", got)
    return out

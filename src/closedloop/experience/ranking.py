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

How a ranking is chosen (:func:`rank` for one request; the draw itself is vectorized in
:mod:`closedloop.experience.ranking_kernel`, which both decision paths run):

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
  best, with propensity 1;
* :class:`~closedloop.experience.exploration.SquareCB`: per slot, inverse-gap weighting over the r
  remaining candidates — ``1 / (r + γ · (best remaining score − its score))`` each (NaN read as
  −inf), the best remaining one the rest.

Every draw is a function of the decision id, so a logged decision replays exactly, and
:func:`slot_probabilities` recomputes any policy's slot probabilities for a logged ranking
(off-policy evaluation). Slot propensities are in (0, 1]; at each slot the probabilities over the
remaining candidates sum to 1.

**Kill switch**: the intelligence is skipped (no features, no scores); the first ``k``
candidates in input order are shown with propensity 1 (no flight, no shadows).

**Flights and shadows**: the runtime passes ``arms`` (:class:`~closedloop.runtime.serving._RankingArms`)
to both paths when its deployment has flights or shadows: after validation, a request's unit picks
the bundle that scores its candidates, and each shadow bundle scores the same feature rows and
records its greedy slate (:class:`RankedShadow`); the ranking itself is drawn as above.

``decide`` (one request, candidates as a list of mappings) and ``decide_batch`` (columnar: a
requests batch and a candidates batch whose ``request`` column names each candidate's request
row) give bitwise-equal scores and identical rankings and propensities: features and scorers are
row-independent, so scoring the N candidates of one request alone or inside one flattened batch
of all requests' candidates gives the same numbers. Each path then draws with the same numpy
operations: ``decide`` on its one request (:func:`~closedloop.experience.ranking_kernel.rank_one`), ``decide_batch`` on
all its requests at once, one row each, slot by slot
(:func:`~closedloop.experience.ranking_kernel.rank_rows`); every sum adds left to right, so the rankings and
propensities equal the per-candidate definition (:func:`slot_probabilities`) bit for bit.

The pieces, one job each: the records (:mod:`closedloop.experience.ranked`), the choice of a
ranking (:mod:`closedloop.experience.ranking_policy`: :func:`rank`, :func:`slot_probabilities`; the
vectorized draw in :mod:`closedloop.experience.ranking_kernel`),
the inputs' checks and shapes (:mod:`closedloop.experience.ranking_inputs`), and here the plan
that binds a bundle and runs both paths; every name stays importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.context.schema import MISSING, Columns, Int, Schema
from closedloop.errors import BatchContextError, ContextError, SpecError
from closedloop.experience.experiences import EXPLORED_SLOTS_WHY, Ranking
from closedloop.experience.exploration import Softmax, SquareCB, uniform_batch, uniform_salts
from closedloop.experience.ranked import RankedDecision, RankedDecisionBatch, RankedShadow
from closedloop.experience.ranking_inputs import (
    _CandidateValidator,
    _decision_ids,
    _duplicate,
    _first_repeat,
    _kind,
    _renamed,
    _split_request_column,
    _timestamps,
    _typed,
)
from closedloop.experience.ranking_kernel import rank_one, rank_rows
from closedloop.experience.ranking_policy import _pick as _pick  # re-exported: importable from here
from closedloop.experience.ranking_policy import rank, slot_probabilities

__all__ = [
    "RankedDecision",
    "RankedDecisionBatch",
    "RankedShadow",
    "KILLSWITCH_WHY",
    "RankingPlan",
    "rank",
    "ranking_plan",
    "slot_probabilities",
]


#: The kill switch's reason for a ranking of ``m`` of ``n`` candidates (``.format(m=…, n=…)``).
KILLSWITCH_WHY = "kill switch: intelligence skipped, first {m} of {n} candidates in input order"


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
        "bundle", "explore", "k", "outputs", "score", "system", "version", "_cand_fields", "_cid", "_cid_int",
        "_col", "_cschema", "_cvalid", "_features", "_forbid", "_n_outputs", "_req_fields", "_schema",
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
        self.outputs = outputs
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
        self._cvalid = _CandidateValidator(cschema, system.candidate_id)
        e = self.explore
        if e is None:
            self._why_base = f"top {{m}} of {{n}} candidates by {self.score}"
        elif isinstance(e, Softmax):
            self._why_base = (
                f"Plackett–Luce draw of {{m}} of {{n}} candidates, softmax over {self.score} "
                f"(temperature {e.temperature!r})"
            )
        elif isinstance(e, SquareCB):
            self._why_base = f"inverse-gap weighting per slot, {{m}} of {{n}} candidates by {self.score} (gamma {e.gamma!r})"
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
            why += EXPLORED_SLOTS_WHY.format(explored)
        return why

    def _killswitch_why(self, m: int, n: int) -> str:
        return KILLSWITCH_WHY.format(m=m, n=n)

    def _scores(self, cols: Columns) -> np.ndarray:
        return self.score_rows(self._features.batch(cols), cols)

    def features(self, cols: Columns) -> np.ndarray:
        """The feature rows of request × candidate ``cols`` (the system's features: every bundle's)."""
        return np.asarray(self._features.batch(cols))

    def score_rows(self, X: np.ndarray, cols: Columns) -> np.ndarray:
        """This bundle's ranking score of each feature row ``X`` (of ``cols``)."""
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
        self, context: Mapping[str, Any], decision_id: str, timestamp_ns: int, killswitch: bool = False,
        arms: Any = None,
    ) -> RankedDecision:
        """Rank the candidates of one request: ``context`` holds the request fields and
        ``"candidates"``, a list of candidate mappings. ``arms`` (the runtime's flights and shadows,
        ``score_one`` / ``empty``; None: this bundle alone) picks the bundle that scores and
        scores the shadows on the same feature rows."""
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
        unit = getattr(req, self._unit)
        unit = str(unit) if self._unit_int else unit
        if n == 0:
            version, flight, shadows = (self.version, None, []) if killswitch or arms is None else arms.empty(unit)
            return RankedDecision(
                decision_id, self.system.name, unit, timestamp_ns, version, [], [], [], [], 1.0,
                self._killswitch_why(0, 0) if killswitch else self._why(0, 0, []), "organize", killswitch, shadows, flight,
            )
        got = self._cvalid.columns(raw)
        ccols, ids = got if got is not None else self._candidates_columnwise(raw)
        dup = _duplicate(ids)
        if dup is not None:
            raise ContextError(f"candidates[{dup}].{self._cid}", "unique among the request's candidates", ids[dup])
        m = self.k if self.k < n else n
        if killswitch:
            return RankedDecision(
                decision_id, self.system.name, unit, timestamp_ns, self.version, ids, [], ids[:m],
                [1.0] * m, 1.0, self._killswitch_why(m, n), "organize", True,
            )
        data = {name: ccols[name] for name, _, _ in self._cand_fields}
        consts = {f.name: (f, getattr(req, f.name)) for f in self._schema.fields}  # built only if read
        cols = Columns(data, n, np.arange(n, dtype=np.int64), [], constants=consts)
        if arms is None:
            s, version, flight, shadows = self._scores(cols), self.version, None, []
        else:
            s, version, flight, shadows = arms.score_one(unit, cols, ids)
        u = uniform_salts(decision_id, m) if self.explore is not None else []
        order, slots, p, explored = rank_one(s, self.k, self.explore, u)
        return RankedDecision(
            decision_id, self.system.name, unit, timestamp_ns, version, ids, s.tolist(),
            [ids[i] for i in order], slots, p, self._why(m, n, explored), "organize", False, shadows, flight,
        )

    def greedy_slate(self, s: np.ndarray, ids: list[str]) -> list[str]:
        """The ids of the top ``min(k, N)`` candidates by scores ``s`` under greedy ranking's rules
        (what a shadow would have shown)."""
        return [ids[i] for i in rank_one(s, self.k, None, [])[0]]

    def _candidates_columnwise(self, raw: list[Any] | tuple[Any, ...]) -> tuple[Any, list[str]]:
        """The candidates validated column by column (the path that names every refused value)."""
        for i, c in enumerate(raw):
            if not isinstance(c, Mapping):
                raise ContextError(f"candidates[{i}]", "a JSON object (a mapping of field names)", c)
        if self._cschema.extra == "forbid":
            by_name = self._cschema.by_name
            for i, c in enumerate(raw):
                for key in c:
                    if key not in by_name:
                        raise ContextError(f"candidates[{i}].{key}", "a declared field (this schema forbids others)", c[key])
        raw_cols = {name: _typed([c.get(name, absent) for c in raw], kind) for name, absent, kind in self._cand_fields}
        try:
            ccols = self._cschema.validate_batch(raw_cols, errors="raise")
        except BatchContextError as exc:
            raise BatchContextError(
                [_renamed(e, f"candidates[{e.row}].{e.field}", None) for e in exc.errors]
            ) from None
        return ccols, self._ids(ccols[self._cid])

    # -- a batch ------------------------------------------------------------------------------
    def decide_batch(
        self,
        requests: Any,
        candidates: Any,
        decision_ids: Any,
        timestamps_ns: Any,
        killswitch: bool = False,
        arms: Any = None,
    ) -> RankedDecisionBatch:
        """Rank the candidates of many requests.

        ``requests``: a columnar batch of request fields (Arrow table / record batch, or a
        mapping of column → array or list). ``candidates``: a columnar batch of candidate fields
        plus an integer column ``request`` — the row in ``requests`` each candidate belongs to
        (a request's candidates keep their order in the batch; requests may be interleaved, and
        a request may have none). ``decision_ids``: one non-empty string per request (a list or
        an Arrow string array), or an id source (``next_id``/``next_ids``, as
        :class:`~closedloop.runtime.ids.DecisionIds`) to draw them from. ``timestamps_ns``: one per
        request, or one integer for all. Invalid rows are refused, every one named. ``arms`` (the
        runtime's flights and shadows, ``score_batch``; None: this bundle alone) scores each
        request's candidates with its arm's bundle and every candidate with each shadow.
        """
        rcols = self._schema.validate_batch(requests, errors="raise")
        nreq = rcols.n
        ccols, req_idx, input_rows = self._candidate_batch(candidates, nreq)
        counts = np.bincount(req_idx, minlength=nreq)
        offsets = np.zeros(nreq + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        ts = _timestamps(timestamps_ns, nreq)
        ids_out = _decision_ids(decision_ids, ts)
        units = rcols.pylist(self._unit)
        if self._unit_int:
            units = [str(u) for u in units]
        idcol = ccols[self._cid]
        self._check_unique(idcol, offsets, input_rows)
        cand_ids = idcol if isinstance(idcol, pa.Array) else self._ids(idcol)  # Arrow text: a list when read
        off = offsets.tolist()

        ms = np.minimum(counts, self.k)
        rank_offsets = np.zeros(nreq + 1, dtype=np.int64)
        np.cumsum(ms, out=rank_offsets[1:])
        common: dict[str, Any] = dict(
            system=self.system.name, bundle_version=self.version, decision_ids=ids_out, units=units,
            timestamps_ns=ts, candidate_ids=cand_ids, offsets=offsets, rank_offsets=rank_offsets,
        )
        if killswitch:
            return self._killswitch_batch(common, ms, counts)
        extra: dict[str, Any] = {}
        if arms is None:
            flat = self._flat_scores(rcols, ccols, req_idx)
        else:
            flat_cols = self._flat_columns(rcols, ccols, req_idx)
            flat, versions, flights, shadows = arms.score_batch(units, flat_cols, req_idx)
            if flights is not None:
                extra.update(bundle_versions=versions, flights=flights)
            extra["shadows"] = tuple((v, S, self._greedy_requests(S, offsets, ms)) for v, S in shadows)
        ranked, slot_p, props, whys = self._rank_requests(flat, off, rank_offsets, ms, ids_out)
        return RankedDecisionBatch(
            **common, scores=flat, ranked=ranked, slot_propensities=slot_p, propensities=props, why=whys,
            killswitch=False, **extra,
        )

    def _candidate_batch(self, candidates: Any, nreq: int) -> tuple[Columns, np.ndarray, np.ndarray]:
        """The candidates validated and grouped by request: (their columns, each row's request,
        each row's position in the input batch) — sorted stably by request when they are not yet."""
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
        return ccols, req_idx, input_rows

    def _check_unique(self, idcol: Any, offsets: np.ndarray, input_rows: np.ndarray) -> None:
        """Refuse a request whose candidates repeat an id, naming the repeat's row in the input batch."""
        p = _first_repeat(idcol, offsets)
        if p is not None:
            i = int(np.searchsorted(offsets, p, side="right")) - 1
            value = idcol[p].as_py() if isinstance(idcol, pa.Array) else int(idcol[p])
            raise ContextError(
                f"candidates.{self._cid}", f"unique among the candidates of request {i}",
                str(value) if self._cid_int else value, int(input_rows[p]),
            )

    def _killswitch_batch(self, common: dict[str, Any], ms: np.ndarray, counts: np.ndarray) -> RankedDecisionBatch:
        """The kill switch's batch: each request's first ``ms[i]`` candidates in input order, with propensity 1."""
        nreq = ms.shape[0]
        nslots = int(common["rank_offsets"][-1])
        ranked = np.concatenate([np.arange(m, dtype=np.int64) for m in ms.tolist()]) if nreq else np.zeros(0, np.int64)
        return RankedDecisionBatch(
            **common, scores=np.zeros(0, dtype=np.float64), ranked=ranked,
            slot_propensities=np.ones(nslots, dtype=np.float64), propensities=np.ones(nreq, dtype=np.float64),
            why=[self._killswitch_why(m, c) for m, c in zip(ms.tolist(), counts.tolist(), strict=True)],
            killswitch=True,
        )

    def _flat_scores(self, rcols: Columns, ccols: Columns, req_idx: np.ndarray) -> np.ndarray:
        """Every candidate's score as one flattened batch: each candidate row beside its request's fields."""
        cols = self._flat_columns(rcols, ccols, req_idx)
        if cols is None:
            return np.zeros(0, dtype=np.float64)
        return np.ascontiguousarray(self._scores(cols))

    def _flat_columns(self, rcols: Columns, ccols: Columns, req_idx: np.ndarray) -> Columns | None:
        """Every candidate row beside its request's fields, as one batch (None: no candidates)."""
        total = ccols.n
        if not total:
            return None
        take = pa.array(req_idx)
        data: dict[str, Any] = {}
        for name, _ in self._req_fields:
            col = rcols[name]
            data[name] = col.take(take) if isinstance(col, pa.Array) else col[req_idx]
        for name, _, _ in self._cand_fields:
            data[name] = ccols[name]
        return Columns(data, total, np.arange(total, dtype=np.int64), [])

    @staticmethod
    def _matrix(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The flat scores as one row per request, padded to the longest: (the matrix, the counts)."""
        nreq = offsets.shape[0] - 1
        counts = np.diff(offsets)
        width = int(counts.max()) if nreq else 0
        if nreq and bool((counts == width).all()):
            return flat.reshape(nreq, width), counts
        S = np.zeros((nreq, width), dtype=np.float64)
        S[np.repeat(np.arange(nreq), counts), np.arange(flat.shape[0]) - np.repeat(offsets[:-1], counts)] = flat
        return S, counts

    def _greedy_requests(self, flat: np.ndarray, offsets: np.ndarray, ms: np.ndarray) -> np.ndarray:
        """Every request's greedy slate by the scores ``flat`` (positions, flat as ``ranked``)."""
        S, counts = self._matrix(flat, offsets)
        picks = rank_rows(S, counts, self.k, None, None)[0]
        return picks[np.arange(picks.shape[1])[None, :] < ms[:, None]]

    def _rank_requests(
        self, flat: np.ndarray, off: list[int], rank_offsets: np.ndarray, ms: np.ndarray, ids_out: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Every request's ranking in one :func:`~closedloop.experience.ranking_kernel.rank_rows` call
        (a request per row, padded to the longest): (the ranked positions, the slot propensities,
        each request's propensity, each request's reason), flat as :class:`RankedDecisionBatch` keeps them."""
        nreq = len(ids_out)
        S, counts = self._matrix(flat, np.asarray(off, dtype=np.int64))
        kmax = int(ms.max()) if nreq else 0
        # uniform_batch(ids, salt=j) equals uniform(id, j) bitwise: slot j's draw for every request
        U = (
            np.column_stack([uniform_batch(ids_out, salt=j) for j in range(kmax)])
            if self.explore is not None and kmax
            else None
        )
        picks, slots, explored, props = rank_rows(S, counts, self.k, self.explore, U)
        keep = np.arange(picks.shape[1])[None, :] < ms[:, None]  # a request's first min(k, N) slots
        whys = self._whys(explored & keep, ms, counts)
        return picks[keep], slots[keep], props, whys

    def _whys(self, explored: np.ndarray, ms: np.ndarray, counts: np.ndarray) -> list[str]:
        """Each request's reason, built once per distinct (shown, candidates, explored slots)."""
        nreq, kmax = explored.shape
        if kmax > 62:  # the explored slots do not fit in one integer: one request at a time
            return [self._why(m, n, np.flatnonzero(explored[i]).tolist())
                    for i, (m, n) in enumerate(zip(ms.tolist(), counts.tolist(), strict=True))]
        bits = explored.astype(np.int64) @ (np.int64(1) << np.arange(kmax, dtype=np.int64)) if kmax else np.zeros(nreq, np.int64)
        keys, inverse = np.unique(np.stack([ms, counts, bits], axis=1), axis=0, return_inverse=True)
        table = [self._why(m, n, [j for j in range(kmax) if b >> j & 1]) for m, n, b in keys.tolist()]
        return [table[i] for i in inverse.reshape(-1).tolist()]

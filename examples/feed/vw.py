"""Vowpal Wabbit's contextual bandit as the external baseline of a ranking system.

:class:`VWPolicy` ranks a session's candidates with VW's ``cb_explore_adf --cb_type dr`` and learns
online from the first slot's reward — the baseline the feed demo compares the closed loop with. VW is
a demo/test dependency (``pip install -e '.[dev]'``), never one of the ``closedloop`` package.

**Features.** The policy reads the request and candidate fields a ranking :class:`~closedloop.System`
declares and featurizes each session with the System's own feature computation
(``system.features.batch`` over the request × candidate rows, as training does), so VW and the
closed loop see the same numbers. Each session is one VW ADF example:

* a shared line, namespace ``u``: the request's fields but the unit (``user_id``) — a text field as
  the indicator ``name=value``, a number as ``name:value``, a true bool as ``name``;
* one action line per candidate, namespace ``i``: every System feature of that candidate's row
  (its value; zeros are left out, as VW reads them);
* declared interactions ``-q ui`` (request fields × candidate features); nothing else is tuned:
  VW's default learning rate, ε = 0.05 for exploration, ``--random_seed`` for repeatable runs.

**Deciding.** VW's ``cb_explore_adf`` chooses one action: its pmf (ε-greedy over the DR cost
estimates) gives the first slot, sampled with the policy's seeded generator. Slots 2..k are VW's
ranking of the rest: ascending estimated cost (each action's score, read from the prediction), ties
in candidate order.

**Learning.** Only the first slot's reward teaches VW, as ``cb_explore_adf`` expects: cost =
−reward (−1 for a click), with the probability the pmf gave it, as the label
``action:cost:probability`` on the chosen action's line.

**Speed.** A session is parsed, predicted, learned and finished through the native calls
``Workspace.parse`` / ``predict`` / ``learn`` / ``finish_example`` make (``Workspace._parse``,
``pylibvw.vw.predict_multi`` / ``learn_multi`` / ``_finish_example_multi_ex``), without the Python
``Example`` wrapper they build around each line — about half of VW's time a session here. The same
text reaches VW, so the predictions and the learned model are the same bits
(tests/examples/test_feed_vw.py compares both paths).

:meth:`VWPolicy.settings` returns the exact VW arguments and the feature mapping, for a report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.context.fields import Bool, Float, Int, Str
from closedloop.errors import SpecError

__all__ = ["Session", "VWDecision", "VWPolicy", "run_online"]

ALGORITHM = "--cb_explore_adf --cb_type dr"
_SEP = str.maketrans({" ": "_", "\t": "_", "\n": "_", "\r": "_", ":": "_", "|": "_"})


@dataclass(frozen=True)
class Session:
    """One request as VW reads it: the candidates' ids, the shared line and one action line each."""

    ids: list[str]
    shared: str
    actions: list[str]


@dataclass(frozen=True)
class VWDecision:
    """A ranking VW made: ``ranking`` (candidate ids in slot order); ``chosen`` (the first slot's index
    among the session's candidates) and ``probability`` (VW's pmf there: the label's probability);
    ``pmf`` and ``scores`` (VW's estimated costs, lower is better) over all candidates."""

    session: Session
    ranking: list[str]
    chosen: int
    probability: float
    pmf: list[float]
    scores: list[float]


def _parse(vw: Any, lines: list[str]) -> list[Any]:
    """VW's native examples of one multi-line example: what ``Workspace.parse`` parses (the same text,
    joined and stripped the same way), without its Python ``Example`` wrapper of each line."""
    return list(vw._parse("\n".join(lines).replace("\r", "").strip()))


def _token(name: str, value: float) -> str:
    return name if value == 1.0 else f"{name}:{value!r}"


class VWPolicy:
    """VW's ``cb_explore_adf --cb_type dr`` ranking the candidates of ``system``'s requests (module doc).

    ``k``: slots per ranking (default: the System's ``Ranking`` k). ``shared``: the request fields on
    the shared line (default: all but the unit). ``interactions``: VW ``-q`` pairs of namespaces.
    ``seed``: VW's ``--random_seed`` and the generator that samples the first slot from the pmf.
    """

    def __init__(self, system: Any, *, k: int | None = None, shared: Sequence[str] | None = None,
                 interactions: Sequence[str] = ("ui",), seed: int = 0) -> None:
        if getattr(system, "candidate_schema", None) is None:
            raise SpecError(f"The 'system' parameter of VWPolicy must be a ranking System (declared with candidates). "
                            f"Got {getattr(system, 'name', system)!r} instead.")
        k = getattr(system.experience, "k", 1) if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SpecError(f"The 'k' parameter of VWPolicy must be an int ≥ 1. Got {k!r} instead.")
        fields = {f.name: f for f in system.schema.fields}
        shared = [n for n in fields if n != system.unit] if shared is None else list(shared)
        unknown = [n for n in shared if n not in fields]
        if unknown:
            raise SpecError(f"The 'shared' parameter of VWPolicy must name request fields of {system.name!r} "
                            f"({sorted(fields)}). Got {unknown[0]!r} instead.")
        for q in interactions:
            if not isinstance(q, str) or len(q) != 2 or not set(q) <= {"u", "i"}:
                raise SpecError(f"The 'interactions' of VWPolicy must be pairs of the namespaces 'u' and 'i' (such as 'ui'). "
                                f"Got {q!r} instead.")
        try:
            import vowpalwabbit
        except ImportError as exc:  # a demo/test dependency: pip install -e '.[dev]'
            raise SpecError("VWPolicy needs the 'vowpalwabbit' package (pip install -e '.[dev]'). Got no such module instead.") from exc
        self.system, self.k, self.seed = system, k, seed
        self.shared_fields = [fields[n] for n in shared]
        self.interactions = list(interactions)
        self.arguments = " ".join([ALGORITHM, *(f"-q {q}" for q in self.interactions), f"--random_seed {seed}", "--quiet"])
        self.version = vowpalwabbit.__version__
        self._vw = vowpalwabbit.Workspace(self.arguments)
        self._native = vowpalwabbit.pyvw.pylibvw.vw  # the native calls Workspace.predict / learn make (module doc, "Speed")
        self._rng = np.random.default_rng(seed)
        self._names = list(system.features.names)

    # -- the report ------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The exact VW arguments (as given and as VW resolved them) and the feature mapping."""
        def kind(f: Any) -> str:
            return {Str: "name=value", Bool: "name when true", Int: "name:value", Float: "name:value"}.get(type(f), "name:value")

        return {
            "vowpalwabbit": self.version,
            "arguments": self.arguments,
            "resolved": self._vw.get_arguments().strip() if hasattr(self._vw, "get_arguments") else None,
            "interactions": [f"-q {q}" for q in self.interactions],
            "shared": {"namespace": "u", "fields": {f.name: kind(f) for f in self.shared_fields}},
            "actions": {"namespace": "i", "features": list(self._names),
                        "computed_by": f"System {self.system.name!r} features over request × candidate rows (zeros left out)"},
            "exploration": "VW's pmf (epsilon-greedy, default epsilon 0.05) draws slot 1; slots 2..k: VW's ranking of the rest",
            "label": "slot 1 only: cost = -reward (click = -1) with its pmf probability, 'action:cost:probability'",
            "k": self.k,
            "seed": self.seed,
        }

    # -- sessions --------------------------------------------------------------------------------
    def _shared_line(self, context: Mapping[str, Any]) -> str:
        tokens = []
        for f in self.shared_fields:
            v = context.get(f.name)
            if v is None or v == "" or v is False:
                continue
            if isinstance(f, Str):
                tokens.append(f"{f.name}={str(v).translate(_SEP)}")
            elif v is True:
                tokens.append(f.name)
            elif v != 0:
                tokens.append(f"{f.name}:{v!r}")
        return "shared |u " + " ".join(tokens)

    def _features(self, contexts: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The System's feature rows of every candidate of ``contexts`` (request fields beside each)."""
        system = self.system
        counts = [len(c["candidates"]) for c in contexts]
        data: dict[str, Any] = {}
        for f in system.schema.fields:
            data[f.name] = [c.get(f.name) for c, m in zip(contexts, counts, strict=True) for _ in range(m)]
        for f in system.candidate_schema.fields:
            data[f.name] = [x.get(f.name) for c in contexts for x in c["candidates"]]
        cols = system.features.schema.validate_batch(data)
        return np.asarray(system.features.batch(cols))

    def sessions(self, contexts: Sequence[Mapping[str, Any]]) -> list[Session]:
        """Each request (its fields and ``"candidates"``) as VW lines; the features of all of them are
        computed in one batch."""
        for i, c in enumerate(contexts):
            if not isinstance(c, Mapping) or not isinstance(c.get("candidates"), list | tuple) or not c["candidates"]:
                raise SpecError(f"contexts[{i}] of VWPolicy.sessions must be a mapping with a non-empty 'candidates' list. "
                                f"Got {c!r:.80} instead.")
        actions = self._action_lines(self._features(contexts))
        cid = self.system.candidate_id
        out, row = [], 0
        for c in contexts:
            m = len(c["candidates"])
            out.append(Session([str(x[cid]) for x in c["candidates"]], self._shared_line(c), actions[row:row + m]))
            row += m
        return out

    def sessions_of(self, requests: pa.Table, candidates: pa.Table) -> list[Session]:
        """:meth:`sessions` of the requests of a table (one row each, its fields as columns) and
        their candidates, flat in request order (a ``request`` column: each candidate's row in
        ``requests``) — the same sessions, without a mapping per request and candidate."""
        n = requests.num_rows
        of = np.asarray(candidates["request"].to_numpy(zero_copy_only=False), dtype=np.int64) if "request" in \
            candidates.column_names else None
        counts = np.bincount(of, minlength=n) if of is not None and of.size and of.min() >= 0 else None
        if of is None or counts is None or counts.size != n or (np.diff(of) < 0).any() or (counts == 0).any():
            raise SpecError("The 'candidates' of VWPolicy.sessions_of must carry a 'request' column: each candidate's row in "
                            f"'requests' ({n} rows), non-decreasing, every request with a candidate. Got {candidates.schema.names} "
                            "instead.")
        system = self.system

        def column(t: pa.Table, name: str) -> list[Any]:
            return t[name].to_pylist() if name in t.column_names else [None] * t.num_rows

        data: dict[str, Any] = {}
        for f in system.schema.fields:  # a request's value beside each of its candidates
            per_request = np.empty(n, dtype=object)
            per_request[:] = column(requests, f.name)
            data[f.name] = per_request[of].tolist()
        for f in system.candidate_schema.fields:
            data[f.name] = column(candidates, f.name)
        cols = system.features.schema.validate_batch(data)
        actions = self._action_lines(np.asarray(system.features.batch(cols)))
        ids = [str(x) for x in column(candidates, system.candidate_id)]
        bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        return [Session(ids[a:b], self._shared_line(c), actions[a:b])
                for c, a, b in zip(requests.to_pylist(), bounds[:-1], bounds[1:], strict=True)]

    def _action_lines(self, X: np.ndarray) -> list[str]:
        """Each feature row as an action line: its nonzero features in the System's order (one pass
        over the nonzero values, not rows × features)."""
        names = np.array(self._names, dtype=object)
        rows, cols = np.nonzero(X)  # row-major: each row's features in column order
        vals = X[rows, cols]
        tok = names[cols]  # a feature of value 1 is its name alone (_token)
        other = np.flatnonzero(vals != 1.0)
        tok[other] = [f"{n}:{v!r}" for n, v in zip(tok[other].tolist(), vals[other].tolist(), strict=True)]  # _token's, inline
        bounds = np.searchsorted(rows, np.arange(X.shape[0] + 1)).tolist()
        t = tok.tolist()
        return ["|i " + " ".join(t[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    # -- decide and learn ------------------------------------------------------------------------
    def decide(self, session: Session) -> VWDecision:
        """VW's ranking of ``session`` (module doc, "Deciding"); VW learns nothing here."""
        vw, native = self._vw, self._native
        examples = _parse(vw, [session.shared, *session.actions])
        try:
            native.predict_multi(vw, examples)
            pmf = [float(p) for p in examples[0].get_action_scores()]  # what Workspace.predict returns (ACTION_PROBS)
            scores = [float(e.get_partial_prediction()) for e in examples[1:]]
        finally:
            native._finish_example_multi_ex(vw, examples)
        cum = np.cumsum(pmf)
        chosen = min(int(np.searchsorted(cum, self._rng.random() * cum[-1], side="right")), len(pmf) - 1)
        rest = sorted((i for i in range(len(pmf)) if i != chosen), key=scores.__getitem__)
        m = min(self.k, len(pmf))
        ranking = [session.ids[chosen], *(session.ids[i] for i in rest[: m - 1])]
        return VWDecision(session, ranking, chosen, pmf[chosen], pmf, scores)

    def learn(self, decision: VWDecision, reward: float) -> None:
        """Teach VW the first slot's ``reward`` (cost = −reward, with its probability)."""
        s, j = decision.session, decision.chosen
        actions = list(s.actions)
        actions[j] = f"{j}:{0.0 - float(reward)!r}:{decision.probability!r} {actions[j]}"
        vw, native = self._vw, self._native
        examples = _parse(vw, [s.shared, *actions])
        try:
            native.learn_multi(vw, examples)
        finally:
            native._finish_example_multi_ex(vw, examples)

    def rank(self, context: Mapping[str, Any]) -> VWDecision:
        """Rank one request (its fields and ``"candidates"``)."""
        return self.decide(self.sessions([context])[0])

    def close(self) -> None:
        self._vw.finish()


def run_online(policy: VWPolicy, contexts: Sequence[Mapping[str, Any]], click_probability: Callable[[Any], np.ndarray], *,
               seed: int) -> tuple[list[list[str]], np.ndarray]:
    """Rank each request in turn and teach VW its first slot's click, drawn (seeded) with the
    probability ``click_probability(context)`` gives that candidate → (the rankings, the clicks)."""
    rng = np.random.default_rng(seed)
    rankings, clicks = [], np.zeros(len(contexts))
    for i, (ctx, session) in enumerate(zip(contexts, policy.sessions(contexts), strict=True)):
        d = policy.decide(session)
        clicks[i] = float(rng.random() < float(click_probability(ctx)[d.chosen]))
        policy.learn(d, clicks[i])
        rankings.append(d.ranking)
    return rankings, clicks

"""A candidate bundle's exact action distribution on logged decisions — the evaluation (target)
policy's ``action_dist`` that off-policy estimators read (obp's convention).

:func:`target_action_dist` reads a per-slot reward dataset (one row per logged (decision, slot):
:func:`~closedloop.datasets.slots.build_reward_dataset`, :func:`~closedloop.datasets.bandit.import_bandit`),
scores each decision's candidates with the bundle through ``Runtime(system, bundle).decide_batch``
(the runtime's own scores, on the logged request and candidates) and returns an array of shape
``(n_rows, n_actions, len_list)``: row ``i`` is the dataset's row ``i`` (file order), ``[i, a, k]``
the probability that the bundle's ranking policy shows action ``a`` at position ``k`` (0-based: the
dataset's slot ``k + 1``) for that row's decision. ``len_list`` is the system's ``Ranking.k``.

Candidates
    By default a decision's candidates are the distinct candidates its rows logged (one per slot
    shown, from ``candidate_json``, in slot order). ``candidates=`` (a CSV/Parquet file of the
    candidate fields, one row per candidate id, or a mapping of column → values) gives every decision
    the same candidate set instead — a catalogue, as the Open Bandit Dataset's ``item_context.csv``
    (each logged row shows one of 34 items; the policy ranks all 34). A candidate a decision does not
    have gets probability 0. ``actions`` fixes the columns (candidate ids, as text); by default the
    candidate ids seen and the logged actions, sorted (numerically when every id is an integer).

The exact marginals (the rules of :mod:`closedloop.experience.ranking`)
    greedy: 1 for the candidate the greedy order puts at slot ``k`` (ties to the lower input index, NaN
    last), else 0. Softmax (Plackett–Luce without replacement), ε-greedy and SquareCB: slot ``k``'s
    probability of each candidate summed exactly over every ordered choice of the ``k`` earlier slots,
    weighted by its probability — each conditional computed from the remaining candidates exactly as the
    runtime draws (softmax over the remaining scores with its limits at ±inf and NaN; ε-greedy's band on
    the best remaining score; SquareCB's inverse-gap weights over the remaining candidates). A slot's
    conditional depends on the *set* the earlier slots hold, not their order, so the enumeration carries
    P(the first ``k`` slots hold the set T) over every set of ``k`` candidates (``C(N, k)`` of them) —
    slot ``k`` reads a ``C(N, k) × N`` tensor per decision, vectorized over decisions in chunks. That
    grows combinatorially with ``len_list``: it runs while ``N × C(N, len_list − 1)`` ≤
    :data:`MAX_ENUMERATION` (2**22: the OBD's 34 items up to ``len_list`` 5, 100 candidates up to 3,
    2,048 at 2) and is refused above with that reason. A decision with fewer than ``len_list``
    candidates shows nothing at the later positions: those positions are 0 for every action (they do not
    sum to 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations
from math import comb
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import DatasetError, EvaluationError, SpecError
from closedloop.evaluation.ranking_rows import _candidate_columns, _manifest

__all__ = ["MAX_ENUMERATION", "LoggedFeedback", "TargetActionDist", "action_index", "check_action_dist", "logged_feedback",
           "marginals", "reward_predictions", "target_action_dist"]

#: The largest ``N × C(N, len_list − 1)`` (candidates per decision × the sets of earlier slots) enumerated exactly.
MAX_ENUMERATION = 1 << 22
#: Elements of one chunk's working tensors (decisions × prefixes × candidates).
_CHUNK = 1 << 21
_INTEGER = re.compile(r"-?[0-9]+")
_COLUMNS = ("decision_id", "position", "unit", "timestamp_ns", "action", "reward", "propensity", "context_json",
            "candidate_json")


class TargetActionDist(NamedTuple):
    """``action_dist`` (n_rows, n_actions, len_list); ``actions``: column ``a``'s candidate id (text);
    ``positions``: column ``k``'s slot in the dataset (1-based: ``k + 1``)."""

    action_dist: np.ndarray
    actions: list[str]
    positions: list[int]


class LoggedFeedback(NamedTuple):
    """The dataset's rows as obp's arrays, one per row in file order: ``reward``, ``action`` (column
    in ``actions``), ``position`` (0-based), ``pscore`` (the logged propensity), ``slate_id`` (the
    decision, as an integer code) and ``units`` (each row's unit, as an integer code)."""

    reward: np.ndarray
    action: np.ndarray
    position: np.ndarray
    pscore: np.ndarray
    slate_id: np.ndarray
    units: np.ndarray


class _Decisions(NamedTuple):
    """The runtime's batch inputs, one request per decision, and each row's decision."""

    table: pa.Table
    row_decision: np.ndarray
    decision_ids: list[str]
    timestamps_ns: np.ndarray
    requests: dict[str, Any]
    candidates: dict[str, Any]


# -- reading the logged decisions -------------------------------------------------------------------
def _rows(system: Any, dataset: Path | str) -> tuple[Any, pa.Table]:
    """The dataset's rows with a context, in file order (as ``load_dataset`` keeps them)."""
    import pyarrow.parquet as pq

    from closedloop.experience.experiences import Ranking

    if not isinstance(system.experience, Ranking):
        raise SpecError(f"target_action_dist needs a system with a Ranking experience. Got {system.experience!r} instead.")
    manifest = _manifest(system, Path(dataset))
    names = set(pq.read_schema(manifest.data_path).names)
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise DatasetError(f"The dataset {manifest.id!r} must have the columns {list(_COLUMNS)} of a per-slot reward "
                           f"dataset. Got no {missing} instead.")
    table = pq.read_table(manifest.data_path, columns=list(_COLUMNS))
    table = table.filter(pc.is_valid(table["context_json"]))
    if table.num_rows == 0:
        raise DatasetError(f"The dataset {manifest.id!r} has no row with a context to evaluate.")
    return manifest, table


def _logged_candidates(system: Any, table: pa.Table, code: np.ndarray) -> dict[str, Any]:
    """Each decision's distinct logged candidates (the first row of each (decision, action)), by
    decision then slot."""
    pos = np.asarray(table["position"].to_numpy(zero_copy_only=False), dtype=np.int64)
    act = np.asarray(table["action"].combine_chunks().dictionary_encode().indices, dtype=np.int64)
    order = np.lexsort((pos, code))
    key = code[order] * (int(act.max()) + 1 if act.size else 1) + act[order]
    _, first = np.unique(key, return_index=True)
    keep = order[np.sort(first)]  # still by decision then slot
    cols = _candidate_columns(system, table["candidate_json"].take(pa.array(keep)))
    cols["request"] = code[keep]
    return cols


def _catalogue(system: Any, candidates: Path | str | Mapping[str, Sequence[Any]], n_req: int) -> dict[str, Any]:
    """Every decision's candidates: the catalogue ``candidates`` repeated once per decision."""
    cschema, cid = system.candidate_schema, system.candidate_id
    if isinstance(candidates, Mapping):
        table = pa.table({k: list(v) for k, v in candidates.items()})
    else:
        from closedloop.datasets.importer import read_file

        table, _ = read_file(Path(candidates))
    if cid not in table.column_names:
        raise DatasetError(f"The 'candidates' of target_action_dist must have the candidate id column {cid!r}. "
                           f"Got the columns {table.column_names} instead.")
    ids = table[cid].cast(pa.string()).to_pylist()
    if len(set(ids)) != len(ids) or table.num_rows == 0:
        raise DatasetError(f"The 'candidates' of target_action_dist must have one row per {cid!r} (at least one). "
                           f"Got {table.num_rows} rows with {len(set(ids))} distinct ids instead.")
    cols = {f.name: table[f.name].to_pylist() * n_req for f in cschema.fields if f.name in table.column_names}
    cols["request"] = np.repeat(np.arange(n_req, dtype=np.int64), table.num_rows)
    return cols


def _decisions(system: Any, dataset: Path | str, candidates: Any) -> tuple[Any, _Decisions]:
    from closedloop.datasets.dataset import decode_contexts

    manifest, table = _rows(system, dataset)
    enc = table["decision_id"].combine_chunks().dictionary_encode()
    code = np.asarray(enc.indices, dtype=np.int64)
    _, first = np.unique(code, return_index=True)  # the dictionary is in order of first appearance
    ctx = decode_contexts(table["context_json"].take(pa.array(first)), system)
    requests = {f.name: ctx[f.name] for f in system.schema.fields}
    cands = _logged_candidates(system, table, code) if candidates is None else _catalogue(system, candidates, first.size)
    ts = np.asarray(table["timestamp_ns"].take(pa.array(first)).to_numpy(zero_copy_only=False), dtype=np.int64)
    return manifest, _Decisions(table, code, enc.dictionary.to_pylist(), ts, requests, cands)


def _scored(system: Any, bundle: Any, dec: _Decisions) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The bundle's score of every decision's candidates through the runtime's batch path →
    (flat scores, offsets, flat candidate ids)."""
    from closedloop.runtime.runtime import Runtime

    rb = Runtime(system, bundle).decide_batch(dec.requests, candidates=dec.candidates, decision_ids=dec.decision_ids,
                                              timestamps_ns=dec.timestamps_ns)
    return np.asarray(rb.scores, dtype=np.float64), np.asarray(rb.offsets, dtype=np.int64), [str(c) for c in rb.candidate_ids]


def _action_index(ids: list[str], logged: list[str], actions: Sequence[Any] | None) -> list[str]:
    if actions is None:
        seen = sorted(set(ids) | set(logged))
        if all(_INTEGER.fullmatch(s) for s in seen):
            return sorted(seen, key=int)
        return seen
    out = [str(a) for a in actions]
    if len(set(out)) != len(out):
        raise SpecError(f"The 'actions' parameter of target_action_dist must list distinct candidate ids. Got {out[:10]!r} instead.")
    lost = sorted(set(ids) - set(out))
    if lost:
        raise SpecError(f"The 'actions' parameter of target_action_dist must hold every candidate id of the decisions. "
                        f"Got no column for {lost[:5]!r} ({len(lost)} in all) instead.")
    return out


# -- the exact marginals ----------------------------------------------------------------------------
def _best(S: np.ndarray, av: np.ndarray) -> np.ndarray:
    """The greedy order's next candidate among the available ones (last axis): the highest score,
    ties to the lower index; when none is above −inf, the first −inf one, else the first NaN one."""
    nan = np.isnan(S)
    key = np.where(av & ~nan, S, -np.inf)
    best = key.argmax(axis=-1)
    low = np.take_along_axis(key, best[..., None], axis=-1)[..., 0] == -np.inf
    if low.any():
        neg = av & (S == -np.inf)
        alt = np.where(neg.any(axis=-1), neg.argmax(axis=-1), (av & nan).argmax(axis=-1))
        best = np.where(low, alt, best)
    return best


def _softmax_cond(S: np.ndarray, av: np.ndarray, t: float) -> np.ndarray:
    """P(next slot = each candidate | the available ones): the softmax over the remaining scores,
    with the runtime's limits (+inf ones share; only −inf and NaN left: the −inf ones; only NaN: all)."""
    nan = np.isnan(S)
    live = av & ~nan
    top = np.where(live, S, -np.inf).max(axis=-1, initial=-np.inf)
    finite = np.isfinite(top)
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.where(live & finite[..., None], np.exp((S - np.where(finite, top, 0.0)[..., None]) / t), 0.0)
    total = w.sum(axis=-1, keepdims=True)
    P = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    if not finite.all():
        share = np.where(top[..., None] == np.inf, av & (S == np.inf), av & (S == -np.inf))
        share = np.where(share.any(axis=-1, keepdims=True), share, av & nan)
        n = share.sum(axis=-1, keepdims=True)
        lim = np.divide(share, n, out=np.zeros(share.shape), where=n > 0)
        P = np.where(finite[..., None], P, lim)
    return P


def _epsilon_cond(S: np.ndarray, av: np.ndarray, policy: Any) -> np.ndarray:
    """P(next slot = each candidate | the available ones) under ε-greedy: ε/r each and 1 − ε more for the
    best remaining when its score is in the band, else the best with probability 1."""
    best = _best(S, av)
    r = av.sum(axis=-1)
    sb = np.take_along_axis(S, best[..., None], axis=-1)[..., 0]
    band = (sb >= policy.low) & (sb <= policy.high) & (r > 0)
    share = np.divide(policy.epsilon, r, out=np.zeros(r.shape), where=r > 0)
    P = np.where(av & band[..., None], share[..., None], 0.0)
    onehot = np.arange(S.shape[-1]) == best[..., None]
    return P + np.where(onehot & (r > 0)[..., None], np.where(band, 1.0 - policy.epsilon, 1.0)[..., None], 0.0)


def _squarecb_cond(S: np.ndarray, av: np.ndarray, gamma: float) -> np.ndarray:
    """P(next slot = each candidate | the available ones) under SquareCB: 1 / (r + γ · gap) for each
    available one but the best remaining (NaN read as −inf; equal scores: gap 0), the rest for the best."""
    best = _best(S, av)
    r = av.sum(axis=-1, keepdims=True)
    key = np.where(np.isnan(S), -np.inf, S)
    kb = np.take_along_axis(key, best[..., None], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # masked out: unavailable candidates
        gap = np.where(key == kb, 0.0, kb - key)
        P = np.where(av, 1.0 / (r + gamma * gap), 0.0)
    onehot = np.arange(S.shape[-1]) == best[..., None]
    P = np.where(onehot, 0.0, P)
    return P + np.where(onehot & (r > 0), 1.0 - P.sum(axis=-1, keepdims=True), 0.0)


def _greedy(S: np.ndarray, av: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((*S.shape, k))
    av = av.copy()
    rows = np.arange(S.shape[0])
    for j in range(k):
        has = av.any(axis=1)
        best = _best(S, av)
        out[rows[has], best[has], j] = 1.0
        av[rows[has], best[has]] = False
    return out


def _binomials(n: int, r: int) -> np.ndarray:
    """``C[i, q]`` = i choose q for i ≤ n, q ≤ r (exact integers)."""
    C = np.zeros((n + 1, r + 1), dtype=np.int64)
    C[:, 0] = 1
    for i in range(1, n + 1):
        C[i, 1:] = C[i - 1, 1:] + C[i - 1, :-1]
    return C


def _sets(N: int, j: int, C: np.ndarray) -> np.ndarray:
    """Every set of ``j`` of the ``N`` candidates (sorted tuples), row ``r`` the set of colex rank ``r``."""
    combos = np.array(list(combinations(range(N), j)), dtype=np.int64).reshape(-1, j)
    return combos[np.argsort(_rank(combos, C), kind="stable")]


def _rank(combos: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Each sorted tuple's colex rank: Σ_i C(c_i, i + 1) (the combinatorial number system)."""
    return C[combos, np.arange(1, combos.shape[1] + 1)[None, :]].sum(axis=1) if combos.shape[1] else np.zeros(len(combos), np.int64)


def _enumerated(S: np.ndarray, av: np.ndarray, k: int, cond: Any) -> np.ndarray:
    """Slot j's marginal: Σ over the sets T of j candidates the earlier slots can hold of P(the
    earlier slots hold T) × the conditional given T (which depends on the set, not its order);
    P(T ∪ {c}) = Σ over c ∈ T ∪ {c} of P(T) × P(c next | T)."""
    B, N = S.shape
    out = np.zeros((B, N, k))
    C = _binomials(N, k)
    P = np.ones((B, 1))
    sets = np.zeros((1, 0), dtype=np.int64)
    for j in range(k):
        taken = np.zeros((sets.shape[0], N), dtype=bool)
        taken[np.arange(sets.shape[0])[:, None], sets] = True
        Q = cond(np.broadcast_to(S[:, None, :], (B, *taken.shape)), av[:, None, :] & ~taken[None, :, :])
        out[:, :, j] = np.einsum("bm,bmn->bn", P, Q)
        if j + 1 < k:
            nxt = _sets(N, j + 1, C)
            P_next = np.zeros((B, nxt.shape[0]))
            for i in range(j + 1):  # the candidate in column i came last; the rest is its parent set
                parent = _rank(np.delete(nxt, i, axis=1), C)
                P_next += P[:, parent] * Q[:, parent, nxt[:, i]]
            P, sets = P_next, nxt
    return out


def _work(N: int, depth: int) -> int:
    """The largest conditional tensor one decision needs: N × C(N, j) for the slots j < depth."""
    return max(N * comb(N, j) for j in range(depth))


def marginals(S: np.ndarray, counts: np.ndarray, k: int, explore: Any) -> np.ndarray:
    """The exact P(candidate ``c`` at slot ``j``) of each row of the padded score matrix ``S``
    (row ``i``: its first ``counts[i]`` columns) under ``explore`` (None: greedy; Softmax;
    EpsilonGreedy; SquareCB) → (rows, columns, k). Module doc: the rules and the enumeration's bound."""
    from closedloop.experience.exploration import Softmax, SquareCB

    S = np.asarray(S, dtype=np.float64)
    R, N = S.shape
    av = np.arange(N)[None, :] < np.asarray(counts)[:, None]
    if explore is None:
        return _greedy(S, av, k)
    depth = min(k, N)
    work = _work(N, depth)
    if work > MAX_ENUMERATION:
        raise EvaluationError(
            "len_list", f"such that N × C(N, len_list − 1) ≤ {MAX_ENUMERATION} (the exact marginals enumerate every set "
            f"the earlier slots can hold; N = {N} candidates per decision)", f"{k} ({N} × C({N}, {depth - 1}) = {work})",
            "marginals")
    if isinstance(explore, Softmax):
        t = explore.temperature

        def cond(s: np.ndarray, a: np.ndarray) -> np.ndarray:
            return _softmax_cond(s, a, t)
    elif isinstance(explore, SquareCB):
        g = explore.gamma

        def cond(s: np.ndarray, a: np.ndarray) -> np.ndarray:
            return _squarecb_cond(s, a, g)
    else:
        def cond(s: np.ndarray, a: np.ndarray) -> np.ndarray:
            return _epsilon_cond(s, a, explore)
    out = np.zeros((R, N, k))
    step = max(1, _CHUNK // work)
    for lo in range(0, R, step):
        out[lo:lo + step, :, :depth] = _enumerated(S[lo:lo + step], av[lo:lo + step], depth, cond)
    return out


# -- the public functions ---------------------------------------------------------------------------
def _padded(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.diff(offsets)
    N = int(counts.max()) if counts.size else 0
    req = np.repeat(np.arange(counts.size), counts)
    col = np.arange(flat.size) - offsets[:-1][req]
    S = np.full((counts.size, N), np.nan)
    S[req, col] = flat
    return S, counts, col


def _by_action(per_cand: np.ndarray, offsets: np.ndarray, col: np.ndarray, ids: list[str], index: list[str],
               row_decision: np.ndarray) -> np.ndarray:
    """Per-candidate values (requests × padded candidates × L) → one row per dataset row × actions × L."""
    where = {a: i for i, a in enumerate(index)}
    act = np.fromiter((where[c] for c in ids), dtype=np.int64, count=len(ids))
    req = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    per_dec = np.zeros((offsets.size - 1, len(index), per_cand.shape[2]))
    per_dec[req, act] = per_cand[req, col]
    return per_dec[row_decision]


def target_action_dist(system: Any, bundle: Any, dataset_rows: Path | str, *, actions: Sequence[Any] | None = None,
                       candidates: Path | str | Mapping[str, Sequence[Any]] | None = None) -> TargetActionDist:
    """The bundle's exact ``action_dist`` on every row of the per-slot reward dataset ``dataset_rows``
    (a dataset directory) — module doc."""
    _, dec = _decisions(system, dataset_rows, candidates)
    flat, offsets, ids = _scored(system, bundle, dec)
    index = _action_index(ids, dec.table["action"].cast(pa.string()).to_pylist(), actions)
    S, counts, col = _padded(flat, offsets)
    k = int(system.experience.k)
    M = marginals(S, counts, k, system.experience.explore)
    return TargetActionDist(_by_action(M, offsets, col, ids, index, dec.row_decision), index, list(range(1, k + 1)))


def reward_predictions(system: Any, bundle: Any, dataset_rows: Path | str, *, actions: Sequence[Any] | None = None,
                       candidates: Path | str | Mapping[str, Sequence[Any]] | None = None) -> np.ndarray:
    """A reward model's ``estimated_rewards_by_reg_model`` (n_rows, n_actions, len_list): the bundle's
    score of each action for each row's decision, the same at every position (0 for an action the
    decision does not have). The bundle's score must be the expected reward (e.g. a click probability)."""
    _, dec = _decisions(system, dataset_rows, candidates)
    flat, offsets, ids = _scored(system, bundle, dec)
    index = _action_index(ids, dec.table["action"].cast(pa.string()).to_pylist(), actions)
    S, _, col = _padded(flat, offsets)
    k = int(system.experience.k)
    return _by_action(np.repeat(S[:, :, None], k, axis=2), offsets, col, ids, index, dec.row_decision)


def logged_feedback(system: Any, dataset_rows: Path | str, actions: Sequence[str]) -> LoggedFeedback:
    """The dataset's rows as the estimators' arrays (file order, the rows with a context), the
    logged actions mapped to the columns ``actions`` (a logged action without a column is refused)."""
    _, table = _rows(system, dataset_rows)
    where = {str(a): i for i, a in enumerate(actions)}
    logged = table["action"].cast(pa.string()).to_pylist()
    lost = sorted({a for a in logged if a not in where})
    if lost:
        raise DatasetError(f"Every logged action must have a column in 'actions'. Got {lost[:5]!r} ({len(lost)} in all) "
                           "without one instead.")
    k = int(system.experience.k)
    pos = np.asarray(table["position"].to_numpy(zero_copy_only=False), dtype=np.int64) - 1
    if pos.size and (pos.min() < 0 or pos.max() >= k):
        raise DatasetError(f"Every logged slot must be in 1..{k} (the system's Ranking.k). Got {int(pos.max()) + 1} instead.")

    def codes(name: str) -> np.ndarray:
        return np.asarray(table[name].cast(pa.string()).combine_chunks().dictionary_encode().indices, dtype=np.int64)

    return LoggedFeedback(
        reward=np.asarray(table["reward"].to_numpy(zero_copy_only=False), dtype=np.float64),
        action=np.fromiter((where[a] for a in logged), dtype=np.int64, count=len(logged)),
        position=pos, pscore=np.asarray(table["propensity"].to_numpy(zero_copy_only=False), dtype=np.float64),
        slate_id=codes("decision_id"), units=codes("unit"),
    )


def action_index(system: Any, dataset_rows: Path | str, *,
                 candidates: Path | str | Mapping[str, Sequence[Any]] | None = None) -> list[str]:
    """The default columns of :func:`target_action_dist` without scoring: the logged actions and
    the catalogue's candidate ids, sorted (numerically when every id is an integer)."""
    _, table = _rows(system, dataset_rows)
    ids: list[str] = []
    if candidates is not None:
        ids = [str(c) for c in _catalogue(system, candidates, 1)[system.candidate_id]]
    return _action_index(ids, table["action"].cast(pa.string()).to_pylist(), None)


def check_action_dist(action_dist: Any, shape: tuple[int, int, int], *, name: str = "action_dist", sums: bool = True,
                      where: str = "ope") -> np.ndarray:
    """``action_dist`` as float64 of ``shape`` (n_rows, n_actions, len_list), finite, in [0, 1] and
    (``sums``) summing to 1 over actions for every row and position (within 1e-6); else an
    :class:`~closedloop.errors.EvaluationError` naming the rule and the first value that breaks it.
    ``sums=False``: a reward model's predictions (any finite numbers)."""
    a = np.asarray(action_dist)
    if a.dtype.kind not in "fiu":
        raise EvaluationError(name, "an array of numbers", f"dtype {a.dtype}", where)
    if a.shape != shape:
        raise EvaluationError(name, f"of shape (n_rows, n_actions, len_list) = {shape} for this dataset", f"shape {a.shape}",
                              where)
    a = a.astype(np.float64, copy=False)
    bad = np.argwhere(~np.isfinite(a))
    if bad.size:
        raise EvaluationError(name, "finite", f"{a[tuple(bad[0])]} at round {bad[0][0]}, action {bad[0][1]}, position "
                              f"{bad[0][2]}", where)
    if not sums:
        return a
    bad = np.argwhere((a < 0) | (a > 1))
    if bad.size:
        raise EvaluationError(name, "in [0, 1]", f"{a[tuple(bad[0])]} at round {bad[0][0]}, action {bad[0][1]}, position "
                              f"{bad[0][2]}", where)
    total = a.sum(axis=1)
    bad = np.argwhere(np.abs(total - 1.0) > 1e-6)
    if bad.size:
        i, k = bad[0]
        raise EvaluationError(name, "summing to 1 over actions for every round and position", f"{total[i, k]:.6g} at round "
                              f"{i}, position {k}", where)
    return a

"""The candidates a ranking report's policy value ranks: each logged decision's **whole** candidate
set, when the dataset keeps it (:mod:`closedloop.datasets.candidate_sets`).

A per-slot reward dataset holds the slots shown; a policy that re-ranks only those cannot show
what the logger left out — and with ``k = 1`` (choosing one of N) every policy shows the one logged
candidate, so no estimate tells two bundles apart. When the dataset was built from telemetry that
logged its candidates' fields it has ``candidate_sets.parquet``: :func:`logged_sets` reads each
report decision's set, places each logged slot at its candidate's column in it and reads the
logger's distribution and marginals from the logged scores — none of it depends on a bundle, so a
cycle computes it while its candidate trains — and :func:`catalogue` scores every candidate through
the runtime's batch path (each bundle, and the reward model). Without candidate sets
:func:`logged_sets` returns None: the policy value then re-ranks the logged slots, and says so.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

__all__ = ["Catalogue", "LoggedSets", "catalogue", "logged_sets", "report_slots"]


class Catalogue(NamedTuple):
    """The report decisions' whole candidate sets: decision ``d``'s candidates are the flat entries
    ``offsets[d]:offsets[d + 1]`` (none for a decision without a logged set); ``column``: each report
    row's column in its decision's set (−1: not in it); ``scores``: each bundle's flat scores;
    ``reward_scores``: the reward model's (or None); ``logger``: the support check's reference
    (decisions, candidates, positions) — the logging policy's probability of each candidate at each
    slot given the slots it logged before (from the logged scores), 1 for those shown earlier;
    ``excluded``: decisions without a usable set; ``marginal``: each report row's logging policy's
    marginal P(its candidate at its slot) from the logged scores
    (:func:`~closedloop.evaluation.ranking_marginals.logger_marginals`; NaN where the logged
    propensity stands: a kill-switch decision's, or one with a non-finite score or a repeated slot)."""

    offsets: np.ndarray
    ids: list[str]
    column: np.ndarray
    scores: list[np.ndarray]
    reward_scores: np.ndarray | None
    logger: np.ndarray
    excluded: dict[str, int]
    marginal: np.ndarray | None = None


def _take(col: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of one batch column (an Arrow array, a numpy array or a list)."""
    if isinstance(col, pa.Array | pa.ChunkedArray):
        return col.take(pa.array(idx, pa.int64()))
    if isinstance(col, np.ndarray):
        return col[idx]
    return [col[int(i)] for i in idx]


def _scored(system: Any, bundle: Any, batch: tuple[Any, Any, list[str], list[int]], n_flat: int) -> np.ndarray:
    from closedloop.errors import SpecError
    from closedloop.runtime.runtime import Runtime

    requests, candidates, ids, ts = batch
    rb = Runtime(system, bundle).decide_batch(requests, candidates=candidates, decision_ids=ids, timestamps_ns=ts)
    scores = np.asarray(rb.scores, dtype=np.float64)
    if scores.shape != (n_flat,):
        raise SpecError(f"The runtime scored {scores.shape[0]} candidates of bundle {bundle.version!r} on the logged candidate "
                        f"sets; they hold {n_flat}.")
    return scores


def _reward_scores(system: Any, reward_model: Any, bundles: list[Any], scores: list[np.ndarray],
                   batch: tuple[Any, Any, list[str], list[int]], n_flat: int) -> np.ndarray:
    """The reward model's scores of the sets: a bundle's when the reward model is that bundle's
    intelligence (the same object, neither with guardrails: the same scores), else its own."""
    for b, s in zip(bundles, scores, strict=True):
        if b.intelligence is reward_model.intelligence and not b.guardrails and not reward_model.guardrails:
            return s
    return _scored(system, reward_model, batch, n_flat)


class LoggedSets(NamedTuple):
    """What :func:`catalogue` reads of the dataset whatever the bundles (:func:`logged_sets`): the
    report decisions' whole candidate sets as the runtime's batch (``batch``: requests, candidates,
    decision ids, timestamps; ``n_flat`` candidates in all) and the fields of :class:`Catalogue`
    that do not depend on a bundle."""

    offsets: np.ndarray
    ids: list[str]
    column: np.ndarray
    batch: tuple[Any, Any, list[str], list[int]]
    n_flat: int
    logger: np.ndarray
    excluded: dict[str, int]
    marginal: np.ndarray


def logged_sets(system: Any, rows: Any, *, slots: pa.Table | None = None, seed: int = 0) -> LoggedSets | None:
    """The part of :func:`catalogue` no bundle changes — the sets read, placed and the logger's
    readings of them (its support reference and its marginals, drawn with ``seed``) — so a cycle can
    compute it while its candidate trains; None when the dataset has no sets or no report decision
    has one."""
    from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, read_candidate_sets

    path = rows.manifest.path
    if not (path / CANDIDATE_SETS_FILE).is_file():
        return None
    if slots is None:
        slots = report_slots(path, rows.decision_ids)
    sets = read_candidate_sets(system, path, rows=slots)  # the report's decisions only
    where = {d: i for i, d in enumerate(sets.decision_ids)}
    idx = np.asarray([where.get(d, -1) for d in rows.decision_ids], dtype=np.int64)
    have = np.flatnonzero(idx >= 0)
    set_counts = np.diff(sets.offsets)
    counts = np.zeros(idx.size, dtype=np.int64)
    counts[have] = set_counts[idx[have]]
    if not counts.size or int(counts.max()) == 0:
        return None
    src = idx[have]
    lens = set_counts[src]
    flat = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens - sets.offsets[:-1][src], lens)
    requests = {name: _take(col, src) for name, col in sets.requests.items()}
    candidates = {name: _take(col, flat) for name, col in sets.candidates.items() if name != "request"}
    candidates["request"] = np.repeat(np.arange(src.size, dtype=np.int64), lens)
    batch = (requests, candidates, np.asarray(sets.decision_ids, dtype=object)[src].tolist(), sets.timestamps_ns[src].tolist())
    ids = np.asarray(sets.candidate_ids, dtype=object)[flat].tolist()
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    column = _columns(rows, system, offsets, ids)
    logged = _logged(system, rows, offsets, column, sets.logged_scores[flat])
    return LoggedSets(offsets, ids, column, batch, int(flat.size), _logger(system, logged),
                      {"decisions_without_a_candidate_set": int(idx.size - have.size)}, _marginal(system, rows, column, logged, seed))


def catalogue(system: Any, bundles: list[Any], rows: Any, sets: LoggedSets, reward_model: Any = None) -> Catalogue:
    """The whole candidate sets of the decisions of ``rows`` (a :class:`~closedloop.evaluation.
    ranking_rows.SlotRows`) — what :func:`logged_sets` read of them — scored by ``bundles`` (and
    ``reward_model``): module doc."""
    scores = [_scored(system, b, sets.batch, sets.n_flat) for b in bundles]
    return Catalogue(sets.offsets, sets.ids, sets.column, scores,
                     None if reward_model is None else _reward_scores(system, reward_model, bundles, scores, sets.batch, sets.n_flat),
                     sets.logger, sets.excluded, sets.marginal)


def report_slots(path: Any, decision_ids: list[str]) -> pa.Table:
    """The dataset's slot rows of the decisions ``decision_ids``, in the file's order (the columns
    :func:`~closedloop.datasets.candidate_sets.read_candidate_sets` reads, the logged propensity
    among them): each decision's set is read from its own rows, so reading only the report's (the
    test side) gives them as reading all."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from closedloop.datasets.candidate_sets import _ROWS
    from closedloop.datasets.dataset import DATA_FILE

    names = set(pq.read_schema(path / DATA_FILE).names)
    table = pq.read_table(path / DATA_FILE, columns=[c for c in _ROWS if c in names])
    mine = pc.is_in(table["decision_id"].cast(pa.string()), value_set=pa.array(decision_ids, pa.string()))
    return table.filter(mine)


class _Logged(NamedTuple):
    """What the report decisions logged, as the logger's two readings (:func:`_logger`,
    :func:`_marginal`) take it: the logged scores as a padded (D, N) matrix (NaN beyond a set), the
    available columns, the kill-switch decisions (no score logged), the shown (column, slot) pairs
    in slot order (:func:`_shown`) and the decisions with a non-finite score or a candidate shown
    twice."""

    S: np.ndarray
    av: np.ndarray
    kill: np.ndarray
    picks: np.ndarray
    slots: np.ndarray
    odd: np.ndarray


def _logged(system: Any, rows: Any, offsets: np.ndarray, column: np.ndarray, scores: np.ndarray) -> _Logged:
    counts = np.diff(offsets)
    D, N = counts.size, max(1, int(counts.max()))
    S = np.full((D, N), np.nan)
    at = np.repeat(np.arange(D), counts), np.arange(int(counts.sum())) - np.repeat(offsets[:-1], counts)
    S[at] = scores
    av = np.arange(N)[None, :] < counts[:, None]
    picks, slots = _shown(rows, column, int(system.experience.k), D)
    ps = np.sort(picks, axis=1)  # a candidate shown twice: equal neighbours once sorted
    repeated = ((ps[:, 1:] == ps[:, :-1]) & (ps[:, 1:] >= 0)).any(axis=1)
    return _Logged(S, av, ~np.any(av & ~np.isnan(S), axis=1), picks, slots, np.any(av & ~np.isfinite(S), axis=1) | repeated)


def _marginal(system: Any, rows: Any, column: np.ndarray, lg: _Logged, seed: int) -> np.ndarray:
    """Each report row's logger marginal (:class:`Catalogue`'s ``marginal``)."""
    from closedloop.evaluation.ranking_marginals import logger_marginals

    k = int(system.experience.k)
    out = np.full(int(rows.offsets[-1]), np.nan)
    picks, slots = lg.picks, lg.slots
    at_slot = np.full(picks.shape, -1, dtype=np.int64)
    d, i = np.nonzero(picks >= 0)
    at_slot[d, slots[d, i]] = picks[d, i]
    use = np.flatnonzero(~lg.kill & ~lg.odd & (picks >= 0).any(axis=1))
    if not use.size:
        return out
    M = np.full(picks.shape, np.nan)
    M[use] = logger_marginals(lg.S[use], lg.av[use].sum(axis=1), at_slot[use], k, system.experience.explore, seed=seed)
    pos = np.asarray(rows.position, dtype=np.int64) - 1
    dec = np.repeat(np.arange(lg.S.shape[0], dtype=np.int64), np.diff(rows.offsets))
    ok = np.flatnonzero((column >= 0) & (pos >= 0) & (pos < k))
    ok = ok[at_slot[dec[ok], pos[ok]] == column[ok]]  # the row is the decision's logged slot
    out[ok] = M[dec[ok], pos[ok]]
    return out


def _logger(system: Any, lg: _Logged) -> np.ndarray:
    """The logging policy's distribution over each decision's candidates at each slot, **given the
    slots it logged before** (as the runtime logs its propensities): the support check's reference,
    the system's exploration over the scores the decision logged, exact and cheap (the estimators
    divide by the marginals, :func:`_marginal`). The
    candidates the decision showed at an earlier slot count as supported (1): the log has them. A
    decision that logged no scores (the kill switch: the first k candidates, propensity 1) puts its
    mass on what it showed. Slot by slot over all the decisions at once (the exploration's
    conditional, as the exact marginals compute it); a decision with a non-finite logged score, or
    one whose slots show a candidate twice, goes through
    :func:`~closedloop.experience.ranking_policy.slot_distributions` one by one."""
    k = int(system.experience.k)
    S, av, kill, picks, slots = lg.S, lg.av, lg.kill, lg.picks, lg.slots
    D, N = S.shape
    counts = av.sum(axis=1)
    L = np.zeros((D, N, k))
    n_shown = (picks >= 0).sum(axis=1)
    d_kill = np.flatnonzero(kill & (n_shown > 0))
    for i in range(k):
        has = d_kill[picks[d_kill, i] >= 0]
        L[has, picks[has, i], slots[has, i]] = 1.0
    odd = ~kill & (n_shown > 0) & lg.odd
    fast = np.flatnonzero(~kill & (n_shown > 0) & ~odd)
    if fast.size and system.experience.explore is not None:
        _conditionals(L, S[fast], av[fast], picks[fast], slots[fast], fast, system.experience.explore)
    for d in np.flatnonzero(odd) if system.experience.explore is not None else np.flatnonzero(~kill & (n_shown > 0)):
        _one_logger(L, int(d), S[d, :counts[d]], picks[d], slots[d], system.experience.explore)
    return L


def _shown(rows: Any, column: np.ndarray, k: int, D: int) -> tuple[np.ndarray, np.ndarray]:
    """Each decision's shown (slot, column) pairs in slot order (ties: by column), as (D, k) arrays
    of columns and 0-based slots (−1 past a decision's last)."""
    pos = np.asarray(rows.position, dtype=np.int64) - 1
    dec = np.repeat(np.arange(D, dtype=np.int64), np.diff(rows.offsets))
    ok = np.flatnonzero((column >= 0) & (pos >= 0) & (pos < k))
    ok = ok[np.lexsort((column[ok], pos[ok], dec[ok]))]
    d = dec[ok]
    first = np.searchsorted(d, np.arange(D))
    rank = np.arange(ok.size) - first[d]
    picks = np.full((D, k), -1, dtype=np.int64)
    slots = np.full((D, k), -1, dtype=np.int64)
    keep = rank < k
    picks[d[keep], rank[keep]] = column[ok[keep]]
    slots[d[keep], rank[keep]] = pos[ok[keep]]
    return picks, slots


def _conditionals(L: np.ndarray, S: np.ndarray, av: np.ndarray, picks: np.ndarray, slots: np.ndarray, where: np.ndarray,
                  explore: Any) -> None:
    """Fill ``L``'s rows ``where``: at each shown slot, the exploration's conditional distribution
    given the candidates shown before it (which then count 1)."""
    from closedloop.evaluation.ranking_marginals import _conditional

    cond = _conditional(explore)
    av = av.copy()
    for i in range(picks.shape[1]):
        has = np.flatnonzero(picks[:, i] >= 0)
        if not has.size:
            break
        dist = cond(S[has], av[has])
        L[where[has], :, slots[has, i]] = dist
        for e in range(i):
            L[where[has], picks[has, e], slots[has, i]] = 1.0
        av[has, picks[has, i]] = False


def _one_logger(L: np.ndarray, d: int, scores: np.ndarray, picks: np.ndarray, slots: np.ndarray, explore: Any) -> None:
    """Decision ``d``'s entries of ``L`` by :func:`~closedloop.experience.ranking_policy.slot_distributions`."""
    from closedloop.experience.ranking_policy import slot_distributions

    n = scores.size
    shown = [int(c) for c in picks if c >= 0]
    for i, (j, dist) in enumerate(zip(slots[: len(shown)], slot_distributions(scores.tolist(), shown, explore), strict=True)):
        L[d, :n, int(j)] = dist
        L[d, shown[:i], int(j)] = 1.0


def _columns(rows: Any, system: Any, offsets: np.ndarray, ids: list[str]) -> np.ndarray:
    """Each report row's column in its decision's candidate set (−1 when its candidate is not there),
    by one join on (decision, candidate id)."""
    n_rows = int(rows.offsets[-1])
    row_dec = np.repeat(np.arange(rows.offsets.size - 1, dtype=np.int64), np.diff(rows.offsets))
    flat_dec = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    left = pa.table({"d": pa.array(row_dec), "c": pa.array([str(c) for c in rows.candidates[system.candidate_id]], pa.string()),
                     "r": pa.array(np.arange(n_rows, dtype=np.int64))})
    right = pa.table({"d": pa.array(flat_dec), "c": pa.array(ids, pa.string()),
                      "col": pa.array(np.arange(len(ids), dtype=np.int64) - offsets[:-1][flat_dec])})
    joined = left.join(right, ["d", "c"], join_type="left outer", use_threads=False)
    out = np.full(n_rows, -1, dtype=np.int64)
    out[np.asarray(joined["r"], dtype=np.int64)] = np.asarray(joined["col"].fill_null(-1), dtype=np.int64)
    return out

"""The candidates a ranking report's policy value ranks: each logged decision's **whole** candidate
set, when the dataset keeps it (:mod:`closedloop.datasets.candidate_sets`).

A per-slot reward dataset holds the slots shown; a policy that re-ranks only those cannot show
what the logger left out — and with ``k = 1`` (choosing one of N) every policy shows the one logged
candidate, so no estimate tells two bundles apart. When the dataset was built from telemetry that
logged its candidates' fields it has ``candidate_sets.parquet``: :func:`catalogue` then scores every
candidate of each report decision through the runtime's batch path (each bundle, and the reward
model) and places each logged slot at its candidate's column in that set. It returns None — the
policy value then re-ranks the logged slots, and says so — when the dataset has no candidate sets
or when the exact marginals would enumerate more than
:data:`~closedloop.evaluation.ope_policy.MAX_ENUMERATION` prefixes (many candidates and a deep
``k``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

__all__ = ["Catalogue", "catalogue"]


class Catalogue(NamedTuple):
    """The report decisions' whole candidate sets: decision ``d``'s candidates are the flat entries
    ``offsets[d]:offsets[d + 1]`` (none for a decision without a logged set); ``column``: each report
    row's column in its decision's set (−1: not in it); ``scores``: each bundle's flat scores;
    ``reward_scores``: the reward model's (or None); ``logger``: the support check's reference
    (decisions, candidates, positions) — the logging policy's probability of each candidate at each
    slot given the slots it logged before (from the logged scores), 1 for those shown earlier;
    ``excluded``: decisions without a usable set."""

    offsets: np.ndarray
    ids: list[str]
    column: np.ndarray
    scores: list[np.ndarray]
    reward_scores: np.ndarray | None
    logger: np.ndarray
    excluded: dict[str, int]


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


def catalogue(system: Any, bundles: list[Any], rows: Any, reward_model: Any = None) -> Catalogue | None:
    """The whole candidate sets of the decisions of ``rows`` (a :class:`~closedloop.evaluation.
    ranking_rows.SlotRows`) scored by ``bundles`` (and ``reward_model``) — module doc; None when
    the dataset has no sets or they are too large to enumerate exactly."""
    from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, read_candidate_sets

    path = rows.manifest.path
    if not (path / CANDIDATE_SETS_FILE).is_file():
        return None
    sets = read_candidate_sets(system, path)
    where = {d: i for i, d in enumerate(sets.decision_ids)}
    idx = np.asarray([where.get(d, -1) for d in rows.decision_ids], dtype=np.int64)
    have = np.flatnonzero(idx >= 0)
    set_counts = np.diff(sets.offsets)
    counts = np.zeros(idx.size, dtype=np.int64)
    counts[have] = set_counts[idx[have]]
    if not counts.size or int(counts.max()) == 0:
        return None
    src = idx[have]
    flat = np.concatenate([np.arange(sets.offsets[i], sets.offsets[i + 1]) for i in src]) if src.size else np.empty(0, np.int64)
    requests = {name: _take(col, src) for name, col in sets.requests.items()}
    candidates = {name: _take(col, flat) for name, col in sets.candidates.items() if name != "request"}
    candidates["request"] = np.repeat(np.arange(src.size, dtype=np.int64), set_counts[src])
    batch = (requests, candidates, [sets.decision_ids[i] for i in src], sets.timestamps_ns[src].tolist())
    ids = [sets.candidate_ids[i] for i in flat]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    column = _columns(rows, system, offsets, ids)
    return Catalogue(offsets, ids, column, [_scored(system, b, batch, flat.size) for b in bundles],
                     None if reward_model is None else _scored(system, reward_model, batch, flat.size),
                     _logger(system, rows, offsets, column, sets.logged_scores[flat]),
                     {"decisions_without_a_candidate_set": int(idx.size - have.size)})


def _logger(system: Any, rows: Any, offsets: np.ndarray, column: np.ndarray, logged: np.ndarray) -> np.ndarray:
    """The logging policy's distribution over each decision's candidates at each slot, **given the
    slots it logged before** (the propensities the estimators divide by are conditional in the same
    way): the system's exploration over the scores the decision logged, exact and cheap — the
    marginals would need an enumeration or draws that cannot resolve a probability of 1e-3. The
    candidates the decision showed at an earlier slot count as supported (1): the log has them. A
    decision that logged no scores (the kill switch: the first k candidates, propensity 1) puts its
    mass on what it showed."""
    from closedloop.experience.ranking_policy import slot_distributions

    counts, k = np.diff(offsets), int(system.experience.k)
    L = np.zeros((counts.size, max(1, int(counts.max())), k))
    pos = np.asarray(rows.position, dtype=np.int64) - 1
    for d in range(counts.size):
        lo, hi, n = int(offsets[d]), int(offsets[d + 1]), int(counts[d])
        r = range(int(rows.offsets[d]), int(rows.offsets[d + 1]))
        shown = sorted((int(pos[i]), int(column[i])) for i in r if column[i] >= 0 and 0 <= pos[i] < k)
        scores = logged[lo:hi]
        if n == 0 or not shown:
            continue
        if np.isnan(scores).all():
            for j, c in shown:
                L[d, c, j] = 1.0
            continue
        picks = [c for _, c in shown]
        for i, ((j, _), dist) in enumerate(zip(shown, slot_distributions(scores.tolist(), picks, system.experience.explore),
                                               strict=True)):
            L[d, :n, j] = dist
            L[d, picks[:i], j] = 1.0  # shown at an earlier slot: the log has it (the target's mass there is no gap)
    return L


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

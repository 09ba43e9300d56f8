"""The ranking report's policy value: what each bundle's ranking policy would earn per logged slot,
estimated off-policy from the logged propensities (:func:`policy_value`).

On the held-out rows the report measures (:class:`~closedloop.evaluation.ranking_rows.SlotRows`),
each bundle's policy ranks every decision's logged candidates; its exact action distribution —
P(candidate ``c`` at position ``k``), :func:`~closedloop.evaluation.ope_policy.marginals` over the
scores the runtime computed, as :func:`~closedloop.evaluation.ope_policy.target_action_dist` with
the logged candidates — goes to :func:`~closedloop.evaluation.ope.estimate` (IPS and SNIPS; DM, DR,
SNDR and Switch-DR with a reward model bundle, whose score of a candidate is the predicted reward
at every position, as :func:`~closedloop.evaluation.ope_policy.reward_predictions`) with the rows'
units, and each later bundle against the first to
:func:`~closedloop.evaluation.ope.estimate_difference` (paired by unit). The actions are the
columns of each decision's candidates (the estimators read the target only at the logged action
and over the decision's own candidates), so the arrays stay (rows, candidates per decision,
positions) however many distinct candidates the log holds; the support check is made over the
candidate ids themselves (:func:`_support`). The same per slice of the system's ``slices`` that
are request fields. The fields: docs/evaluation.md, "Ranking systems", "Policy value".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from closedloop.evaluation import ranking_marginals
from closedloop.evaluation.ope import SUPPORT_THRESHOLD, SUPPORT_TOLERANCE, SupportCheck, estimate, estimate_difference
from closedloop.evaluation.ope.intervals import bootstrap_sums, percentile_interval, unit_sums
from closedloop.evaluation.ope_policy import _padded
from closedloop.evaluation.ranking_marginals import policy_marginals
from closedloop.evaluation.ranking_rows import SlotRows
from closedloop.evaluation.ranking_sets import Catalogue

__all__ = ["MIN_SLICE_ROWS", "POLICY_RESAMPLES", "policy_value"]

#: The resamples of the policy value's intervals when the report's ``bootstrap`` is 0 (the gate
#: never judges a point estimate).
POLICY_RESAMPLES = 200
#: A slice value with fewer usable rows is listed with its count, not estimated (nor judged).
MIN_SLICE_ROWS = 500


class _Frame(NamedTuple):
    """The rows the estimators read (the usable ones), as the estimators' arrays."""

    keep: np.ndarray  # bool per report row
    decision: np.ndarray  # each kept row's decision
    action: np.ndarray  # each kept row's column among its decision's candidates
    position: np.ndarray  # 0-based
    pscore: np.ndarray
    reward: np.ndarray
    units: np.ndarray
    gid: np.ndarray  # (decisions, padded candidates): each candidate's id code, −1 for padding
    excluded: dict[str, int]
    logger: np.ndarray | None = None  # with whole candidate sets: the logger's distribution per kept row


def _propensities(rows: SlotRows, slots: pa.Table | None = None) -> np.ndarray | None:
    """Each report row's logged propensity (NaN where missing), matched by (decision id, slot); None
    when the dataset has no ``propensity`` column. ``slots``: the report decisions' slot rows
    (every row of theirs, in the file's order) when the caller read them."""
    path = rows.manifest.data_path
    if slots is not None and "propensity" in slots.column_names:
        file = slots.select(["decision_id", "position", "propensity"])
    elif "propensity" not in pq.read_schema(path).names:
        return None
    else:
        file = pq.read_table(path, columns=["decision_id", "position", "propensity"])
    file = file.group_by(["decision_id", "position"], use_threads=False).aggregate([("propensity", "first")])
    counts = np.diff(rows.offsets)
    ids = pa.array(np.repeat(np.asarray(rows.decision_ids, dtype=object), counts)).cast(file["decision_id"].type)
    left = pa.table({"decision_id": ids,
                     "position": pa.array(rows.position).cast(file["position"].type), "_i": np.arange(rows.reward.size)})
    joined = left.join(file, ["decision_id", "position"], join_type="left outer").sort_by("_i")
    return np.asarray(joined["propensity_first"].cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)


def _frame(system: Any, rows: SlotRows, pscore: np.ndarray, cat: Catalogue | None) -> _Frame:
    """The usable rows: a logged propensity in (0, 1], a slot within the system's ``k`` and within
    the decision's candidates (the policy shows nothing at a later slot) — with a catalogue, a
    candidate in the decision's whole set; the others counted."""
    decision = np.repeat(np.arange(rows.offsets.size - 1), np.diff(rows.offsets))
    if cat is None:  # the candidates are the logged slots: row r is its decision's column r − first
        offsets, column = rows.offsets, np.arange(rows.reward.size) - rows.offsets[:-1][decision]
        flat_ids = [str(c) for c in rows.candidates[system.candidate_id]]
    else:
        offsets, column, flat_ids = cat.offsets, cat.column, cat.ids
    counts = np.diff(offsets)
    pos = rows.position - 1
    k = int(system.experience.k)
    ok_p = np.isfinite(pscore) & (pscore > 0) & (pscore <= 1)
    ok_k = (pos >= 0) & (pos < k)
    ok_s = column >= 0
    ok_c = pos < counts[decision]
    keep = ok_p & ok_k & ok_s & ok_c
    excluded = {"rows_without_a_propensity": int((~ok_p).sum()), "rows_at_a_slot_beyond_k": int((ok_p & ~ok_k).sum()),
                "rows_at_a_slot_beyond_the_decisions_candidates": int((ok_p & ok_k & ok_s & ~ok_c).sum())}
    if cat is not None:
        excluded["rows_whose_candidate_set_was_not_logged"] = int((ok_p & ok_k & ~ok_s).sum())
    _, code = np.unique(np.asarray(flat_ids, dtype=str), return_inverse=True)
    flat_dec = np.repeat(np.arange(counts.size), counts)
    gid = np.full((counts.size, max(1, int(counts.max()))), -1, dtype=np.int64)
    gid[flat_dec, np.arange(len(flat_ids)) - offsets[:-1][flat_dec]] = code.reshape(-1)
    return _Frame(keep, decision[keep], column[keep], pos[keep], pscore[keep], rows.reward[keep],
                  rows.units[decision[keep]], gid, excluded, None if cat is None else cat.logger[decision[keep]])


def _support(f: _Frame, dist: np.ndarray, sel: np.ndarray, threshold: float = SUPPORT_THRESHOLD,
             tolerance: float = SUPPORT_TOLERANCE) -> SupportCheck:
    """The support check over candidate ids: the share of the target's mass (at each row's position,
    averaged over rows) on (candidate, position) pairs the logger never showed with a propensity ≥
    ``threshold`` in these rows (:mod:`closedloop.evaluation.ope.support`'s rule). With whole
    candidate sets (ids seen once) the logger's own distribution over each decision's candidates is
    known: the mass on (candidate, position) pairs it gave a probability below ``threshold``."""
    if f.logger is not None:
        rows, pos = np.arange(int(sel.sum())), f.position[sel]
        pi, lg = dist[rows, :, pos], f.logger[sel][rows, :, pos]
        n = rows.size
        share = float((pi * (lg < threshold)).sum() / n) if n else 0.0
        return _support_check(share, threshold, tolerance, f"the logger gave a probability below {threshold:g}")
    n_ids = int(f.gid.max()) + 1
    supported = np.zeros((n_ids + 1, dist.shape[2]), dtype=bool)  # the last row: padding, never supported
    taken = sel & (f.pscore >= threshold)
    supported[f.gid[f.decision[taken], f.action[taken]], f.position[taken]] = True
    g = f.gid[f.decision[sel]]
    g = np.where(g < 0, n_ids, g)
    pi = dist[np.arange(g.shape[0]), :, f.position[sel]]
    off = pi * ~supported[g, f.position[sel][:, None]]
    n = int(sel.sum())
    share = float(off.sum() / n) if n else 0.0
    return _support_check(share, threshold, tolerance, f"the logger never showed with a propensity ≥ {threshold:g}")


def _support_check(share: float, threshold: float, tolerance: float, how: str) -> SupportCheck:
    if share == 0.0:
        detail = f"every (candidate, position) the target ranks has a logging probability ≥ {threshold:g}"
    else:
        detail = f"{share:.2%} of the target's mass (averaged over rows) is on (candidate, position) pairs {how}; tolerance {tolerance:.2%}"
    return SupportCheck(share <= tolerance, share, threshold, tolerance, detail)


def _warning(support: SupportCheck) -> str | None:
    if support.passed:
        return None
    return f"the support check failed: {support.detail}; the estimate extrapolates where the log is silent"


def _estimates(f: _Frame, dists: list[np.ndarray], q: np.ndarray | None, sel: np.ndarray, names: tuple[str, ...],
               n_bootstrap: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each bundle's estimates and each later bundle's difference from the first, on the rows ``sel``."""
    every = bool(sel.all())

    def take(x: np.ndarray) -> np.ndarray:
        return x if every else x[sel]  # every row: no copy of the (rows, candidates, positions) arrays

    r, a, p = take(f.reward), take(f.action), take(f.pscore)
    common: dict[str, Any] = {"position": take(f.position), "units": take(f.units), "estimators": list(names),
                              "n_bootstrap": n_bootstrap, "seed": seed,
                              "estimated_rewards_by_reg_model": None if q is None else take(q)}
    per = [take(d) for d in dists]
    supports = [_support(f, d, sel) for d in per]
    bundles = []
    for d, sup in zip(per, supports, strict=True):
        est = estimate(r, a, p, d, **common)
        bundles.append({n: replace(e, support=sup, warning=_warning(sup)).to_dict() for n, e in est.items()})
    diffs = []
    for d, sup in zip(per[1:], supports[1:], strict=True):
        out = estimate_difference(r, a, p, d, per[0], **common)
        diffs.append({n: replace(e, candidate_support=sup, baseline_support=supports[0]).to_dict() for n, e in out.items()})
    return bundles, diffs


def _logged_value(f: _Frame, sel: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The logging policy's own value: the mean logged reward per row, its interval by unit."""
    r = f.reward[sel]
    draws = bootstrap_sums(unit_sums(np.stack([np.ones(r.size), r], axis=1), f.units[sel], "policy_value"), n_bootstrap, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = percentile_interval(draws[:, 1] / draws[:, 0], 0.05)
    return {"value": float(r.mean()), "ci": [low, high], "n_rows": int(r.size)}


def _section(f: _Frame, versions: list[str], dists: list[np.ndarray], q: np.ndarray | None, sel: np.ndarray,
             names: tuple[str, ...], n_bootstrap: int, seed: int) -> dict[str, Any]:
    bundles, diffs = _estimates(f, dists, q, sel, names, n_bootstrap, seed)
    return {
        "n_rows": int(sel.sum()), "units": int(np.unique(f.units[sel]).size),
        "logged": _logged_value(f, sel, n_bootstrap, seed),
        "bundles": [{"version": v, "estimates": e} for v, e in zip(versions, bundles, strict=True)],
        "comparison": [{"baseline": versions[0], "candidate": versions[j + 1], "differences": d}
                       for j, d in enumerate(diffs)] or None,
    }


def _slices(system: Any, rows: SlotRows, f: _Frame, run: Any) -> dict[str, list[dict[str, Any]]]:
    """Per slice value of each of the system's ``slices`` that is a request field: the section on its
    rows, or only its count when it has fewer than :data:`MIN_SLICE_ROWS`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for field in system.slices:
        if field not in rows.requests:
            continue
        per_dec = np.asarray([str(v) for v in rows.requests[field]], dtype=object)[f.decision]
        out[field] = slice_entries(per_dec, np.ones(per_dec.shape[0], dtype=bool), run)
    return out


def slice_entries(values: np.ndarray, keep: np.ndarray, run: Any) -> list[dict[str, Any]]:
    """One entry per value of ``values`` among the rows ``keep``: its row count and, from
    :data:`MIN_SLICE_ROWS` rows on, ``run(selection)`` (the section on those rows)."""
    entries = []
    for value in sorted(set(values[keep].tolist())):
        sel = keep & (values == value)
        n = int(sel.sum())
        entry: dict[str, Any] = {"value": value, "n_rows": n, "small": n < MIN_SLICE_ROWS}
        if n >= MIN_SLICE_ROWS:
            entry.update(run(sel))
        entries.append(entry)
    return entries


def _notes(rows: SlotRows, f: _Frame, q_version: str | None, whole: bool) -> list[str]:
    notes = [] if whole else [
        "Each bundle's policy ranks only each decision's logged candidates (the slots shown), not the candidate set the "
        "logger ranked (the dataset keeps no candidate sets, or they are too large to enumerate exactly): the value is of "
        "that re-ranking. `closedloop ope --candidates` ranks a catalogue."]
    if not whole and int(np.diff(rows.offsets).max()) < 2:
        notes.append("Every decision has one logged candidate: every policy shows it first, so the estimates do not "
                     "tell the bundles apart.")
    dropped = sum(f.excluded.values())
    if dropped:
        notes.append(f"{dropped} rows were left out of the policy value ({f.excluded}).")
    if q_version is None:
        notes.append("No reward model was given: IPS and SNIPS only (DM, DR, SNDR and Switch-DR need one).")
    return notes


def policy_value(system: Any, rows: SlotRows, versions: list[str], scores: list[np.ndarray], *,
                 reward_scores: np.ndarray | None = None, reward_model: str | None = None, bootstrap: int = 100,
                 seed: int = 0, catalogue: Catalogue | None = None, slots: pa.Table | None = None) -> dict[str, Any] | None:
    """The report's ``policy_value`` section (module doc) for the bundles ``versions`` whose scores of
    every row's candidate are ``scores`` (the report's own, through the runtime); ``reward_scores``:
    the reward model bundle ``reward_model``'s. With a ``catalogue``
    (:func:`~closedloop.evaluation.ranking_sets.catalogue`) each policy ranks every decision's whole
    logged candidate set instead, by the catalogue's scores. ``slots``: the report decisions' slot
    rows (:func:`~closedloop.evaluation.ranking_sets.report_slots`) when the caller read them. None
    when the dataset has no logged propensities."""
    pscore = _propensities(rows, slots)
    if pscore is None:
        return None
    marginal = None if catalogue is None else catalogue.marginal
    recomputed = 0
    if marginal is not None:  # the logger's marginal where the log determines it (docs/evaluation.md, "Logged propensities")
        use = np.isfinite(marginal) & np.isfinite(pscore)
        recomputed = int(use.sum())
        pscore = np.where(use, marginal, pscore)
    f = _frame(system, rows, pscore, catalogue)
    offsets = rows.offsets if catalogue is None else catalogue.offsets
    if catalogue is not None:
        scores, reward_scores = catalogue.scores, catalogue.reward_scores
    n_boot = int(bootstrap) if bootstrap > 0 else POLICY_RESAMPLES
    names: tuple[str, ...] = ("ips", "snips") if reward_scores is None else ("ips", "snips", "dm", "dr", "sndr", "switch_dr")
    base: dict[str, Any] = {"estimators": list(names), "reward_model": reward_model,
            "candidates": "the logged slots of each decision" if catalogue is None else "each decision's whole logged candidate set",
            "bootstrap": n_boot, "interval": "bootstrap by unit (differences: paired, the same draws for both)",
            "propensities": {"logger_marginals": recomputed, "as_logged": int(np.isfinite(pscore).sum()) - recomputed},
            "excluded": f.excluded | ({} if catalogue is None else catalogue.excluded),
            "notes": _notes(rows, f, reward_model, catalogue is not None)}
    if not f.keep.any():
        return {**base, "n_rows": 0, "logged": None, "bundles": None, "comparison": None, "slices": {}}
    k = int(system.experience.k)
    counts = np.diff(offsets)
    dists = []
    for s in scores:
        S, _, _ = _padded(s, offsets)
        # the same uniforms for every bundle (common random numbers): their sampling errors move together, and
        # cancel in the differences the gate reads
        M, how = policy_marginals(S, counts, k, system.experience.explore, seed=int(seed) * 1000 + 1)
        dists.append(M[f.decision])
    base["marginals"] = {"method": how, **({"draws": ranking_marginals.DRAWS} if how == "sampled" else {})}
    q = None
    if reward_scores is not None:
        Q, _, _ = _padded(reward_scores, offsets)
        Q[np.arange(Q.shape[1])[None, :] >= counts[:, None]] = 0.0  # padding: no candidate, no prediction
        q = np.repeat(Q[f.decision][:, :, None], k, axis=2)

    def run(sel: np.ndarray) -> dict[str, Any]:
        return _section(f, versions, dists, q, sel, names, n_boot, int(seed))

    every = np.ones(f.reward.size, dtype=bool)
    return {**base, **run(every), "slices": _slices(system, rows, f, run)}

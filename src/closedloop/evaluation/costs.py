"""Mistakes and their costs: the confusion of actions by true class at a system's thresholds, the
expected cost per 1,000 decisions, the exact cost-minimizing thresholds and what thresholds
mean in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from closedloop.errors import EvaluationError
from closedloop.evaluation.bounds import RateBound
from closedloop.evaluation.inputs import _labels, _scores, _weights
from closedloop.evaluation.ordering import _grouped
from closedloop.experience.experiences import Thresholds


def _check_labels_names(labels: Any, where: str) -> tuple[str, str]:
    if (not isinstance(labels, tuple | list) or len(labels) != 2
            or not all(isinstance(x, str) and x for x in labels) or labels[0] == labels[1]):
        raise EvaluationError("labels", "two distinct class names (negative, positive)", labels, where)
    return labels[0], labels[1]


def _check_thresholds(thresholds: Any, where: str) -> Thresholds:
    if not isinstance(thresholds, Thresholds):
        raise EvaluationError("thresholds", "a closedloop Thresholds experience", thresholds, where)
    return thresholds


def confusion_at_thresholds(y: Any, s: Any, thresholds: Thresholds, weights: Any = None,
                            labels: Sequence[str] = ("negative", "positive")
                            ) -> dict[str, dict[str, float]]:
    """(Weighted) counts of each action by true class, choosing actions as the runtime does: the
    first level (most forceful first) whose threshold the score reaches (score ≥ threshold),
    else ``otherwise`` — which also takes NaN scores.

    Returns ``{action: {labels[0]: count, labels[1]: count}}`` for every action of
    ``thresholds`` in its order (levels, then otherwise). ``labels`` are the class names
    (``System.labels``) for 0 and 1.
    """
    where = "confusion_at_thresholds"
    th = _check_thresholds(thresholds, where)
    neg_name, pos_name = _check_labels_names(labels, where)
    yy = _labels(y, where)
    ss = _scores(s, "s", where, yy.size, allow_nan=True)
    w = _weights(weights, where, yy.size)
    ww = np.ones(yy.size) if w is None else w
    k = len(th.levels)
    action = np.full(yy.size, k, dtype=np.int64)
    for j in range(k - 1, -1, -1):
        action[ss >= th.levels[j][1]] = j
    pos = np.bincount(action, weights=ww * yy, minlength=k + 1)
    tot = np.bincount(action, weights=ww, minlength=k + 1)
    return {a: {neg_name: float(tot[i] - pos[i]), pos_name: float(pos[i])}
            for i, a in enumerate(th.actions)}


def _cost_table(costs: Any, where: str) -> Mapping[str, Mapping[str, float]]:
    if not isinstance(costs, Mapping) or not all(isinstance(v, Mapping) for v in costs.values()):
        raise EvaluationError("costs", "a mapping action → {true class → cost} (System.costs)", costs, where)
    for a, row in costs.items():
        for label, c in row.items():
            if isinstance(c, bool) or not isinstance(c, int | float) or not (math.isfinite(c) and c >= 0):
                raise EvaluationError("costs", f"numbers ≥ 0 (cost of '{a}' when the truth is '{label}')", c, where)
    return costs


def expected_cost(counts: Mapping[str, Mapping[str, float]], costs: Mapping[str, Mapping[str, float]]
                  ) -> float:
    """Expected cost per 1,000 decisions: Σ count(action, class) × cost(action, class) over the
    total count, × 1000. ``counts`` is :func:`confusion_at_thresholds`' result, ``costs`` is
    ``System.costs`` (a missing action or class costs 0)."""
    costs = _cost_table(costs, "expected_cost")
    if not isinstance(counts, Mapping) or not all(isinstance(v, Mapping) for v in counts.values()):
        raise EvaluationError("counts", "a mapping action → {true class → count}", counts, "expected_cost")
    total = 0.0
    cost = 0.0
    for a, row in counts.items():
        for label, c in row.items():
            total += c
            cost += c * float(costs.get(a, {}).get(label, 0.0))
    if not total > 0:
        raise EvaluationError("counts", "a positive total count", total, "expected_cost")
    return 1000.0 * cost / total


def _search_inputs(y: Any, s: Any, thresholds: Any, costs: Any, weights: Any, labels: Any, where: str
                   ) -> tuple[Thresholds, str, str, Mapping[str, Mapping[str, float]], np.ndarray, np.ndarray,
                              np.ndarray | None, np.ndarray]:
    """A threshold search's inputs checked (named in errors as ``where``'s): the experience, the
    negative and positive class names, the cost table, labels, scores, weights and the rows
    with a score (not NaN; at least one)."""
    th = _check_thresholds(thresholds, where)
    neg_name, pos_name = _check_labels_names(labels, where)
    table = _cost_table(costs, where)
    yy = _labels(y, where)
    ss = _scores(s, "s", where, yy.size, allow_nan=True)
    w = _weights(weights, where, yy.size)
    ok = ~np.isnan(ss)
    if not ok.any():
        raise EvaluationError("s", "not all NaN", "NaN scores only", where)
    return th, neg_name, pos_name, table, yy, ss, w, ok


def best_thresholds(y: Any, s: Any, thresholds: Thresholds, costs: Mapping[str, Mapping[str, float]],
                    weights: Any = None, labels: Sequence[str] = ("negative", "positive")
                    ) -> dict[str, float]:
    """The threshold values (same actions, same order, strictly decreasing) that minimize the
    expected cost (:func:`expected_cost`) on this data.

    The search is over every cut point of the sorted distinct scores (and "above them all"), and
    it is *exact for any number of levels*: with cut indices c₁ ≥ c₂ ≥ … ≥ c_K into the distinct
    scores, the total cost separates into Σⱼ gⱼ(cⱼ) plus a constant (gⱼ = the cost of level j minus
    the cost of the next action, both evaluated on the rows ≥ the cut), minimized by a chain of
    suffix minima — O(n log n) for the sort plus O(K·m) for m distinct scores; no candidate
    subsampling. Returned values: a level whose cut is a distinct score u gets u (the runtime's
    ``≥``); a level that takes no rows gets a value strictly between neighbouring scores (or
    beyond the extremes), so the runtime makes exactly the optimal decisions. NaN scores go to
    ``otherwise`` as in the runtime. Ties in cost go to the lowest cut indices found first.
    Pass the result to ``thresholds.with_levels(...)``.
    """
    where = "best_thresholds"
    th, neg_name, pos_name, costs, yy, ss, w, ok = _search_inputs(y, s, thresholds, costs, weights, labels, where)
    u_desc, pos, neg = _grouped(yy[ok], ss[ok], None if w is None else w[ok])
    return _best_from_groups(u_desc, pos, neg, th, costs, neg_name, pos_name)


def constrained_thresholds(y: Any, s: Any, thresholds: Thresholds, costs: Mapping[str, Mapping[str, float]],
                           bounds: Sequence[RateBound], weights: Any = None,
                           labels: Sequence[str] = ("negative", "positive")
                           ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The cost-minimizing thresholds (:func:`best_thresholds`, the same exact search) subject to
    ``bounds`` (:class:`~closedloop.evaluation.bounds.RateBound`: a rate at a level's operating
    point, usually a goal's) → ``(values, report)``.

    When some choice of thresholds keeps every bound, ``values`` is the cheapest of those. When
    none does, ``values`` is the unbounded optimum — the bounds are never traded against the costs
    silently: the report says so. ``report`` has one entry per bound: the goal, the metric, its
    target and direction, ``feasible`` (whether the data admits thresholds that keep *every*
    bound), ``kept`` (whether the values returned keep this one), ``value`` (the rate at the values
    returned, weighted; None where undefined), ``n`` (the weight of the rate's denominator),
    ``at_cost_optimum`` (the rate at the unbounded cost optimum) and ``cost_per_1k`` /
    ``cost_optimum_per_1k`` (the expected cost per 1,000 decisions at the values returned and at
    the cost optimum: what keeping the bounds costs, or — infeasible — the one figure). A bound
    at an action that is not a level of ``thresholds`` is refused."""
    where = "constrained_thresholds"
    th, neg_name, pos_name, costs, yy, ss, w, ok = _search_inputs(y, s, thresholds, costs, weights, labels, where)
    level = {a: j for j, (a, _) in enumerate(th.levels)}
    for b in bounds:
        if b.action not in level:
            raise EvaluationError("bounds", f"a rate at one of the levels {list(level)}", f"{b.metric}@{b.action}", where)
    u_desc, pos, neg = _grouped(yy[ok], ss[ok], None if w is None else w[ok])
    pge, nge = _cumulative(u_desc, pos, neg)
    allowed: list[np.ndarray | None] = [None] * len(th.levels)
    for b in bounds:
        mask = b.allowed(pge, nge)
        j = level[b.action]
        allowed[j] = mask if allowed[j] is None else allowed[j] & mask
    cuts = _search(u_desc, pos, neg, th, costs, neg_name, pos_name, allowed) if bounds else None
    feasible = cuts is not None
    optimum = _best_from_groups(u_desc, pos, neg, th, costs, neg_name, pos_name)
    values = _values(u_desc[::-1], cuts, th) if cuts is not None else optimum
    yk, sk, wk = yy[ok], ss[ok], None if w is None else w[ok]
    price = _price(yk, sk, wk, th, costs, values, optimum, (neg_name, pos_name))
    return values, [{**_bound_report(b, values, yk, sk, wk, feasible), **price,
                     "at_cost_optimum": _bound_report(b, optimum, yk, sk, wk, feasible)["value"]} for b in bounds]


def _price(y: np.ndarray, s: np.ndarray, w: np.ndarray | None, th: Thresholds, costs: Mapping[str, Mapping[str, float]],
           values: Mapping[str, float], optimum: Mapping[str, float], labels: tuple[str, str]) -> dict[str, Any]:
    """What keeping the bounds costs: the expected cost per 1,000 decisions at ``values`` and at
    the unbounded cost ``optimum`` (None without rows) — the two figures a goal and the costs
    are weighed by when they disagree."""
    if not y.size:
        return {"cost_per_1k": None, "cost_optimum_per_1k": None}

    def cost(v: Mapping[str, float]) -> float:
        return expected_cost(confusion_at_thresholds(y, s, th.with_levels(v), w, labels), costs)

    at_values = cost(values)
    return {"cost_per_1k": at_values, "cost_optimum_per_1k": at_values if values == optimum else cost(optimum)}


def _bound_report(b: RateBound, values: Mapping[str, float], y: np.ndarray, s: np.ndarray, w: np.ndarray | None,
                  feasible: bool) -> dict[str, Any]:
    """One bound's entry of :func:`constrained_thresholds`' report, at the threshold ``values``."""
    wt = np.ones(y.size) if w is None else w
    flagged = s >= float(values[b.action])
    pge = np.array([float(wt[flagged & (y == 1)].sum())])
    nge = np.array([float(wt[flagged & (y == 0)].sum())])
    p_all, n_all = float(wt[y == 1].sum()), float(wt[y == 0].sum())
    # the rate's definition needs the totals: evaluate it on [all rows, the flagged rows]
    rate = float(b.rates(np.r_[p_all, pge], np.r_[n_all, nge])[1])
    n = n_all if b.metric == "false_positive_rate" else (float(pge[0] + nge[0]) if b.metric == "precision" else p_all)
    kept = bool(b.allowed(np.r_[p_all, pge], np.r_[n_all, nge])[1])
    return {**b.describe(), "feasible": feasible, "kept": kept, "value": None if math.isnan(rate) else rate, "n": n}


def _cumulative(u_desc: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Pge, Nge)``: the weight of positives / negatives with score ≥ u[c] for each cut c into
    the ascending distinct scores u; index m (past the last score) → 0."""
    return np.r_[np.cumsum(pos)[::-1], 0.0], np.r_[np.cumsum(neg)[::-1], 0.0]


def _best_from_groups(u_desc: np.ndarray, pos: np.ndarray, neg: np.ndarray, th: Thresholds,
                      costs: Mapping[str, Mapping[str, float]], neg_name: str, pos_name: str
                      ) -> dict[str, float]:
    """:func:`best_thresholds` on already grouped scores (distinct scores descending with the
    weighted positives and negatives of each): the exact search, no validation."""
    cuts = _search(u_desc, pos, neg, th, costs, neg_name, pos_name, None)
    if cuts is None:  # without bounds every cut is allowed: the search always finds one
        raise EvaluationError("costs", "finite", "no finite cost at any threshold", "best_thresholds")
    return _values(u_desc[::-1], cuts, th)


def _search(u_desc: np.ndarray, pos: np.ndarray, neg: np.ndarray, th: Thresholds,
            costs: Mapping[str, Mapping[str, float]], neg_name: str, pos_name: str,
            allowed: Sequence[np.ndarray | None] | None) -> list[int] | None:
    """The cost-minimizing cut index of each level into the ascending distinct scores (the exact
    chain of suffix minima); ``allowed``: per level, the cuts it may take (None: any). None when
    no choice of cuts keeps every level within what it may take."""
    m = u_desc.size
    Pge, Nge = _cumulative(u_desc, pos, neg)
    acts = th.actions
    k = len(th.levels)

    def f(i: int) -> np.ndarray:
        row = costs.get(acts[i], {})
        return float(row.get(pos_name, 0.0)) * Pge + float(row.get(neg_name, 0.0)) * Nge

    fs = [f(i) for i in range(k + 1)]
    g = [fs[j] - fs[j + 1] for j in range(k)]
    for j, ok in enumerate(allowed or ()):
        if ok is not None:  # a cut a bound forbids costs +inf: the search stays exact
            g[j] = np.where(ok, g[j], np.inf)
    # D_j(c) = g_j(c) + min_{c' ≥ c} D_{j-1}(c')
    arg: list[np.ndarray] = []
    D = g[0]
    for j in range(1, k):
        rev = D[::-1]
        run_min = np.minimum.accumulate(rev)
        # index (in the original order) of the suffix minimum, preferring the lowest index
        is_new = rev == run_min
        pos_in_rev = np.maximum.accumulate(np.where(is_new, np.arange(m + 1), 0))
        suffix_arg = (m - pos_in_rev)[::-1]
        arg.append(suffix_arg)
        D = g[j] + run_min[::-1]
    cuts = [0] * k
    cuts[k - 1] = int(np.argmin(D))
    if not np.isfinite(D[cuts[k - 1]]):
        return None
    for j in range(k - 1, 0, -1):
        cuts[j - 1] = int(arg[j - 1][cuts[j]])
    return cuts


def _values(u: np.ndarray, cuts: list[int], th: Thresholds) -> dict[str, float]:
    """The threshold values of the levels' cut indices into the ascending distinct scores ``u``."""
    where = "best_thresholds"
    m, k = u.size, len(cuts)
    # threshold values from cut indices
    span = float(u[-1] - u[0]) if m > 1 else 0.0
    scale = span if span > 0 else max(1.0, abs(float(u[0])))
    values: list[float] = [0.0] * k
    j = 0
    while j < k:
        r = 1
        while j + r < k and cuts[j + r] == cuts[j]:
            r += 1
        c = cuts[j]
        top = float(u[c]) if c < m else float(u[-1]) + scale
        lo = float(u[c - 1]) if c > 0 else float(u[0]) - scale
        for i in range(r):
            values[j + i] = top - (top - lo) * i / r
        j += r
    for a, b in zip(values, values[1:], strict=False):
        if not a > b:
            raise EvaluationError("s", "distinct enough scores to place strictly decreasing thresholds",
                                  values, where)
    return {th.levels[i][0]: values[i] for i in range(k)}


def explain_thresholds(thresholds: Thresholds, values: Mapping[str, float], lo: float, hi: float,
                       counts: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, str]:
    """Each level's threshold in ``values`` in words, against the scores' range [``lo``, ``hi``]
    and, when given, ``counts`` (:func:`confusion_at_thresholds` at ``values``: the rows each
    action takes).

    A number alone misleads: :func:`best_thresholds` gives a level that no threshold makes
    cheaper a value *above every score* (the highest score plus the scores' span — 1.85 for
    probabilities between 0.01 and 0.93), so that the runtime never takes it; and a level
    squeezed to an empty band gets a value between two neighbouring scores. The words say what
    happens: ``"never: …"`` (no row takes the action), ``"always: …"`` (the threshold is at or
    below every score: every row the levels above leave takes it) or ``"score ≥ v: …"`` with the
    share of rows it takes.
    """
    th = _check_thresholds(thresholds, "explain_thresholds")
    total = None if counts is None else sum(float(sum(r.values())) for r in counts.values())
    out: dict[str, str] = {}
    above: str | None = None
    for a, _ in th.levels:
        v = float(values[a])
        taken = None if counts is None else float(sum((counts.get(a) or {}).values()))
        rest = "" if above is None else f" the '{above}' threshold leaves"
        if v > hi:
            out[a] = (f"never: {v:.4g} is above every score (the highest is {hi:.4g}) — no threshold for "
                      f"'{a}' lowers the cost")
        elif taken == 0.0:
            out[a] = (f"never: no score falls between {v:.4g} and the '{above}' threshold — no band of scores "
                      f"for '{a}' lowers the cost" if above is not None else
                      f"never: no row scores {v:.4g} or more")
        elif v <= lo:
            out[a] = f"always: {v:.4g} is at or below every score (the lowest is {lo:.4g}) — '{a}' for every row{rest}"
        else:
            share = "" if not total or taken is None else f" ({taken / total:.1%} of the rows)"
            out[a] = f"score ≥ {v:.4g}{share}"
        above = a
    return out

"""How often a bundle chooses what another policy chose: on logged decisions (:func:`log_agreement`)
and, live, a shadow against production (:func:`shadow_agreement`).

An apprentice (:func:`closedloop.training.apprentice.train_apprentice`) learns to rank like the
policy that logged its data; it serves as a shadow until its agreement reaches a declared share.
Both measures read a ranking policy by its **greedy** choice — the top candidates by its scores,
ties to the lower input index, NaN last (greedy ranking's rules, :class:`~closedloop.experience.ranked.RankedShadow`'s):

- **agreement**: the share of decisions whose greedy first choice equals the other policy's first
  choice;
- **top-k overlap**: per decision, the share of the other policy's ``m`` shown candidates that are
  among the bundle's greedy top ``m``, averaged over decisions (equal to the agreement when
  ``k = 1``).

Each share has a 95% interval clustered by unit (the decisions of one unit are not independent):
Wilson's score interval at the effective size ``n / deff``, with the design effect ``deff`` the
unit-clustered variance of the share over its binomial variance (at least 1; 1 when the share is
0 or 1). ``n`` counts the decisions measured, ``units`` their units.

**Against the log.** :func:`log_agreement` decides the held-out decisions of a per-slot reward
dataset again through the runtime (``Runtime.decide_batch`` on their logged candidate sets,
:func:`~closedloop.datasets.candidate_sets.read_candidate_sets`) and compares the bundle's greedy
first choice with the **logged** first choice. A logger that explores draws its first slot, so its
own greedy choice agrees with its log only as often as the draw kept its top candidate: that share
is the ceiling of any imitation on an explored log (measure it with the logger's own bundle).
With ``against="greedy"`` the reference is the logger's greedy ranking instead, recomputed from
the scores each decision logged (the dataset's candidate sets keep them): the policy, not its
draws — what an apprentice's gate judges.

**Shadow against production.** :func:`shadow_agreement` reads telemetry decision records: each
production decision (no flight, not under the kill switch) that a shadow of ``shadow_version``
scored. Production's greedy first choice is recomputed from its logged ``candidate_scores`` rather
than read from its ``action`` (the slot-1 candidate it showed): every production decision counts,
explored or not, and what is compared is the two policies, not production's draw. The share whose
first slot production showed is the shadow's (what the guard's shadow disagreement counts) is
reported beside it as ``shown_agreement``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import SpecError

__all__ = ["SHADOW_COLUMNS", "agreement_on_sets", "greedy_order", "log_agreement", "shadow_agreement", "share_interval"]

_Z = 1.959963984540054  # the normal 97.5% quantile
#: The decision record columns :func:`shadow_agreement` reads.
SHADOW_COLUMNS = ("system", "unit", "timestamp_ns", "flight", "killswitch", "action", "candidate_ids", "candidate_scores",
                  "shadows_json")


def greedy_order(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Flat positions of every decision's candidates in greedy order: decision by decision (as
    ``offsets`` delimit them), by score descending, ties to the lower input index, NaN last."""
    scores = np.asarray(scores, dtype=np.float64)
    decision = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.lexsort((np.arange(scores.size), key, decision))


def share_interval(hits: np.ndarray, units: Any) -> dict[str, Any]:
    """The mean of per-decision ``hits`` (in [0, 1]) with its 95% interval clustered by unit (module doc)."""
    hits = np.asarray(hits, dtype=np.float64)
    n = int(hits.size)
    if n == 0:
        return {"share": None, "low": None, "high": None, "n": 0, "units": 0}
    _, inverse = np.unique(np.asarray(units, dtype=object).astype(str), return_inverse=True)
    n_units = int(inverse.max()) + 1
    p = float(hits.mean())
    deff = 1.0
    if 0.0 < p < 1.0 and n_units > 1:
        resid = np.bincount(inverse, weights=hits - p, minlength=n_units)
        var = float((resid ** 2).sum()) / n ** 2 * n_units / (n_units - 1)
        deff = max(1.0, var / (p * (1.0 - p) / n))
    m = n / deff
    centre = (p + _Z ** 2 / (2 * m)) / (1 + _Z ** 2 / m)
    half = _Z / (1 + _Z ** 2 / m) * math.sqrt(p * (1 - p) / m + _Z ** 2 / (4 * m ** 2))
    return {"share": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half), "n": n, "units": n_units}


def agreement_on_sets(sets: Any, scores: np.ndarray) -> dict[str, Any]:
    """The agreement and top-k overlap (module doc) of the greedy ranking by ``scores`` (one per
    flat candidate of the :class:`~closedloop.datasets.candidate_sets.CandidateSets` ``sets``) with
    the logged slates. A decision without a logged first slot (its reward left out of the dataset)
    is not measured and is counted ``no_first_slot``."""
    offsets = np.asarray(sets.offsets, dtype=np.int64)
    order = greedy_order(scores, offsets)
    slot = np.asarray(sets.slot)
    decision = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    rank = np.empty(order.size, dtype=np.int64)  # each flat candidate's greedy rank within its decision
    rank[order] = np.arange(order.size) - offsets[decision[order]]
    shown = np.bincount(decision, weights=(slot > 0), minlength=offsets.size - 1)
    first = np.bincount(decision, weights=(slot == 1), minlength=offsets.size - 1) > 0
    top1 = np.bincount(decision, weights=(slot == 1) & (rank == 0), minlength=offsets.size - 1)
    inside = np.bincount(decision, weights=(slot > 0) & (rank < shown[decision]), minlength=offsets.size - 1)
    units = np.asarray([u if u is not None else f"#{i}" for i, u in enumerate(sets.units)], dtype=object)
    agree = share_interval(top1[first], units[first])
    overlap = share_interval(inside[first] / shown[first], units[first])
    return {"agreement": agree.pop("share"), "interval": [agree.pop("low"), agree.pop("high")], **agree,
            "top_k_overlap": overlap["share"], "top_k_interval": [overlap["low"], overlap["high"]],
            "no_first_slot": int((~first).sum())}


def log_agreement(system: Any, bundle: Any, dataset: Path | str, split: Any = None, against: str = "logged") -> dict[str, Any]:
    """The bundle's agreement with the logged first choices of the held-out decisions of the per-slot
    reward dataset at ``dataset`` (module doc, "Against the log"): the test side of ``split``
    (default ``system.split``; ``"all"``: every decision), decided again through
    ``Runtime(system, bundle).decide_batch`` on their logged candidate sets → ``{"agreement",
    "interval", "n", "units", "top_k_overlap", "top_k_interval", "no_first_slot", "excluded",
    "against"}`` (``excluded``: decisions whose candidate set could not be read, by why).
    ``against="greedy"``: with the logger's **greedy** ranking instead of what it showed — recomputed
    from each decision's logged scores (:func:`_greedy_slots`), so an exploring logger's draws do not
    cap the agreement; a decision that logged no scores (the kill switch) keeps what it showed."""
    from closedloop.datasets.candidate_sets import read_candidate_sets
    from closedloop.runtime.runtime import Runtime

    if against not in ("logged", "greedy"):
        raise SpecError(f"The 'against' parameter of log_agreement must be 'logged' or 'greedy'. Got {against!r} instead.")
    sets = read_candidate_sets(system, dataset, rows=_side(system, Path(dataset), split))
    if against == "greedy":
        sets = sets._replace(slot=_greedy_slots(sets))
    out: dict[str, Any] = {"excluded": sets.excluded, "against": against}
    if sets.n_decisions == 0:
        return {**agreement_on_sets(sets, np.zeros(0)), **out}
    batch = Runtime(system, bundle).decide_batch(sets.requests, candidates=sets.candidates, decision_ids=sets.decision_ids,
                                                 timestamps_ns=sets.timestamps_ns.tolist())
    return {**agreement_on_sets(sets, np.asarray(batch.scores, dtype=np.float64)), **out}


def _greedy_slots(sets: Any) -> np.ndarray:
    """Each flat candidate's slot in the logger's greedy ranking by its logged scores, as many slots
    as the decision showed (0: not among them); a decision without logged scores keeps its slots."""
    offsets = np.asarray(sets.offsets, dtype=np.int64)
    slot = np.asarray(sets.slot, dtype=np.int32)
    decision = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    scores = np.asarray(sets.logged_scores, dtype=np.float64)
    scored = np.bincount(decision, weights=~np.isnan(scores), minlength=offsets.size - 1) > 0
    order = greedy_order(scores, offsets)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size) - offsets[decision[order]]
    shown = np.bincount(decision, weights=(slot > 0), minlength=offsets.size - 1)
    greedy = np.where(rank < shown[decision], rank + 1, 0).astype(np.int32)
    return np.where(scored[decision], greedy, slot)


def _check_system(system: Any, owner: str) -> None:
    from closedloop.experience.experiences import Ranking

    if not isinstance(getattr(system, "experience", None), Ranking) or getattr(system, "candidate_schema", None) is None:
        raise SpecError(f"The 'system' parameter of {owner} must be a ranking system (candidates and a Ranking experience). "
                        f"Got {system!r} instead.")


def _side(system: Any, dataset: Path, split: Any) -> pa.Table:
    """The slot rows of the test side of ``split`` (``"all"``: every row) of the reward dataset at ``dataset``."""
    import pyarrow.parquet as pq

    from closedloop.datasets.candidate_sets import _manifest
    from closedloop.system.splits import Split
    from closedloop.system.splits import split as split_rows

    _check_system(system, "log_agreement")
    sp = system.split if split is None else split
    if sp != "all" and not isinstance(sp, Split):
        raise SpecError(f"The 'split' parameter of log_agreement must be a closedloop Split, 'all' or None. Got {sp!r} instead.")
    rows = pq.read_table(_manifest(system, dataset).data_path)
    if sp == "all":
        return rows
    return rows.take(pa.array(split_rows(rows, sp)[1]))


def _check_decisions(decisions: Any, shadow_version: Any, since_ns: Any) -> None:
    if not isinstance(decisions, pa.Table):
        raise SpecError(f"The 'decisions' parameter of shadow_agreement must be a pyarrow Table of decision records. "
                        f"Got {type(decisions).__name__} instead.")
    missing = [c for c in SHADOW_COLUMNS if c not in decisions.column_names]
    if missing:
        raise SpecError(f"The 'decisions' parameter of shadow_agreement must have the decision record columns "
                        f"{list(SHADOW_COLUMNS)}. Got no {missing} instead.")
    if not isinstance(shadow_version, str) or not shadow_version:
        raise SpecError(f"The 'shadow_version' parameter of shadow_agreement must be a non-empty string. Got {shadow_version!r} instead.")
    if since_ns is not None and (isinstance(since_ns, bool) or not isinstance(since_ns, int)):
        raise SpecError(f"The 'since_ns' parameter of shadow_agreement must be an int or None. Got {since_ns!r} instead.")


def _production_rows(system: Any, decisions: pa.Table, since_ns: int | None) -> pa.Table:
    """Production's ranking decisions of ``system`` that shadows scored, from ``since_ns`` on."""
    mask = pc.and_(pc.equal(decisions["system"], system.name), pc.is_valid(decisions["shadows_json"]))
    mask = pc.and_(mask, pc.and_(pc.is_null(decisions["flight"]), pc.invert(decisions["killswitch"])))
    mask = pc.and_(mask, pc.greater(pc.fill_null(pc.list_value_length(decisions["candidate_scores"]), 0), 0))
    if since_ns is not None:
        mask = pc.and_(mask, pc.greater_equal(decisions["timestamp_ns"], since_ns))
    return decisions.filter(mask).select(list(SHADOW_COLUMNS))


def shadow_agreement(system: Any, decisions: pa.Table, shadow_version: str, since_ns: int | None = None) -> dict[str, Any]:
    """The share of production's decisions (module doc, "Shadow against production") where the shadow
    ``shadow_version``'s greedy first choice equals production's greedy first choice (recomputed from
    its logged scores), with its 95% interval by unit and ``n`` → ``{"shadow", "agreement", "interval",
    "n", "units", "top_k_overlap", "top_k_interval", "shown_agreement"}``. ``decisions``: telemetry
    decision records (``TelemetryStore.read("decisions", …)``, with at least :data:`SHADOW_COLUMNS`);
    ``since_ns``: only decisions from then on. No decision scored by that shadow: ``agreement`` None, ``n`` 0."""
    _check_system(system, "shadow_agreement")
    _check_decisions(decisions, shadow_version, since_ns)
    t = _production_rows(system, decisions, since_ns)
    decode = msgspec.json.decode
    prod_scores: list[float] = []
    shadow_scores: list[float] = []
    lens: list[int] = []
    units: list[str] = []
    shown: list[bool] = []
    for unit, action, scores, raw in zip(t["unit"].to_pylist(), t["action"].to_pylist(), t["candidate_scores"].to_pylist(),
                                         t["shadows_json"].to_pylist(), strict=True):
        sh = next((s for s in decode(raw) if s.get("bundle_version") == shadow_version), None)
        if sh is None or len(sh.get("candidate_scores") or ()) != len(scores):
            continue
        prod_scores.extend(scores)
        shadow_scores.extend(sh["candidate_scores"])
        lens.append(len(scores))
        units.append(unit)
        shown.append(sh.get("action") == action)
    out = _compare(np.asarray(prod_scores, dtype=np.float64), np.asarray(shadow_scores, dtype=np.float64),
                   np.asarray(lens, dtype=np.int64), int(system.experience.k), units)
    return {"shadow": shadow_version, **out, "shown_agreement": share_interval(np.asarray(shown, dtype=np.float64), units)["share"]}


def _compare(prod: np.ndarray, shadow: np.ndarray, lens: np.ndarray, k: int, units: list[str]) -> dict[str, Any]:
    """Greedy first-choice agreement and top-min(k, N) overlap of two score vectors per decision."""
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    n_dec = lens.size
    if n_dec == 0:
        return {"agreement": None, "interval": [None, None], "n": 0, "units": 0, "top_k_overlap": None,
                "top_k_interval": [None, None]}
    decision = np.repeat(np.arange(n_dec, dtype=np.int64), lens)
    ranks = []
    for s in (prod, shadow):
        order = greedy_order(s, offsets)
        r = np.empty(order.size, dtype=np.int64)
        r[order] = np.arange(order.size) - offsets[decision[order]]
        ranks.append(r)
    m = np.minimum(lens, k)
    top1 = np.bincount(decision, weights=(ranks[0] == 0) & (ranks[1] == 0), minlength=n_dec)
    both = np.bincount(decision, weights=(ranks[0] < m[decision]) & (ranks[1] < m[decision]), minlength=n_dec)
    agree = share_interval(top1, units)
    overlap = share_interval(both / m, units)
    return {"agreement": agree["share"], "interval": [agree["low"], agree["high"]], "n": agree["n"], "units": agree["units"],
            "top_k_overlap": overlap["share"], "top_k_interval": [overlap["low"], overlap["high"]]}

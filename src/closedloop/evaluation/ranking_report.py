"""The evaluation report of a ranking system: each bundle's scores of the logged decisions of a
per-slot reward dataset, measured against what was rewarded (model-level figures), and, from the
logged propensities, an off-policy estimate of the value each bundle's ranking policy would get.

:func:`evaluate_ranking` (what :func:`closedloop.evaluation.report.evaluate` runs for a system
with a :class:`~closedloop.experience.experiences.Ranking` experience) runs as stages:

1. the rows (:func:`~closedloop.evaluation.ranking_rows.slot_rows`): the dataset's held-out rows
   grouped into decisions, each one request of the runtime's batch path with its logged
   candidates;
2. each bundle scores every decision's candidates through ``Runtime(system, bundle).decide_batch``
   (the numbers the runtime computes), measured per decision
   (:mod:`~closedloop.evaluation.ranking_metrics`: NDCG@k, MRR, hit rates, AUC) and over the rows
   pooled (:mod:`~closedloop.evaluation.ranking_pooled`: AUC, log loss and calibration when the
   score is a probability);
3. the intervals and the comparisons: a Poisson bootstrap by unit, the same draws for every
   bundle, paired for each later bundle against the first;
4. the report, beside the logging policy's own reward per decision (the reference);
5. when the dataset carries logged propensities, each bundle's policy value estimated off-policy
   and each later bundle's difference from the first (:mod:`~closedloop.evaluation.ranking_value`),
   and the gate's verdict on the last bundle against the first
   (:meth:`~closedloop.evaluation.gate.Gate.check_ranking`).

The report's fields: docs/evaluation.md, "Ranking systems".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from closedloop.errors import SpecError
from closedloop.evaluation.ranking_metrics import (
    DECISION_METRICS,
    figures,
    per_decision,
    ranked_decisions,
    tie_keys,
    unit_bootstrap,
    unit_sums,
)
from closedloop.evaluation.ranking_pooled import pooled, pooled_auc_intervals
from closedloop.evaluation.ranking_rows import SlotRows, slot_rows
from closedloop.system.splits import Split

__all__ = ["LoggedSide", "evaluate_ranking", "logged_side"]

#: Decisions a bundle's report keeps for the registry's parity check (train/serve parity).
GOLDEN = 50

#: The bundle figures of the per-decision ones (the logged reward is the dataset's, not a bundle's).
BUNDLE_METRICS = DECISION_METRICS[:-1]


def _check(system: Any, bundles: Sequence[Any], k: Any, bootstrap: Any, seed: Any) -> tuple[list[Any], int]:
    from closedloop.experience.experiences import Ranking
    from closedloop.runtime.bundle import Bundle

    if not isinstance(system.experience, Ranking):
        raise SpecError(f"evaluate_ranking needs a system with a Ranking experience. Got {system.experience!r} instead.")
    bundles = list(bundles)
    if not bundles or not all(isinstance(b, Bundle) for b in bundles):
        raise SpecError(f"The 'bundles' parameter of evaluate must be a non-empty list of Bundles. Got {bundles!r} instead.")
    for b in bundles:
        b.check_compatible(system)
    k = system.experience.k if k is None else k
    for name, v, lo in (("k", k, 1), ("bootstrap", bootstrap, 0), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise SpecError(f"The '{name}' parameter of evaluate must be an integer ≥ {lo}. Got {v!r} instead.")
    return bundles, int(k)


def _scores(system: Any, bundle: Any, rows: SlotRows) -> np.ndarray:
    """The bundle's score of every logged candidate, through the runtime's batch path."""
    return np.asarray(_decided(system, bundle, rows).scores, dtype=np.float64)


def _decided(system: Any, bundle: Any, rows: SlotRows) -> Any:
    """The runtime's batch of the logged decisions (their ids and times) under ``bundle``."""
    from closedloop.runtime.runtime import Runtime

    rb = Runtime(system, bundle).decide_batch(rows.requests, candidates=rows.candidates,
                                              decision_ids=rows.decision_ids, timestamps_ns=rows.timestamps_ns)
    if not np.array_equal(np.asarray(rb.offsets), rows.offsets) or rb.scores.shape != rows.reward.shape:
        raise SpecError(f"The runtime grouped the candidates of bundle {bundle.version!r} differently from the dataset's "
                        "decisions; the scores cannot be matched to the logged slots.")
    return rb


def _cell(col: Any, i: int) -> Any:
    v = col[i]
    return v.as_py() if hasattr(v, "as_py") else v.item() if hasattr(v, "item") else v


def _golden(rows: SlotRows, rb: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` decisions (seeded) as the registry's parity check replays them through
    ``Runtime.decide``: the request with its candidates, the id and time, and what the batch path
    gave — every candidate's score, the slate and each slot's propensity."""
    d_all = rows.offsets.size - 1
    pick = np.sort(np.random.default_rng(seed).choice(d_all, size=min(n, d_all), replace=False)).tolist()
    cnames = [c for c in rows.candidates if c != "request"]
    out = []
    for d in pick:
        a, e = int(rows.offsets[d]), int(rows.offsets[d + 1])
        req = {k: _cell(col, d) for k, col in rows.requests.items()}
        cands = [{k: _cell(rows.candidates[k], r) for k in cnames} for r in range(a, e)]
        one = rb[d]
        out.append({"decision_id": rows.decision_ids[d], "timestamp_ns": int(rows.timestamps_ns[d]),
                    "context": {**{k: v for k, v in req.items() if v is not None},
                                "candidates": [{k: v for k, v in c.items() if v is not None} for c in cands]},
                    "candidate_scores": [float(x) for x in one.scores], "ranking": list(one.ranking),
                    "slot_propensities": [float(x) for x in one.slot_propensities]})
    return out


def _bundle_part(system: Any, bundle: Any, rows: SlotRows, k: int, tie: np.ndarray) -> tuple[dict[str, Any], Any, Any]:
    """Stage 2 for one bundle → (its report part without intervals, its per-unit sums, its pooled extras)."""
    rb = _decided(system, bundle, rows)
    s = np.asarray(rb.scores, dtype=np.float64)
    values = per_decision(s, rows.reward, rows.offsets, k, tie)[:, : len(BUNDLE_METRICS)]
    sums = unit_sums(values, rows.units, rows.n_units)
    pool, rk, losses = pooled(s, rows.reward)
    part = {"version": bundle.version, "kind": bundle.intelligence.kind, "score": system.experience.score,
            "n": int(s.size), "decisions": int(rows.offsets.size - 1), "probability": pool["probability"],
            "calibration": pool["calibration"], "metrics": {}, "golden": _golden(rows, rb, GOLDEN, 7)}
    return part, sums, (pool, rk, losses, values, s)


def _row_units(rows: SlotRows) -> np.ndarray:
    return np.repeat(rows.units, np.diff(rows.offsets))


def _loss_parts(extras: Sequence[Any], rows: SlotRows) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Each bundle's log loss summed per unit (None when its score is not a probability)."""
    ru = _row_units(rows)
    return [None if e[2] is None else unit_sums(e[2].reshape(-1, 1), ru, rows.n_units) for e in extras]


def _fill(parts: list[dict[str, Any]], sums: Sequence[Any], extras: Sequence[Any], rows: SlotRows,
          pairs: list[tuple[int, int]], bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """Stage 3: every bundle's figures with intervals, and each pair's differences with paired intervals."""
    loss = _loss_parts(extras, rows)
    diff_sums = [(sums[b][0] - sums[a][0], sums[a][1]) for a, b in pairs]
    both = [(a, b) for a, b in pairs if loss[a] is not None and loss[b] is not None]
    loss_diff = [(loss[b][0] - loss[a][0], loss[a][1]) for a, b in both]  # type: ignore[index]
    own_loss = [x for x in loss if x is not None]
    cis = unit_bootstrap([*sums, *diff_sums, *own_loss, *loss_diff], rows.n_units, bootstrap, seed)
    nb, npairs, nl = len(sums), len(pairs), len(own_loss)
    auc_own, auc_diff = pooled_auc_intervals([e[1] for e in extras], pairs, _row_units(rows), rows.n_units, bootstrap, seed)
    li = iter(cis[nb + npairs: nb + npairs + nl])
    for i, (part, (s, c), e) in enumerate(zip(parts, sums, extras, strict=True)):
        part["metrics"] = figures(s, c, cis[i], BUNDLE_METRICS)
        part["metrics"]["row_auc"] = {**e[0]["row_auc"], "ci": auc_own[i] if e[0]["row_auc"]["value"] is not None else None}
        part["metrics"]["log_loss"] = {**e[0]["log_loss"], "ci": next(li)[0] if loss[i] is not None else None}
    comparison = []
    ldiff = dict(zip(both, cis[nb + npairs + nl:], strict=True))
    for q, (a, b) in enumerate(pairs):
        d = figures(diff_sums[q][0], diff_sums[q][1], cis[nb + q], BUNDLE_METRICS)
        ra, rb = parts[a]["metrics"], parts[b]["metrics"]
        ok = ra["row_auc"]["value"] is not None and rb["row_auc"]["value"] is not None
        d["row_auc"] = {"value": rb["row_auc"]["value"] - ra["row_auc"]["value"] if ok else None,
                        "ci": auc_diff[q] if ok else None, "n_rows": int(rows.reward.size)}
        lv = (rb["log_loss"]["value"] - ra["log_loss"]["value"]) if (a, b) in ldiff else None
        d["log_loss"] = {"value": lv, "ci": ldiff[(a, b)][0] if lv is not None else None, "n_rows": int(rows.reward.size)}
        comparison.append({"baseline": parts[a]["version"], "candidate": parts[b]["version"], "differences": d})
    return comparison


def _logged(rows: SlotRows, bootstrap: int, seed: int) -> dict[str, Any]:
    """The logging policy's own reward: per decision (total of its slots) and per slot, with intervals by unit."""
    per_dec = np.add.reduceat(rows.reward, rows.offsets[:-1])
    ru = _row_units(rows)
    dec_sums = unit_sums(per_dec.reshape(-1, 1), rows.units, rows.n_units)
    slot_sums = unit_sums(rows.reward.reshape(-1, 1), ru, rows.n_units)
    ci_dec, ci_slot = unit_bootstrap([dec_sums, slot_sums], rows.n_units, bootstrap, seed)
    return {
        "reward_per_decision": figures(*dec_sums, ci_dec, ["value"])["value"],
        "reward_per_slot": figures(*slot_sums, ci_slot, ["value"], "n_rows")["value"],
        "rewarded_rows": int((rows.reward > 0).sum()),
    }


def _dataset(rows: SlotRows) -> dict[str, Any]:
    size = np.diff(rows.offsets)
    pos = np.add.reduceat((rows.reward > 0).astype(np.int64), rows.offsets[:-1])
    return {
        "id": rows.manifest.id, "path": str(rows.manifest.path), "rows": int(rows.reward.size),
        "decisions": int(size.size), "units": int(rows.n_units),
        "candidates": "the logged slots of each decision",
        "candidates_per_decision": {str(int(v)): int(c) for v, c in zip(*np.unique(size, return_counts=True), strict=True)},
        "decisions_with_a_reward": int((pos > 0).sum()),
        "decisions_ranked": int(ranked_decisions(rows.reward, rows.offsets).sum()),
        "decisions_with_rewarded_and_not": int(((pos > 0) & (pos < size)).sum()),
        "excluded": rows.excluded,
    }


def _notes(rows: SlotRows, source: dict[str, Any]) -> list[str]:
    notes = []
    ds_rewards = rows.manifest.content.get("rewards") or {}
    if int(np.diff(rows.offsets).max()) < 2:
        notes.append("Every decision has one logged candidate: there is no ranking within a decision to measure "
                     "(NDCG, MRR, hit rates and AUC per decision are undefined). Read the pooled AUC over the logged "
                     "rows and, for a probability, the log loss and the calibration.")
    elif ds_rewards.get("per") == "decision":
        notes.append("Every slot carries its decision's reward (rewards per decision): no candidate of a decision is "
                     "rewarded more than another, so no order within a decision is better (NDCG, MRR and hit rates "
                     "are undefined). Read the pooled AUC over the logged rows.")
    if source.get("unit_stand_in"):
        notes.append("The dataset has no unit column: the row index stands in for the unit, so the split and "
                     "the confidence intervals treat every row as its own unit.")
    if source.get("decision_stand_in"):
        notes.append("The dataset has no decision id: every row is its own decision.")
    if rows.excluded["decisions_repeating_a_candidate"]:
        notes.append(f"{rows.excluded['decisions_repeating_a_candidate']} decisions that repeat a candidate id were "
                     "left out (the runtime refuses them).")
    return notes


class LoggedSide(NamedTuple):
    """What a ranking report reads of its dataset whatever the bundles (:func:`logged_side`): the
    held-out decisions' rows (stage 1), their slot rows and their logged candidate sets with the
    logger's readings (:func:`~closedloop.evaluation.ranking_sets.logged_sets`, stage 5) — what a
    cycle computes while its candidate trains. ``dataset``, ``split``, ``seed``: what it was read for."""

    dataset: str
    split: Any
    seed: int
    rows: SlotRows
    slots: Any
    sets: Any


def logged_side(system: Any, dataset: Path | str, *, split: Split | str | None = None, seed: int = 0,
                loaded: tuple[Any, Any] | None = None) -> LoggedSide:
    """The part of :func:`evaluate_ranking`'s work on ``dataset`` (its test side under ``split``,
    its draws seeded by ``seed``) that no bundle changes; pass it as ``evaluate_ranking(logged=…)``
    with the same dataset, split and seed."""
    from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE
    from closedloop.evaluation.ranking_sets import logged_sets, report_slots

    rows = slot_rows(system, Path(dataset), split, loaded)
    # the report decisions' slot rows, read once for the candidate sets and the propensities
    slots = report_slots(rows.manifest.path, rows.decision_ids) if (rows.manifest.path / CANDIDATE_SETS_FILE).is_file() else None
    sets = None if slots is None else logged_sets(system, rows, slots=slots, seed=int(seed) * 1000 + 2)
    return LoggedSide(str(dataset), split, int(seed), rows, slots, sets)


def _policy_value(system: Any, bundles: Sequence[Any], side: LoggedSide, extras: Sequence[Any], reward_model: Any,
                  bootstrap: int, seed: int) -> dict[str, Any] | None:
    """Stage 5: the policy value of every bundle (:mod:`~closedloop.evaluation.ranking_value`)."""
    from closedloop.evaluation.ranking_sets import catalogue
    from closedloop.evaluation.ranking_value import policy_value

    rows = side.rows
    # the whole candidate sets, when the dataset keeps them
    cat = None if side.sets is None else catalogue(system, list(bundles), rows, side.sets, reward_model)
    q = None if reward_model is None or cat is not None else _scores(system, reward_model, rows)
    return policy_value(system, rows, [b.version for b in bundles], [e[4] for e in extras], reward_scores=q,
                        reward_model=None if reward_model is None else reward_model.version, bootstrap=bootstrap, seed=seed,
                        catalogue=cat, slots=side.slots)


def check_value_arguments(system: Any, policy_value: Any, reward_model: Any, gate: Any, kind: str = "ranking") -> None:
    """The policy-value arguments of a ranking or choice (``kind``) evaluation, checked: refused by
    parameter, rule and value."""
    from closedloop.evaluation.gate import Gate
    from closedloop.runtime.bundle import Bundle

    if not isinstance(policy_value, bool):
        raise SpecError(f"The 'policy_value' parameter of evaluate must be True or False. Got {policy_value!r} instead.")
    if reward_model is not None:
        if not isinstance(reward_model, Bundle):
            raise SpecError(f"The 'reward_model' parameter of evaluate must be a Bundle or None. Got {reward_model!r} instead.")
        reward_model.check_compatible(system)
    if gate is None:
        return
    if not isinstance(gate, Gate):
        raise SpecError(f"The 'gate' parameter of evaluate must be a closedloop Gate or None. Got {gate!r} instead.")
    if not policy_value:
        raise SpecError(f"The 'gate' parameter of evaluate judges a {kind} candidate by its policy value: it needs "
                        f"policy_value=True. Got policy_value=False with {gate!r} instead.")
    gate.policy_estimator_for(reward_model is not None)


def evaluate_ranking(system: Any, bundles: Sequence[Any], dataset: Path | str, *, split: Split | str | None = None,
                     k: int | None = None, bootstrap: int = 100, seed: int = 0, loaded: tuple[Any, Any] | None = None,
                     policy_value: bool = True, reward_model: Any = None, gate: Any = None,
                     logged: LoggedSide | None = None) -> dict[str, Any]:
    """Evaluate ranking ``bundles`` (the first the baseline) on the per-slot reward dataset at
    ``dataset``: its test side under ``split`` (default ``system.split``; ``"all"``: every row).
    ``k``: the cut-off of NDCG@k and the hit rate@k (default the experience's ``k``).
    ``bootstrap`` / ``seed``: the resamples by unit of every interval (0: none) and the seed of
    the draws and of the tie-break. ``policy_value``: estimate each bundle's policy value from the
    logged propensities (when the dataset has them; :mod:`~closedloop.evaluation.ranking_value`),
    with ``reward_model`` (a Bundle whose score is the expected reward) for DM, DR, SNDR and
    Switch-DR. ``gate`` (default :class:`~closedloop.evaluation.gate.Gate` when there is a policy
    value and two bundles or more): the candidate (last bundle) against the baseline (first) by
    :meth:`~closedloop.evaluation.gate.Gate.check_ranking`. ``logged``: what :func:`logged_side`
    returned for the same dataset, split and seed, when the caller computed it (a cycle does, while its
    candidate trains). Returns the report (docs/evaluation.md, "Ranking systems")."""
    from closedloop.evaluation.gate import Gate
    from closedloop.evaluation.report import SCHEMA_VERSION, _clean

    bundles, k = _check(system, bundles, k, bootstrap, seed)
    check_value_arguments(system, policy_value, reward_model, gate)
    if logged is None:
        side = logged_side(system, dataset, split=split, seed=int(seed), loaded=loaded) if policy_value else None
    elif isinstance(logged, LoggedSide) and (logged.dataset, logged.split, logged.seed) == (str(dataset), split, int(seed)):
        side = logged
    else:
        got = (logged.dataset, logged.split, logged.seed) if isinstance(logged, LoggedSide) else logged
        raise SpecError(f"The 'logged' parameter of evaluate must be what logged_side returned for the same dataset, split "
                        f"and seed ({str(dataset)!r}, {split!r}, {seed!r}). Got {got!r} instead.")
    rows = side.rows if side is not None else slot_rows(system, Path(dataset), split, loaded)
    tie = tie_keys(rows.reward.size, seed)
    parts, sums, extras = zip(*(_bundle_part(system, b, rows, k, tie) for b in bundles), strict=True)
    pairs = [(0, j) for j in range(1, len(bundles))]
    comparison = _fill(list(parts), sums, extras, rows, pairs, int(bootstrap), int(seed))
    value = _policy_value(system, bundles, side, extras, reward_model, int(bootstrap), int(seed)) \
        if policy_value and side is not None else None
    verdict = None
    if len(bundles) >= 2 and (gate is not None or value is not None):
        verdict = (gate or Gate()).check_ranking(value, reward_model is not None, bundles[0].version, bundles[-1].version)
    source = rows.manifest.content.get("source") or {}
    sp = rows.split
    report = {
        "schema_version": SCHEMA_VERSION, "kind": "ranking", "system": system.name,
        "metadata": {
            "dataset_id": rows.manifest.id, "dataset_path": str(dataset),
            "split": sp.describe() if isinstance(sp, Split) else "all", "side": "test" if isinstance(sp, Split) else "all",
            "unit_stand_in": source.get("unit_stand_in"), "time_stand_in": source.get("time_stand_in"),
            "created": _dt.datetime.now(_dt.UTC).isoformat(), "bootstrap": int(bootstrap), "seed": int(seed), "k": k,
            "ties": "broken by a seeded random key, the same for every bundle", "notes": _notes(rows, source),
        },
        "dataset": _dataset(rows),
        "rows": {"n": int(rows.reward.size), "positives": int((rows.reward > 0).sum())},
        "logged": _logged(rows, int(bootstrap), int(seed)),
        "bundles": list(parts),
        "comparison": comparison if comparison else None,
        "policy_value": value,
        "heuristic_note": None,
        "gate": verdict,
    }
    return _clean(report)

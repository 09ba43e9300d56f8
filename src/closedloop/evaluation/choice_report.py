"""The evaluation report of a choice system (a :class:`~closedloop.experience.experiences.BestAction`
experience: one decision picks one of the system's actions): what each bundle's policy would earn
per decision, estimated off-policy from a logged bandit dataset (one row per decision: the action
shown, its reward and its logged propensity — ``closedloop dataset import FILE --action COL
--reward COL --propensity COL``).

:func:`evaluate_choice` (what :func:`closedloop.evaluation.report.evaluate` runs for a BestAction
system) runs as stages:

1. the rows (:func:`_rows`): the dataset's held-out rows (the system's split, as the ranking report
   takes them), one per decision; rows at a position other than 1 or with a logged action the
   system does not declare are left out and counted;
2. each bundle decides the logged contexts through ``Runtime(system, bundle).decide_batch`` with
   the logged decision ids and times (its score matrix, the numbers the runtime computes), and its
   exact probability of every action on each row (:func:`action_distribution`: one-hot at the
   greedy action, or the chooser's Softmax / EpsilonGreedy / SquareCB probabilities — what the runtime draws
   from and records as the propensity);
3. the policy value: :func:`~closedloop.evaluation.ope.estimate` with the rows' units (IPS and
   SNIPS; DM, DR, SNDR and Switch-DR with a ``reward_model`` bundle whose per-action scores are
   expected rewards), each later bundle against the first by
   :func:`~closedloop.evaluation.ope.estimate_difference` (paired by unit), per slice of the
   system's ``slices``; the logging policy's mean reward as the reference — the section has the
   ranking report's shape, so :meth:`~closedloop.evaluation.gate.Gate.check_policy_value` judges it;
4. the report: per bundle its greedy agreement with the logged action, its action shares and 50
   seeded golden rows in the Thresholds format (``scores`` by output, ``action``) that the
   registry's parity check replays through ``Runtime.decide``.

Guardrails (the system's and the bundle's) move each action's probability to the action they turn
it into on that row, as the runtime's propensity sums it; a frequency cap is refused (it changes
the action by the unit's history, not the row). The report's fields: docs/evaluation.md, "Choice systems".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import DatasetError, SpecError
from closedloop.evaluation.ope import estimate, estimate_difference
from closedloop.evaluation.ope.intervals import bootstrap_sums, percentile_interval, unit_sums
from closedloop.evaluation.ranking_report import check_value_arguments
from closedloop.evaluation.ranking_rows import read_manifest
from closedloop.evaluation.ranking_value import MIN_SLICE_ROWS, slice_entries
from closedloop.system.splits import Split

__all__ = ["GOLDEN", "MIN_SLICE_ROWS", "POLICY_RESAMPLES", "action_distribution", "evaluate_choice"]

#: Decisions a bundle's report keeps for the registry's parity check (train/serve parity).
GOLDEN = 50
#: The policy value's resamples when the report's ``bootstrap`` is 0 (the gate never judges a point estimate).
POLICY_RESAMPLES = 200
#: A slice value with fewer usable rows is listed with its count, not estimated.


class ChoiceRows(NamedTuple):
    """The held-out decisions of a logged bandit dataset (stage 1)."""

    manifest: Any
    split: Any
    cols: Any  # the contexts (closedloop Columns)
    ids: list[Any]
    ts: np.ndarray
    units: np.ndarray  # unit codes in [0, n_units)
    n_units: int
    action: np.ndarray  # the logged action's index in system.actions
    reward: np.ndarray
    pscore: np.ndarray  # NaN where the dataset has none
    excluded: dict[str, int]


def _check(system: Any, bundles: Sequence[Any], bootstrap: Any, seed: Any, policy_value: Any, reward_model: Any,
           gate: Any) -> list[Any]:
    from closedloop.experience.experiences import BestAction
    from closedloop.experience.guardrails import FrequencyCap
    from closedloop.runtime.bundle import Bundle

    bundles = list(bundles)
    if not bundles or not all(isinstance(b, Bundle) for b in bundles):
        raise SpecError(f"The 'bundles' parameter of evaluate must be a non-empty list of Bundles. Got {bundles!r} instead.")
    for b in [*bundles, *([reward_model] if isinstance(reward_model, Bundle) else [])]:
        b.check_compatible(system)
        if not isinstance(b.experience(system), BestAction):
            raise SpecError(f"evaluate_choice needs a BestAction experience; bundle {b.version!r} of system "
                            f"'{system.name}' has {b.experience(system)!r}.")
        caps = [g.name for g in (*system.guardrails, *b.guardrails) if isinstance(g, FrequencyCap)]
        if caps:
            raise SpecError(f"evaluate cannot value a choice system with frequency caps {caps}: a cap changes the action "
                            f"by the unit's history, so the action distribution after it is not a function of the row "
                            f"(bundle {b.version!r} of system '{system.name}').")
    for name, v in (("bootstrap", bootstrap), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise SpecError(f"The '{name}' parameter of evaluate must be an integer ≥ 0. Got {v!r} instead.")
    check_value_arguments(system, policy_value, reward_model, gate, "choice")
    return bundles


def _manifest(system: Any, dataset: Path) -> Any:
    manifest = read_manifest(system, dataset)
    if manifest.content.get("rows") != "slot":
        raise DatasetError(f"A choice system is evaluated on a logged reward dataset (manifest 'rows': 'slot', from "
                           f"`closedloop dataset import FILE --action COL --reward COL --propensity COL`). Dataset "
                           f"{manifest.id!r} has rows {manifest.content.get('rows')!r} instead.")
    return manifest


def _rows(system: Any, dataset: Path, split: Split | str | None, loaded: tuple[Any, Any] | None) -> ChoiceRows:
    """Stage 1: the held-out rows of ``dataset`` under ``split`` (default ``system.split``; ``"all"``)."""
    from closedloop.datasets.dataset import load_dataset
    from closedloop.system.splits import split as split_rows

    manifest = _manifest(system, dataset)
    table, cols = loaded if loaded is not None else load_dataset(dataset, system)
    missing = [c for c in ("decision_id", "unit", "timestamp_ns", "action", "reward", "position") if c not in table.column_names]
    if missing:
        raise DatasetError(f"The dataset {manifest.id!r} must have the columns of a logged reward dataset. Got no {missing} "
                           "instead.")
    sp = system.split if split is None else split
    if isinstance(sp, Split):
        _, idx = split_rows(table.select(["unit", "timestamp_ns"]), sp)
    elif not (isinstance(sp, str) and sp == "all"):
        raise SpecError(f"The 'split' parameter of evaluate must be a closedloop Split, 'all' or None. Got {sp!r} instead.")
    else:
        idx = np.arange(table.num_rows)
    pos = np.asarray(table["position"].to_numpy(zero_copy_only=False), dtype=np.int64)[idx]
    found = pc.index_in(table["action"].take(pa.array(idx)).cast(pa.string()), value_set=pa.array(system.actions, pa.string()))
    act = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    ok_pos, ok_act = pos == 1, act >= 0
    excluded = {"rows_at_a_position_other_than_1": int((~ok_pos).sum()),
                "rows_with_an_action_the_system_does_not_declare": int((ok_pos & ~ok_act).sum())}
    idx = idx[ok_pos & ok_act]
    if idx.size == 0:
        raise DatasetError(f"The split {sp.describe() if isinstance(sp, Split) else sp} leaves no evaluation rows in "
                           f"dataset {manifest.id!r} (left out: {excluded}).")
    t = table.take(pa.array(idx))
    unit_col = t["unit"].cast(pa.string()).combine_chunks().dictionary_encode()
    p = (np.asarray(t["propensity"].cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
         if "propensity" in t.column_names else np.full(idx.size, np.nan))
    return ChoiceRows(manifest, sp, cols.take(idx), t["decision_id"].to_pylist(),
                      np.asarray(t["timestamp_ns"].to_numpy(zero_copy_only=False), dtype=np.int64),
                      np.asarray(unit_col.indices, dtype=np.int64), len(unit_col.dictionary), act[ok_pos & ok_act],
                      np.asarray(t["reward"].cast(pa.float64()).fill_null(0.0).to_numpy(), dtype=np.float64), p, excluded)


def _decided(system: Any, bundle: Any, rows: ChoiceRows) -> Any:
    """The runtime's batch of the logged decisions (their ids and times) under ``bundle``."""
    from closedloop.runtime.runtime import Runtime

    names = [f.name for f in system.schema.fields]
    return Runtime(system, bundle).decide_batch({n: rows.cols[n] for n in names}, decision_ids=rows.ids,
                                                timestamps_ns=rows.ts)


def action_distribution(system: Any, bundle: Any, scores: np.ndarray, cols: Any = None) -> np.ndarray:
    """The exact probability of every action (columns in ``system.actions`` order) that ``bundle``'s
    policy gives each row of the score matrix ``scores`` (rows × actions, the runtime's): one-hot at
    the greedy action, or the exploration policy's probabilities (what the runtime draws from), then,
    when the system or the bundle declares guardrails, each action's mass moved to the action its
    row's guardrails turn it into (``cols``: the rows' contexts, which the guardrails' conditions
    read) — as the runtime sums the recorded propensity, so the chosen action's entry is that
    propensity bit for bit. Frequency caps are refused (they depend on the unit's history)."""
    ch = bundle.experience(system).bind(bundle.intelligence.outputs, system.actions)
    S = np.asarray(scores, dtype=np.float64)
    n = S.shape[0]
    greedy, _ = ch.batch(S)
    if ch.explores:
        P = np.asarray(ch.probs_batch(S, greedy), dtype=np.float64)
    else:
        P = np.zeros(S.shape, dtype=np.float64)
        P[np.arange(n), np.asarray(greedy, dtype=np.int64)] = 1.0
    rules = [*system.guardrails, *bundle.guardrails]
    return P if not rules else _guarded(system, rules, P, cols, bundle.version)


def _guarded(system: Any, rules: list[Any], P: np.ndarray, cols: Any, version: str) -> np.ndarray:
    """``P`` with each action's mass moved where the guardrails send it on each row (the runtime's
    :class:`~closedloop.experience.guardrails.GuardLayer`, asked where each action goes)."""
    from closedloop.experience.guardrails import GuardLayer

    if cols is None:
        raise SpecError(f"The 'cols' parameter of action_distribution must hold the rows' contexts when the policy has "
                        f"guardrails (bundle {version!r} of system '{system.name}'). Got None instead.")
    layer = GuardLayer(system, rules, None)
    if layer.has_caps:
        raise SpecError(f"action_distribution cannot follow the frequency caps of bundle {version!r}: a cap depends on "
                        "the unit's history, not on the row.")
    n, k = P.shape
    rows = np.arange(n)
    out = np.zeros_like(P)
    ts = np.zeros(n, dtype=np.int64)
    for j in range(k):
        to, _, _ = layer.batch(cols, np.full(n, j, dtype=np.int64), None, None, ts)
        out[rows, to] += P[:, j]
    return out


def _golden(rows: ChoiceRows, batch: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` seeded rows as the registry's parity check replays them (the Thresholds format)."""
    pick = np.sort(np.random.default_rng(seed).choice(len(rows.ids), size=min(n, len(rows.ids)), replace=False))
    sub = rows.cols.take(pick)
    acts = batch.action
    return [{"decision_id": rows.ids[i], "timestamp_ns": int(rows.ts[i]),
             "context": {k: v for k, v in sub.row(j).items() if v is not None},
             "scores": {o: float(batch.score_matrix[i, c]) for c, o in enumerate(batch.outputs)}, "action": str(acts[i])}
            for j, i in enumerate(pick.tolist())]


def _bundle_part(system: Any, bundle: Any, rows: ChoiceRows, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Stage 2 for one bundle → (its report part, its action distribution (rows, actions))."""
    batch = _decided(system, bundle, rows)
    dist = action_distribution(system, bundle, batch.score_matrix, rows.cols)
    greedy = np.argmax(np.where(np.isnan(batch.score_matrix), -np.inf, batch.score_matrix), axis=1)
    shares = dist.mean(axis=0)
    part = {"version": bundle.version, "kind": bundle.intelligence.kind, "n": len(rows.ids),
            "explores": bundle.experience(system).explore is not None,
            "greedy_agreement": float((greedy == rows.action).mean()),
            "action_shares": {a: float(s) for a, s in zip(system.actions, shares, strict=True)},
            "golden": _golden(rows, batch, GOLDEN, seed)}
    return part, dist


def _logged_value(r: np.ndarray, units: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    draws = bootstrap_sums(unit_sums(np.stack([np.ones(r.size), r], axis=1), units, "policy_value"), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = percentile_interval(draws[:, 1] / draws[:, 0], 0.05)
    return {"value": float(r.mean()), "ci": [low, high], "n_rows": int(r.size)}


def _section(rows: ChoiceRows, keep: np.ndarray, versions: list[str], dists: list[np.ndarray], q: np.ndarray | None,
             names: tuple[str, ...], n_boot: int, seed: int) -> dict[str, Any]:
    """The policy value on the rows ``keep``: the logged value, each bundle's estimates, each difference."""
    common: dict[str, Any] = {"units": rows.units[keep], "estimators": list(names), "n_bootstrap": n_boot, "seed": seed,
                              "estimated_rewards_by_reg_model": None if q is None else q[keep][:, :, None]}
    r, a, p = rows.reward[keep], rows.action[keep], rows.pscore[keep]
    per = [d[keep][:, :, None] for d in dists]
    bundles = [{"version": v, "estimates": {n: e.to_dict() for n, e in estimate(r, a, p, d, **common).items()}}
               for v, d in zip(versions, per, strict=True)]
    comparison = [{"baseline": versions[0], "candidate": versions[j],
                   "differences": {n: e.to_dict() for n, e in estimate_difference(r, a, p, per[j], per[0], **common).items()}}
                  for j in range(1, len(per))]
    return {"n_rows": int(keep.sum()), "units": int(np.unique(rows.units[keep]).size),
            "logged": _logged_value(r, rows.units[keep], n_boot, seed), "bundles": bundles, "comparison": comparison or None}


def _slices(system: Any, rows: ChoiceRows, keep: np.ndarray, run: Any) -> dict[str, list[dict[str, Any]]]:
    """Per value of each of the system's ``slices`` (context fields): the section on its usable rows,
    or only its count below :data:`MIN_SLICE_ROWS`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for field in system.slices:
        values = np.asarray([str(v) for v in rows.cols.pylist(field)], dtype=object)
        out[field] = slice_entries(values, keep, run)
    return out


def choice_policy_value(system: Any, rows: ChoiceRows, versions: list[str], dists: list[np.ndarray], *,
                        reward_scores: np.ndarray | None, reward_model: str | None, bootstrap: int,
                        seed: int) -> dict[str, Any] | None:
    """Stage 3, the report's ``policy_value`` section (the ranking report's shape). None when the
    dataset has no logged propensities."""
    if np.isnan(rows.pscore).all():
        return None
    keep = np.isfinite(rows.pscore) & (rows.pscore > 0) & (rows.pscore <= 1)
    n_boot = int(bootstrap) if bootstrap > 0 else POLICY_RESAMPLES
    names: tuple[str, ...] = ("ips", "snips") if reward_scores is None else ("ips", "snips", "dm", "dr", "sndr", "switch_dr")
    notes = [] if reward_model is not None else ["No reward model was given: IPS and SNIPS only (DM, DR, SNDR and "
                                                 "Switch-DR need one)."]
    base = {"estimators": list(names), "reward_model": reward_model, "candidates": "the system's actions",
            "bootstrap": n_boot, "interval": "bootstrap by unit (differences: paired, the same draws for both)",
            "excluded": {"rows_without_a_propensity": int((~keep).sum())}, "notes": notes}
    if not keep.any():
        return {**base, "n_rows": 0, "logged": None, "bundles": None, "comparison": None, "slices": {}}

    def run(sel: np.ndarray) -> dict[str, Any]:
        return _section(rows, sel, versions, dists, reward_scores, names, n_boot, int(seed))

    return {**base, **run(keep), "slices": _slices(system, rows, keep, run)}


def evaluate_choice(system: Any, bundles: Sequence[Any], dataset: Path | str, *, split: Split | str | None = None,
                    bootstrap: int = 100, seed: int = 0, loaded: tuple[Any, Any] | None = None, policy_value: bool = True,
                    reward_model: Any = None, gate: Any = None) -> dict[str, Any]:
    """Evaluate choice ``bundles`` (the first the baseline, the last the candidate) on the logged
    reward dataset at ``dataset`` (module doc): its test side under ``split`` (default
    ``system.split``; ``"all"``: every row). ``bootstrap`` / ``seed``: the resamples by unit of the
    intervals (0: :data:`POLICY_RESAMPLES`) and the seed of the draws and of the golden rows.
    ``reward_model``: a Bundle whose per-action scores are expected rewards (DM and the doubly robust
    estimators). ``gate`` (default :class:`~closedloop.evaluation.gate.Gate` when there is a policy
    value and two bundles or more): :meth:`~closedloop.evaluation.gate.Gate.check_policy_value`.
    Returns the report (docs/evaluation.md, "Choice systems")."""
    from closedloop.evaluation.gate import Gate
    from closedloop.evaluation.report import _clean

    bundles = _check(system, bundles, bootstrap, seed, policy_value, reward_model, gate)
    rows = _rows(system, Path(dataset), split, loaded)
    parts, dists = zip(*(_bundle_part(system, b, rows, int(seed)) for b in bundles), strict=True)
    value = None
    if policy_value:
        q = None if reward_model is None else np.asarray(_decided(system, reward_model, rows).score_matrix, dtype=np.float64)
        value = choice_policy_value(system, rows, [b.version for b in bundles], list(dists), reward_scores=q,
                                    reward_model=None if reward_model is None else reward_model.version,
                                    bootstrap=int(bootstrap), seed=int(seed))
    verdict = None
    if len(bundles) >= 2 and (gate is not None or value is not None):
        verdict = (gate or Gate()).check_policy_value(value, reward_model is not None, bundles[0].version, bundles[-1].version)
    return _clean(_assemble(system, Path(dataset), rows, list(parts), value, verdict, int(bootstrap), int(seed)))


def _assemble(system: Any, dataset: Path, rows: ChoiceRows, parts: list[dict[str, Any]], value: Any, verdict: Any,
              bootstrap: int, seed: int) -> dict[str, Any]:
    from closedloop.evaluation.report import SCHEMA_VERSION

    source = rows.manifest.content.get("source") or {}
    sp = rows.split
    counts = np.bincount(rows.action, minlength=len(system.actions))
    notes = []
    if source.get("unit_stand_in"):
        notes.append("The dataset has no unit column: the row index stands in for the unit, so the split and the "
                     "intervals treat every row as its own unit.")
    if value is None:
        notes.append("No policy value: the dataset carries no logged propensities (or policy_value=False).")
    return {
        "schema_version": SCHEMA_VERSION, "kind": "choice", "system": system.name,
        "metadata": {
            "dataset_id": rows.manifest.id, "dataset_path": str(dataset),
            "split": sp.describe() if isinstance(sp, Split) else "all", "side": "test" if isinstance(sp, Split) else "all",
            "unit_stand_in": source.get("unit_stand_in"), "time_stand_in": source.get("time_stand_in"),
            "created": _dt.datetime.now(_dt.UTC).isoformat(), "bootstrap": bootstrap, "seed": seed, "notes": notes,
        },
        "dataset": {"id": rows.manifest.id, "path": str(rows.manifest.path), "rows": len(rows.ids),
                    "decisions": len(rows.ids), "units": rows.n_units, "excluded": rows.excluded,
                    "logged_actions": {a: int(c) for a, c in zip(system.actions, counts, strict=True)}},
        "rows": {"n": len(rows.ids), "positives": int((rows.reward > 0).sum())},
        "logged": _logged_value(rows.reward, rows.units, bootstrap if bootstrap > 0 else POLICY_RESAMPLES, seed),
        "bundles": parts,
        "comparison": None,
        "policy_value": value,
        "heuristic_note": None,
        "gate": verdict,
    }

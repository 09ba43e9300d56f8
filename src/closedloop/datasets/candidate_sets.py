"""Each logged decision's whole candidate set, beside a per-slot reward dataset: what was shown and
what could have been.

A per-slot reward dataset (:mod:`closedloop.datasets.slots`) holds one row per (decision, slot
shown). Learning a policy from it — doubly robust pseudo-rewards, imitating the logger — needs the
candidates that were **not** shown too: a candidate never shown is where the reward model's guess
is all there is. :func:`~closedloop.datasets.slots.build_reward_dataset` therefore writes
``candidate_sets.parquet`` beside ``data.parquet`` when its decisions were logged with their
candidates' fields (``Telemetry(candidates="full")``, the default): one row per decision with a
row in the dataset, ``decision_id``, ``candidates_json`` (the candidate list exactly as the
decision logged it, in input order) and ``candidate_scores`` (the scores the deciding bundle gave
them: with the system's exploration policy they give the logger's whole distribution, for the
off-policy support check). The manifest names it (``candidate_sets``: file, decisions).
A dataset imported from logs (:func:`~closedloop.datasets.bandit.import_bandit`) or built from
digest-only decisions has none.

:func:`read_candidate_sets` joins the two files into :class:`CandidateSets`: per decision its
request (the first slot row's ``context_json``), its unit and time; per candidate its fields, the
slot it was shown in (0: not shown), that slot's reward and logged propensity (NaN when not shown)
and its logged score (NaN when the decision logged none: the kill switch).
A decision is left out, and counted by why, when it has no logged candidate set
(``no_candidate_set``), when a shown candidate is not in its set (``slate_not_in_set``), when its
set repeats a candidate id (``repeated_candidate``) or when a candidate does not validate against
the candidate schema (``invalid_candidate``) — a policy learned from a set with a hole would
learn the hole.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop.errors import DatasetError

__all__ = ["CANDIDATE_SETS_FILE", "CandidateSets", "candidate_sets_table", "read_candidate_sets"]

#: The file beside ``data.parquet`` that holds each decision's logged candidate set.
CANDIDATE_SETS_FILE = "candidate_sets.parquet"

_ROWS = ("decision_id", "position", "unit", "timestamp_ns", "action", "reward", "propensity", "context_json")


class CandidateSets(NamedTuple):
    """The decisions, in the order they first appear in the dataset, each with its candidates.

    Decision ``d``'s candidates are the flat rows ``offsets[d]:offsets[d + 1]`` (input order).
    ``requests`` and ``candidates`` are the runtime's batch inputs (``candidates["request"]``
    names each candidate's decision), so ``Runtime.decide_batch(requests, candidates=candidates)``
    decides every logged decision again; :meth:`flat` gives the request × candidate rows the
    features read, for training."""

    decision_ids: list[str]
    units: list[str | None]
    timestamps_ns: np.ndarray
    offsets: np.ndarray
    candidate_ids: list[str]
    slot: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    logged_scores: np.ndarray
    requests: dict[str, Any]
    candidates: dict[str, Any]
    excluded: dict[str, int]

    @property
    def n_decisions(self) -> int:
        return len(self.decision_ids)

    def decision_of(self) -> np.ndarray:
        """Each flat candidate row's decision index."""
        return np.repeat(np.arange(self.n_decisions, dtype=np.int64), np.diff(self.offsets))

    def flat(self, system: Any) -> Any:
        """The request × candidate rows (request fields repeated on each of its candidates) as
        validated :class:`~closedloop.context.columns.Columns` of ``system.features.schema``."""
        of = self.decision_of()
        data: dict[str, Any] = {}
        for f in system.schema.fields:
            col = self.requests[f.name]
            data[f.name] = col.take(pa.array(of)) if isinstance(col, pa.Array) else np.asarray(col)[of] \
                if isinstance(col, np.ndarray) else [col[int(i)] for i in of]
        for f in system.candidate_schema.fields:
            data[f.name] = self.candidates[f.name]
        return system.features.schema.validate_batch(data)


def candidate_sets_table(decisions: pa.Table, shown: set[str]) -> pa.Table:
    """The ``candidate_sets.parquet`` rows: ``decision_id`` and ``candidates_json`` of each decision
    of ``decisions`` (telemetry rows) whose id is in ``shown`` (those with a dataset row)."""
    keep = pc.is_in(decisions["decision_id"], value_set=pa.array(sorted(shown), pa.string()))
    sel = decisions.filter(keep).select(["decision_id", "candidates_json", "candidate_scores"])
    return pa.table({"decision_id": sel["decision_id"].cast(pa.string()), "candidates_json": sel["candidates_json"].cast(pa.string()),
                     "candidate_scores": sel["candidate_scores"].cast(pa.list_(pa.float64()))})


def _manifest(system: Any, dataset: Path) -> Any:
    from closedloop.datasets.dataset import MANIFEST_FILE, DatasetManifest

    if not (dataset / MANIFEST_FILE).is_file():
        raise DatasetError(f"The dataset directory '{dataset}' must hold a {MANIFEST_FILE}. Got no such file instead.")
    manifest = DatasetManifest.read(dataset)
    built_for = manifest.content.get("system")
    if built_for is not None and built_for != system.name:
        raise DatasetError(f"The dataset {manifest.id!r} was built for system {built_for!r}, not {system.name!r}.")
    if manifest.content.get("rows") != "slot" or not (dataset / CANDIDATE_SETS_FILE).is_file():
        raise DatasetError(
            f"Learning a policy needs each decision's whole candidate set: a per-slot reward dataset built from telemetry "
            f"that logged its candidates' fields (build_reward_dataset writes {CANDIDATE_SETS_FILE}). Dataset "
            f"{manifest.id!r} has rows {manifest.content.get('rows')!r} and "
            f"{'a' if (dataset / CANDIDATE_SETS_FILE).is_file() else 'no'} {CANDIDATE_SETS_FILE} instead.")
    return manifest


def _slots(dataset: Path, rows: pa.Table | None) -> pa.Table:
    """The dataset's slot rows (only the columns read here)."""
    if rows is None:
        from closedloop.datasets.dataset import DATA_FILE

        names = set(pq.read_schema(dataset / DATA_FILE).names)
        rows = pq.read_table(dataset / DATA_FILE, columns=[c for c in _ROWS if c in names])
    missing = [c for c in _ROWS if c not in rows.column_names]
    if missing:
        raise DatasetError(f"A per-slot reward dataset must have the columns {list(_ROWS)}. Got no {missing} instead.")
    return rows


def read_candidate_sets(system: Any, dataset: Path | str, *, rows: pa.Table | None = None) -> CandidateSets:
    """The decisions of the per-slot reward dataset at ``dataset`` with their whole candidate sets
    (module doc). ``rows``: the dataset's slot rows when the caller has them (e.g. a split's side)
    — only their decisions are read."""
    dataset = Path(dataset)
    _manifest(system, dataset)
    slots = _slots(dataset, rows)
    sets = pq.read_table(dataset / CANDIDATE_SETS_FILE)
    scores = sets["candidate_scores"].to_pylist() if "candidate_scores" in sets.column_names else [None] * sets.num_rows
    by_id = dict(zip(sets["decision_id"].to_pylist(), zip(sets["candidates_json"].to_pylist(), scores, strict=True), strict=True))
    cid_name = system.candidate_id
    excluded: Counter[str] = Counter()
    order: dict[str, list[int]] = {}
    for i, d in enumerate(slots["decision_id"].to_pylist()):
        order.setdefault(d, []).append(i)
    pos, act = slots["position"].to_pylist(), slots["action"].to_pylist()
    reward = np.asarray(slots["reward"].to_numpy(zero_copy_only=False), dtype=np.float64)
    prop = np.asarray(slots["propensity"].to_numpy(zero_copy_only=False), dtype=np.float64)
    out: dict[str, list[Any]] = {k: [] for k in ("ids", "first", "cands", "cid", "slot", "reward", "prop", "score", "len")}
    for d, idx in order.items():
        got = by_id.get(d)
        if got is None:
            excluded["no_candidate_set"] += 1
            continue
        cands, logged = msgspec.json.decode(got[0]), got[1]
        ids = [str(c.get(cid_name)) if isinstance(c, dict) else None for c in cands]
        if len(set(ids)) != len(ids):
            excluded["repeated_candidate"] += 1
            continue
        where = {c: j for j, c in enumerate(ids)}
        if any(act[i] not in where for i in idx):
            excluded["slate_not_in_set"] += 1
            continue
        slot, rw, pr = [0] * len(ids), [np.nan] * len(ids), [np.nan] * len(ids)
        for i in idx:
            j = where[act[i]]
            slot[j], rw[j], pr[j] = int(pos[i]), float(reward[i]), float(prop[i])
        out["ids"].append(d)
        out["first"].append(idx[0])
        out["len"].append(len(ids))
        score = [float(x) if x is not None else np.nan for x in logged] if logged and len(logged) == len(ids) else [np.nan] * len(ids)
        for key, vals in (("cands", cands), ("cid", ids), ("slot", slot), ("reward", rw), ("prop", pr), ("score", score)):
            out[key].extend(vals)
    return _assemble(system, slots, out, excluded)


def _assemble(system: Any, slots: pa.Table, out: dict[str, list[Any]], excluded: Counter[str]) -> CandidateSets:
    """The candidate sets read, with each candidate validated (a decision with an invalid one is left out)."""
    from closedloop.datasets.dataset import decode_contexts

    cschema = system.candidate_schema
    names = [f.name for f in cschema.fields]
    lens = np.asarray(out["len"], dtype=np.int64)
    objs = [c if isinstance(c, dict) else {} for c in out["cands"]]
    ccols = cschema.validate_batch({n: [c.get(n) for c in objs] for n in names}, errors="skip") if objs else None
    n_flat = int(lens.sum())
    good_flat = np.zeros(n_flat, dtype=bool)
    if ccols is not None:
        good_flat[np.asarray(ccols.rows, dtype=np.int64)] = True
    offsets = np.concatenate([[0], np.cumsum(lens)])
    ok = np.array([good_flat[offsets[d]:offsets[d + 1]].all() for d in range(len(lens))], dtype=bool)
    excluded["invalid_candidate"] += int((~ok).sum())
    keep_flat = np.repeat(ok, lens)
    first = np.asarray(out["first"], dtype=np.int64)[ok]
    if ccols is not None and not ok.all():  # validate the kept candidates again: their Columns in the kept order
        kept = [o for o, k in zip(objs, keep_flat, strict=True) if k]
        ccols = cschema.validate_batch({n: [c.get(n) for c in kept] for n in names}) if kept else None
    lens = lens[ok]
    contexts = decode_contexts(slots["context_json"].take(pa.array(first)), system)
    candidates: dict[str, Any] = {n: (ccols[n] if ccols is not None else []) for n in names}
    candidates["request"] = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    pick = np.flatnonzero(keep_flat)
    return CandidateSets(
        decision_ids=[d for d, k in zip(out["ids"], ok, strict=True) if k],
        units=slots["unit"].take(pa.array(first)).to_pylist(),
        timestamps_ns=np.asarray(slots["timestamp_ns"].take(pa.array(first)).to_numpy(), dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        candidate_ids=[out["cid"][i] for i in pick],
        slot=np.asarray(out["slot"], dtype=np.int32)[pick] if n_flat else np.empty(0, np.int32),
        reward=np.asarray(out["reward"], dtype=np.float64)[pick] if n_flat else np.empty(0),
        propensity=np.asarray(out["prop"], dtype=np.float64)[pick] if n_flat else np.empty(0),
        logged_scores=np.asarray(out["score"], dtype=np.float64)[pick] if n_flat else np.empty(0),
        requests={f.name: contexts[f.name] for f in system.schema.fields},
        candidates=candidates,
        excluded=dict(sorted((k, v) for k, v in excluded.items() if v)),
    )

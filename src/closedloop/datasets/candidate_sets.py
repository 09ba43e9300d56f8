"""Each logged decision's whole candidate set, beside a per-slot reward dataset: what was shown and
what could have been.

A per-slot reward dataset (:mod:`closedloop.datasets.slots`) holds one row per (decision, slot
shown). Learning a policy from it — doubly robust pseudo-rewards, imitating the logger — needs the
candidates that were **not** shown too: a candidate never shown is where the reward model's guess
is all there is. :func:`~closedloop.datasets.slots.build_reward_dataset` therefore writes
``candidate_sets.parquet`` beside ``data.parquet`` when its decisions were logged with their
candidates' fields (``Telemetry(candidates="full")``, the default): one row per candidate of each
decision with a row in the dataset — ``decision_id``, ``index`` (its place in the list as logged),
``logged_score`` (the score the deciding bundle gave it: with the system's exploration policy the
scores give the logger's whole distribution, for the off-policy support check) and ``candidate``
(its fields, a struct column) — columnar, so reading it back decodes no JSON. The manifest names
it (``candidate_sets``: file, decisions).
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

__all__ = ["CANDIDATE_SETS_FILE", "CandidateSets", "Decoded", "candidate_sets_table", "decode_candidates", "decoded_from",
           "read_candidate_sets"]

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


class Decoded(NamedTuple):
    """The logged candidate lists of some decisions (telemetry rows), decoded once: decision ``i``'s
    candidates are the flat rows ``offsets[i]:offsets[i + 1]`` of ``flat`` (a struct array of their
    fields; a list that is not a JSON array counts as empty, a candidate that is not an object as
    one without fields)."""

    offsets: np.ndarray
    flat: pa.Array

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def decode_candidates(decisions: pa.Table) -> Decoded:
    """The ``candidates_json`` of ``decisions`` decoded by one msgspec call over the column joined
    by Arrow, then made one struct column by Arrow (no Python loop per candidate field)."""
    raw: list[Any] = msgspec.json.decode(_joined(decisions["candidates_json"])) if decisions.num_rows else []
    return decoded_from(raw)


def decoded_from(raw: list[Any]) -> Decoded:
    """The decoded candidate lists ``raw`` (one per decision) as :class:`Decoded`."""
    lens = np.fromiter((len(c) if isinstance(c, list) else 0 for c in raw), dtype=np.int64, count=len(raw))
    flat = [c if isinstance(c, dict) else {} for lst in raw if isinstance(lst, list) for c in lst]
    return Decoded(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                   pa.array(flat) if flat else pa.array([], pa.struct([])))


def candidate_sets_table(decisions: pa.Table, shown: set[str], decoded: Decoded | None = None) -> pa.Table:
    """The ``candidate_sets.parquet`` rows: one per candidate of each decision of ``decisions``
    (telemetry rows) whose id is in ``shown`` (those with a dataset row) — ``decision_id``, ``index``
    (its place in the logged list), ``logged_score`` (NaN when the decision logged none) and
    ``candidate`` (its fields, a struct column): columnar, so reading it back needs no JSON.
    ``decoded``: the candidates of all ``decisions`` when the caller decoded them already."""
    keep = np.asarray(pc.is_in(decisions["decision_id"], value_set=pa.array(sorted(shown), pa.string())), dtype=bool)
    sel = decisions.filter(pa.array(keep))
    if decoded is None:
        decoded, keep = decode_candidates(sel), np.ones(sel.num_rows, dtype=bool)
    lens = decoded.lengths[keep]
    of = np.repeat(np.arange(sel.num_rows, dtype=np.int64), lens)  # each kept candidate's row in ``sel``
    flat_rows = _flat_rows(decoded.offsets, keep)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if lens.size else np.zeros(0, np.int64)
    index = (np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(starts, lens)).astype(np.int32)
    return pa.table({
        "decision_id": pc.take(sel["decision_id"], pa.array(of, pa.int64())).cast(pa.string()),
        "index": pa.array(index, pa.int32()),
        "logged_score": pa.array(_logged_scores(sel["candidate_scores"], lens), pa.float64()),
        "candidate": decoded.flat.take(pa.array(flat_rows, pa.int64())) if flat_rows.size else pa.array([], pa.struct([])),
    })


def _flat_rows(offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The flat candidate rows of the decisions ``keep`` selects, in order."""
    lens = np.diff(offsets)[keep]
    starts = offsets[:-1][keep]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens - starts, lens)


def _logged_scores(scores: Any, lens: np.ndarray) -> np.ndarray:
    """Each candidate's logged score, flat: a decision's scores when it logged one per candidate
    (a missing one NaN), else NaN for all its candidates."""
    col = scores.combine_chunks() if isinstance(scores, pa.ChunkedArray) else scores
    out = np.full(int(lens.sum()), np.nan)
    if len(col) == 0:
        return out
    n_sc = np.asarray(pc.list_value_length(col).fill_null(-1), dtype=np.int64)
    ok = n_sc == lens
    if ok.any():
        vals = pc.list_flatten(col.filter(pa.array(ok)))
        out[np.repeat(ok, lens)] = np.asarray(vals.cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    return out


def _joined(col: Any, fill: str = "[]") -> bytes:
    """A column of JSON texts (null: ``fill``) as one JSON array of them (joined by Arrow: no
    Python string per row)."""
    arr = (col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col).fill_null(fill)
    if len(arr) == 0:
        return b"[]"
    one = pa.LargeListArray.from_arrays(pa.array([0, len(arr)], pa.int64()), arr.cast(pa.large_string()))
    return b"[" + memoryview(pc.binary_join(one, pa.scalar(",", pa.large_string()))[0].as_buffer()).tobytes() + b"]"


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
    — only their decisions are read. Columnar throughout: the decisions by dictionary codes, the
    slots placed in their sets by one join."""
    dataset = Path(dataset)
    _manifest(system, dataset)
    slots = _slots(dataset, rows)
    enc = slots["decision_id"].combine_chunks().cast(pa.string()).dictionary_encode()
    code = np.asarray(enc.indices, dtype=np.int64)  # each slot row's decision, in order of first appearance
    n_dec = len(enc.dictionary)
    sets = pq.read_table(dataset / CANDIDATE_SETS_FILE)
    at = np.asarray(pc.index_in(sets["decision_id"].cast(pa.string()), value_set=enc.dictionary).fill_null(-1), dtype=np.int64)
    mine = np.flatnonzero(at >= 0)
    order = mine[np.lexsort((np.asarray(sets["index"])[mine], at[mine]))]
    sets, fcode = sets.take(pa.array(order)), at[order]
    cand = sets["candidate"].combine_chunks() if sets.num_rows else None
    cids = _ids(cand, system.candidate_id, sets.num_rows)
    out = _placed(fcode, cids, code, slots, n_dec)
    bad = out.pop("bad")
    ccols, invalid = _validated(system, cand, fcode, n_dec)
    excluded: Counter[str] = Counter(
        no_candidate_set=int((np.bincount(fcode, minlength=n_dec) == 0).sum()),
        repeated_candidate=int((bad["repeated"] & ~bad["empty"]).sum()),
        slate_not_in_set=int((bad["missing"] & ~bad["repeated"] & ~bad["empty"]).sum()),
        invalid_candidate=int((invalid & ~bad["missing"] & ~bad["repeated"] & ~bad["empty"]).sum()))
    ok = ~(bad["empty"] | bad["repeated"] | bad["missing"] | invalid)
    return _assemble(system, slots, code, sets, fcode, cids, out, ccols, ok, excluded)


def _ids(cand: Any, cid_name: str, n: int) -> np.ndarray:
    """Each flat candidate's id as text (object array)."""
    if cand is None or n == 0 or cid_name not in [f.name for f in cand.type]:
        return np.full(n, None, dtype=object)
    return np.asarray(cand.field(cid_name).cast(pa.string()).to_pylist(), dtype=object)


def _placed(fcode: np.ndarray, cids: np.ndarray, code: np.ndarray, slots: pa.Table, n_dec: int) -> dict[str, Any]:
    """Each flat candidate's slot, reward and propensity (0 / NaN when not shown) by one join of the
    slot rows on (decision, candidate id); which decisions are empty, repeat an id or show a
    candidate not in their set."""
    cid_col = pa.array(cids.tolist(), pa.string())
    keys = pa.table({"d": pa.array(fcode), "c": cid_col, "f": pa.array(np.arange(fcode.size))})
    repeated = np.zeros(n_dec, dtype=bool)
    if fcode.size:  # an id twice in a decision: equal neighbours among its (decision, id code) keys once sorted
        enc = pc.dictionary_encode(cid_col, null_encoding="encode")
        key = np.sort(fcode * (len(enc.dictionary) + 1) + np.asarray(enc.indices, dtype=np.int64))
        same = np.flatnonzero(key[1:] == key[:-1])
        repeated[key[same] // (len(enc.dictionary) + 1)] = True
    left = pa.table({"d": pa.array(code), "c": slots["action"].cast(pa.string()), "s": pa.array(np.arange(code.size))})
    joined = left.join(keys, ["d", "c"], join_type="left outer", use_threads=False)
    f = np.asarray(joined["f"].fill_null(-1), dtype=np.int64)
    srow = np.asarray(joined["s"], dtype=np.int64)
    missing = np.zeros(n_dec, dtype=bool)
    missing[code[srow[f < 0]]] = True
    hit = f >= 0
    slot = np.zeros(fcode.size, dtype=np.int32)
    reward = np.full(fcode.size, np.nan)
    prop = np.full(fcode.size, np.nan)
    slot[f[hit]] = np.asarray(slots["position"].to_numpy(zero_copy_only=False), dtype=np.int32)[srow[hit]]
    reward[f[hit]] = np.asarray(slots["reward"].to_numpy(zero_copy_only=False), dtype=np.float64)[srow[hit]]
    prop[f[hit]] = np.asarray(slots["propensity"].to_numpy(zero_copy_only=False), dtype=np.float64)[srow[hit]]
    empty = np.bincount(fcode, minlength=n_dec) == 0
    return {"slot": slot, "reward": reward, "prop": prop, "bad": {"empty": empty, "repeated": repeated, "missing": missing}}


def _validated(system: Any, cand: Any, fcode: np.ndarray, n_dec: int) -> tuple[Any, np.ndarray]:
    """The candidates validated against the candidate schema (invalid ones skipped) and which
    decisions hold an invalid one."""
    invalid = np.zeros(n_dec, dtype=bool)
    if cand is None or fcode.size == 0:
        return None, invalid
    names = [f.name for f in cand.type]
    cols = {f.name: cand.field(f.name) if f.name in names else pa.nulls(len(cand)) for f in system.candidate_schema.fields}
    ccols = system.candidate_schema.validate_batch(cols, errors="skip")
    good = np.zeros(fcode.size, dtype=bool)
    good[np.asarray(ccols.rows, dtype=np.int64)] = True
    invalid[np.unique(fcode[~good])] = True
    return ccols, invalid


def _assemble(system: Any, slots: pa.Table, code: np.ndarray, sets: pa.Table, fcode: np.ndarray, cids: np.ndarray,
              out: dict[str, Any], ccols: Any, ok: np.ndarray, excluded: Counter[str]) -> CandidateSets:
    """The kept decisions (``ok``) and their candidates, as :class:`CandidateSets`."""
    from closedloop.datasets.dataset import decode_contexts

    keep_flat = ok[fcode] if fcode.size else np.zeros(0, dtype=bool)
    kept = np.flatnonzero(ok)
    remap = np.full(ok.size, -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)
    _, first_row = np.unique(code, return_index=True)  # each decision's first slot row (codes in order of appearance)
    first = first_row[kept]
    lens = np.bincount(remap[fcode[keep_flat]], minlength=kept.size) if kept.size else np.zeros(0, np.int64)
    names = [f.name for f in system.candidate_schema.fields]
    if ccols is not None and keep_flat.any():
        pos = np.flatnonzero(keep_flat[np.asarray(ccols.rows, dtype=np.int64)])  # kept rows, in ccols' order
        ccols = ccols.take(pos)
        candidates: dict[str, Any] = {n: ccols[n] for n in names}
    else:
        candidates = {n: [] for n in names}
    candidates["request"] = np.repeat(np.arange(kept.size, dtype=np.int64), lens)
    contexts = decode_contexts(slots["context_json"].take(pa.array(first)), system)
    logged = np.asarray(sets["logged_score"].to_numpy(zero_copy_only=False), dtype=np.float64) if sets.num_rows else np.empty(0)
    return CandidateSets(
        decision_ids=slots["decision_id"].cast(pa.string()).take(pa.array(first)).to_pylist(),
        units=slots["unit"].take(pa.array(first)).to_pylist(),
        timestamps_ns=np.asarray(slots["timestamp_ns"].take(pa.array(first)).to_numpy(), dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        candidate_ids=cids[keep_flat].tolist(),
        slot=out["slot"][keep_flat], reward=out["reward"][keep_flat], propensity=out["prop"][keep_flat],
        logged_scores=logged[keep_flat],
        requests={f.name: contexts[f.name] for f in system.schema.fields},
        candidates=candidates,
        excluded=dict(sorted((k, v) for k, v in excluded.items() if v)),
    )

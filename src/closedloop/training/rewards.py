"""The rows :func:`~closedloop.training.train` fits a ranking system's reward model on: a per-slot
reward dataset (manifest ``rows: "slot"``, from :func:`~closedloop.datasets.slots.build_reward_dataset`
or :func:`~closedloop.datasets.bandit.import_bandit`).

Each row is one (decision, slot shown): its request fields (``context_json``) beside its candidate's
fields (``candidate_json``) make one row of the runtime's request × candidate batch — the columns a
ranking plan featurizes and scores for every candidate (``RankingPlan._flat_columns``) — so the
model is fitted on exactly the feature values it scores at decision time.

The label is ``reward`` as a click: the reward must be 0 or 1 (a click model: the bundle's score
is the probability that a shown candidate is clicked). A reward outside {0, 1} (a graded reward, a
revenue) is refused, naming the row, rather than thresholded: what "positive" means for such a
reward is the caller's choice to make. A row without a reward (null or NaN) is left out and
counted, and so is a row whose candidate does not validate against the candidate schema (the
others are kept); a request that does not validate raises, as for a labeled dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import IntelligenceError
from closedloop.system.spec import System

__all__ = ["CandidateMemo", "RewardRows", "is_reward_dataset", "load_reward_rows", "reward_rows"]

#: The columns read from a reward dataset (``weight`` when it has one).
_READ = ("reward", "weight", "unit", "timestamp_ns", "context_json", "candidate_json")


def is_reward_dataset(manifest: Any) -> bool:
    """Whether the dataset of ``manifest`` is a per-slot reward dataset (``rows: "slot"``)."""
    return manifest.content.get("rows") == "slot"


def check_ranking_system(system: System, manifest: Any) -> Any:
    """The candidate schema of ``system``; a reward dataset for a system that does not rank
    candidates is refused (IntelligenceError naming both)."""
    if system.candidate_schema is None:
        raise IntelligenceError(
            f"The dataset {manifest.id!r} is a per-slot reward dataset (manifest 'rows': 'slot'); train fits a reward "
            f"model only for a ranking system (System(candidates=..., experience=Ranking(...))). System "
            f"'{system.name}' has {system.experience!r} and no candidates instead."
        )
    return system.candidate_schema


def _read(path: Path, loaded: tuple[Any, Any] | None) -> pa.Table:
    """The dataset's rows with a context, only the columns read here."""
    import pyarrow.parquet as pq

    from closedloop.datasets.dataset import DATA_FILE

    if loaded is not None:
        table = loaded[0]
    else:
        data = path / DATA_FILE if path.is_dir() else path
        names = set(pq.read_schema(data).names)
        table = pq.read_table(data, columns=[c for c in _READ if c in names])
        table = table.filter(pc.is_valid(table["context_json"]))
    missing = [c for c in _READ if c != "weight" and c not in table.column_names]
    if missing:
        raise IntelligenceError(f"A per-slot reward dataset must have the columns {[c for c in _READ if c != 'weight']} "
                                f"to train on. Got no {missing} instead.")
    return table.select([c for c in _READ if c in table.column_names])


def _labels(table: pa.Table, manifest: Any) -> tuple[pa.Table, np.ndarray, int]:
    """The rows with a reward and their 0/1 labels → (rows, labels, rows left out without a reward);
    a reward outside {0, 1} is refused naming the row."""
    r = np.asarray(table["reward"].to_numpy(zero_copy_only=False), dtype=np.float64)
    has = ~np.isnan(r)  # a null reward reads as NaN
    bad = has & (r != 0.0) & (r != 1.0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise IntelligenceError(
            f"The 'reward' of dataset {manifest.id!r} must be 0 or 1 to train a reward model (a click model: label = "
            f"reward > 0; a graded reward is not thresholded). Got {float(r[row])!r} instead (row {row}, "
            f"{int(bad.sum())} such rows)."
        )
    dropped = int((~has).sum())
    if dropped:
        table, r = table.filter(pa.array(has)), r[has]
    return table, (r > 0.0).astype(np.int64), dropped


def _candidates(cschema: Any, col: Any, previous: CandidateMemo | None = None) -> tuple[Any, CandidateMemo]:
    """Each row's candidate (``candidate_json``) validated against the candidate schema ``cschema``
    → Columns; a row that does not validate is dropped (``Columns.rows`` maps the kept ones back).
    ``previous``: what the last call decoded — a text it decoded is not decoded again (the result
    depends on the text only: the same values), when every field is named in the rows decoded
    now; with the memo of this call."""
    arr = (col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col).fill_null("{}")
    if previous is not None and len(arr):
        got = _reused(cschema, arr, previous)
        if got is not None:
            return got, CandidateMemo(arr, got, True)
    names = [f.name for f in cschema.fields]
    cols, every = _decoded(names, arr)
    out = cschema.validate_batch(cols, errors="skip")
    return out, CandidateMemo(arr, out, every)


def _decoded(names: list[str], arr: Any) -> tuple[dict[str, list[Any]], bool]:
    """The candidate texts ``arr`` decoded into one list per field named in some row, and whether
    every field is."""
    # one JSON array joined by Arrow (no Python string per row), decoded in one call
    one = pa.LargeListArray.from_arrays(pa.array([0, len(arr)], pa.int64()), arr.cast(pa.large_string()))
    text = memoryview(pc.binary_join(one, pa.scalar(",", pa.large_string()))[0].as_buffer()).tobytes() if len(arr) else b""
    raw = msgspec.json.decode(b"[" + text + b"]")
    objs = [c if isinstance(c, dict) else {} for c in raw]
    cols = {n: [c.get(n) for c in objs] for n in names if any(n in c for c in objs)}
    return cols, len(cols) == len(names)


def _reused(cschema: Any, arr: Any, previous: CandidateMemo) -> Any:
    """The rows' validated candidates with the texts ``previous`` decoded taken from it and the
    others decoded; None when that cannot give what decoding all gives (a field named in no new
    row: then the batch's columns, and so its validation, could differ)."""
    if not previous.every_field:
        return None
    names = [f.name for f in cschema.fields]
    pos = pc.index_in(arr, value_set=previous.texts)
    found = np.asarray(pos.is_valid(), dtype=bool)
    old = np.asarray(pos.fill_null(0), dtype=np.int64)
    at = np.full(len(previous.texts), -1, dtype=np.int64)  # each previous text's validated row (−1: refused)
    at[np.asarray(previous.cols.rows, dtype=np.int64)] = np.arange(previous.cols.n, dtype=np.int64)
    new = np.flatnonzero(~found)
    parts, kept = [], []
    hit = np.flatnonzero(found & (at[old] >= 0))
    if hit.size:
        parts.append(previous.cols.take(at[old[hit]]))
        kept.append(hit)
    if new.size:
        cols, every = _decoded(names, arr.take(pa.array(new)))
        if not every:
            return None
        fresh = cschema.validate_batch(cols, errors="skip")
        parts.append(fresh)
        kept.append(new[np.asarray(fresh.rows, dtype=np.int64)])
    if not parts:
        return None
    rows = np.concatenate(kept)
    order = np.argsort(rows, kind="stable")
    full = [p for p in parts if p.n] or parts[:1]  # an empty batch may hold untyped empty lists
    both = full[0].concat(*full[1:])
    out = both.take(order)
    out.rows = rows[order]
    return out


class CandidateMemo(NamedTuple):
    """The candidate texts one :func:`reward_rows` call decoded (every row's), their validated
    columns (``cols.rows``: the rows that validated) and whether every field was named in some
    row, for the next call to take from."""

    texts: Any
    cols: Any
    every_field: bool


class RewardRows(NamedTuple):
    """What :func:`reward_rows` returned for the dataset ``dataset_id``, to pass as ``train(...,
    loaded=...)`` when several fits read the same dataset (a cycle's candidate and the click model
    of its DR estimate): the rows are then decoded once. Read only, never changed by a fit."""

    dataset_id: str
    rows: tuple[pa.Table, Any, np.ndarray, dict[str, int]]


def load_reward_rows(system: System, path: Path | str, previous: CandidateMemo | None = None
                     ) -> tuple[RewardRows, CandidateMemo]:
    """The rows :func:`reward_rows` gives for the reward dataset at ``path``, decoded once, and
    what the next call may take from (``previous``: what the last one gave — consecutive cycles'
    windows share most of their days, so most candidates are not decoded again)."""
    from closedloop.datasets.dataset import DatasetManifest

    manifest = DatasetManifest.read(Path(path))
    check_ranking_system(system, manifest)
    rows, memo = _reward_rows(system, Path(path), manifest, None, previous)
    return RewardRows(manifest.id, rows), memo


def _contexts(system: System, col: Any) -> Any:
    """The rows' request fields: each distinct context text decoded once (a decision's slots share
    one), then placed on its rows — each row's result depends on its text only; a context that
    fails to decode is named by its row (the whole column decoded)."""
    from closedloop.datasets.dataset import decode_contexts
    from closedloop.errors import ContextError

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count or len(arr) == 0:
        return decode_contexts(col, system)
    enc = pc.dictionary_encode(arr)
    if len(enc.dictionary) * 2 > len(arr):  # few repeats: not worth the detour
        return decode_contexts(col, system)
    try:
        distinct = decode_contexts(enc.dictionary, system)
    except ContextError:
        return decode_contexts(col, system)
    return distinct.take(np.asarray(enc.indices, dtype=np.int64))


def reward_rows(system: System, path: Path, manifest: Any, loaded: tuple[Any, Any] | None
                ) -> tuple[pa.Table, Any, np.ndarray, dict[str, int]]:
    """The reward dataset's rows to fit (module doc) → (table of ``reward``, ``weight``, ``unit``,
    ``timestamp_ns``; the request × candidate columns; the 0/1 labels; counts of the rows read and
    left out). ``loaded``: the dataset's rows when the caller read them — or a :class:`RewardRows`
    of this dataset, returned as they are."""
    check_ranking_system(system, manifest)
    if isinstance(loaded, RewardRows) and loaded.dataset_id == manifest.id:
        return loaded.rows
    return _reward_rows(system, path, manifest, None if isinstance(loaded, RewardRows) else loaded, None)[0]


def _reward_rows(system: System, path: Path, manifest: Any, loaded: tuple[Any, Any] | None, previous: CandidateMemo | None
                 ) -> tuple[tuple[pa.Table, Any, np.ndarray, dict[str, int]], CandidateMemo]:
    """:func:`reward_rows` decoded (``previous``: :func:`_candidates`), with the candidates' memo."""
    cschema = system.candidate_schema
    table = _read(path, loaded)
    n_read = table.num_rows
    table, y, no_reward = _labels(table, manifest)
    ccols, memo = _candidates(cschema, table["candidate_json"], previous)
    kept = ccols.rows
    invalid = int(table.num_rows - kept.shape[0])
    if invalid:
        table, y = table.take(pa.array(kept)), y[kept]
    if table.num_rows == 0:
        raise IntelligenceError(f"The dataset {manifest.id!r} must have rows with a reward to train on. Got none instead.")
    rcols = _contexts(system, table["context_json"])
    data: dict[str, Any] = {f.name: rcols[f.name] for f in system.schema.fields}
    for f in cschema.fields:  # type: ignore[union-attr]
        data[f.name] = ccols[f.name]
    # one batch of request × candidate rows, as a ranking plan builds it (the same Columns class)
    cols = type(rcols)(data, int(table.num_rows), np.arange(table.num_rows, dtype=np.int64), [])
    table = table.select([c for c in ("reward", "weight", "unit", "timestamp_ns") if c in table.column_names])
    counts = {"read": n_read, "rows": int(table.num_rows), "without_reward": no_reward, "invalid_candidate": invalid}
    return (table, cols, y, counts), memo

"""The rows a ranking evaluation reads: a per-slot reward dataset's held-out rows, grouped into the
logged decisions (:func:`slot_rows`).

A reward dataset (:func:`~closedloop.datasets.slots.build_reward_dataset`,
:func:`~closedloop.datasets.bandit.import_bandit`) holds one row per (decision, slot shown) with
its reward. Here its rows on the test side of the split (or all of them) are sorted by decision
(in the order each first appears) and slot, and each decision becomes one request of the
runtime's batch path: its request fields (``context_json``, the same on every slot of a
decision) and its logged candidates (``candidate_json``, one per slot). A decision that repeats a
candidate id cannot be ranked (the runtime refuses a request whose candidates repeat one): it is
left out and counted, the others are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import DatasetError, SpecError
from closedloop.system.splits import Split
from closedloop.system.splits import split as split_rows

__all__ = ["SlotRows", "slot_rows"]

#: The columns a per-slot dataset must have for a ranking evaluation.
NEEDED = ("decision_id", "position", "unit", "timestamp_ns", "action", "reward", "context_json", "candidate_json")


class SlotRows(NamedTuple):
    """The evaluation's decisions. Rows are flat, grouped by decision (decision ``d``'s slots are
    ``offsets[d]:offsets[d + 1]``, in slot order); ``requests`` / ``candidates`` are the runtime's
    batch inputs (``candidates["request"]`` names each row's decision); ``units`` is each
    decision's unit as an integer code in [0, ``n_units``); ``excluded`` counts what was left out."""

    manifest: Any
    split: Any
    offsets: np.ndarray
    reward: np.ndarray
    position: np.ndarray
    decision_ids: list[str]
    timestamps_ns: np.ndarray
    units: np.ndarray
    n_units: int
    requests: dict[str, Any]
    candidates: dict[str, Any]
    excluded: dict[str, int]


def read_manifest(system: Any, dataset: Path) -> Any:
    """The manifest of the dataset at ``dataset``, refused when there is none or when it was built
    for another system."""
    from closedloop.datasets.dataset import MANIFEST_FILE, DatasetManifest

    if not (dataset / MANIFEST_FILE).is_file():
        raise DatasetError(f"The dataset directory '{dataset}' must hold a {MANIFEST_FILE}. Got no such file instead.")
    manifest = DatasetManifest.read(dataset)
    built_for = manifest.content.get("system")
    if built_for is not None and built_for != system.name:
        raise DatasetError(f"The dataset {manifest.id!r} was built for system {built_for!r}; it cannot evaluate system "
                           f"{system.name!r}.")
    return manifest


def _manifest(system: Any, dataset: Path) -> Any:
    manifest = read_manifest(system, dataset)
    rows = manifest.content.get("rows")
    if rows != "slot":
        got = "labeled rows (one per decision, a label each)" if manifest.content.get("labels") else f"rows {rows!r}"
        raise DatasetError(f"A ranking system is evaluated on a per-slot reward dataset (manifest 'rows': 'slot', from "
                           f"build_reward_dataset or `closedloop dataset import --action …`). Dataset {manifest.id!r} "
                           f"has {got} instead.")
    return manifest


def _read(manifest: Any) -> pa.Table:
    """The dataset's rows with a context (as :func:`~closedloop.datasets.dataset.load_dataset`
    keeps them), only the columns read here: the contexts are decoded later, one per decision."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(manifest.data_path).names)
    table = pq.read_table(manifest.data_path, columns=[c for c in NEEDED if c in names])
    return table.filter(pc.is_valid(table["context_json"])) if "context_json" in names else table


def _held_out(table: pa.Table, system: Any, split: Split | str | None, manifest: Any) -> tuple[pa.Table, Any]:
    """The rows on the test side of ``split`` (default ``system.split``; ``"all"``: every row)."""
    missing = [c for c in NEEDED if c not in table.column_names]
    if missing:
        raise DatasetError(f"The dataset {manifest.id!r} must have the columns {list(NEEDED)} of a per-slot reward "
                           f"dataset. Got no {missing} instead.")
    table = table.select(list(NEEDED))
    sp = system.split if split is None else split
    if isinstance(sp, str) and sp == "all":
        idx = None
    elif isinstance(sp, Split):
        _, idx = split_rows(table.select(["unit", "timestamp_ns"]), sp)
    else:
        raise SpecError(f"The 'split' parameter of evaluate must be a closedloop Split, 'all' or None. Got {sp!r} instead.")
    if idx is not None:
        table = table.take(pa.array(idx))
    if table.num_rows == 0:
        raise DatasetError(f"The split {sp.describe() if isinstance(sp, Split) else sp} leaves no evaluation rows "
                           f"in dataset {manifest.id!r}.")
    return table, sp


def _grouped(table: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The rows sorted by decision (first appearance) then slot → (rows, each row's decision
    code, each decision's first row)."""
    enc = table["decision_id"].combine_chunks().dictionary_encode()
    code = np.asarray(enc.indices, dtype=np.int64)
    pos = np.asarray(table["position"].to_numpy(zero_copy_only=False), dtype=np.int64)
    perm = np.lexsort((pos, code))
    table, code = table.take(pa.array(perm)), code[perm]
    _, first = np.unique(code, return_index=True)
    return table, code, first


def _repeats(table: pa.Table, code: np.ndarray) -> np.ndarray:
    """Each row: does its decision repeat a candidate id (the ``action`` column: the candidate id as text)?"""
    act = table["action"].combine_chunks().dictionary_encode()
    key = code * max(1, len(act.dictionary)) + np.asarray(act.indices, dtype=np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    repeated = np.unique(code[np.isin(key, uniq[counts > 1])])
    return np.isin(code, repeated)


def _joined(col: Any) -> bytes:
    """A JSON text column as one JSON array (joined by Arrow: no Python string per row)."""
    arr = col.combine_chunks().fill_null("{}") if isinstance(col, pa.ChunkedArray) else col.fill_null("{}")
    if len(arr) == 0:
        return b"[]"
    one = pa.LargeListArray.from_arrays(pa.array([0, len(arr)], pa.int64()), arr.cast(pa.large_string()))
    return b"[" + memoryview(pc.binary_join(one, pa.scalar(",", pa.large_string()))[0].as_buffer()).tobytes() + b"]"


def _structs(schema: Any, text: bytes) -> list[Any]:
    """A JSON array decoded into ``schema``'s structs in one call."""
    return msgspec.json.decode(text, type=list[schema.struct])


def _candidate_columns(system: Any, col: Any) -> dict[str, Any]:
    """Each slot's candidate fields (``candidate_json``) as columns: decoded into the candidate
    schema's struct in one call (a field a row lacks takes its default), or, when a row does not fit
    it, as plain objects (the runtime's validation then names the row)."""
    cschema = system.candidate_schema
    names = [f.name for f in cschema.fields]
    text = _joined(col)
    try:
        objs = _structs(cschema, text)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raw: list[dict[str, Any]] = msgspec.json.decode(text)
        return {n: [c.get(n) for c in raw] for n in names if any(n in c for c in raw)}
    if not objs:
        return {n: [] for n in names}
    return {n: list(v) for n, v in zip(names, zip(*map(msgspec.structs.astuple, objs), strict=True), strict=True)}


def _batch_inputs(system: Any, table: pa.Table, code: np.ndarray, first: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """The runtime's batch inputs: one request per decision (its first slot's request fields) and
    the candidates (each slot's candidate fields) with their ``request``."""
    from closedloop.datasets.dataset import decode_contexts

    cols = decode_contexts(table["context_json"].take(pa.array(first)), system)
    requests = {f.name: cols[f.name] for f in system.schema.fields}
    candidates = _candidate_columns(system, table["candidate_json"])
    candidates["request"] = code
    return requests, candidates


def slot_rows(system: Any, dataset: Path, split: Split | str | None, loaded: tuple[Any, Any] | None = None) -> SlotRows:
    """The decisions of the per-slot reward dataset ``dataset`` on the test side of ``split``
    (module doc). ``loaded``: what ``load_dataset(dataset, system)`` returned, when the caller has it."""
    manifest = _manifest(system, dataset)
    table = loaded[0] if loaded is not None else _read(manifest)
    table, sp = _held_out(table, system, split, manifest)
    table, code, _ = _grouped(table)
    bad = _repeats(table, code)
    excluded = {"decisions_repeating_a_candidate": int(np.unique(code[bad]).size), "rows_repeating_a_candidate": int(bad.sum())}
    if bad.any():
        table, code = table.filter(pa.array(~bad)), code[~bad]
    if table.num_rows == 0:
        raise DatasetError(f"The dataset {manifest.id!r} has no decision to evaluate: every one repeats a candidate id.")
    _, code = np.unique(code, return_inverse=True)  # dense again, in the same order
    code = code.reshape(-1).astype(np.int64)
    counts = np.bincount(code)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    first = offsets[:-1]
    requests, candidates = _batch_inputs(system, table, code, first)
    unit_col = table["unit"].take(pa.array(first)).cast(pa.string()).combine_chunks().dictionary_encode()
    return SlotRows(
        manifest=manifest, split=sp, offsets=offsets,
        reward=np.asarray(table["reward"].to_numpy(zero_copy_only=False), dtype=np.float64),
        position=np.asarray(table["position"].to_numpy(zero_copy_only=False), dtype=np.int64),
        decision_ids=table["decision_id"].take(pa.array(first)).to_pylist(),
        timestamps_ns=np.asarray(table["timestamp_ns"].take(pa.array(first)).to_numpy(zero_copy_only=False), dtype=np.int64),
        units=np.asarray(unit_col.indices, dtype=np.int64), n_units=len(unit_col.dictionary),
        requests=requests, candidates=candidates, excluded=excluded,
    )

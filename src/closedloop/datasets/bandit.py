"""Logged bandit feedback from outside the loop → a per-slot dataset.

:func:`import_bandit` (``import_dataset(..., action=…)``, ``closedloop dataset import --action …``)
reads a CSV or Parquet file of logged decisions — one row per shown (decision, slot): the action
or candidate shown, its slot, the reward it got and the logging policy's propensity — and writes
the dataset format of :mod:`closedloop.datasets.importer` (same directory, manifest, id, column
names and context rules) with **one row per (decision, slot)**. The rules, exactly:

Columns
    ``action`` (required): the action (a :class:`~closedloop.experience.experiences.BestAction`
    system: one of ``system.actions``, compared as text) or the candidate id (a
    :class:`~closedloop.experience.experiences.Ranking` system: it fills the ``candidate_id`` field).
    ``reward`` (required): a finite number; a null takes ``system.rewards.default`` when the system
    declares one that is not None (nothing came back: no click is 0), else the row is refused.
    ``propensity`` (required): the logging policy's probability of that action in that slot, in
    (0, 1]. ``position`` (optional): the 1-based slot, an integer in ``1..k`` (``Ranking.k``; a
    BestAction shows one: 1); None: every row is slot 1. ``decision`` (optional): the decision or
    impression id (text); None: the file row index stands in, so every row is its own decision.
    ``unit`` and ``time``: as for a labeled import (a null unit refuses the row).

Candidates
    ``candidates`` names a CSV/Parquet table of the ranking system's candidate fields with one row
    per ``candidate_id``; each row takes the fields of its action's candidate (a column of the file
    itself wins). An action with no candidate in it refuses the row. Without it, candidate fields
    are read from the file's own columns (or take their defaults).

Refused, not fatal
    A row with a bad value — a slot out of range, a propensity of 0, above 1 or NaN, a reward not
    a number, an unknown action, a context that fails validation, a null unit, or a second row of
    the same (decision, slot) (the first in file order is kept) — is left out and counted in
    ``manifest["counts"]["rejected"]`` by ``"<column>: <rule>"``; the first few are listed with
    their file row, field, rule, value and message in ``manifest["rejected_examples"]``.

Rows
    ``decision_id``, ``position`` (int32, 1-based), ``unit``, ``timestamp_ns``, ``action`` (text),
    ``reward``, ``propensity``, ``weight`` = 1 / ``propensity`` (inverse propensity scoring: the
    slot stands for 1/p slots of the logging policy), ``sample_prob`` 1.0, then ``context_json``
    (the request fields), ``candidate_json`` (a ranking system's), ``features`` and one column per
    feature, ``schema_version``, ``feature_fingerprint`` — in file order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.datasets.dataset import DatasetManifest
from closedloop.datasets.importer import (
    REJECTED_EXAMPLES,
    Kept,
    absent_fields,
    check_column,
    context_columns,
    file_units,
    read_file,
    sha256_of,
    times,
    validate_contexts,
    with_id,
    write_dataset,
)
from closedloop.datasets.join.columns import feature_column
from closedloop.errors import DatasetError, SpecError
from closedloop.system.spec import System

__all__ = ["import_bandit"]


@dataclass
class _Refused:
    """Which file rows are still good, and why the others were refused."""

    ok: np.ndarray
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, bad: np.ndarray, column: str, rule: str, values: list[Any]) -> None:
        """Refuse the still-good rows where ``bad`` holds; ``values`` are every row's values."""
        rows = np.flatnonzero(bad & self.ok)
        self.ok[rows] = False
        if rows.size:
            self.reasons[f"{column}: {rule}"] += int(rows.size)
        for r in rows[:REJECTED_EXAMPLES].tolist():
            v = values[r]
            self.examples.append({"row": r, "field": column, "rule": rule, "value": v,
                                  "message": f"The '{column}' column must hold {rule}. Got {v!r} instead (row {r})."})


@dataclass(frozen=True)
class _Columns:
    action: str
    reward: str
    propensity: str
    position: str | None
    decision: str | None
    unit: str | None
    time: str | None


def import_bandit(
    path: Path | str, system: System, *, action: str, reward: str | None, propensity: str | None,
    position: str | None = None, decision: str | None = None, candidates: Path | str | None = None,
    unit: str | None = None, time: str | None = None, out: Path | str,
) -> DatasetManifest:
    """Import the logged bandit file ``path`` as a per-slot dataset at ``out`` (rules: module
    docstring). The stages: check the system and columns, read each logged column (bad values
    refused), join the candidates, validate the contexts, drop repeated slots, build the rows, the
    manifest, the write."""
    if not isinstance(system, System):
        raise SpecError(f"The 'system' parameter of import_dataset must be a closedloop.System. Got {system!r} instead.")
    if _kind(system) not in ("best_action", "ranking"):
        raise SpecError(f"Logged bandit data imports into a system with a BestAction or Ranking experience. "
                        f"System '{system.name}' has {type(system.experience).__name__}.")
    path, out = Path(path), Path(out)
    if out.exists():
        raise DatasetError(f"The dataset directory '{out}' already exists; datasets are immutable.")
    table, renamed = read_file(path)
    names = _check_columns(table, action, reward, propensity, position, decision, unit, time)
    n_read = table.num_rows
    refused = _Refused(np.ones(n_read, dtype=bool))
    acts = _actions(table, names.action, system, refused)
    slots = _positions(table, names.position, system, refused)
    rewards = _rewards(table, names.reward, system, refused)
    props = _numbers(table, names.propensity, refused, "a probability in (0, 1]", lambda v: (v > 0) & (v <= 1))
    dec_ids = _decisions(table, names.decision, refused)
    ts_all = times(table.column(time), time) if time is not None else np.arange(n_read, dtype=np.int64)
    table, cand_info = _with_candidates(table, system, names.action, acts, candidates, refused)
    units, unit_ok = file_units(table, unit)
    good = np.flatnonzero(refused.ok)
    kept = validate_contexts(table.take(pa.array(good)), system, unit_ok[good], unit)
    file_rows = good[kept.cols.rows]
    _merge(refused, kept, good)
    keep = _first_slots(dec_ids, slots, file_rows, refused)
    cols, file_rows = kept.cols.take(keep), file_rows[keep]
    if file_rows.size == 0:
        top = ", ".join(f"{k} ({v} rows)" for k, v in refused.reasons.most_common(3))
        raise DatasetError(f"The file '{path.name}' must have at least one valid row. Got none of {n_read}: {top}.")
    data = _rows(cols, system, file_rows, dec_ids, slots, acts, rewards, props, ts_all, units)
    content = _manifest(path, system, table, data, refused, names, cand_info, renamed)
    write_dataset(data, out, content)
    return DatasetManifest(id=content["id"], path=out, content=content)


def _kind(system: System) -> str:
    """The experience's kind ("thresholds", "best_action", "ranking"; datasets do not import experience)."""
    return str(system.experience.describe()["kind"])


def _check_columns(table: pa.Table, action: Any, reward: Any, propensity: Any, position: Any, decision: Any,
                   unit: Any, time: Any) -> _Columns:
    """The named columns are in the file (action, reward and propensity are required)."""
    for col, what in ((action, "action"), (reward, "reward"), (propensity, "propensity")):
        check_column(table, col, what)
    for col, what in ((position, "position"), (decision, "decision"), (unit, "unit"), (time, "time")):
        if col is not None:
            check_column(table, col, what)
    return _Columns(action, reward, propensity, position, decision, unit, time)


def _array(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _parsed(arr: pa.Array) -> np.ndarray:
    """Each value as a float64 (NaN: null or not a number; text is parsed)."""
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return np.array(arr.cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    out = np.full(len(arr), np.nan)
    for i, v in enumerate(arr.cast(pa.string()).to_pylist() if pa.types.is_string(arr.type) else []):
        try:
            out[i] = float(v) if v is not None else np.nan
        except ValueError:
            pass
    return out


def _numbers(table: pa.Table, name: str, refused: _Refused, rule: str, inside: Any) -> np.ndarray:
    """The column's numbers; a row whose value is not a finite number ``inside`` the rule is refused."""
    arr = _array(table, name)
    v = _parsed(arr)
    fine = np.isfinite(v)
    fine[fine] = inside(v[fine])
    if not fine.all():
        refused.refuse(~fine, name, rule, arr.to_pylist())
    return v


def _rewards(table: pa.Table, name: str, system: System, refused: _Refused) -> np.ndarray:
    """The rewards; a null takes the declared default (if any), a value not a number is refused."""
    arr = _array(table, name)
    default = system.rewards.default if system.rewards is not None else None
    v = _parsed(arr)
    if default is not None:
        v[~np.asarray(pc.is_valid(arr), dtype=bool)] = default
    bad = ~np.isfinite(v)
    if bad.any():
        refused.refuse(bad, name, "a finite number (the reward)", arr.to_pylist())
    return v


def _positions(table: pa.Table, name: str | None, system: System, refused: _Refused) -> np.ndarray:
    """The 1-based slots (all 1 without a position column); out of ``1..k`` is refused."""
    if name is None:
        return np.ones(table.num_rows, dtype=np.int64)
    k = int(system.experience.describe()["k"]) if _kind(system) == "ranking" else 1
    v = _numbers(table, name, refused, f"an integer slot in 1..{k}", lambda x: (x == np.round(x)) & (x >= 1) & (x <= k))
    return np.where(np.isfinite(v), v, 0).astype(np.int64)


def _actions(table: pa.Table, name: str, system: System, refused: _Refused) -> list[str | None]:
    """Each row's action as text; a null (or, for a BestAction system, an unknown action) is refused."""
    arr = _array(table, name)
    if pa.types.is_floating(arr.type):
        whole = pc.equal(arr, pc.round(arr)).fill_null(False)
        arr = pc.if_else(whole, arr.cast(pa.int64(), safe=False), pa.scalar(None, pa.int64())).cast(pa.string())
    text: list[str | None] = arr.cast(pa.string()).to_pylist()
    missing = np.array([not t for t in text], dtype=bool)  # a CSV's empty cell reads as ''
    refused.refuse(missing, name, "an action (not null or empty)", text)
    if _kind(system) == "best_action":
        known = set(system.actions)
        unknown = np.array([bool(t) and t not in known for t in text], dtype=bool)
        refused.refuse(unknown, name, f"one of the actions {list(system.actions)[:5]}{'…' if len(known) > 5 else ''}", text)
    return text


def _decisions(table: pa.Table, name: str | None, refused: _Refused) -> list[str]:
    """Each row's decision id as text (the row index without a column); a null is refused."""
    if name is None:
        return [str(i) for i in range(table.num_rows)]
    ids: list[Any] = _array(table, name).cast(pa.string()).to_pylist()
    refused.refuse(np.array([d is None for d in ids], dtype=bool), name, "a decision id (not null)", ids)
    return ["" if d is None else d for d in ids]


def _with_candidates(
    table: pa.Table, system: System, action: str, acts: list[str | None], candidates: Path | str | None,
    refused: _Refused,
) -> tuple[pa.Table, dict[str, Any] | None]:
    """A ranking system's rows with its candidate id field set from the action, and the candidate
    fields from the ``candidates`` table (an action not in it is refused)."""
    if system.candidate_schema is None or system.candidate_id is None:  # not a ranking system
        if candidates is not None:
            raise SpecError("The 'candidates' parameter of import_dataset applies to a Ranking system only. "
                            f"System '{system.name}' has {type(system.experience).__name__}.")
        return table, None
    cid = system.candidate_id
    if action != cid:
        table = table.drop_columns([cid]) if cid in table.column_names else table
        table = table.append_column(cid, table.column(action))
    if candidates is None:
        return table, None
    cpath = Path(candidates)
    ctable, _ = read_file(cpath)
    check_column(ctable, cid, "candidate id")
    ids = _array(ctable, cid).cast(pa.string()).to_pylist()
    dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if dupes:
        raise DatasetError(f"The candidates file '{cpath.name}' must have one row per '{cid}'. Got {dupes[:5]} repeated.")
    where = {v: i for i, v in enumerate(ids)}
    idx = np.array([where.get(a, -1) if a is not None else -1 for a in acts], dtype=np.int64)
    refused.refuse(idx < 0, action, f"a candidate of '{cpath.name}'", list(acts))
    take = pa.array(np.maximum(idx, 0))
    for f in system.candidate_schema.fields:
        if f.name != cid and f.name in ctable.column_names and f.name not in table.column_names:
            table = table.append_column(f.name, _array(ctable, f.name).take(take))
    return table, {"file": cpath.name, "sha256": sha256_of(cpath), "rows": ctable.num_rows}


def _merge(refused: _Refused, kept: Kept, good: np.ndarray) -> None:
    """Add the context validation's refusals (rows of the good subset) to ``refused``."""
    refused.reasons.update(kept.reasons)
    for e in kept.examples:
        refused.examples.append({**e, "row": int(good[e["row"]])})
    refused.ok[:] = False
    refused.ok[good[kept.cols.rows]] = True


def _first_slots(dec_ids: list[str], slots: np.ndarray, file_rows: np.ndarray, refused: _Refused) -> np.ndarray:
    """Positions (in ``file_rows``) of the first row of each (decision, slot); the others are refused."""
    seen: set[tuple[str, int]] = set()
    keep = np.zeros(file_rows.size, dtype=bool)
    for j, r in enumerate(file_rows.tolist()):
        key = (dec_ids[r], int(slots[r]))
        keep[j] = key not in seen
        seen.add(key)
    if not keep.all():
        bad = np.zeros(refused.ok.size, dtype=bool)
        bad[file_rows[~keep]] = True
        refused.refuse(bad, "position", "one row per (decision, slot)", [int(s) for s in slots.tolist()])
    return np.flatnonzero(keep)


def _rows(cols: Any, system: System, rows: np.ndarray, dec_ids: list[str], slots: np.ndarray,
          acts: list[str | None], rewards: np.ndarray, props: np.ndarray, ts: np.ndarray, units: pa.Array) -> pa.Table:
    """The kept rows (module docstring, "Rows")."""
    idx = rows.tolist()
    p = props[rows]
    data: dict[str, Any] = {
        "decision_id": pa.array([dec_ids[r] for r in idx], type=pa.string()),
        "position": pa.array(slots[rows], type=pa.int32()),
        "unit": units.take(pa.array(rows)),
        "timestamp_ns": pa.array(ts[rows], type=pa.int64()),
        "action": pa.array([acts[r] for r in idx], type=pa.string()),
        "reward": pa.array(rewards[rows], type=pa.float64()),
        "propensity": pa.array(p, type=pa.float64()),
        "weight": pa.array(1.0 / p, type=pa.float64()),
        "sample_prob": pa.array(np.ones(rows.size), type=pa.float64()),
        **context_columns(cols, system),
    }
    return pa.table(data)


def _manifest(path: Path, system: System, table: pa.Table, data: pa.Table, refused: _Refused, names: _Columns,
              cand_info: dict[str, Any] | None, renamed: dict[str, str]) -> dict[str, Any]:
    """The manifest: the file imported and how, the counts; ``id`` first."""
    n_read, n = table.num_rows, data.num_rows
    ts = data["timestamp_ns"].to_numpy()
    reward = data["reward"].to_numpy()
    prop = data["propensity"].to_numpy()
    feat_names = [f.name for f in system.features.features]
    content: dict[str, Any] = {
        "format": 1, "system": system.name, "schema_version": system.schema_version, "rows": "slot",
        "labels": None, "policy": None, "rewards": system.rewards.describe() if system.rewards else None,
        "source": {
            "kind": "import", "logged": "bandit", "file": path.name, "sha256": sha256_of(path),
            "columns": {"action": names.action, "position": names.position, "reward": names.reward,
                        "propensity": names.propensity, "decision": names.decision},
            "unit_column": names.unit, "time_column": names.time, "candidates": cand_info,
            "unit_stand_in": names.unit is None, "time_stand_in": names.time is None,
            "decision_stand_in": names.decision is None,
            "absent_fields": absent_fields(system, table), **({"renamed": renamed} if renamed else {}),
        },
        "since_ns": int(ts.min()), "until_ns": int(ts.max()) + 1, "cutoff_ns": None,
        "feature_names": {system.feature_fingerprint: feat_names},
        "columns": {"features": [feature_column(nm) for nm in feat_names], "outcomes": {}},
        "counts": {
            "slots": {"read": n_read, "rows": n, "rejected": n_read - n},
            "decisions": len(set(data["decision_id"].to_pylist())),
            "positions": {str(k): int(v) for k, v in sorted(Counter(data["position"].to_pylist()).items())},
            "actions": len(set(data["action"].to_pylist())),
            "rewards": {"sum": float(reward.sum()), "nonzero": int((reward != 0).sum())},
            "propensity": {"min": float(prop.min()), "max": float(prop.max())},
            "rejected": dict(sorted(refused.reasons.items())),
        },
        "rejected_examples": sorted(refused.examples, key=lambda e: e["row"])[:REJECTED_EXAMPLES],
    }
    return with_id(content)

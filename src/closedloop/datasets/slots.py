"""A ranking system's telemetry → a per-slot dataset under its :class:`~closedloop.system.rewards.RewardPolicy`
(a choice system's — BestAction — one row per decision: :mod:`closedloop.datasets.choices`).

:func:`build_reward_dataset` reads the decision and outcome records (``DECISION_SCHEMA`` /
``OUTCOME_SCHEMA`` Parquet) of a system with a :class:`~closedloop.experience.experiences.Ranking`
experience and ``System(rewards=…)``, and writes the directory format of
:mod:`closedloop.datasets.bandit` (same columns, manifest shape, ``rows: "slot"``), one row per
(decision, slot shown). The rules, as in the label join (docs/datasets.md):

- **point in time**: records ingested after ``cutoff_ns`` do not exist; decisions in
  ``[since_ns, until_ns)`` whose window closed by the cut-off (``timestamp + window ≤ cutoff``;
  else counted ``open``);
- **dedupe**: one decision per ``decision_id`` and one outcome per ``outcome_id``, the first by
  ``(ingest_ns, writer, seq)``;
- **link**: an outcome with a ``decision_id`` links to that decision; per slot, by its
  ``candidate_id`` too. With ``link="unit_time"`` an outcome without one links by unit, time (and,
  per slot, candidate): to the **latest decision of its unit at or before its event time** (ties
  on time: the greatest ``decision_id``) — per slot, the latest whose slate showed its
  ``candidate_id`` — among the decisions ingested by the cut-off (deduplicated), as the label
  join's unit+time link does (docs/datasets.md, "Linking"); the window is then checked as for any
  outcome. Outcomes not used are counted by why: ``unknown_id``, ``unlinked`` (``unit_time``: no
  such decision, or no unit), ``no_candidate`` (per slot, none named), ``not_in_slate``,
  ``before_decision``, ``after_window``, ``other_kind``, ``not_selected`` (its decision is out of
  range, open, or not a ranking);
- **reward**: the policy's (its kinds in order, aggregate, window, default); a slot whose reward is
  None (no default, nothing counted) is left out and counted ``no_reward``. ``per="decision"``:
  each slot row carries its decision's reward;
- **rows**: ``propensity`` is the logged slot propensity, ``sample_prob`` the record's sampling
  probability and ``weight`` = 1 / (propensity · sample_prob);
- **digest only**: when a decision read was logged with ``Telemetry(candidates="digest")`` (ids
  and the digest, no fields), no row has the candidate fields or features: the rows carry the
  request fields and ``candidates_digest``, and the manifest names the candidate fields and
  features under ``absent``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.datasets.candidate_sets import CANDIDATE_SETS_FILE, Decoded, _joined, candidate_sets_table, decode_candidates
from closedloop.datasets.importer import _json_rows, context_columns, with_id, write_dataset
from closedloop.datasets.join.columns import feature_column
from closedloop.datasets.slot_links import LinkedRewards, can_link_columns, linked_rewards
from closedloop.errors import DatasetError, SpecError
from closedloop.system.spec import System
from closedloop.telemetry.records import DECISION_SCHEMA, OUTCOME_SCHEMA

__all__ = ["build_reward_dataset"]


def read_records(files: Sequence[Path | str], schema: pa.Schema, name: str, cutoff_ns: int,
                 columns: Sequence[str] | None = None, tables: dict[Any, pa.Table] | None = None) -> pa.Table:
    """The records of ``name`` ingested by the cut-off, in ingest order (deduplicated by
    :func:`first_by`). ``columns``: only those are read, and each record carries where it was read
    (``_file``: its file's index among ``files`` sorted by name, ``_row``: its row there).
    ``tables``: the files read before (:func:`~closedloop.datasets.slot_cache.read_lake_files`)."""
    from closedloop.datasets.slot_cache import read_lake_files

    parts = read_lake_files(sorted(str(f) for f in files), schema, columns, tables)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns] + [pa.field("_file", pa.int64()), pa.field("_row", pa.int64())])
        parts = [p.append_column("_file", pa.array(np.full(p.num_rows, i, np.int64)))
                 .append_column("_row", pa.array(np.arange(p.num_rows, dtype=np.int64))) for i, p in enumerate(parts)]
    t = pa.concat_tables(parts) if parts else schema.empty_table()
    mine = pc.and_(pc.equal(t["system"], name), pc.less_equal(t["ingest_ns"], cutoff_ns))
    if mine.null_count or not pc.all(mine).as_py():
        t = t.filter(mine)
    order = np.asarray(pc.sort_indices(t, [("ingest_ns", "ascending"), ("writer", "ascending"), ("seq", "ascending")]))
    in_order = bool((order == np.arange(order.size)).all())  # a compacted lake usually is: no copy of its text columns
    return t if in_order else t.take(pa.array(order))


def first_by(t: pa.Table, key: str) -> pa.Table:
    """The first row of each ``key`` (``t`` itself when no key repeats)."""
    enc = pc.dictionary_encode(t[key].combine_chunks(), null_encoding="encode") if t.num_rows else None  # null: one key too
    codes = np.asarray(enc.indices, dtype=np.int64) if enc is not None else np.zeros(0, np.int64)
    _, first = np.unique(codes, return_index=True)
    if first.size == t.num_rows:
        return t
    return t.take(pa.array(np.sort(first), pa.int64()))


def is_choice(system: System) -> bool:
    """Whether ``system`` picks one of its actions per decision (a BestAction experience)."""
    return bool(system.experience.describe()["kind"] == "best_action")


def check_request(system: System, since_ns: int, until_ns: int, cutoff_ns: int, out: Path) -> Any:
    if not isinstance(system, System) or (system.candidate_schema is None and not is_choice(system)):
        raise SpecError("The 'system' parameter of build_reward_dataset must be a closedloop.System with a Ranking or BestAction "
                        f"experience. Got {system!r} instead.")
    policy = system.rewards
    if policy is None:
        raise DatasetError(f"System '{system.name}' declares no rewards; declare System(rewards=RewardPolicy(...)).")
    for nm, v in (("since_ns", since_ns), ("until_ns", until_ns), ("cutoff_ns", cutoff_ns)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DatasetError(f"The dataset '{nm}' must be an integer (ns). Got {v!r} instead.")
    if until_ns <= since_ns:
        raise DatasetError(f"The dataset time range must have until_ns > since_ns. Got [{since_ns}, {until_ns}) instead.")
    if out.exists():
        raise DatasetError(f"The dataset directory '{out}' already exists; datasets are immutable.")
    return policy


def build_reward_dataset(
    system: System, *, decision_files: Sequence[Path | str], outcome_files: Sequence[Path | str],
    since_ns: int, until_ns: int, cutoff_ns: int, out: Path | str, exclude_units: Sequence[str] = (),
    cache: Path | str | None = None, tables: dict[Any, Any] | None = None,
) -> Any:
    """Write the per-slot dataset of a ranking system's telemetry at ``out`` (rules: module doc)
    and return its :class:`~closedloop.datasets.dataset.DatasetManifest`. The decisions of
    ``exclude_units`` (a click farm's: :class:`~closedloop.orchestration.click_farm.ClickFarmPolicy`)
    are left out and counted in the manifest (``counts.excluded``: units, decisions). ``cache``: a
    directory that keeps what each decision file decodes to from one build to the next
    (:mod:`closedloop.datasets.slot_cache`) — the same dataset, each file decoded once; with it,
    ``tables`` (a dict kept from one build to the next) keeps the lake files' light columns read."""
    out = Path(out)
    policy = check_request(system, since_ns, until_ns, cutoff_ns, out)
    excluded = check_units(exclude_units)
    span = (since_ns, until_ns, cutoff_ns)
    if is_choice(system):
        from closedloop.datasets.choices import build_choice_dataset

        return build_choice_dataset(system, policy, decision_files=decision_files, outcome_files=outcome_files,
                                    span=span, out=out, exclude_units=excluded)
    if cache is not None:
        from closedloop.datasets.slot_cache import SlotCache

        built = _build(system, policy, (decision_files, outcome_files), span, out, excluded, SlotCache(cache, system), tables)
        if built is not None:
            return built
    return _build(system, policy, (decision_files, outcome_files), span, out, excluded, None)


def _build(system: System, policy: Any, files: tuple[Sequence[Path | str], Sequence[Path | str]], span: tuple[int, int, int],
           out: Path, excluded: list[str], cache: Any, tables: dict[Any, Any] | None = None) -> Any:
    """The ranking dataset written (module doc); with ``cache`` (a :class:`~closedloop.datasets.
    slot_cache.SlotCache`) the decisions' light columns are read and the rest taken from the cache —
    None when some decision is not cached (the caller then builds without)."""
    from closedloop.datasets.dataset import DatasetManifest
    from closedloop.datasets.slot_cache import LIGHT_COLUMNS

    (decision_files, outcome_files), (since_ns, until_ns, cutoff_ns) = files, span
    window = policy.window // timedelta(microseconds=1) * 1000
    lake = None if tables is None or cache is None else tables  # the light columns' and outcomes' files, kept
    every = first_by(read_records(decision_files, DECISION_SCHEMA, system.name, cutoff_ns, None if cache is None else LIGHT_COLUMNS,
                                  None if lake is None else lake.setdefault("decisions", {})), "decision_id")
    ts = every["timestamp_ns"].to_numpy()
    chosen = (ts >= since_ns) & (ts < until_ns) & (ts + window <= cutoff_ns)
    chosen &= np.asarray(every["slate"].is_valid(), dtype=bool)
    counts: Counter[str] = Counter(open=int(((ts >= since_ns) & (ts < until_ns) & (ts + window > cutoff_ns)).sum()))
    dec = drop_units(every.filter(pa.array(chosen)), excluded, counts)
    parts = None
    if cache is not None:
        parts = cache.parts(decision_files, np.unique(dec["_file"].to_numpy()).tolist() if dec.num_rows else [])
        if parts is None or not parts.covers(dec):
            return None
    digest_only = 0 if parts is not None else int(dec["candidates_json"].null_count)
    outs = first_by(read_records(outcome_files, OUTCOME_SCHEMA, system.name, cutoff_ns, None,
                                 None if lake is None else lake.setdefault("outcomes", {})), "outcome_id")
    find = unit_time_index(every, outs, policy.per == "slot") if policy.link == "unit_time" else None
    if find is None and can_link_columns(policy, False):
        linked: Any = linked_rewards(outs, dec, policy, window, _one(every["decision_id"]), counts)
    else:
        linked = link_outcomes(outs, dec, policy, window, set(every["decision_id"].to_pylist()), find, counts)
    decoded = decode_candidates(dec) if digest_only == 0 and parts is None else None  # once, for the slot rows and the candidate sets
    data, slot_counts = _rows(dec, policy, linked, system, full=digest_only == 0, decoded=decoded, cached=parts)
    counts.update(slot_counts)
    if data.num_rows == 0:
        raise DatasetError(f"The dataset of system '{system.name}' in [{since_ns}, {until_ns}) at cut-off {cutoff_ns} has no rows.")
    # each decision's whole candidate set, for learning a policy (datasets/candidate_sets.py)
    shown = set(data["decision_id"].to_pylist())
    extra = {CANDIDATE_SETS_FILE: parts.candidate_sets(dec, shown)} if parts is not None else \
        {CANDIDATE_SETS_FILE: candidate_sets_table(dec, shown, decoded)} if decoded is not None else {}
    dropped = excluded_counts(counts, excluded)
    content = _manifest(system, data, counts, span, (len(decision_files), len(outcome_files)),
                        (digest_only, dec.num_rows), {k: pc.count_distinct(t["decision_id"]).as_py() for k, t in extra.items()})
    content = with_excluded(content, dropped)
    write_dataset(data, out, content, extra)
    return DatasetManifest(id=content["id"], path=out, content=content)


def check_units(units: Sequence[str]) -> list[str]:
    """``exclude_units`` checked: a list of unit names (sorted, each once)."""
    if isinstance(units, str) or not all(isinstance(u, str) for u in units):
        raise DatasetError(f"The 'exclude_units' parameter of build_reward_dataset must be a list of units. Got {units!r} instead.")
    return sorted(set(units))


def drop_units(dec: pa.Table, units: list[str], counts: Counter[str]) -> pa.Table:
    """``dec`` without the decisions of ``units``, counted ``excluded_decisions`` (and the units
    that had any, ``excluded_units``); their outcomes are then counted ``not_selected``."""
    if not units:
        return dec
    mine = pc.fill_null(pc.is_in(dec["unit"], value_set=pa.array(units, pa.string())), False)
    gone = dec.filter(mine)
    counts["excluded_decisions"] += gone.num_rows
    counts["excluded_units"] += len(set(gone["unit"].to_pylist()))
    return dec.filter(pc.invert(mine))


def excluded_counts(counts: Counter[str], units: list[str]) -> dict[str, int] | None:
    """The manifest's ``counts.excluded`` (None when no unit was to be excluded): the units asked,
    those that had decisions in range and their decisions — taken out of ``counts``."""
    got = {"units_asked": len(units), "units": counts.pop("excluded_units", 0), "decisions": counts.pop("excluded_decisions", 0)}
    return got if units else None


def with_excluded(content: dict[str, Any], excluded: dict[str, int] | None) -> dict[str, Any]:
    """The manifest ``content`` with ``counts.excluded`` (and its id over it)."""
    if excluded is None:
        return content
    rest = {k: v for k, v in content.items() if k != "id"}
    return with_id({**rest, "counts": {**rest["counts"], "excluded": excluded}})


#: finds the decision an outcome without a decision id links to: (unit, candidate id, event_ns) → decision id or None
Finder = Callable[[str | None, str | None, int], str | None]


def unit_time_index(every: pa.Table, outs: pa.Table, per_slot: bool) -> Finder:
    """The ``link="unit_time"`` lookup over ``every`` decision ingested by the cut-off: the latest
    decision of the unit at or before the event (ties: the greatest decision id) — per slot, the
    latest whose slate showed the candidate. Only the units (and candidates) of ``outs`` without
    a decision id are indexed."""
    bare = outs.filter(pc.is_null(outs["decision_id"])).select(["unit", "candidate_id"]).to_pydict()
    wanted = set(zip(bare["unit"], bare["candidate_id"], strict=True)) if per_slot else set(bare["unit"])
    units = pa.array(sorted({k[0] if per_slot else k for k in wanted} - {None}), pa.string())
    mine = every.filter(pc.is_in(every["unit"], value_set=units))
    keyed: dict[Any, list[tuple[int, str]]] = {}
    cols = mine.select(["decision_id", "unit", "timestamp_ns", "slate"]).to_pydict()
    for did, unit, ts, slate in zip(cols["decision_id"], cols["unit"], cols["timestamp_ns"], cols["slate"], strict=True):
        for key in ([(unit, c) for c in slate or () if (unit, c) in wanted] if per_slot else [unit]):
            keyed.setdefault(key, []).append((ts, did))
    index = {k: ([t for t, _ in v], [d for _, d in v]) for k, v in ((k, sorted(v)) for k, v in keyed.items())}

    def find(unit: str | None, cid: str | None, event_ns: int) -> str | None:
        got = index.get((unit, cid) if per_slot else unit)
        if got is None:
            return None
        i = bisect_right(got[0], event_ns)
        return got[1][i - 1] if i else None

    return find


def link_outcomes(outs: pa.Table, dec: pa.Table, policy: Any, window: int, known: set[str], find: Finder | None,
          counts: Counter[str], *, choice: bool = False) -> dict[tuple[str, str | None], list[tuple[str, float, int]]]:
    """Each outcome linked to its (decision, candidate) — by its decision id, or with ``find``
    (``link="unit_time"``) by unit, candidate and time — or counted by why not. With ``choice``
    (``dec`` are BestAction decisions: one slot, the logged ``action``) an outcome linked to
    ``(decision, None)`` whatever ``per``; one naming a candidate other than the action is counted
    ``other_action``."""
    ids = dec["decision_id"].to_pylist()
    at = dict(zip(ids, range(len(ids)), strict=True))  # each decision's row (ids are unique: deduplicated)
    if choice:
        flat, off = dec["action"].to_pylist(), np.arange(len(ids) + 1, dtype=np.int64)
    else:  # the slates flat, not a Python set per decision: most decisions have no outcome to check
        slate = _one(dec["slate"])
        flat = pc.list_flatten(slate).to_pylist()
        off = np.concatenate([[0], np.cumsum(np.asarray(pc.list_value_length(slate).fill_null(0), dtype=np.int64))])
    bounds = off.tolist()
    times = dec["timestamp_ns"].to_pylist()
    kinds = set(policy.kinds)
    per_slot = policy.per == "slot" and not choice
    got: dict[tuple[str, str | None], list[tuple[str, float, int]]] = {}
    for o in outs.select(["decision_id", "unit", "candidate_id", "kind", "value", "event_ns"]).to_pylist():
        did, cid = o["decision_id"], o["candidate_id"]
        if did is None and find is not None:
            did = None if per_slot and cid is None else find(o["unit"], cid, o["event_ns"])
        if did is None and find is not None:
            why = "no_candidate" if per_slot and cid is None else "unlinked"
        elif did is None or did not in known:
            why = "unknown_id"
        elif did not in at:
            why = "not_selected"
        elif per_slot and cid is None:
            why = "no_candidate"
        elif (per_slot or (choice and cid is not None)) and cid not in flat[bounds[at[did]]:bounds[at[did] + 1]]:
            why = "other_action" if choice else "not_in_slate"
        elif o["event_ns"] < times[at[did]]:
            why = "before_decision"
        elif o["event_ns"] > times[at[did]] + window:
            why = "after_window"
        elif o["kind"] not in kinds:
            why = "other_kind"
        else:
            got.setdefault((did, cid if per_slot else None), []).append((o["kind"], o["value"], o["event_ns"]))
            why = "matched"
        counts[f"outcomes_{why}"] += 1
    return got


def _rows(dec: pa.Table, policy: Any, linked: dict[tuple[str, str | None], list[tuple[str, float, int]]] | LinkedRewards,
          system: System, *, full: bool, decoded: Decoded | None = None, cached: Any = None) -> tuple[pa.Table, Counter[str]]:
    """One row per (decision, slot) with a reward, in the decisions' order (module doc, "rows");
    without ``full`` (some decision logged its candidates' digest only) no candidate fields and no
    features: the request fields and each row's ``candidates_digest``. Columnar: the slates and
    their propensities exploded by Arrow, the rewards of the linked slots placed by one join, the
    request and candidate fields taken from each column decoded once (``decoded``: the decisions'
    candidates, when the caller decoded them; ``cached``: the decision files'
    :class:`~closedloop.datasets.slot_cache.FileParts`, whose slot columns are taken instead)."""
    slots = _exploded(dec)
    reward, has = _slot_rewards(dec, slots, policy, linked)
    counts: Counter[str] = Counter()
    if (~has).any():
        counts["no_reward"] += int((~has).sum())
    rows = np.flatnonzero(has)
    of, n = slots["of"][rows], int(rows.size)
    fields = _request_fields(dec, system, of) if cached is None else {}
    if full and n and cached is None:
        fields.update(_candidate_fields(dec, system, of, slots["action"].take(pa.array(rows)),
                                        decoded if decoded is not None else decode_candidates(dec)))
    schema = system.features.schema if full else system.schema
    validated = schema.validate_batch(fields) if n and cached is None else None
    prop = slots["propensity"][rows]
    sp = np.asarray(dec["sample_prob"].to_numpy(zero_copy_only=False), dtype=np.float64)[of]
    take = pa.array(of, pa.int64())
    data: dict[str, Any] = {
        "decision_id": pc.take(dec["decision_id"], take).cast(pa.string()),
        "position": pa.array(slots["position"][rows], pa.int32()),
        "unit": pc.take(dec["unit"], take).cast(pa.string()),
        "timestamp_ns": pc.take(dec["timestamp_ns"], take).cast(pa.int64()),
        "action": slots["action"].take(pa.array(rows)).cast(pa.string()), "reward": pa.array(reward[rows], pa.float64()),
        "propensity": pa.array(prop, pa.float64()), "weight": pa.array(1.0 / (prop * sp), pa.float64()),
        "sample_prob": pa.array(sp, pa.float64()),
    }
    data = {k: v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for k, v in data.items()}
    if cached is not None and n:
        data.update(cached.slot_columns(dec, of, slots["position"][rows]))
    elif validated is not None and full:
        data.update(context_columns(validated, system))
    elif validated is not None:  # digest only: the request fields, the digest of the candidates the features would read
        data.update({"context_json": _json_rows(validated, [f.name for f in system.schema.fields]),
                     "candidates_digest": pc.take(dec["candidates_digest"], take).cast(pa.string()),
                     "schema_version": pa.array([system.schema_version] * n, pa.string()),
                     "feature_fingerprint": pa.array([system.feature_fingerprint] * n, pa.string())})
    return pa.table(data), counts


def _exploded(dec: pa.Table) -> dict[str, Any]:
    """Every slot of ``dec``'s slates, flat: its decision row (``of``), ``position`` (1-based),
    ``action`` (the candidate id shown) and ``propensity`` (the logged slot propensity)."""
    slate = _one(dec["slate"])
    props = _one(dec["slot_propensities"])
    n_slate = np.asarray(pc.list_value_length(slate).fill_null(0), dtype=np.int64)
    n_prop = np.asarray(pc.list_value_length(props).fill_null(-1), dtype=np.int64)
    if (n_slate != n_prop).any():
        i = int(np.flatnonzero(n_slate != n_prop)[0])
        raise DatasetError(f"The 'slot_propensities' of decision {dec['decision_id'][i].as_py()!r} must hold one propensity "
                           f"per slot of its slate ({n_slate[i]}). Got {dec['slot_propensities'][i].as_py()!r} instead.")
    of = np.repeat(np.arange(dec.num_rows, dtype=np.int64), n_slate)
    starts = np.cumsum(n_slate) - n_slate
    return {"of": of, "position": np.arange(of.size, dtype=np.int64) - np.repeat(starts, n_slate) + 1,
            "action": pc.list_flatten(slate),
            "propensity": np.asarray(pc.list_flatten(props).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)}


def _one(col: Any) -> Any:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _slot_rewards(dec: pa.Table, slots: dict[str, Any], policy: Any,
                  linked: dict[tuple[str, str | None], list[tuple[str, float, int]]] | LinkedRewards) -> tuple[np.ndarray, np.ndarray]:
    """Each slot's reward under ``policy`` and whether it has one: the policy's default where no
    outcome is linked (the policy computes nothing from none), the policy's reward of its linked
    outcomes where some are — placed on the slots by one join on (decision, candidate) (per
    decision: on the decision)."""
    n = slots["of"].size
    default = policy.default
    reward = np.full(n, np.nan if default is None else float(default))
    has = np.full(n, default is not None)
    if not len(linked.row if isinstance(linked, LinkedRewards) else linked) or n == 0:
        return reward, has
    if isinstance(linked, LinkedRewards):  # linked and combined column by column (datasets/slot_links.py)
        row, cands, r = linked.row, linked.candidate, linked.reward
        ok = np.ones(r.size, dtype=bool)
    else:
        keys = list(linked)
        row = np.asarray(pc.index_in(pa.array([k[0] for k in keys], pa.string()),
                                     value_set=_one(dec["decision_id"]).cast(pa.string())).fill_null(-1), dtype=np.int64)
        ts = np.asarray(dec["timestamp_ns"].to_numpy(zero_copy_only=False), dtype=np.int64)
        got = [policy.reward(linked[k], int(ts[i])) if i >= 0 else None for k, i in zip(keys, row, strict=True)]
        r = np.asarray([np.nan if g is None else float(g) for g in got], dtype=np.float64)
        ok = np.asarray([g is not None for g in got], dtype=bool)
        cands = pa.array([k[1] for k in keys], pa.string())
    if policy.per == "slot":
        left = pa.table({"d": pa.array(slots["of"]), "c": slots["action"].cast(pa.string()), "s": pa.array(np.arange(n))})
        right = pa.table({"d": pa.array(row), "c": cands, "k": pa.array(np.arange(r.size))})
        joined = left.join(right, ["d", "c"], join_type="inner", use_threads=False)
        s, k = np.asarray(joined["s"], dtype=np.int64), np.asarray(joined["k"], dtype=np.int64)
    else:
        per_dec = np.full(dec.num_rows, -1, dtype=np.int64)
        per_dec[row[row >= 0]] = np.flatnonzero(row >= 0)
        k = per_dec[slots["of"]]
        s = np.flatnonzero(k >= 0)
        k = k[s]
    reward[s], has[s] = r[k], ok[k]
    return reward, has


def _request_fields(dec: pa.Table, system: System, of: np.ndarray) -> dict[str, Any]:
    """The request fields of each slot row (decision ``of``), from the decisions' ``context_json``
    decoded by one msgspec call (a decision with none: no fields)."""
    text = _one(dec["context_json"])
    text = pc.if_else(pc.equal(text, ""), pa.scalar("{}", text.type), text) if len(text) else text
    reqs: list[Any] = msgspec.json.decode(_joined(text, "{}"))
    out: dict[str, Any] = {}
    for f in system.schema.fields:
        col = np.empty(len(reqs), dtype=object)
        col[:] = [r.get(f.name) for r in reqs]
        out[f.name] = col[of].tolist()
    return out


def _candidate_fields(dec: pa.Table, system: System, of: np.ndarray, action: Any, decoded: Decoded) -> dict[str, Any]:
    """The fields of each slot row's candidate (decision ``of``, id ``action``) found in its
    decision's decoded candidates by one join on (decision, candidate id); a list naming an id twice
    gives its last candidate."""
    cid = system.candidate_id
    flat = decoded.flat
    names = [f.name for f in flat.type]
    if cid not in names:
        raise DatasetError(f"The logged candidates of system '{system.name}' must each name their '{cid}'. Got none that does.")
    fdec = np.repeat(np.arange(decoded.lengths.size, dtype=np.int64), decoded.lengths)
    right = pa.table({"d": pa.array(fdec), "c": flat.field(cid).cast(pa.string()), "f": pa.array(np.arange(fdec.size))})
    right = right.group_by(["d", "c"], use_threads=False).aggregate([("f", "max")])
    left = pa.table({"d": pa.array(of), "c": _one(action).cast(pa.string()), "s": pa.array(np.arange(of.size))})
    joined = left.join(right, ["d", "c"], join_type="left outer", use_threads=False)
    s = np.asarray(joined["s"], dtype=np.int64)
    f = np.asarray(joined["f_max"].fill_null(-1), dtype=np.int64)
    at = np.empty(of.size, dtype=np.int64)
    at[s] = f
    if (at < 0).any():
        i = int(np.flatnonzero(at < 0)[0])
        raise DatasetError(f"The slate of decision {dec['decision_id'][int(of[i])].as_py()!r} must show candidates of its "
                           f"logged list. Got {action[i].as_py()!r}, not in it, instead.")
    idx = pa.array(at)
    return {f.name: flat.field(f.name).take(idx) if f.name in names else pa.nulls(of.size)
            for f in system.candidate_schema.fields}  # type: ignore[union-attr]


def telemetry_manifest(system: System, data: pa.Table, counts: Counter[str], span: tuple[int, int, int],
                       files: tuple[int, int], logged: str, feat_names: list[str], slots: dict[str, int],
                       decisions: int, positions: dict[str, int]) -> dict[str, Any]:
    """The manifest a reward dataset built from telemetry shares with an imported one (``logged``:
    "ranking" or "best_action"; ``counts``' remaining entries are the outcomes' counts by why)."""
    (since_ns, until_ns, cutoff_ns), (n_dec_files, n_out_files) = span, files
    reward = data["reward"].to_numpy()
    return {
        "format": 1, "system": system.name, "schema_version": system.schema_version, "rows": "slot",
        "labels": None, "policy": None, "rewards": system.rewards.describe() if system.rewards else None,
        "source": {"kind": "telemetry", "logged": logged, "decision_files": n_dec_files, "outcome_files": n_out_files},
        "since_ns": since_ns, "until_ns": until_ns, "cutoff_ns": cutoff_ns,
        "feature_names": {system.feature_fingerprint: feat_names},
        "columns": {"features": [feature_column(nm) for nm in feat_names], "outcomes": {}},
        "counts": {
            "slots": {"rows": data.num_rows, **slots}, "decisions": decisions, "open": counts.pop("open", 0),
            "positions": positions, "rewards": {"sum": float(reward.sum()), "nonzero": int((reward != 0).sum())},
        },
    }


def _manifest(system: System, data: pa.Table, counts: Counter[str], span: tuple[int, int, int], files: tuple[int, int],
              digest: tuple[int, int], sets: dict[str, int]) -> dict[str, Any]:
    """The manifest; with decisions logged digest-only (``digest``: their number, of the decisions
    read) the candidate fields and features are named under ``absent`` and no feature is listed;
    ``sets``: the candidate-set file written beside the data (file → decisions), if any."""
    all_features = [f.name for f in system.features.features]
    content = telemetry_manifest(
        system, data, counts, span, files, "ranking", all_features if digest[0] == 0 else [],
        {"no_reward": counts.pop("no_reward", 0)}, len(set(data["decision_id"].to_pylist())),
        {str(k): int(v) for k, v in sorted(Counter(data["position"].to_pylist()).items())})
    content["counts"]["outcomes"] = {k.removeprefix("outcomes_"): v for k, v in sorted(counts.items())}
    for file, n in sets.items():
        content["candidate_sets"] = {"file": file, "decisions": n}
    if digest[0]:
        content["absent"] = {
            "candidate_fields": [f.name for f in system.candidate_schema.fields],  # type: ignore[union-attr]
            "features": all_features,
            "why": f"{digest[0]} of the {digest[1]} decisions were logged with Telemetry(candidates='digest'): candidate "
                   "ids and the digest of their fields only; each row carries candidates_digest",
        }
    return with_id(content)

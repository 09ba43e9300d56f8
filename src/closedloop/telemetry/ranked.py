"""Ranking decisions as telemetry records: one ``DECISION_SCHEMA`` row per ranking decision.

A ranking decision (:class:`~closedloop.experience.ranked.RankedDecision`, or a request of a
:class:`~closedloop.experience.ranked.RankedDecisionBatch`) is written as a decision row, so that
every reader of decisions — the store's counts, retention, forget, the guard, the label join —
keeps working on it unchanged:

- ``action`` is the slot-1 candidate id and ``propensity`` that slot's propensity (an empty slate:
  ``""`` and 1.0); ``score_names`` / ``scores`` / ``features`` are null;
- ``bundle_version`` is the bundle that ranked (a flight's, for a unit in a flight) and ``flight``
  its flight (null: production), as for every decision — so the sample-ratio check and the guard
  count a ranking's arms as they count any other's;
- ``shadows_json`` holds what each shadow bundle would have shown (null: no shadows, or the kill
  switch): ``[{"bundle_version", "action", "slate", "candidate_scores"}, …]`` — ``action`` is its
  slot-1 candidate id (``""`` for an empty slate), as a ranking row's own ``action`` is, so a
  shadow's disagreement with production is counted on slot 1 as for other systems; ``slate`` its
  greedy slate (the top ``min(k, N)`` ids by its scores) and ``candidate_scores`` its score of
  each candidate, in the order of ``candidate_ids``;
- the ranking itself is in the nullable columns that only rankings fill
  (:data:`~closedloop.telemetry.records.RANKING_COLUMNS`): ``candidate_ids`` (input order),
  ``candidate_scores`` (one per candidate; empty under the kill switch), ``slate`` (the ids shown,
  slot by slot), ``slot_propensities``, ``candidates_json`` (the candidate fields as validated —
  what the features read — sanitized by the candidate schema's ``sensitive`` fields; null with
  ``Telemetry(candidates="digest")``) and ``candidates_digest`` (the sha256 of that JSON, always).

A separate record kind was not chosen: two rows per decision would need a second stream, a second
forget/retention path, and a join for every reader. Appending nullable columns keeps older records
readable: a record of schema version 1 reads with the ranking columns null.

The decision path only puts references on the buffer (the request mapping or batch as given, and
the decision); the committer thread validates the request and candidates again (off the path) to
write them as the features saw them — a request's candidates in one compiled msgspec pass whose
structs are encoded in one call (~28 µs for 80 candidates, against ~258 µs typing columns and a
dict per candidate; byte for byte the same JSON). A caller must not change a request after deciding it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from closedloop.context.schema import MISSING
from closedloop.experience.ranking_inputs import _split_request_column
from closedloop.telemetry.privacy import Sanitizer
from closedloop.telemetry.records import DECISION_SCHEMA

__all__ = ["CANDIDATE_MODES", "RankedEncoder"]

#: What ``Telemetry(candidates=…)`` writes of a ranking's candidates: ``"full"`` — their fields as
#: JSON (``candidates_json``) and its digest; ``"digest"`` — the digest only (large catalogues).
CANDIDATE_MODES = ("full", "digest")

_enc = msgspec.json.encode


def shadows_json(shadows: Any) -> str | None:
    """``shadows_json`` of a ranking decision: its :class:`~closedloop.experience.ranked.RankedShadow` s
    as ``[{"bundle_version", "action", "slate", "candidate_scores"}, …]`` (none: null)."""
    if not shadows:
        return None
    return _enc([{"bundle_version": sh.bundle_version, "action": sh.ranking[0] if sh.ranking else "",
                  "slate": sh.ranking, "candidate_scores": sh.scores} for sh in shadows]).decode()


def _sanitized(sz: Sanitizer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (fresh dicts of validated fields) with the sensitive fields dropped or hashed, in place."""
    if sz.plain:
        return rows
    for d in rows:
        for name in sz.dropped:
            d.pop(name, None)
        for name in sz.hashed:
            d[name] = sz.hash(d[name])
    return rows


def _batch_shadows(b: Any, ids: list[str], a: int, e: int, ra: int, rb: int) -> str | None:
    """``shadows_json`` of one request of a batch (candidates ``a:e``, slots ``ra:rb``), as :func:`shadows_json`."""
    if not b.shadows:
        return None
    out = []
    for v, S, R in b.shadows:
        slate = [ids[r] for r in R[ra:rb].tolist()]
        out.append({"bundle_version": v, "action": slate[0] if slate else "", "slate": slate, "candidate_scores": S[a:e].tolist()})
    return _enc(out).decode()


class RankedEncoder:
    """Builds the records of ranking decisions for one system (committer thread only)."""

    def __init__(self, system: Any, sanitizer: Sanitizer, writer: str, candidates: str, key: bytes | None) -> None:
        self.system = system
        self.sanitizer = sanitizer
        self.writer = writer
        self.full = candidates == "full"
        self.cschema = system.candidate_schema
        self.csan = Sanitizer(self.cschema, "", key)
        self.cnames = [f.name for f in self.cschema.fields]
        self.cabsent = [(f.name, MISSING if f.required else None) for f in self.cschema.fields]
        self.rnames = [f.name for f in system.schema.fields]
        #: the candidate schema's compiled validator over a list: one C pass converts a request's
        #: candidates into structs whose JSON is the validated fields' (defaults filled, ints of a
        #: Float field as floats), in the schema's field order — the bytes the column-wise path writes
        self.ctype: Any = list[self.cschema.struct]  # type: ignore[name-defined]

    # -- the JSON of requests and candidates ----------------------------------------------------
    def _request_json(self, context: Mapping[str, Any]) -> str | None:
        try:
            c = self.system.schema.validate({k: v for k, v in context.items() if k != "candidates"})
        except Exception:  # noqa: BLE001 - changed after deciding: the record keeps no context
            return None
        return self.sanitizer.context_json(c)

    def _candidates(self, rows: list[dict[str, Any]]) -> tuple[str | None, str]:
        """(``candidates_json`` or None in digest mode, ``candidates_digest``) of one request."""
        raw = _enc(_sanitized(self.csan, rows))
        return (raw.decode() if self.full else None), hashlib.sha256(raw).hexdigest()

    def _single_json(self, context: Mapping[str, Any] | None) -> tuple[str | None, str]:
        """(``candidates_json`` or None, ``candidates_digest``) of one request: the compiled
        validator's structs encoded in one call when no candidate field is sensitive (~10× less
        than typing columns and building a dict per candidate); else, or if the validator refuses
        (the request changed after deciding), the column-wise path."""
        if context is None:
            return self._candidates([])
        raw = context.get("candidates") or []
        if self.csan.plain:
            try:
                data = _enc(msgspec.convert(raw, self.ctype))
            except (msgspec.ValidationError, msgspec.EncodeError, TypeError, ValueError, OverflowError, UnicodeError):
                pass
            else:
                return (data.decode() if self.full else None), hashlib.sha256(data).hexdigest()
        return self._candidates(self._single_candidates(raw))

    def _single_candidates(self, raw: Any) -> list[dict[str, Any]]:
        try:
            cols = self.cschema.validate_batch({n: [c.get(n, absent) for c in raw] for n, absent in self.cabsent})
            lists = [cols.pylist(n) for n in self.cnames]
            return [dict(zip(self.cnames, vals, strict=True)) for vals in zip(*lists, strict=True)]
        except Exception:  # noqa: BLE001 - changed after deciding: written as given
            return [dict(c) for c in raw]

    # -- records ----------------------------------------------------------------------------
    def singles(self, items: list[tuple[Any, ...]], now: int) -> pa.RecordBatch:
        """``(seq, RANKED, decision, context, p)`` items as ``DECISION_SCHEMA`` rows."""
        rows = []
        for seq, _, d, context, p in items:
            cj, dig = self._single_json(context)
            rows.append((seq, d.decision_id, d.unit, d.timestamp_ns, d.bundle_version,
                         None if context is None else self._request_json(context), d.candidates, d.scores,
                         cj, dig, d.ranking, d.slot_propensities, p, d.why, d.killswitch, d.flight, shadows_json(d.shadows)))
        return self._batch(rows, now)

    def from_batch(self, item: tuple[Any, ...], now: int) -> pa.RecordBatch:
        """``(seq0, RANKED_BATCH, batch, requests, candidates, idx, p)`` as ``DECISION_SCHEMA``
        rows, one per kept request."""
        seq0, _, b, requests, candidates, idx, p = item
        sel = list(range(len(b))) if idx is None else idx.tolist()
        ctx = self._batch_requests(requests, len(b))
        per = self._batch_candidates(candidates, len(b))
        off, roff = b.offsets.tolist(), b.rank_offsets.tolist()
        ranked = b.ranked.tolist()
        versions, flights = b.version_list(), b.flight_list()
        rows = []
        for j, i in enumerate(sel):
            a, e = off[i], off[i + 1]
            ids = b.candidate_ids[a:e]
            cj, dig = self._candidates(per[i])
            slate = [ids[r] for r in ranked[roff[i]:roff[i + 1]]]
            rows.append((seq0 + j, b.decision_ids[i], b.units[i], int(b.timestamps_ns[i]), versions[i], ctx[i],
                         ids, [] if b.killswitch else b.scores[a:e].tolist(), cj, dig, slate,
                         b.slot_propensities[roff[i]:roff[i + 1]].tolist(), 1.0 if p is None else float(p[j]),
                         b.why[i], b.killswitch, flights[i], _batch_shadows(b, ids, a, e, roff[i], roff[i + 1])))
        return self._batch(rows, now)

    def _batch_requests(self, requests: Any, n: int) -> list[str | None]:
        try:
            cols = self.system.schema.validate_batch(requests, errors="raise")
        except Exception:  # noqa: BLE001
            return [None] * n
        lists = [cols.pylist(k) for k in self.rnames]
        rows = [dict(zip(self.rnames, vals, strict=True)) for vals in zip(*lists, strict=True)]
        return [_enc(d).decode() for d in _sanitized(self.sanitizer, rows)] if rows else [None] * n

    def _batch_candidates(self, candidates: Any, n: int) -> list[list[dict[str, Any]]]:
        """Each request's candidates (validated fields, in the batch's order) as dicts."""
        per: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        if candidates is None:
            return per
        cand_map, req_idx = _split_request_column(candidates, n)
        if not cand_map or req_idx.shape[0] == 0:
            return per
        cols = self.cschema.validate_batch(cand_map, errors="raise")
        lists = [cols.pylist(k) for k in self.cnames]
        order = np.argsort(req_idx, kind="stable").tolist()
        rows = list(zip(*lists, strict=True))
        for r in order:
            per[int(req_idx[r])].append(dict(zip(self.cnames, rows[r], strict=True)))
        return per

    def _batch(self, rows: list[tuple[Any, ...]], now: int) -> pa.RecordBatch:
        n = len(rows)
        sz = self.sanitizer
        col = list(zip(*rows, strict=True)) if rows else [()] * 17
        (seqs, dids, units, ts, versions, ctx, cids, cscores, cjson, digest, slates, sprops, probs, whys, kills, flights,
         shadows) = col
        const = pa.array([None] * n, pa.string())
        cols = {
            "seq": pa.array(seqs, pa.int64()), "writer": pa.array([self.writer] * n, pa.string()),
            "decision_id": pa.array(dids, pa.string()), "system": pa.array([self.system.name] * n, pa.string()),
            "unit": pa.array([sz.unit(u) for u in units] if sz.unit_hashed else units, pa.string()),
            "timestamp_ns": pa.array(ts, pa.int64()), "ingest_ns": pa.array([now] * n, pa.int64()),
            "bundle_version": pa.array(versions, pa.string()), "flight": pa.array(flights, pa.string()),
            "schema_version": pa.array([self.system.schema.version] * n, pa.string()),
            "feature_fingerprint": pa.array([self.system.features.fingerprint] * n, pa.string()),
            "context_json": pa.array(ctx, pa.string()),
            "action": pa.array([s[0] if s else "" for s in slates], pa.string()),
            "propensity": pa.array([sp[0] if sp else 1.0 for sp in sprops], pa.float64()),
            "sample_prob": pa.array(probs, pa.float64()), "why": pa.array(whys, pa.string()),
            "guardrail": const, "shadows_json": pa.array(shadows, pa.string()), "killswitch": pa.array(kills, pa.bool_()),
            "candidate_ids": pa.array(cids, pa.list_(pa.string())),
            "candidate_scores": pa.array(cscores, pa.list_(pa.float64())),
            "candidates_json": pa.array(cjson, pa.string()), "candidates_digest": pa.array(digest, pa.string()),
            "slate": pa.array(slates, pa.list_(pa.string())),
            "slot_propensities": pa.array(sprops, pa.list_(pa.float64())),
        }
        arrays = [cols.get(f.name) if f.name in cols else pa.nulls(n, f.type) for f in DECISION_SCHEMA]
        return pa.RecordBatch.from_arrays(arrays, schema=DECISION_SCHEMA)

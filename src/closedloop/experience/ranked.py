"""Ranking decisions as records: one request's :class:`RankedDecision` (with what each shadow
bundle would have shown, :class:`RankedShadow`) and the flat-array :class:`RankedDecisionBatch`
of many requests (:mod:`closedloop.experience.ranking` makes them)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

__all__ = ["RankedDecision", "RankedDecisionBatch", "RankedShadow"]


class RankedShadow(msgspec.Struct, frozen=True, gc=False):
    """What a shadow bundle scored for one request and would have shown; never acted on.

    ``scores``: one per candidate, in input order (the same feature rows production scored);
    ``ranking``: its greedy slate — the top ``min(k, N)`` candidate ids by its scores, ties to the
    lower input index, NaN last (greedy ranking's rules, whatever production explores).
    """

    bundle_version: str
    scores: list[float]
    ranking: list[str]


class RankedDecision(msgspec.Struct, frozen=True, gc=False):
    """One ranking decision: which candidates were shown, in which slots, with what probability.

    ``candidates`` and ``scores`` are in input order (one score per candidate; empty under the
    kill switch); ``ranking`` lists the ids shown, slot by slot (``min(k, N)`` of them);
    ``slot_propensities[j]`` is the probability that slot j got ``ranking[j]`` given the earlier
    slots, and ``propensity`` their product (left to right).
    """

    decision_id: str
    system: str
    unit: str
    timestamp_ns: int
    bundle_version: str
    candidates: list[str]
    scores: list[float]
    ranking: list[str]
    slot_propensities: list[float]
    propensity: float
    why: str
    mode: str = "organize"
    killswitch: bool = False
    shadows: list[RankedShadow] = []
    flight: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class RankedDecisionBatch:
    """Ranking decisions for many requests, kept in flat arrays.

    Request ``i``'s candidates are ``candidate_ids[offsets[i]:offsets[i + 1]]`` (with their
    ``scores`` at the same positions, when scored); its ranking is
    ``ranked[rank_offsets[i]:rank_offsets[i + 1]]`` — positions within the request's candidates —
    with ``slot_propensities`` at the same positions. ``batch[i]`` is the
    :class:`RankedDecision` that :meth:`RankingPlan.decide` returns for that request.

    ``candidate_ids`` may be given as an Arrow string array: it becomes the list of str the first
    time it is read (a batch written as Arrow, or read a decision at a time, never needs the list).

    With flights, requests come from different bundles: ``bundle_versions`` and ``flights`` then
    hold one value per request (``flights`` None for production), and ``bundle_version`` is
    production's. ``shadows`` holds, per shadow bundle, ``(version, scores, ranked)``: its scores
    at the positions of ``scores`` and its greedy slate's positions at those of ``ranked`` (a
    shadow's slate has as many slots as production's).
    """

    def __init__(
        self,
        *,
        system: str,
        bundle_version: str,
        decision_ids: list[str],
        units: list[str],
        timestamps_ns: np.ndarray,
        candidate_ids: list[str] | pa.Array,
        offsets: np.ndarray,
        scores: np.ndarray,
        ranked: np.ndarray,
        rank_offsets: np.ndarray,
        slot_propensities: np.ndarray,
        propensities: np.ndarray,
        why: list[str],
        killswitch: bool,
        bundle_versions: list[str] | None = None,
        flights: list[str | None] | None = None,
        shadows: tuple[tuple[str, np.ndarray, np.ndarray], ...] = (),
    ) -> None:
        self.system = system
        self.bundle_version = bundle_version
        self.decision_ids = decision_ids
        self.units = units
        self.timestamps_ns = timestamps_ns
        self._ids_list: list[str] | None = candidate_ids if isinstance(candidate_ids, list) else None
        self._ids_arrow: pa.Array | None = None if isinstance(candidate_ids, list) else candidate_ids
        self.offsets = offsets
        self.scores = scores
        self.ranked = ranked
        self.rank_offsets = rank_offsets
        self.slot_propensities = slot_propensities
        self.propensities = propensities
        self.why = why
        self.killswitch = killswitch
        #: per request, only when a flight decided some request; else None
        self.bundle_versions = bundle_versions
        self.flights = flights
        #: per shadow: (bundle version, flat scores as ``scores``, flat greedy positions as ``ranked``)
        self.shadows = shadows

    @property
    def candidate_ids(self) -> list[str]:
        """Every request's candidate ids, flat (request i's at ``offsets[i]:offsets[i + 1]``)."""
        if self._ids_list is None:
            self._ids_list = self._ids_arrow.to_pylist() if self._ids_arrow is not None else []
        return self._ids_list

    def __len__(self) -> int:
        return len(self.decision_ids)

    def __getitem__(self, i: int) -> RankedDecision:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"decision {i} out of range for a batch of {n}")
        if i < 0:
            i += n
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        ra, rb = int(self.rank_offsets[i]), int(self.rank_offsets[i + 1])
        ids = self._ids_arrow[a:b].to_pylist() if self._ids_list is None and self._ids_arrow is not None else self.candidate_ids[a:b]
        return RankedDecision(
            self.decision_ids[i],
            self.system,
            self.units[i],
            int(self.timestamps_ns[i]),
            self.bundle_version if self.bundle_versions is None else self.bundle_versions[i],
            ids,
            [] if self.killswitch else self.scores[a:b].tolist(),
            [ids[j] for j in self.ranked[ra:rb].tolist()],
            self.slot_propensities[ra:rb].tolist(),
            float(self.propensities[i]),
            self.why[i],
            "organize",
            self.killswitch,
            [RankedShadow(v, S[a:b].tolist(), [ids[j] for j in R[ra:rb].tolist()]) for v, S, R in self.shadows],
            None if self.flights is None else self.flights[i],
        )

    def version_list(self) -> list[str]:
        """The bundle version of every request."""
        return [self.bundle_version] * len(self) if self.bundle_versions is None else self.bundle_versions

    def flight_list(self) -> list[str | None]:
        """The flight of every request (None: production)."""
        return [None] * len(self) if self.flights is None else self.flights

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def to_pylist(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self]

    def to_arrow(self) -> pa.Table:
        """One row per decision; candidates, scores, ranking and slot propensities as lists."""
        off = pa.array(self.offsets.astype(np.int32))
        roff = pa.array(self.rank_offsets.astype(np.int32))
        ids = self._ids_arrow if self._ids_list is None and self._ids_arrow is not None else pa.array(self.candidate_ids, type=pa.string())
        ranked_flat = (np.repeat(self.offsets[:-1], np.diff(self.rank_offsets)) + self.ranked).astype(np.int64)
        n = len(self)
        scores = (
            pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], type=pa.float64()))
            if self.killswitch
            else pa.ListArray.from_arrays(off, pa.array(self.scores, type=pa.float64()))
        )
        return pa.table(
            {
                "decision_id": pa.array(self.decision_ids, type=pa.string()),
                "system": pa.array([self.system] * n, type=pa.string()),
                "unit": pa.array(self.units, type=pa.string()),
                "timestamp_ns": pa.array(self.timestamps_ns, type=pa.int64()),
                "bundle_version": pa.array(self.version_list(), type=pa.string()),
                "candidates": pa.ListArray.from_arrays(off, ids),
                "scores": scores,
                "ranking": pa.ListArray.from_arrays(roff, ids.take(pa.array(ranked_flat))),
                "slot_propensities": pa.ListArray.from_arrays(roff, pa.array(self.slot_propensities, type=pa.float64())),
                "propensity": pa.array(self.propensities, type=pa.float64()),
                "why": pa.array(self.why, type=pa.string()),
                "mode": pa.array(["organize"] * n, type=pa.string()),
                "killswitch": pa.array([self.killswitch] * n, type=pa.bool_()),
                "shadows": self._shadow_column(off, roff, ids),
                "flight": pa.array(self.flight_list(), type=pa.string()),
            }
        )

    def _shadow_column(self, off: pa.Array, roff: pa.Array, ids: pa.Array) -> pa.Array:
        """``shadows`` as Arrow: per request a list of one struct per shadow, as ``to_dict`` gives it."""
        n, k = len(self), len(self.shadows)
        parts = []
        for v, S, R in self.shadows:
            flat = (np.repeat(self.offsets[:-1], np.diff(self.rank_offsets)) + R).astype(np.int64)
            parts.append(pa.StructArray.from_arrays(
                [pa.array([v] * n, type=pa.string()), pa.ListArray.from_arrays(off, pa.array(S, type=pa.float64())),
                 pa.ListArray.from_arrays(roff, ids.take(pa.array(flat)))],
                fields=list(_SHADOW_TYPE),
            ))
        values = pa.concat_arrays(parts) if parts else pa.array([], type=_SHADOW_TYPE)
        if k > 1:  # shadow-major → request-major: request i's shadows at i*k … i*k + k - 1
            values = values.take(pa.array((np.arange(n)[:, None] + np.arange(k)[None, :] * n).ravel()))
        return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * k), values)


_SHADOW_TYPE = pa.struct([
    pa.field("bundle_version", pa.string()), pa.field("scores", pa.list_(pa.float64())), pa.field("ranking", pa.list_(pa.string())),
])


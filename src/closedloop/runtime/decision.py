"""Decision records: one (:class:`Decision`) and many, columnar (:class:`DecisionBatch`)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from closedloop.errors import ContextError
from closedloop.experience.experiences import Presentation

__all__ = ["Decision", "DecisionBatch", "ShadowResult"]

_NO_PRESENTATION = Presentation("none")


class ShadowResult(msgspec.Struct, frozen=True, gc=False):
    """What a shadow bundle scored and would have done (before guardrails); never acted on."""

    bundle_version: str
    scores: dict[str, float]
    action: str


class Decision(msgspec.Struct, frozen=True, gc=False):
    """One execution of context → features → intelligence → experience → action.

    ``timestamp_ns`` is nanoseconds since the Unix epoch (from the runtime's clock);
    ``propensity`` is the probability with which ``action`` was shown (1.0 unless the
    experience explores; exact through guardrails); ``why`` names the threshold, exploration or
    rule that chose it; ``guardrail`` names the guardrail that changed the action, if one did;
    ``presentation`` is what the action shows the user (its mode, choices and the outcome kinds
    it can yield); ``shadows`` holds the shadow bundles' scores and actions; ``killswitch`` says
    the intelligence was skipped; ``flight`` names the flight whose bundle decided (``None``:
    production).
    """

    decision_id: str
    system: str
    unit: str
    timestamp_ns: int
    bundle_version: str
    scores: dict[str, float]
    action: str
    propensity: float
    why: str
    presentation: Presentation = _NO_PRESENTATION
    guardrail: str | None = None
    shadows: tuple[ShadowResult, ...] = ()
    killswitch: bool = False
    flight: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class DecisionBatch:
    """Decisions for a columnar batch, kept columnar.

    Ids and units are Arrow string arrays; ``action`` and ``why`` are stored as small integer
    codes into ``actions`` / ``reasons`` (the ``action`` and ``why`` properties expand them);
    ``rows`` maps each decision to its row in the input (rows that failed validation with
    ``errors="skip"`` have no decision and are listed in ``errors``). ``batch[i]`` is the i-th
    decision as a :class:`Decision`, equal to what ``Runtime.decide`` returns for that row.

    With flights, rows come from different bundles: ``bundle_versions`` and ``flights`` then hold
    one value per row (``flights`` null for production), and ``bundle_version`` is production's.
    """

    def __init__(
        self,
        *,
        system: str,
        bundle_version: str,
        decision_ids: pa.StringArray,
        units: pa.StringArray,
        timestamps_ns: np.ndarray,
        outputs: tuple[str, ...],
        scores: np.ndarray,
        actions: tuple[str, ...],
        action_codes: np.ndarray,
        propensities: np.ndarray,
        reasons: tuple[str, ...],
        why_codes: np.ndarray,
        rows: np.ndarray,
        errors: list[ContextError],
        presentations: tuple[Presentation, ...] | None = None,
        guardrails: tuple[str, ...] = (),
        guardrail_codes: np.ndarray | None = None,
        shadows: tuple[tuple[str, tuple[str, ...], np.ndarray, np.ndarray], ...] = (),
        killswitch: bool = False,
        bundle_versions: pa.Array | None = None,
        flights: pa.Array | None = None,
    ) -> None:
        self.system = system
        self.bundle_version = bundle_version
        self.decision_ids = decision_ids
        self.units = units
        self.timestamps_ns = timestamps_ns
        self.outputs = outputs
        self.score_matrix = scores
        self.actions = actions
        self.action_codes = action_codes
        self.propensities = propensities
        self.reasons = reasons
        self.why_codes = why_codes
        self.rows = rows
        self.errors = errors
        self.presentations = presentations or tuple(_NO_PRESENTATION for _ in actions)
        self.guardrails = guardrails
        self.guardrail_codes = guardrail_codes
        #: per shadow: (bundle version, outputs, score matrix, action codes)
        self.shadows = shadows
        self.killswitch = killswitch
        #: per row, only when rows came from more than one bundle (flights); else None
        self.bundle_versions = bundle_versions
        #: per row flight name (null: production), only when a flight decided some row; else None
        self.flights = flights

    def __len__(self) -> int:
        return len(self.decision_ids)

    @property
    def action(self) -> np.ndarray:
        """The chosen action of each decision (array of str)."""
        return np.asarray(self.actions, dtype=object)[self.action_codes]

    @property
    def why(self) -> np.ndarray:
        return np.asarray(self.reasons, dtype=object)[self.why_codes]

    def scores(self, name: str) -> np.ndarray:
        """The column of score ``name``."""
        return self.score_matrix[:, self.outputs.index(name)]

    def __getitem__(self, i: int) -> Decision:
        if not -len(self) <= i < len(self):
            raise IndexError(f"decision {i} out of range for a batch of {len(self)}")
        if i < 0:
            i += len(self)
        row = self.score_matrix[i].tolist()
        code = int(self.action_codes[i])
        g = -1 if self.guardrail_codes is None else int(self.guardrail_codes[i])
        return Decision(
            self.decision_ids[i].as_py(),
            self.system,
            self.units[i].as_py(),
            int(self.timestamps_ns[i]),
            self.bundle_version if self.bundle_versions is None else self.bundle_versions[i].as_py(),
            dict(zip(self.outputs, row, strict=True)),
            self.actions[code],
            float(self.propensities[i]),
            self.reasons[int(self.why_codes[i])],
            self.presentations[code],
            None if g < 0 else self.guardrails[g],
            tuple(
                ShadowResult(version, dict(zip(outs, S[i].tolist(), strict=True)), self.actions[int(codes[i])])
                for version, outs, S, codes in self.shadows
            ),
            self.killswitch,
            None if self.flights is None else self.flights[i].as_py(),
        )

    def __iter__(self) -> Any:
        return iter(self.decisions())

    def counts(self) -> dict[tuple[str, str, str | None], int]:
        """How many decisions took each (action, bundle version, flight) — counted on the codes."""
        n = len(self)
        if n == 0:
            return {}
        k = len(self.actions)
        if self.bundle_versions is None and self.flights is None:
            got = np.bincount(self.action_codes, minlength=k)
            return {(self.actions[a], self.bundle_version, None): int(c) for a, c in enumerate(got.tolist()) if c}
        v = self.version_column().dictionary_encode()
        f = self.flight_column().dictionary_encode(null_encoding="encode")
        nv, nf = len(v.dictionary), len(f.dictionary)
        vi = v.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        fi = f.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        got = np.bincount((vi * nf + fi) * k + self.action_codes, minlength=nv * nf * k)
        vs, fs = v.dictionary.to_pylist(), f.dictionary.to_pylist()
        return {(self.actions[i % k], vs[i // k // nf], fs[i // k % nf]): int(c) for i, c in enumerate(got.tolist()) if c}

    def decisions(self) -> list[Decision]:
        """Every decision as a :class:`Decision` (each equal to ``batch[i]``), built column by
        column rather than row by row."""
        n = len(self)
        if n == 0:
            return []
        outs = self.outputs
        S = self.score_matrix.tolist()
        if len(outs) == 1:
            (o,) = outs
            scores = [{o: r[0]} for r in S]
        else:
            scores = [dict(zip(outs, r, strict=True)) for r in S]
        codes = self.action_codes.tolist()
        acts, pres, reasons = self.actions, self.presentations, self.reasons
        if self.guardrail_codes is None:
            guard: list[str | None] = [None] * n
        else:
            gnames = (*self.guardrails, None)
            guard = [gnames[g] for g in self.guardrail_codes.tolist()]  # -1 → None
        if self.shadows:
            per = [
                [ShadowResult(version, dict(zip(outs_s, r, strict=True)), acts[c])
                 for r, c in zip(Sm.tolist(), cs.tolist(), strict=True)]
                for version, outs_s, Sm, cs in self.shadows
            ]
            shadows: list[tuple[ShadowResult, ...]] = list(zip(*per, strict=True))
        else:
            shadows = [()] * n
        return list(map(
            Decision,
            self.decision_ids.to_pylist(),
            [self.system] * n,
            self.units.to_pylist(),
            np.asarray(self.timestamps_ns, dtype=np.int64).tolist(),
            [self.bundle_version] * n if self.bundle_versions is None else self.bundle_versions.to_pylist(),
            scores,
            [acts[c] for c in codes],
            np.asarray(self.propensities, dtype=np.float64).tolist(),
            [reasons[w] for w in self.why_codes.tolist()],
            [pres[c] for c in codes],
            guard,
            shadows,
            [self.killswitch] * n,
            [None] * n if self.flights is None else self.flights.to_pylist(),
        ))

    def to_arrow(self) -> pa.Table:
        """One row per decision; scores as ``score_<name>`` columns, action/why dictionary-encoded."""
        cols: dict[str, Any] = {
            "decision_id": self.decision_ids,
            "system": pa.array([self.system] * len(self), type=pa.string()),
            "unit": self.units,
            "timestamp_ns": pa.array(self.timestamps_ns, type=pa.int64()),
            "bundle_version": self.version_column(),
            "flight": self.flight_column(),
        }
        for j, name in enumerate(self.outputs):
            cols[f"score_{name}"] = pa.array(self.score_matrix[:, j], type=pa.float64())
        cols["action"] = pa.DictionaryArray.from_arrays(
            pa.array(self.action_codes.astype(np.int16)), pa.array(self.actions, type=pa.string())
        )
        cols["propensity"] = pa.array(self.propensities, type=pa.float64())
        cols["why"] = pa.DictionaryArray.from_arrays(
            pa.array(self.why_codes.astype(np.int16)), pa.array(self.reasons, type=pa.string())
        )
        if self.guardrail_codes is not None:
            names = pa.array([*self.guardrails, None], type=pa.string())
            g = np.where(self.guardrail_codes < 0, len(self.guardrails), self.guardrail_codes)
            cols["guardrail"] = names.take(pa.array(g))
        for version, outs, S, codes in self.shadows:
            for j, name in enumerate(outs):
                cols[f"shadow_{version}_score_{name}"] = pa.array(S[:, j], type=pa.float64())
            cols[f"shadow_{version}_action"] = pa.array(np.asarray(self.actions, dtype=object)[codes], type=pa.string())
        cols["killswitch"] = pa.array(np.full(len(self), self.killswitch))
        cols["row"] = pa.array(self.rows, type=pa.int64())
        return pa.table(cols)

    def version_column(self) -> pa.Array:
        """The bundle version of every row (Arrow strings)."""
        if self.bundle_versions is not None:
            return self.bundle_versions
        return pa.array([self.bundle_version], type=pa.string()).take(pa.array(np.zeros(len(self), dtype=np.int32)))

    def flight_column(self) -> pa.Array:
        """The flight of every row (Arrow strings, null: production)."""
        if self.flights is not None:
            return self.flights
        return pa.nulls(len(self), type=pa.string())

    def to_pylist(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self]

"""Guardrails: rules that override the intelligence, composed around it like middleware.

A guardrail has a *condition* on the context (a feature expression, computed by the same two
forms as features, so both decision paths agree) and an *override*: a mapping from the action the
layers inside it chose to the action it enforces. They compose the way middleware wraps an app:
a list is written **outermost first**, the system's guardrails wrap the bundle's, and the
outermost layer has the last word. Each decision records the rule that changed its action
(``Decision.guardrail``) and that rule's reason becomes the decision's ``why``.

==================  ============================================================================
guardrail           override
==================  ============================================================================
:class:`AllowList`  a listed key (e.g. domain) → always the allow action (hot fix for a false block)
:class:`BlockList`  a listed key → always the block action (a known attack, before a model learns it)
:class:`HardLimit`  where a condition holds, map actions (``{"block": "warn"}``: never block a
                    top-1,000 site)
:class:`FrequencyCap`  at most ``limit`` shows of an action per unit per window, then its
                    ``fallback`` (fatigue caps and rate caps). Caps keep state per unit
                    (:class:`CapStore`) and always apply last, outside every other layer.
==================  ============================================================================

Allow and block lists are data and may ship inside a bundle (``Bundle.build(...,
guardrails=[...])``) so a hot fix is a new bundle; hard limits and caps are policy, declared on
the :class:`~closedloop.System`.

Propensities stay exact: an override is a deterministic function of the chosen action, so the
probability of the action shown is the sum of the probabilities of every action the layers would
have turned into it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from closedloop.context import features as F
from closedloop.context.features import Expr, FeatureSet
from closedloop.context.schema import Columns, Str
from closedloop.errors import SpecError

__all__ = [
    "AllowList",
    "BlockList",
    "CapStore",
    "FrequencyCap",
    "Guardrail",
    "HardLimit",
    "InMemoryCapStore",
    "guardrail_from_dict",
]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise SpecError(f"The 'name' of {what} must be an identifier. Got {value!r} instead.")
    return value


class Guardrail(ABC):
    """Base class: a named rule with a context condition and an action override."""

    name: str
    reason: str

    @abstractmethod
    def condition(self) -> Expr | None:
        """Where the rule applies (a feature expression), or None for stateful caps."""

    @abstractmethod
    def overrides(self, actions: Sequence[str]) -> dict[str, str]:
        """Action chosen inside → action enforced, where the condition holds."""

    def validate(self, system: Any) -> None:
        """Refuse (SpecError) a rule that does not fit ``system``'s fields and actions."""
        for src, dst in self.overrides(system.actions).items():
            for a in (src, dst):
                if a not in system.actions:
                    raise SpecError(
                        f"Guardrail '{self.name}' must map declared actions {list(system.actions)}. Got {a!r} instead."
                    )
        cond = self.condition()
        if cond is not None:
            FeatureSet({"_guard": cond}, system.features.schema)

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _ListRule(Guardrail):
    kind = ""
    default_action = ""

    def __init__(
        self, name: str, field: str, values: Iterable[str], *, action: str | None = None,
        lowercase: bool = True, reason: str | None = None,
    ) -> None:
        owner = type(self).__name__
        self.name = _name(name, owner)
        if not isinstance(field, str) or not field:
            raise SpecError(f"The 'field' of {owner} '{name}' must be a context field name. Got {field!r} instead.")
        vals = list(values)
        if not all(isinstance(v, str) for v in vals):
            raise SpecError(f"The values of {owner} '{name}' must be strings. Got {vals!r} instead.")
        self.field = field
        self.lowercase = bool(lowercase)
        self.values = tuple(sorted({F.ascii_lower(v) if lowercase else v for v in vals}))
        self.action = action or self.default_action
        self.reason = reason or f"{field} on {owner} '{name}' → {self.action}"

    def condition(self) -> Expr:
        if not self.values:
            return F.const(0.0) > 1.0  # an empty list never applies
        key = F.col(self.field).lower() if self.lowercase else F.col(self.field)
        return key.isin(self.values)

    def overrides(self, actions: Sequence[str]) -> dict[str, str]:
        return {a: self.action for a in actions if a != self.action}

    def validate(self, system: Any) -> None:
        f = system.features.schema.by_name.get(self.field)
        if not isinstance(f, Str):
            raise SpecError(
                f"The 'field' of {type(self).__name__} '{self.name}' must be a text context field. Got {self.field!r}."
            )
        if self.action not in system.actions:
            raise SpecError(
                f"The action of {type(self).__name__} '{self.name}' must be a declared action "
                f"{list(system.actions)}. Got {self.action!r} instead."
            )
        super().validate(system)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "field": self.field, "values": list(self.values),
            "action": self.action, "lowercase": self.lowercase, "reason": self.reason,
        }


class AllowList(_ListRule):
    """Contexts whose ``field`` is listed always get ``action`` (default ``"allow"``)."""

    kind = "allow_list"
    default_action = "allow"


class BlockList(_ListRule):
    """Contexts whose ``field`` is listed always get ``action`` (default ``"block"``)."""

    kind = "block_list"
    default_action = "block"


class HardLimit(Guardrail):
    """Where ``when`` (a feature expression over the context) holds, map actions by ``overrides``.

    >>> HardLimit("top_sites", (F.col("popularity_rank") > 0) & (F.col("popularity_rank") <= 1000),
    ...           {"block": "warn"}, reason="never block a top-1,000 site")
    """

    def __init__(self, name: str, when: Expr, overrides: Mapping[str, str], *, reason: str | None = None) -> None:
        self.name = _name(name, "HardLimit")
        if not isinstance(when, Expr):
            raise SpecError(f"The 'when' of HardLimit '{name}' must be a feature expression. Got {when!r} instead.")
        if not isinstance(overrides, Mapping) or not overrides:
            raise SpecError(f"The 'overrides' of HardLimit '{name}' must map actions to actions. Got {overrides!r}.")
        self.when = when
        self._overrides = {str(k): str(v) for k, v in overrides.items()}
        self.reason = reason or f"hard limit '{name}'"

    def condition(self) -> Expr:
        return self.when

    def overrides(self, actions: Sequence[str]) -> dict[str, str]:
        return dict(self._overrides)

    def describe(self) -> dict[str, Any]:
        return {"kind": "hard_limit", "name": self.name, "when": self.when.describe(),
                "overrides": self._overrides, "reason": self.reason}


class FrequencyCap(Guardrail):
    """At most ``limit`` shows of ``action`` per unit per window ``per``; beyond it, ``fallback``.

    Fatigue is a cost too: "don't warn the same user more than 3 times a day" is
    ``FrequencyCap("warn", 3, timedelta(days=1), fallback="allow")``. The same rule caps rates
    ("at most 20 blocks per user per hour"). Windows are fixed buckets of the decision time
    (``timestamp // per``). Counts live in a :class:`CapStore` that the runtime is given.
    """

    def __init__(
        self, action: str, limit: int, per: timedelta, fallback: str, *, name: str | None = None,
        reason: str | None = None,
    ) -> None:
        if not isinstance(action, str) or not action:
            raise SpecError(f"The 'action' of FrequencyCap must be an action name. Got {action!r} instead.")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise SpecError(f"The 'limit' of FrequencyCap '{action}' must be an integer ≥ 0. Got {limit!r} instead.")
        if not isinstance(per, timedelta) or per <= timedelta(0):
            raise SpecError(f"The 'per' window of FrequencyCap '{action}' must be a positive timedelta. Got {per!r}.")
        if fallback == action:
            raise SpecError(f"The 'fallback' of FrequencyCap '{action}' must be another action. Got {fallback!r}.")
        self.action = action
        self.limit = limit
        self.per = per
        self.per_ns = int(per.total_seconds() * 1e9)
        self.fallback = fallback
        self.name = _name(name or f"cap_{action}", "FrequencyCap")
        self.reason = reason or f"{action} shown {limit} times per {per} to this unit → {fallback}"

    def condition(self) -> None:
        return None

    def overrides(self, actions: Sequence[str]) -> dict[str, str]:
        return {self.action: self.fallback}

    def describe(self) -> dict[str, Any]:
        return {"kind": "frequency_cap", "name": self.name, "action": self.action, "limit": self.limit,
                "per_seconds": self.per.total_seconds(), "fallback": self.fallback, "reason": self.reason}


def guardrail_from_dict(spec: Any) -> Guardrail:
    """Rebuild a bundle-shippable guardrail (allow or block list) from its description."""
    if not isinstance(spec, Mapping):
        raise SpecError(f"A saved guardrail must be a JSON object. Got {spec!r} instead.")
    kind = spec.get("kind")
    cls = {"allow_list": AllowList, "block_list": BlockList}.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SpecError(f"Bundles may carry allow and block lists only. Got a guardrail of kind {kind!r}.")
    try:
        return cls(spec["name"], spec["field"], spec["values"], action=spec["action"],
                   lowercase=spec["lowercase"], reason=spec["reason"])
    except KeyError as exc:
        raise SpecError(f"A saved {kind} lacks {exc}.") from exc


# ---------------------------------------------------------------------------------------------
# state for caps


class CapStore(ABC):
    """Counts of shows per (cap, window bucket, unit). The in-memory store serves one process;
    a shared store (:class:`~closedloop.experience.cap_redis.RedisCapStore`) serves replicas.

    :meth:`admit_batch` applies one cap to a batch of decisions in row order. Its default runs
    :meth:`count` and :meth:`add` row by row (exact for any store whose caps count
    independently); a store may override it with a vectorized form that gives the same answer
    (:class:`InMemoryCapStore` does)."""

    @abstractmethod
    def count(self, cap: int, bucket: int, unit: str) -> int: ...

    @abstractmethod
    def add(self, cap: int, bucket: int, unit: str, n: int = 1) -> None: ...

    def window(self, cap: int, per_ns: int) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Told each cap's window by the layer that uses the store (a store with TTLs uses it)."""

    def admit(self, cap: int, bucket: int, unit: str, want: bool, limit: int) -> bool:
        """One row of :meth:`admit_batch` (whether the unit is full; counted if wanted and not)."""
        full = self.count(cap, bucket, unit) >= limit
        if want and not full:
            self.add(cap, bucket, unit)
        return full

    def admit_batch(self, cap: int, buckets: np.ndarray, units: Any, want: np.ndarray, limit: int) -> np.ndarray:
        """One cap over a batch, row by row in order: row ``i`` sees the unit's count in its
        bucket (``buckets[i]``) and is *full* when it is ``>= limit``; a row that wants the
        capped action (``want[i]``) and is not full is counted (:meth:`add`). Returns the
        ``full`` flag of every row. ``units``: one string per row (a list or an Arrow array)."""
        us = units.to_pylist() if hasattr(units, "to_pylist") else list(units)
        bl = np.asarray(buckets, dtype=np.int64).tolist()
        wl = np.asarray(want, dtype=bool).tolist()
        full = np.zeros(len(bl), dtype=bool)
        for i, (bucket, unit, w) in enumerate(zip(bl, us, wl, strict=True)):
            f = self.count(cap, bucket, unit) >= limit
            full[i] = f
            if w and not f:
                self.add(cap, bucket, unit)
        return full


class InMemoryCapStore(CapStore):
    """Counts in a dict; buckets older than the newest one seen for a cap are dropped."""

    def __init__(self) -> None:
        self._counts: dict[int, tuple[int, dict[str, int]]] = {}

    def count(self, cap: int, bucket: int, unit: str) -> int:
        entry = self._counts.get(cap)
        if entry is None or entry[0] != bucket:
            return 0
        return entry[1].get(unit, 0)

    def add(self, cap: int, bucket: int, unit: str, n: int = 1) -> None:
        entry = self._counts.get(cap)
        if entry is None or bucket > entry[0]:
            entry = (bucket, {})
            self._counts[cap] = entry
        elif bucket < entry[0]:
            return  # a late decision for a closed window: its count no longer matters
        counts = entry[1]
        counts[unit] = counts.get(unit, 0) + n

    def admit_batch(self, cap: int, buckets: np.ndarray, units: Any, want: np.ndarray, limit: int) -> np.ndarray:
        """The row-by-row result of :meth:`CapStore.admit_batch`, vectorized when the batch lies
        in one bucket (a batch spanning a window boundary goes row by row). A row is full when
        the unit's stored count plus the rows before it in the batch that want the action
        reaches ``limit`` — each of those was counted unless it was full itself, and once a row
        is full every later row of the unit is."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(want)
        b = np.asarray(buckets, dtype=np.int64)
        if n == 0 or int(b.min()) != int(b.max()):
            return super().admit_batch(cap, buckets, units, want, limit)
        bucket = int(b[0])
        entry = self._counts.get(cap)
        if entry is not None and bucket < entry[0]:  # a closed window: counts read 0, adds are dropped
            return np.full(n, 0 >= limit, dtype=bool)
        arr = units if isinstance(units, pa.Array) else pa.array(list(units), pa.string())
        if arr.null_count:
            return super().admit_batch(cap, buckets, units, want, limit)
        enc = pc.dictionary_encode(arr.cast(pa.string()))
        code = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        uniq = enc.dictionary.to_pylist()
        if entry is not None and bucket == entry[0]:
            have = entry[1]
            base = np.fromiter((have.get(u, 0) for u in uniq), dtype=np.int64, count=len(uniq))
        else:
            base = np.zeros(len(uniq), dtype=np.int64)
        w = np.asarray(want, dtype=bool)
        # rows before each row, of its unit, that want the action (a stable sort groups units in row order)
        order = np.argsort(code, kind="stable")
        wo = w[order].astype(np.int64)
        run = np.cumsum(wo) - wo  # wanting rows before, over the sorted rows
        co = code[order]
        first = np.r_[True, co[1:] != co[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        before = np.empty(n, dtype=np.int64)
        before[order] = run - run[start]
        full = base[code] + before >= limit
        admitted = np.bincount(code[w & ~full], minlength=len(uniq))
        hit = np.flatnonzero(admitted)
        if hit.size:
            if entry is None or bucket > entry[0]:
                entry = (bucket, {})
                self._counts[cap] = entry
            counts = entry[1]
            for u, k in zip([uniq[i] for i in hit.tolist()], admitted[hit].tolist(), strict=True):
                counts[u] = counts.get(u, 0) + k
        return full


# ---------------------------------------------------------------------------------------------
# the compiled layer the runtime runs


class GuardLayer:
    """Guardrails bound to a system's actions: the single-decision and batch forms.

    ``rules`` are written outermost first; caps are applied after every other rule.
    """

    def __init__(self, system: Any, rules: Sequence[Guardrail], store: CapStore | None) -> None:
        actions = list(system.actions)
        self.actions = actions
        index = {a: i for i, a in enumerate(actions)}
        plain = [r for r in rules if not isinstance(r, FrequencyCap)]
        caps = [r for r in rules if isinstance(r, FrequencyCap)]
        for r in rules:
            r.validate(system)
        capped = {c.action for c in caps}
        for c in caps:
            if c.fallback in capped:
                raise SpecError(
                    f"FrequencyCap '{c.name}' falls back to '{c.fallback}', which is capped too; "
                    "a capped action's fallback must not be capped."
                )
        if len(capped) != len(caps):
            raise SpecError(f"Each action may have one FrequencyCap. Got {[c.action for c in caps]}.")
        inner_first = list(reversed(plain))
        self.names: tuple[str, ...] = tuple(r.name for r in inner_first) + tuple(c.name for c in caps)
        self.reasons: tuple[str, ...] = tuple(r.reason for r in inner_first) + tuple(c.reason for c in caps)
        k = len(actions)
        self._maps: list[list[int]] = []
        for r in inner_first:
            m = list(range(k))
            for src, dst in r.overrides(actions).items():
                m[index[src]] = index[dst]
            self._maps.append(m)
        conds: dict[str, Expr] = {}
        for i, r in enumerate(inner_first):
            cond = r.condition()
            if cond is None:  # only a cap (kept apart above) may apply without a condition
                raise SpecError(
                    f"The condition of Guardrail '{r.name}' must be a feature expression (only a "
                    f"FrequencyCap has none). Got None instead."
                )
            conds[f"g{i}"] = cond
        self._conds = FeatureSet(conds, system.features.schema) if inner_first else None
        self._caps = [(index[c.action], index[c.fallback], c.limit, c.per_ns) for c in caps]
        self._cap_of = {index[c.action]: i for i, c in enumerate(caps)}
        self.store = store if store is not None else InMemoryCapStore()
        for j, c in enumerate(caps):
            self.store.window(j, c.per_ns)
        self.has_caps = bool(caps)
        self._n_plain = len(inner_first)

    # -- one decision -----------------------------------------------------------------------
    def one(self, c: Any, chosen: int, probs: list[float] | None, unit: str, ts: int) -> tuple[int, int, float]:
        """(final action, index of the rule that changed it or -1, propensity of the final action)."""
        k = len(self.actions)
        targets = list(range(k)) if probs is not None else None
        b = chosen
        fired = -1
        if self._conds is not None:
            conds = self._conds.one(c)
            for r, on in enumerate(conds):
                if on != 0.0:
                    m = self._maps[r]
                    nb = m[b]
                    if nb != b:
                        fired = r
                        b = nb
                    if targets is not None:
                        targets = [m[t] for t in targets]
        if self._caps:
            full = {}  # each cap read and counted in one step (atomic on a shared store)
            for j, (act, fb, limit, per_ns) in enumerate(self._caps):
                full[act] = self.store.admit(j, ts // per_ns, unit, b == act, limit)
                if full[act] and b == act:
                    fired = self._n_plain + j
                    b = fb
            if targets is not None:
                targets = [self._caps[self._cap_of[t]][1] if full.get(t) else t for t in targets]
        if probs is None or targets is None:  # targets are tracked exactly when probs are given
            return b, fired, 1.0
        prop = 0.0
        for t, p in zip(targets, probs, strict=True):
            if t == b:
                prop = prop + p
        return b, fired, prop

    # -- a batch --------------------------------------------------------------------------------
    def batch(
        self, cols: Columns, chosen: np.ndarray, P: np.ndarray | None, units: Any, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(final actions, index of the rule that changed each or -1, propensities of the final
        actions) — what :meth:`one` gives row by row, in row order. ``units``: one string per
        row (a list or an Arrow string array), or None when no cap is declared."""
        n = chosen.shape[0]
        k = len(self.actions)
        b = chosen.astype(np.int64, copy=True)
        fired = np.full(n, -1, dtype=np.int64)
        T = np.tile(np.arange(k, dtype=np.int64), (n, 1)) if P is not None else None
        if self._conds is not None:
            C = self._conds.batch(cols)
            for r in range(self._n_plain):
                on = C[:, r] != 0.0
                m = np.asarray(self._maps[r], dtype=np.int64)
                nb = np.where(on, m[b], b)
                fired = np.where(nb != b, r, fired)
                b = nb
                if T is not None:
                    T = np.where(on[:, None], m[T], T)
        if self._caps:
            # Caps keep per-unit state in decision order, as decide() does: each cap counts on its
            # own (a capped action's fallback is never capped, so a row can hit one cap at most),
            # and the store applies one cap to the whole batch in row order (CapStore.admit_batch).
            if units is None:
                raise SpecError("Frequency caps need the unit of every decision.")
            if len(units) != n:
                raise SpecError(f"Frequency caps need one unit per decision ({n}). Got {len(units)} instead.")
            for j, (act, fb, limit, per_ns) in enumerate(self._caps):
                want = b == act
                full = self.store.admit_batch(j, ts // per_ns, units, want, limit)
                hit = want & full
                b = np.where(hit, fb, b)
                fired = np.where(hit, self._n_plain + j, fired)
                if T is not None:
                    T = np.where(full[:, None] & (T == act), fb, T)
        if P is None or T is None:  # T is tracked exactly when P is given
            return b, fired, np.ones(n, dtype=np.float64)
        prop = np.zeros(n, dtype=np.float64)
        for j in range(k):
            prop = prop + np.where(T[:, j] == b, P[:, j], 0.0)
        return b, fired, prop



"""Context schemas: typed fields, validated once at the edge.

A :class:`Schema` is a list of fields (:class:`Float`, :class:`Int`, :class:`Bool`, :class:`Str`).
It validates contexts two ways that accept and reject exactly the same values:

* one context (a mapping, e.g. parsed JSON) → a msgspec ``Struct`` instance, through
  ``msgspec.convert`` on the fast path (docs/performance.md). Only when msgspec refuses does a
  slow path run, to name the field, the rule and the value in a :class:`~closedloop.errors.ContextError`
  (or to apply a field's declared handling of NaN/inf);
* a columnar batch (an Arrow table/record batch or a mapping of arrays or lists) →
  :class:`Columns`: numpy arrays for numbers and booleans, Arrow string arrays for text, with
  every invalid row found and named.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, cast

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import BatchContextError, ContextError, SpecError

try:  # pragma: no cover - which branch runs depends on the build
    from closedloop import _kernels
except ImportError:  # pragma: no cover
    _kernels = None

__all__ = ["DEFAULT_MAX_LENGTH", "Bool", "Columns", "Field", "Float", "Int", "Schema", "Str"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_MAX_FLOAT = 1.7976931348623157e308
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_NONFINITE = ("reject", "default", "keep")
#: The most characters a string field holds when it declares no ``max_length`` of its own: a
#: context is decided, echoed and logged, so no string in it is unbounded.
DEFAULT_MAX_LENGTH = 8192
#: The largest ``max_length`` a field may declare (Arrow string arrays have 32-bit offsets).
_MAX_MAX_LENGTH = 2**31 - 1
# A batch reports at most this many individual row errors (all invalid rows are still masked).
_MAX_REPORTED_ERRORS = 100


def _fmt(x: float | int) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _check_name(name: Any, what: str = "Context field") -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise SpecError(
            f"{what} names must be Python identifiers that do not start with '_'. Got {name!r} instead."
        )
    return name


_SENSITIVE = (None, "hash", "drop")


@dataclass(frozen=True)
class Field:
    """Base of the field types. ``default`` is used when the field is absent or null.

    ``sensitive`` marks personal data: ``"hash"`` writes a keyed hash instead of the value to
    telemetry (equality kept: lookups and counts still work), ``"drop"`` writes nothing. Features
    computed from the field at decision time are logged as features either way.
    """

    name: str
    default: Any = MISSING
    description: str = ""
    sensitive: str | None = None

    kind: ClassVar[str] = "field"

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def rule(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def rule_for(self, value: Any) -> str:
        """The rule ``value`` breaks (:meth:`rule`, unless a field has a more precise one)."""
        return self.rule()

    def msgspec_type(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def check(self, value: Any) -> tuple[bool, Any]:
        """Validate one value in Python (the slow, explaining path). Returns (ok, cleaned)."""
        raise NotImplementedError  # pragma: no cover

    def describe(self) -> dict[str, Any]:
        """A canonical, JSON-ready description (used in fingerprints and ``bundle inspect``)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.default is not MISSING:
            out["default"] = self.default
        if self.sensitive is not None:
            out["sensitive"] = self.sensitive
        return out

    def _validate_default(self) -> None:
        if self.sensitive not in _SENSITIVE:
            raise SpecError(
                f"The 'sensitive' option of context field '{self.name}' must be one of {list(_SENSITIVE)}. "
                f"Got {self.sensitive!r} instead."
            )
        if self.default is MISSING:
            return
        ok, _ = self.check(self.default)
        if not ok:
            raise SpecError(
                f"The default of context field '{self.name}' must be {self.rule_for(self.default)}. "
                f"Got {self.default!r} instead."
            )


@dataclass(frozen=True)
class Float(Field):
    """A real number. ``ge``/``le`` bound it; ``nonfinite`` says what NaN and ±inf mean:
    ``"reject"`` (an error, the default), ``"default"`` (replaced by ``default``) or ``"keep"``
    (passed on to features and intelligence as is)."""

    ge: float | None = None
    le: float | None = None
    nonfinite: str = "reject"
    kind: ClassVar[str] = "float"

    def __post_init__(self) -> None:
        _check_name(self.name)
        for bound in ("ge", "le"):
            v = getattr(self, bound)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            ):
                raise SpecError(
                    f"The '{bound}' bound of context field '{self.name}' must be a finite number. "
                    f"Got {v!r} instead."
                )
        if self.ge is not None and self.le is not None and self.ge > self.le:
            raise SpecError(
                f"Context field '{self.name}' must have ge ≤ le. Got ge={self.ge!r}, le={self.le!r} instead."
            )
        if self.nonfinite not in _NONFINITE:
            raise SpecError(
                f"The 'nonfinite' option of context field '{self.name}' must be one of "
                f"{list(_NONFINITE)}. Got {self.nonfinite!r} instead."
            )
        if self.nonfinite == "default" and self.default is MISSING:
            raise SpecError(
                f"Context field '{self.name}' declares nonfinite='default' and so needs a default. "
                "Got no default instead."
            )
        self._validate_default()

    def rule(self) -> str:
        if self.ge is not None and self.le is not None:
            r = f"a number in [{_fmt(self.ge)}, {_fmt(self.le)}]"
        elif self.ge is not None:
            r = f"a number ≥ {_fmt(self.ge)}"
        elif self.le is not None:
            r = f"a number ≤ {_fmt(self.le)}"
        else:
            r = "a finite number" if self.nonfinite == "reject" else "a number"
        return r

    def msgspec_type(self) -> Any:
        ge, le = self.ge, self.le
        if self.nonfinite == "keep" and ge is None and le is None:
            return float
        # Bounds (even ±max float) make msgspec reject NaN and ±inf, so the fast path only ever
        # passes finite values; 'default' and bounded 'keep' fields take the slow path for them.
        if ge is None:
            ge = -_MAX_FLOAT
        if le is None:
            le = _MAX_FLOAT
        return Annotated[float, msgspec.Meta(ge=float(ge), le=float(le))]

    def check(self, value: Any) -> tuple[bool, Any]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        try:
            v = float(value)
        except OverflowError:
            return False, value
        if not math.isfinite(v):
            if self.nonfinite == "keep":
                return True, v
            if self.nonfinite == "default":
                return True, float(self.default)
            return False, value
        if self.ge is not None and not v >= self.ge:
            return False, value
        if self.le is not None and not v <= self.le:
            return False, value
        return True, v

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(ge=self.ge, le=self.le, nonfinite=self.nonfinite)
        return out


@dataclass(frozen=True)
class Int(Field):
    """A whole number (64-bit). Floats such as ``3.0`` are refused, as JSON integers are expected."""

    ge: int | None = None
    le: int | None = None
    kind: ClassVar[str] = "int"

    def __post_init__(self) -> None:
        _check_name(self.name)
        for bound in ("ge", "le"):
            v = getattr(self, bound)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise SpecError(
                    f"The '{bound}' bound of context field '{self.name}' must be an integer. "
                    f"Got {v!r} instead."
                )
        if self.ge is not None and self.le is not None and self.ge > self.le:
            raise SpecError(
                f"Context field '{self.name}' must have ge ≤ le. Got ge={self.ge!r}, le={self.le!r} instead."
            )
        self._validate_default()

    @property
    def _lo(self) -> int:
        return _INT64_MIN if self.ge is None else max(self.ge, _INT64_MIN)

    @property
    def _hi(self) -> int:
        return _INT64_MAX if self.le is None else min(self.le, _INT64_MAX)

    def rule(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"an integer in [{self.ge}, {self.le}]"
        if self.ge is not None:
            return f"an integer ≥ {self.ge}"
        if self.le is not None:
            return f"an integer ≤ {self.le}"
        return "a 64-bit integer"

    def msgspec_type(self) -> Any:
        return Annotated[int, msgspec.Meta(ge=self._lo, le=self._hi)]

    def check(self, value: Any) -> tuple[bool, Any]:
        if isinstance(value, bool) or not isinstance(value, int):
            return False, value
        if not self._lo <= value <= self._hi:
            return False, value
        return True, int(value)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(ge=self.ge, le=self.le)
        return out


@dataclass(frozen=True)
class Bool(Field):
    """``true`` or ``false`` (integers are refused)."""

    kind: ClassVar[str] = "bool"

    def __post_init__(self) -> None:
        _check_name(self.name)
        self._validate_default()

    def rule(self) -> str:
        return "true or false"

    def msgspec_type(self) -> Any:
        return bool

    def check(self, value: Any) -> tuple[bool, Any]:
        return (True, value) if isinstance(value, bool) else (False, value)


@dataclass(frozen=True)
class Str(Field):
    """Text. ``choices`` restricts it to a set of values; ``max_length`` bounds its length in
    characters (an integer ≥ 1; when not declared, :data:`DEFAULT_MAX_LENGTH`, 8,192: every
    string field is bounded — a 7 MB value is refused, not decided, echoed and logged)."""

    choices: tuple[str, ...] | None = None
    max_length: int | None = None
    kind: ClassVar[str] = "str"

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.choices is not None:
            choices = tuple(self.choices)
            if not choices or not all(isinstance(c, str) for c in choices):
                raise SpecError(
                    f"The 'choices' of context field '{self.name}' must be a non-empty list of "
                    f"strings. Got {self.choices!r} instead."
                )
            if len(set(choices)) != len(choices):
                raise SpecError(
                    f"The 'choices' of context field '{self.name}' must be unique. Got {choices!r} instead."
                )
            object.__setattr__(self, "choices", choices)
        if self.max_length is not None and (
            isinstance(self.max_length, bool)
            or not isinstance(self.max_length, int)
            or not 1 <= self.max_length <= _MAX_MAX_LENGTH
        ):
            raise SpecError(
                f"The 'max_length' of context field '{self.name}' must be an integer in "
                f"[1, {_MAX_MAX_LENGTH}]. Got {self.max_length!r} instead."
            )
        self._validate_default()

    @property
    def limit(self) -> int:
        """The most characters a value may have: ``max_length``, else :data:`DEFAULT_MAX_LENGTH`."""
        return DEFAULT_MAX_LENGTH if self.max_length is None else self.max_length

    def rule(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.max_length is not None:
            return f"a string of at most {self.max_length} characters"
        return "a string"

    def rule_for(self, value: Any) -> str:
        if self.choices is None and isinstance(value, str) and len(value) > self.limit:
            return f"a string of at most {self.limit} characters"
        return self.rule()

    def msgspec_type(self) -> Any:
        if self.choices is not None:
            return Literal[self.choices]
        return Annotated[str, msgspec.Meta(max_length=self.limit)]

    def check(self, value: Any) -> tuple[bool, Any]:
        if not isinstance(value, str):
            return False, value
        if self.choices is not None and value not in self.choices:
            return False, value
        if len(value) > self.limit:
            return False, value
        return True, value

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            choices=list(self.choices) if self.choices else None, max_length=self.max_length
        )
        return out


class Columns:
    """A validated columnar batch: numpy arrays (float64 / int64 / bool) and Arrow string arrays.

    ``rows`` maps each row back to its index in the input (rows that failed validation are
    dropped when the batch was validated with ``errors="skip"``); ``errors`` lists those failures.

    Columns built by :meth:`Schema.columns` from contexts validated one by one keep them in
    ``contexts`` (one struct per row) and build each column the first time it is read, so a batch
    that only reads some fields (features, guardrails) converts only those.
    """

    __slots__ = ("_data", "_fields", "_held", "_lists", "contexts", "errors", "n", "rows")

    def __init__(
        self,
        data: dict[str, Any],
        n: int,
        rows: np.ndarray,
        errors: list[ContextError],
        *,
        contexts: list[Any] | None = None,
        fields: dict[str, Field] | None = None,
    ) -> None:
        self._data = data
        self._lists: dict[str, list[Any]] = {}
        self.n = n
        self.rows = rows
        self.errors = errors
        #: the validated context structs, one per row, when the columns were built from them
        self.contexts = contexts
        self._fields = fields  # every field (name → Field) when columns are built from contexts
        self._held: set[str] = set()  # columns built from the contexts that hold exactly their values

    def __getitem__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            if self._fields is None or name not in self._fields:
                raise
        return self._build(name)

    def _build(self, name: str) -> Any:
        """Column ``name`` from the contexts (each already validated: no check repeated)."""
        fields, contexts = self._fields, self.contexts
        if fields is None or contexts is None:  # only columns built from contexts have fields
            raise KeyError(name)
        f = fields[name]
        col: Any = _gather(f, contexts, self.n, exact=True)
        if col is not None:
            self._held.add(name)
        else:
            col = _gather(f, contexts, self.n)
        if col is not None:
            self._data[name] = col
            return col
        values = self.pylist(name)
        if isinstance(f, Str):
            col = pa.array(values, type=pa.string())
        elif isinstance(f, Bool):
            col = np.array(values, dtype=bool)
        elif isinstance(f, Int):
            col = np.array(values, dtype=np.int64)
        else:
            col = np.array(values, dtype=np.float64)
        self._data[name] = col
        return col

    def held(self, name: str) -> Any:
        """Column ``name`` if it was built already from the contexts and holds exactly their values
        (a Float field's ints are not turned into floats in it), else None. Telemetry's typed
        contexts reuse it rather than gather the field again."""
        return self._data.get(name) if name in self._held else None

    def __contains__(self, name: object) -> bool:
        return name in self._data or (self._fields is not None and name in self._fields)

    def names(self) -> list[str]:
        return list(self._fields) if self._fields is not None else list(self._data)

    def pylist(self, name: str) -> list[Any]:
        """The column as a Python list (cached: several features may need it)."""
        out = self._lists.get(name)
        if out is None:
            col = self._data.get(name)
            contexts = self.contexts
            if col is None and self._fields is not None and name in self._fields and contexts is not None:
                out = list(map(operator.attrgetter(name), contexts))
            else:
                col = self._data[name]
                out = col.to_pylist() if isinstance(col, pa.Array) else col.tolist()
            self._lists[name] = out
        return out

    def take(self, indices: np.ndarray) -> Columns:
        """The rows at ``indices`` (positions in this batch), as a new :class:`Columns`."""
        idx = np.asarray(indices, dtype=np.int64)
        pa_idx = pa.array(idx)
        data = {
            k: (v.take(pa_idx) if isinstance(v, pa.Array) else v[idx]) for k, v in self._data.items()
        }
        contexts = None
        if self.contexts is not None:
            ctx = self.contexts
            contexts = [ctx[i] for i in idx.tolist()]
        return Columns(data, int(idx.shape[0]), self.rows[idx], [], contexts=contexts, fields=self._fields)

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a plain dict (for error reports and tests, not for the hot path)."""
        return {k: self.pylist(k)[i] for k in self.names()}


def _gather(f: Field, contexts: list[Any], n: int, exact: bool = False) -> Any:
    """Field ``f`` of validated context structs as a column, in one compiled loop (None: the
    compiled module is missing or a value is not of the field's type; the caller takes the
    general path, which gives the same column). ``exact`` refuses (None) a Float field holding
    an int, which the column would turn into a float: telemetry's typed contexts must give back
    the very values the rows hold."""
    if _kernels is None or not n:
        return None
    member = type(contexts[0]).__dict__.get(f.name)
    try:
        if isinstance(f, Str):
            offsets, data = _kernels.gather_str(contexts, member)
            return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
        if isinstance(f, Bool):
            out = np.empty(n, dtype=bool)
            _kernels.gather_into(contexts, member, "b", out)
        elif isinstance(f, Int):
            out = np.empty(n, dtype=np.int64)
            _kernels.gather_into(contexts, member, "i", out)
        else:
            out = np.empty(n, dtype=np.float64)
            _kernels.gather_into(contexts, member, "F" if exact else "f", out)
        return out
    except (TypeError, ValueError, OverflowError):
        return None


def concat_columns(parts: Sequence[Columns]) -> Columns:
    """The rows of ``parts`` (validated batches of one schema, no rows dropped), one after
    another, as one :class:`Columns`."""
    if not parts:
        raise SpecError("concat_columns needs at least one Columns. Got none instead.")
    full = [p for p in parts if p.n]  # an empty batch may hold untyped empty lists
    if len(full) <= 1:
        return (full or list(parts))[0]
    parts = full
    names = parts[0].names()
    data: dict[str, Any] = {}
    for k in names:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], pa.Array):
            data[k] = pa.concat_arrays([v if v.type == vals[0].type else v.cast(vals[0].type) for v in vals])
        else:
            data[k] = np.concatenate(vals)
    n = sum(p.n for p in parts)
    return Columns(data, n, np.arange(n, dtype=np.int64), [])


class Schema:
    """A versioned list of context fields.

    Parameters
    ----------
    fields:
        The fields, in declaration order.
    version:
        The schema version; recorded in every bundle and checked when one is loaded.
    extra:
        ``"ignore"`` (default) drops undeclared keys; ``"forbid"`` refuses them.
    """

    def __init__(self, fields: Sequence[Field], *, version: str = "1", extra: str = "ignore") -> None:
        fields = tuple(fields)
        if not fields:
            raise SpecError("A context schema must declare at least one field. Got none instead.")
        for f in fields:
            if not isinstance(f, Field):
                raise SpecError(
                    f"Context fields must be closedloop.Float/Int/Bool/Str. Got {f!r} instead."
                )
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"Context field names must be unique. Got duplicates {dupes} instead.")
        if not isinstance(version, str) or not version:
            raise SpecError(f"The schema 'version' must be a non-empty string. Got {version!r} instead.")
        if extra not in ("ignore", "forbid"):
            raise SpecError(
                f"The schema 'extra' option must be 'ignore' or 'forbid'. Got {extra!r} instead."
            )
        self.fields = fields
        self.version = version
        self.extra = extra
        self.by_name: dict[str, Field] = {f.name: f for f in fields}
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for f in fields:
            if f.required:
                spec.append((f.name, f.msgspec_type()))
            else:
                spec.append((f.name, f.msgspec_type(), f.default))
        self.struct: type[msgspec.Struct] = msgspec.defstruct(
            "Context",
            spec,
            kw_only=True,
            forbid_unknown_fields=(extra == "forbid"),
            # Scalars only (str, int, float, bool): a context can never be part of a reference
            # cycle, so the garbage collector need not track (and scan) the thousands a batch holds.
            gc=False,
        )
        self._convert = msgspec.convert
        self._json_decoder = msgspec.json.Decoder(self.struct)

    # -- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "extra": self.extra,
            "fields": [f.describe() for f in self.fields],
        }

    def __repr__(self) -> str:
        return f"Schema(version={self.version!r}, fields={[f.name for f in self.fields]})"

    # -- one context ---------------------------------------------------------------------------
    def validate(self, context: Any) -> Any:
        """Validate one context (a mapping or an instance of :attr:`struct`) → struct instance."""
        if type(context) is self.struct:
            return context
        try:
            return self._convert(context, self.struct)
        except msgspec.ValidationError:
            return self._validate_slow(context)

    def decode_json(self, data: bytes | str) -> Any:
        """Parse and validate one JSON object in a single step."""
        try:
            return self._json_decoder.decode(data)
        except msgspec.ValidationError:
            return self._validate_slow(msgspec.json.decode(data))

    def _validate_slow(self, context: Any, row: int | None = None) -> Any:
        """Explain a refusal (or apply declared NaN/inf handling) in plain Python."""
        if not isinstance(context, Mapping):
            raise ContextError("<context>", "a JSON object (a mapping of field names)", context, row)
        cleaned: dict[str, Any] = {}
        for f in self.fields:
            value = context.get(f.name, MISSING)
            if value is MISSING or value is None:
                if f.required:
                    if value is None:
                        raise ContextError(f.name, f.rule(), None, row)
                    raise ContextError(f.name, "present", MISSING, row)
                cleaned[f.name] = f.default
                continue
            ok, v = f.check(value)
            if not ok:
                raise ContextError(f.name, f.rule_for(value), value, row)
            cleaned[f.name] = v
        if self.extra == "forbid":
            for key in context:
                if key not in self.by_name:
                    raise ContextError(str(key), "a declared field (this schema forbids others)", context[key], row)
        return self.struct(**cleaned)

    # -- a columnar batch -----------------------------------------------------------------------
    def validate_batch(self, batch: Any, *, errors: str = "raise") -> Columns:
        """Validate a columnar batch → :class:`Columns`.

        ``errors="raise"`` raises :class:`BatchContextError` listing every invalid row (up to 100
        named, all counted); ``errors="skip"`` drops invalid rows and records them in
        ``Columns.errors`` and ``Columns.rows``.
        """
        if errors not in ("raise", "skip"):
            raise SpecError(f"The 'errors' option must be 'raise' or 'skip'. Got {errors!r} instead.")
        raw, n = _as_column_mapping(batch)
        if self.extra == "forbid":
            unknown = [k for k in raw if k not in self.by_name]
            if unknown:
                raise ContextError(unknown[0], "a declared field (this schema forbids others)", "<column>")
        bad = np.zeros(n, dtype=bool)
        found: list[ContextError] = []
        data: dict[str, Any] = {}
        for f in self.fields:
            col = raw.get(f.name, MISSING)
            data[f.name] = _validate_column(f, col, n, bad, found)
        if found:
            found.sort(key=lambda e: (e.row if e.row is not None else -1))
            if errors == "raise":
                raise BatchContextError(found)
        rows = np.arange(n, dtype=np.int64)
        if bad.any():
            keep = ~bad
            rows = rows[keep]
            for name, col in data.items():
                if isinstance(col, pa.Array):
                    data[name] = col.filter(pa.array(keep))
                else:
                    data[name] = col[keep]
        return Columns(data, int(rows.shape[0]), rows, found)

    def columns(self, contexts: Sequence[Any]) -> Columns:
        """:class:`Columns` of contexts validated one by one (instances of :attr:`struct`, as
        :meth:`validate` and :meth:`decode_json` return; anything else is validated here).

        Nothing is validated twice: each column is built from the contexts the first time it is
        read, with the values :meth:`validate_batch` gives for the same rows. The contexts stay
        in ``Columns.contexts`` (telemetry writes them as the single path does)."""
        st = self.struct
        ctxs = list(contexts)
        if not all(type(c) is st for c in ctxs):
            ctxs = [c if type(c) is st else self._validate_row(c, i) for i, c in enumerate(ctxs)]
        n = len(ctxs)
        return Columns({}, n, np.arange(n, dtype=np.int64), [], contexts=ctxs, fields=self.by_name)

    def _validate_row(self, context: Any, row: int) -> Any:
        try:
            return self.validate(context)
        except ContextError as e:
            raise BatchContextError([ContextError(e.field, e.rule, e.value, row)]) from None


# ---------------------------------------------------------------------------------------------
# column validation helpers


def _as_column_mapping(batch: Any) -> tuple[dict[str, Any], int]:
    if isinstance(batch, pa.Table | pa.RecordBatch):
        cols = {
            name: _one_array(c) for name, c in zip(batch.column_names, batch.columns, strict=True)
        }
        return cols, batch.num_rows
    if not isinstance(batch, Mapping):
        raise ContextError(
            "<batch>", "an Arrow table or a mapping of column names to arrays", type(batch).__name__
        )
    n: int | None = None
    cols = {}
    for name, col in batch.items():
        col = _one_array(col)
        if not isinstance(col, pa.Array | np.ndarray):
            if isinstance(col, str | bytes) or not isinstance(col, Sequence):
                raise ContextError(str(name), "a column (an array or a list)", col)
            col = list(col)
        length = len(col)
        if n is None:
            n = length
        elif length != n:
            raise ContextError(str(name), f"a column of {n} rows like the others", f"{length} rows")
        cols[name] = col
    if n is None:
        raise ContextError("<batch>", "a non-empty mapping of columns", batch)
    return cols, n


def _one_array(col: Any) -> Any:
    """A chunked column as one array (without copying when there is one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks()
    return col


def _record(
    f: Field, mask: np.ndarray, values: Any, bad: np.ndarray, found: list[ContextError]
) -> None:
    """Mark rows in ``mask`` as invalid for field ``f`` and record (some of) them."""
    idx = np.flatnonzero(mask & ~bad)
    bad |= mask
    for i in idx[: max(0, _MAX_REPORTED_ERRORS - len(found))]:
        v = values[int(i)] if values is not None else None
        if isinstance(v, np.generic):
            v = v.item()
        rule = f.rule_for(v) if v is not MISSING else "present"
        found.append(ContextError(f.name, rule, v, int(i)))


def _validate_column(
    f: Field, col: Any, n: int, bad: np.ndarray, found: list[ContextError]
) -> Any:
    if col is MISSING:
        if f.required:
            _record(f, np.ones(n, dtype=bool), [MISSING] * n, bad, found)
            return _filler(f, n)
        return _constant(f, f.default, n)
    if isinstance(f, Str):
        return _validate_str(f, col, n, bad, found)
    return _validate_number(f, col, n, bad, found)


def _filler(f: Field, n: int) -> Any:
    """A harmless placeholder column for a field whose rows are all invalid."""
    if isinstance(f, Str):
        return pa.array([f.choices[0] if f.choices else ""] * n, type=pa.string())
    if isinstance(f, Bool):
        return np.zeros(n, dtype=bool)
    if isinstance(f, Int):
        return np.full(n, f._lo if f._lo > 0 else 0, dtype=np.int64)
    lo = f.ge if isinstance(f, Float) and f.ge is not None else 0.0
    return np.full(n, lo, dtype=np.float64)


def _constant(f: Field, value: Any, n: int) -> Any:
    if isinstance(f, Str):
        return pa.array([value] * n, type=pa.string())
    if isinstance(f, Bool):
        return np.full(n, bool(value), dtype=bool)
    if isinstance(f, Int):
        return np.full(n, int(value), dtype=np.int64)
    return np.full(n, float(value), dtype=np.float64)


def _python_column(f: Field, values: list[Any], n: int, bad: np.ndarray, found: list[ContextError]) -> Any:
    """The exact, element-by-element path (object arrays, mixed lists)."""
    out: list[Any] = []
    mask = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            if f.required:
                mask[i] = True
                out.append(None)
            else:
                out.append(f.default)
            continue
        ok, cleaned = f.check(v)
        if not ok:
            mask[i] = True
            out.append(None)
        else:
            out.append(cleaned)
    if mask.any():
        _record(f, mask, values, bad, found)
    filler = _filler(f, 1)
    fill = filler[0].as_py() if isinstance(filler, pa.Array) else filler[0].item()
    out = [fill if m else v for v, m in zip(out, mask, strict=True)]
    if isinstance(f, Str):
        return pa.array(out, type=pa.string())
    if isinstance(f, Bool):
        return np.array(out, dtype=bool)
    if isinstance(f, Int):
        return np.array(out, dtype=np.int64)
    return np.array(out, dtype=np.float64)


def _validate_str(f: Str, col: Any, n: int, bad: np.ndarray, found: list[ContextError]) -> Any:
    if isinstance(col, np.ndarray):
        col = col.tolist()
    if isinstance(col, list):
        try:
            col = pa.array(col, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return _python_column(f, col, n, bad, found)
    if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        col = col.cast(pa.string())
    if not pa.types.is_string(col.type):
        if pa.types.is_null(col.type):
            return _python_column(f, [None] * n, n, bad, found)
        _record(f, np.ones(n, dtype=bool), col.to_pylist(), bad, found)
        return _filler(f, n)
    if col.null_count:
        if f.required:
            _record(f, col.is_null().to_numpy(zero_copy_only=False), col.to_pylist(), bad, found)
            col = pc.fill_null(col, _filler(f, 1)[0])
        else:
            col = pc.fill_null(col, f.default)
    mask = None
    if f.choices is not None:
        mask = ~pc.is_in(col, value_set=pa.array(f.choices, type=pa.string())).to_numpy(
            zero_copy_only=False
        )
    if f.choices is None:
        # Bytes ≥ characters, so only a column with a long byte string needs counting characters
        # (and a column of fewer bytes in all than the limit needs no look at all).
        limit = f.limit
        if col.nbytes > limit and (pc.max(pc.binary_length(col)).as_py() or 0) > limit:
            too_long = pc.greater(pc.utf8_length(col), limit).to_numpy(zero_copy_only=False)
            mask = too_long if mask is None else (mask | too_long)
    if mask is not None and mask.any():
        _record(f, mask, col.to_pylist(), bad, found)
    return col


def _validate_number(f: Field, col: Any, n: int, bad: np.ndarray, found: list[ContextError]) -> Any:
    nulls = None
    if isinstance(col, list):
        values = col
        try:
            col = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            return _python_column(f, values, n, bad, found)
        # Arrow infers [1.0, True] as doubles; one-context validation refuses a bool for a number.
        if pa.types.is_floating(col.type) and any(v is True or v is False for v in values):
            return _python_column(f, values, n, bad, found)
    if isinstance(col, pa.Array):
        t = col.type
        if pa.types.is_null(t):
            return _python_column(f, [None] * n, n, bad, found)
        if col.null_count:
            nulls = col.is_null().to_numpy(zero_copy_only=False)
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            return _python_column(f, col.to_pylist(), n, bad, found)
        if col.null_count:
            col = pc.fill_null(col, pa.scalar(False if pa.types.is_boolean(t) else 0, type=t))
        col = col.to_numpy(zero_copy_only=False)
    if not isinstance(col, np.ndarray):  # pragma: no cover - guarded above
        return _python_column(f, list(col), n, bad, found)
    kind = col.dtype.kind
    if kind == "O":
        return _python_column(f, col.tolist(), n, bad, found)
    if isinstance(f, Bool):
        if kind != "b":
            _record(f, np.ones(n, dtype=bool), col, bad, found)
            return _filler(f, n)
        out = col.astype(bool, copy=False)
    elif isinstance(f, Int):
        if kind not in "iu":
            _record(f, np.ones(n, dtype=bool), col, bad, found)
            return _filler(f, n)
        if kind == "u" and col.dtype.itemsize == 8:
            over = col > np.uint64(_INT64_MAX)
            if over.any():
                _record(f, over, col, bad, found)
                col = np.where(over, 0, col)
        out = col.astype(np.int64, copy=False)
        mask = np.zeros(n, dtype=bool)
        if f.ge is not None:
            mask |= out < f.ge
        if f.le is not None:
            mask |= out > f.le
        if mask.any():
            _record(f, mask, out, bad, found)
    else:
        ff = cast(Float, f)  # the numeric fields are Bool, Int (above) and Float
        if kind not in "iuf":
            _record(f, np.ones(n, dtype=bool), col, bad, found)
            return _filler(f, n)
        out = col.astype(np.float64, copy=False)
        finite = np.isfinite(out)
        if not finite.all():
            if ff.nonfinite == "default":
                out = np.where(finite, out, float(ff.default))
            elif ff.nonfinite == "reject":
                _record(f, ~finite, out, bad, found)
        mask = np.zeros(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            if ff.ge is not None:
                mask |= out < ff.ge
            if ff.le is not None:
                mask |= out > ff.le
        mask &= np.isfinite(out)  # kept NaN/inf skip the bounds, as on the one-context path
        if mask.any():
            _record(f, mask, out, bad, found)
    if nulls is not None and nulls.any():
        if f.required:
            _record(f, nulls, [None] * n, bad, found)
        else:
            out = out.copy()
            out[nulls] = f.default
    return out

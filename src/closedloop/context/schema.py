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

This module holds :class:`Schema` and is the import surface of the schema's parts: the fields
(:mod:`closedloop.context.fields`), :class:`Columns` and ``concat_columns``
(:mod:`closedloop.context.columns`) and the column-by-column validation of a batch
(:mod:`closedloop.context.columnar`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from closedloop.context.columnar import _as_column_mapping, _validate_column
from closedloop.context.columnar import _one_array as _one_array
from closedloop.context.columns import Columns
from closedloop.context.columns import _gather as _gather
from closedloop.context.columns import concat_columns as concat_columns
from closedloop.context.fields import DEFAULT_MAX_LENGTH, MISSING, Bool, Field, Float, Int, Str, valid_text
from closedloop.errors import BatchContextError, ContextError, SpecError

__all__ = ["DEFAULT_MAX_LENGTH", "Bool", "Columns", "Field", "Float", "Int", "Schema", "Str"]


def _ascii(values: tuple[Any, ...]) -> bool:
    """Whether these text values (None for an absent optional field) are all text UTF-8 can hold:
    one joined ASCII check in C, the closer look only for non-ASCII text."""
    try:
        joined = "".join(values)
    except TypeError:  # an optional field left None
        joined = "".join(v for v in values if v is not None)
    return joined.isascii() or valid_text(joined)


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
        # free text msgspec passes with a lone surrogate in it (JSON cannot carry one; a Python str can)
        text = [f.name for f in fields if isinstance(f, Str) and f.choices is None]
        self._text = operator.attrgetter(*text, text[0]) if text else None  # ≥ 2 names: always a tuple

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
            out = self._convert(context, self.struct)
        except msgspec.ValidationError:
            return self._validate_slow(context)
        if self._text is not None and not _ascii(self._text(out)):
            return self._validate_slow(context)  # a lone surrogate: names the field and the rule
        return out

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

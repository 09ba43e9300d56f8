"""Context fields: :class:`Float`, :class:`Int`, :class:`Bool` and :class:`Str`, each with its rule.

A field knows its msgspec type (the fast path of one-context validation), how to check one value in
plain Python (:meth:`Field.check`, the explaining path) and how to describe itself. Schemas
(:mod:`closedloop.context.schema`) are lists of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from closedloop.errors import SpecError

__all__ = ["DEFAULT_MAX_LENGTH", "MISSING", "Bool", "Field", "Float", "Int", "Str"]


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

def valid_text(s: str) -> bool:
    """Whether ``s`` is text UTF-8 can hold — no lone surrogate, which a Python ``str`` can carry
    but telemetry, Arrow and JSON cannot write (checked only for non-ASCII text: one C call)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: The rule a text value with a lone surrogate breaks.
TEXT_RULE = "text UTF-8 can encode (no lone surrogate)"


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
        if isinstance(value, str) and not valid_text(value):
            return TEXT_RULE
        if self.choices is None and isinstance(value, str) and len(value) > self.limit:
            return f"a string of at most {self.limit} characters"
        return self.rule()

    def msgspec_type(self) -> Any:
        if self.choices is not None:
            return Literal[self.choices]
        return Annotated[str, msgspec.Meta(max_length=self.limit)]

    def check(self, value: Any) -> tuple[bool, Any]:
        if not isinstance(value, str) or not valid_text(value):
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

"""The closedloop exception hierarchy.

Every error the library raises on purpose is a :class:`ClosedLoopError`. Messages name the
thing, the rule and the value, in the style of scikit-learn's parameter validation::

    ClosedLoopError
    ├── SpecError              a System, field, feature, action, threshold, cost … is declared wrongly
    ├── ContextError           one context failed validation (field, rule, value)
    │   ├── BatchContextError  rows of a columnar batch failed validation (all of them listed)
    │   └── OutcomeError       an outcome failed validation (field, rule, value)
    ├── FeatureError           a feature could not be computed / its two forms disagree
    ├── IntelligenceError      a model or heuristic is malformed or was given the wrong input
    ├── EvaluationError        an evaluation metric's input is invalid: .param .rule .value
    ├── BundleError            a bundle failed a named check when saved, loaded or verified
    ├── ProjectError           a project home or scaffold target is unusable
    │   └── LockHeldError      another process runs the home's orchestration cycle: .holder
    ├── DatasetError           a dataset cannot be built or loaded
    ├── ServiceError           the decision service answered an error (closedloop.Client): .status .problem
    ├── TransportError         the telemetry log (closedloop.telemetry.transport) refused or could not be reached
    │   └── TransportUnavailable  the log is unreachable now: nothing was acknowledged, retry later
    ├── AuthError              a credential is missing, unknown, or lacks the role an operation needs
    ├── RegistryError          a registry operation was refused (unknown bundle, bad state …)
    │   ├── ConflictError      the deployment changed meanwhile (a racing change won)
    │   └── SanityCheckError   a bundle failed a named sanity check before taking traffic
    └── ConformanceError       a component broke the documented contract (closedloop.runtime.checks)

``ContextError`` and ``SpecError`` are also ``ValueError`` subclasses so that generic callers that
catch ``ValueError`` for bad input keep working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "BatchContextError",
    "BundleError",
    "ClosedLoopError",
    "ConformanceError",
    "ContextError",
    "DatasetError",
    "EvaluationError",
    "FeatureError",
    "IntelligenceError",
    "LockHeldError",
    "OutcomeError",
    "ServiceError",
    "ProjectError",
    "RegistryError",
    "ConflictError",
    "SanityCheckError",
    "SpecError",
    "TransportError",
    "TransportUnavailable",
]


#: A string (or bytes) value longer than this is kept, in an error, as its start and its length.
_CLIP_OVER = 80
_CLIP_KEEP = 40


def clip_value(value: Any) -> Any:
    """``value`` as an error keeps and shows it: unchanged when small; a string or bytes longer
    than 80 characters as its first 40 and its length (``'uuuu…' (7340032 characters)``); a
    container whose ``repr`` is longer than 80 characters as a clipped ``repr``; an integer of
    more than 256 bits as its size. A refused 7 MB value is never echoed back whole (in a
    message, a problem-details body, a log line)."""
    if isinstance(value, str):
        if len(value) <= _CLIP_OVER:
            return value
        return f"{value[:_CLIP_KEEP]}… ({len(value)} characters)"
    if isinstance(value, bool | float | type(None)):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 256 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) <= _CLIP_OVER:
            return value
        return f"{bytes(value[:_CLIP_KEEP])!r}… ({len(value)} bytes)"
    if isinstance(value, list | tuple | dict | set | frozenset):
        import reprlib

        r = reprlib.Repr()
        r.maxstring = r.maxother = _CLIP_KEEP
        r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 8
        r.maxlevel = 3
        short = r.repr(value)
        if short.count("...") == 0 and len(short) <= _CLIP_OVER:
            return value  # small and shown whole by reprlib: keep the object
        return f"{short[:_CLIP_OVER]} ({type(value).__name__} of {len(value)} items)"
    return value


def _show(value: Any) -> str:
    """Render a value for an error message, short and unambiguous."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return text


class ClosedLoopError(Exception):
    """Base class of every error raised by closedloop."""


class SpecError(ClosedLoopError, ValueError):
    """A declaration (system, field, feature, action, threshold, cost, goal …) is invalid."""


class ContextError(ClosedLoopError, ValueError):
    """A context failed validation.

    Attributes name what failed: ``field`` (the context field), ``rule`` (what it must be, e.g.
    ``"a number ≥ 0"``) and ``value`` (what it was — a long string or a large container clipped
    by :func:`clip_value`: its start and its size). ``row`` is the row index in a batch or the line
    number in a stream, when there is one.
    """

    def __init__(self, field: str, rule: str, value: Any, row: int | None = None) -> None:
        self.field = field = clip_value(field)
        self.rule = rule
        self.value = value = clip_value(value)
        self.row = row
        where = "" if row is None else f" (row {row})"
        if rule == "present":
            message = f"Context field '{field}' is required and has no default{where}."
        else:
            message = f"Context field '{field}' must be {rule}. Got {_show(value)} instead{where}."
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (used by the CLI and, later, problem details)."""
        value = self.value
        if not isinstance(value, str | int | float | bool | type(None)):
            value = repr(value)
        elif isinstance(value, float) and value != value:  # NaN is not JSON
            value = "NaN"
        elif isinstance(value, float) and value in (float("inf"), float("-inf")):
            value = "Infinity" if value > 0 else "-Infinity"
        return {
            "type": type(self).__name__,
            "field": self.field,
            "rule": self.rule,
            "value": value,
            "message": str(self),
        }


class BatchContextError(ContextError):
    """Rows of a columnar batch failed validation; ``errors`` lists each one (row, field, rule)."""

    def __init__(self, errors: list[ContextError]) -> None:
        if not errors:
            raise ValueError("BatchContextError needs at least one error")
        first = errors[0]
        self.errors = errors
        super().__init__(first.field, first.rule, first.value, first.row)
        more = len(errors) - 1
        if more:
            self.args = (f"{self.args[0]} … and {more} more invalid value(s) in the batch.",)


class OutcomeError(ContextError):
    """An outcome failed validation: ``field``, ``rule`` and ``value`` name what failed."""

    def __init__(self, field: str, rule: str, value: Any, row: int | None = None) -> None:
        super().__init__(field, rule, value, row)
        where = "" if row is None else f" (line {row})"
        self.args = (f"Outcome field '{self.field}' must be {rule}. Got {_show(self.value)} instead{where}.",)

    def __str__(self) -> str:
        return str(self.args[0])


class DatasetError(ClosedLoopError):
    """A dataset cannot be built or loaded."""


class FeatureError(ClosedLoopError):
    """A feature definition could not be evaluated."""


class EvaluationError(ClosedLoopError, ValueError):
    """Input to an evaluation metric is invalid: ``param``, ``rule`` and ``value`` name what."""

    def __init__(self, param: str, rule: str, value: Any, where: str = "") -> None:
        self.param = param
        self.rule = rule
        self.value = value
        owner = f" of {where}" if where else ""
        super().__init__(f"The '{param}'{owner} must be {rule}. Got {_show(value)} instead.")


class IntelligenceError(ClosedLoopError):
    """A model or heuristic is malformed or was given input it cannot score."""


class BundleError(ClosedLoopError):
    """A bundle failed a named check (``check``) when saved, loaded or verified."""

    def __init__(self, check: str, detail: str, path: str | None = None) -> None:
        self.check = check
        self.detail = detail
        self.path = path
        where = f" for {path}" if path else ""
        super().__init__(f"Bundle check '{check}' failed{where}: {detail}")


class ProjectError(ClosedLoopError):
    """A project home or a directory to scaffold into cannot be used (e.g. it is not empty)."""


class LockHeldError(ProjectError):
    """Another process holds the home's cycle lock (one orchestration cycle per home at a time).
    ``holder`` names it — ``{"pid", "host", "since", "since_ns"}`` — or is None when it could not
    be read."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        self.holder = holder
        super().__init__(message)


class ServiceError(ClosedLoopError):
    """The decision service answered an error (``closedloop.Client``), or could not be reached.

    ``status`` is the HTTP status (``None``: no answer) and ``problem`` the problem details the
    service sent (type, title, status, detail, and for validation errors field, rule, value).
    """

    def __init__(self, message: str, status: int | None = None, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


class TransportError(ClosedLoopError):
    """The telemetry log (:mod:`closedloop.telemetry.transport`) refused a request: a bad stream or
    message, a configuration the log does not accept."""


class TransportUnavailable(TransportError):
    """The telemetry log cannot be reached now (connection lost, no acknowledgement in time).
    Nothing the failed call published counts as acknowledged; publishing it again is safe
    (messages carry ids the log deduplicates)."""


class AuthError(ClosedLoopError):
    """A credential is missing, unknown, or lacks the role the operation needs."""


class RegistryError(ClosedLoopError):
    """A registry operation was refused: unknown bundle or flight, nothing to roll back, bad input."""


class ConflictError(RegistryError):
    """The deployment changed between reading it and writing it (another change won the race).
    Nothing was changed; the attempt is in the history. ``revision`` is the current revision."""

    def __init__(self, message: str, revision: int | None = None) -> None:
        self.revision = revision
        super().__init__(message)


class SanityCheckError(RegistryError):
    """A bundle failed sanity checks before taking traffic. ``checks`` lists every check run
    (``{"name", "passed", "detail", "forced"}``); ``failed`` names the ones that failed."""

    def __init__(self, message: str, checks: list[dict[str, Any]]) -> None:
        self.checks = checks
        self.failed = [c["name"] for c in checks if not c["passed"] and not c.get("forced")]
        super().__init__(message)


class ConformanceError(ClosedLoopError):
    """A component broke the documented contract checked by :mod:`closedloop.runtime.checks`."""

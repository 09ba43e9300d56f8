"""Regular expressions of feature expressions: the subset on which Python's ``re`` (with
``re.ASCII``) and RE2 (Arrow's engine) agree, checked and translated by :func:`_translate_regex`."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from closedloop.errors import SpecError

_ALLOWED_ESCAPES = set("dDwWbB") | set(".-/\\?+*()[]{}|^$:@#&~%!=,;'\"<> _")
_REFUSED_HINT = {
    "s": "\\s differs between Python and RE2 (vertical tab); write [ \\t\\r\\n\\f] instead",
    "S": "\\S differs between Python and RE2 (vertical tab); write [^ \\t\\r\\n\\f] instead",
}


def _translate_regex(pattern: str) -> str:
    """Check ``pattern`` is in the portable subset; return its Python form.

    Refused: inline flags and look-arounds (``(?...)`` other than ``(?:``), back-references,
    ``\\s``/``\\S``, ``\\A``/``\\Z``/``\\z``, Unicode classes. A bare ``$`` (end of text in RE2) is
    translated to ``\\Z`` for Python, whose ``$`` would also match before a final newline.
    """
    translated = _python_form(pattern)
    _check_compiles(pattern, translated)
    return translated


def _python_form(pattern: str) -> str:
    """Walk ``pattern`` once: refuse what is outside the portable subset, and give its Python form
    (a bare ``$`` as ``\\Z``)."""
    out = []
    i = 0
    in_class = False
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise SpecError(f"Regular expression {pattern!r} must not end with a backslash.")
            nxt = pattern[i + 1]
            if nxt in _REFUSED_HINT:
                raise SpecError(f"Regular expression {pattern!r} uses \\{nxt}: {_REFUSED_HINT[nxt]}.")
            if nxt not in _ALLOWED_ESCAPES:
                raise SpecError(
                    f"Regular expression {pattern!r} must use only the escapes \\d \\D \\w \\W \\b \\B "
                    f"and escaped punctuation (the subset Python and RE2 agree on). Got \\{nxt} instead."
                )
            if in_class and nxt in "bB":
                raise SpecError(f"Regular expression {pattern!r} must not use \\{nxt} inside [...].")
            out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            if ch == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            if ch == "[" and i + 1 < n and pattern[i + 1] == ":":
                raise SpecError(f"Regular expression {pattern!r} must not use POSIX classes [:name:].")
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            if i + 1 < n and pattern[i + 1] == "^":
                out.append("[^")
                i += 2
            else:
                out.append("[")
                i += 1
            continue
        if ch == "(" and i + 1 < n and pattern[i + 1] == "?":
            if pattern[i + 2 : i + 3] != ":":
                raise SpecError(
                    f"Regular expression {pattern!r} must not use inline flags or look-arounds "
                    "'(?...)' (only non-capturing groups '(?:...)'); lower-case the text with "
                    ".lower() instead of (?i)."
                )
        if ch == "$":
            out.append("\\Z")
            i += 1
            continue
        if ch.isspace() and ch not in " ":
            raise SpecError(f"Regular expression {pattern!r} must not contain raw whitespace {ch!r}.")
        out.append(ch)
        i += 1
    if in_class:
        raise SpecError(f"Regular expression {pattern!r} has an unterminated character class.")
    return "".join(out)


def _check_compiles(pattern: str, translated: str) -> None:
    """Both engines compile it: Python's ``re`` the translated form, RE2 (Arrow) the pattern."""
    try:
        re.compile(translated, re.ASCII)
    except re.error as exc:
        raise SpecError(f"Regular expression {pattern!r} does not compile in Python: {exc}.") from exc
    try:
        pc.match_substring_regex(pa.array([""], type=pa.string()), pattern)
    except pa.ArrowInvalid as exc:
        raise SpecError(f"Regular expression {pattern!r} does not compile in RE2: {exc}.") from exc

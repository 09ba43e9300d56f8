"""What every part of the HTML evaluation report shares: the page's size limits, escaping
(:func:`_e`, :func:`_json_for_script`), number formats, the bundles' legend labels and roles, and
which slice values are shown (:func:`_slice_keep`).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from closedloop.errors import EvaluationError

__all__ = ["MAX_CURVE_POINTS", "MAX_MISTAKES", "MAX_SLICE_VALUES", "MAX_TEXT"]

#: Points kept of each ROC / PR curve (both ends kept, the rest evenly thinned).
MAX_CURVE_POINTS = 400
#: Values of one slice field shown in its table and chart (flagged first, then the largest).
MAX_SLICE_VALUES = 50
#: Worst mistakes of each kind (false positives, false negatives) shown per bundle.
MAX_MISTAKES = 50
#: Characters of one context value shown in the worst-mistakes tables.
MAX_TEXT = 200

_ROLE = {"baseline": "baseline", "candidate": "candidate", "other": "compared"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any) -> float | None:
    """A finite float, or None (null, NaN, ±inf, non-numbers)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _f(x: Any, digits: int = 4) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:.{digits}f}"


def _count(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "—"
    return f"{int(v):,}" if v == int(v) else f"{v:,.2f}"


def _money(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:,.1f}"


def _pct(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{100 * v:.1f}%"


def _p(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "—"
    return f"{v:.4f}" if v >= 0.001 else f"{v:.1e}"


def _ci(ci: Any, digits: int = 4, fmt: Any = None) -> str:
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return "—"
    fmt = fmt or (lambda v: _f(v, digits))
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _signed(x: Any, digits: int = 4) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:+,.{digits}f}"


def _value(x: Any) -> str:
    """A slice value as shown: the empty string is "(empty)"."""
    text = "" if x is None else str(x)
    return text if text else "(empty)"


def _cut(x: Any) -> str:
    text = "" if x is None else str(x)
    if len(text) > MAX_TEXT:
        return f"{text[:MAX_TEXT]}… ({len(text):,} characters)"
    return text


def _json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` can only
    occur inside JSON strings, where their ``\\u`` escapes mean the same characters."""
    text = json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _thin(n: int, max_points: int) -> list[int]:
    """At most ``max_points`` indices of ``range(n)``, evenly spread, both ends kept."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


def _check(report: Any) -> None:
    ok = (
        isinstance(report, Mapping) and report.get("schema_version") == 1
        and isinstance(report.get("bundles"), list) and report["bundles"]
        and all(isinstance(b, Mapping) for b in report["bundles"])
    )
    if not ok:
        raise EvaluationError(
            "report", "an evaluation report of schema_version 1 (the dict closedloop.evaluation.report."
            "evaluate returns) with at least one bundle", report, "render_html",
        )


def _labels(report: Mapping[str, Any]) -> list[str]:
    """One unique legend label per bundle: position, version and kind (a bundle may be evaluated
    twice under the same version)."""
    return [f"{i + 1}. {b.get('version', '?')} ({b.get('kind', '?')})" for i, b in enumerate(report["bundles"])]


def _role(i: int, n: int) -> str:
    if n == 1:
        return ""
    return _ROLE["baseline"] if i == 0 else _ROLE["candidate"] if i == n - 1 else _ROLE["other"]


def _slice_keep(report: Mapping[str, Any], field: str) -> tuple[list[str], int]:
    """The values of slice ``field`` shown: all when few, else flagged ones (in any bundle) first,
    then the largest; in the report's order. Returns (values, how many were left out)."""
    order: list[str] = []
    size: dict[str, float] = {}
    flagged: set[str] = set()
    for b in report["bundles"]:
        for r in ((b.get("slices") or {}).get(field)) or []:
            v = str(r.get("value"))
            if v not in size:
                order.append(v)
                size[v] = _num(r.get("n")) or 0.0
            if r.get("significantly_worse") is True:
                flagged.add(v)
    if len(order) <= MAX_SLICE_VALUES:
        return order, 0
    ranked = sorted(order, key=lambda v: (v not in flagged, -size[v]))
    keep = set(ranked[:MAX_SLICE_VALUES])
    return [v for v in order if v in keep], len(order) - len(keep)


def _slice_fields(report: Mapping[str, Any]) -> list[str]:
    fields: list[str] = []
    for b in report["bundles"]:
        for f in (b.get("slices") or {}):
            if f not in fields:
                fields.append(str(f))
    return fields
